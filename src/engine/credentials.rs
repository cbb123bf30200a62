//! The `credentials` step: Secret `<instance>-credentials` with the tenant's
//! DATABASE_URL, its proxy API key and a gateway token.
//!
//! Generated once and kept; rotated only when the instance's
//! `winston.dev/rotate-credentials` annotation takes a new value. Crash
//! safety: the key is written to the Secret first and registered (hashed)
//! in the ledger second; registration is idempotent, so a crash between
//! the two is repaired by the next reconcile and no key exists only in the
//! database. Every pass then revokes any other active key of the instance
//! (one UPDATE that changes nothing in the steady state), so a crash
//! between "new key written" and "old key revoked" never leaves the old key
//! valid. Values never leave the Secret: no status, event or log carries them.
//!
//! The key bills the account of the Tenant that controls the instance
//! (`names::ledger_account`, keyed by the Tenant's uid), the same account
//! its CreditLedger drives.
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use rand::RngCore;

use super::EngineError;
use crate::api::{Tenant, TenantInstance};
use crate::ledger::{Ledger, LedgerError, keys};
use crate::names;

/// Key of the tenant database's connection URI.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Key of the tenant's proxy API key.
pub const API_KEY: &str = "WINSTON_API_KEY";
/// Key of the token the agent's gateway expects from its frontend.
pub const GATEWAY_TOKEN: &str = "GATEWAY_TOKEN";
/// Key of the proxy's base URL (not secret; kept beside the key for convenience).
pub const PROXY_URL: &str = "WINSTON_PROXY_URL";
/// Annotation on a TenantInstance asking for new credentials: any new value rotates once.
pub const ROTATE_ANNOTATION: &str = "winston.dev/rotate-credentials";
/// Annotation on the Secret recording which rotation request it fulfils.
const ROTATED_FOR: &str = "winston.dev/rotated-for";

/// The credentials Secret's name for `instance`.
#[must_use]
pub fn secret_name(instance: &str) -> String {
    format!("{instance}-credentials")
}

/// The ledger account `ti` bills: that of the Tenant which controls it (its
/// controller ownerReference of kind Tenant), the account its CreditLedger
/// drives.
///
/// # Errors
/// `Stalled` when the instance has no controlling Tenant: a key registered
/// for it could not bill anybody.
pub fn account_of(ti: &TenantInstance) -> Result<String, EngineError> {
    let owner = ti.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == Tenant::kind(&()));
    match owner {
        Some(o) => Ok(names::ledger_account(&ti.namespace().unwrap_or_default(), &o.name, &o.uid)),
        None => Err(EngineError::Stalled {
            reason: "NoTenantOwner",
            message: format!(
                "TenantInstance {} has no controlling Tenant (ownerReference of kind Tenant with controller: \
                 true), so its API key could not bill anybody; create instances through a Tenant",
                ti.name_any()
            ),
        }),
    }
}

/// The values the Secret holds. Debug never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub database_url: Option<String>,
    pub api_key: String,
    pub gateway_token: String,
    pub proxy_url: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("proxy_url", &self.proxy_url).finish_non_exhaustive()
    }
}

fn random_token() -> String {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    format!("wgt_{}", hex::encode(raw))
}

fn text(s: &Secret, key: &str) -> Option<String> {
    s.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok()).filter(|v| !v.is_empty())
}

fn parse(s: &Secret) -> Option<Credentials> {
    Some(Credentials {
        database_url: text(s, DATABASE_URL),
        api_key: text(s, API_KEY)?,
        gateway_token: text(s, GATEWAY_TOKEN)?,
        proxy_url: text(s, PROXY_URL).unwrap_or_default(),
    })
}

/// The Secret object for `ti` holding `creds`, owned by the instance so it
/// goes away with it.
#[must_use]
pub fn desired_secret(ti: &TenantInstance, creds: &Credentials, rotated_for: Option<&str>) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    if let Some(url) = &creds.database_url {
        put(DATABASE_URL, url);
    }
    put(API_KEY, &creds.api_key);
    put(GATEWAY_TOKEN, &creds.gateway_token);
    put(PROXY_URL, &creds.proxy_url);
    let labels = BTreeMap::from([
        (names::LABEL_MANAGED_BY.to_string(), names::MANAGED_BY.to_string()),
        (names::LABEL_TENANT.to_string(), ti.spec.tenant_ref.name.clone()),
    ]);
    let annotations = rotated_for.map(|r| BTreeMap::from([(ROTATED_FOR.to_string(), r.to_string())]));
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&ti.name_any())),
            namespace: ti.namespace(),
            labels: Some(labels),
            annotations,
            owner_references: ti.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// What the step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Created,
    Updated,
    Rotated,
}

/// Converges the credentials Secret of `ti` and registers its key with the
/// ledger account of the instance's Tenant (see [`account_of`]), revoking
/// every other key of the instance. A key the ledger cannot use (revoked,
/// or registered to another account) is replaced. `database_url` is what
/// the database step found (None when the instance has no database).
///
/// # Errors
/// `Stalled` for an instance without a controlling Tenant or a Secret owned
/// by someone else; Kubernetes or ledger failures (retryable).
pub async fn converge(
    secrets: &Api<Secret>,
    ledger: &Ledger,
    ti: &TenantInstance,
    database_url: Option<&str>,
    proxy_url: &str,
) -> Result<(Credentials, Outcome), EngineError> {
    let account = account_of(ti)?;
    let name = secret_name(&ti.name_any());
    let rotate_request = ti.annotations().get(ROTATE_ANNOTATION).cloned();
    let existing = secrets.get_opt(&name).await?;
    if let Some(s) = &existing {
        let ours = s.owner_references().iter().any(|o| Some(&o.uid) == ti.meta().uid.as_ref());
        if !ours {
            return Err(EngineError::Stalled {
                reason: "SecretConflict",
                message: format!("Secret {name} exists and is not owned by this instance; rename or delete it"),
            });
        }
    }
    let current = existing.as_ref().and_then(parse);
    let fulfilled = existing.as_ref().and_then(|s| s.annotations().get(ROTATED_FOR).cloned());
    let wants_rotation = rotate_request.is_some() && rotate_request != fulfilled && current.is_some();

    let (creds, outcome) = match current {
        Some(c) if !wants_rotation => {
            let want = Credentials {
                database_url: database_url.map(str::to_string),
                proxy_url: proxy_url.to_string(),
                ..c.clone()
            };
            if want == c {
                (c, Outcome::Unchanged)
            } else {
                write(secrets, ti, &want, fulfilled.as_deref(), existing.as_ref()).await?;
                (want, Outcome::Updated)
            }
        }
        Some(_) => {
            let want = Credentials::fresh(database_url, proxy_url);
            write(secrets, ti, &want, rotate_request.as_deref(), existing.as_ref()).await?;
            (want, Outcome::Rotated)
        }
        None => {
            let want = Credentials::fresh(database_url, proxy_url);
            let secret = desired_secret(ti, &want, rotate_request.as_deref());
            let created = if existing.is_some() {
                write(secrets, ti, &want, rotate_request.as_deref(), existing.as_ref()).await.map(|()| true)?
            } else {
                match secrets
                    .create(
                        &PostParams { field_manager: Some(names::FIELD_MANAGER.into()), ..PostParams::default() },
                        &secret,
                    )
                    .await
                {
                    Ok(_) => true,
                    // Created by a run that crashed before recording it: use that one.
                    Err(kube::Error::Api(s)) if s.code == 409 => false,
                    Err(e) => return Err(e.into()),
                }
            };
            if !created {
                let again = secrets.get(&name).await?;
                let c = parse(&again).ok_or(EngineError::Invalid("credentials Secret lacks its keys"))?;
                (c, Outcome::Unchanged)
            } else {
                (want, Outcome::Created)
            }
        }
    };

    ledger.ensure_account(&account).await?;
    let (creds, outcome) = match ledger.register_key(&account, &ti.name_any(), &creds.api_key).await {
        Ok(_) => (creds, outcome),
        // The Secret's key was revoked, or bills another account (e.g. one
        // registered before accounts were keyed by the Tenant's uid): it can
        // never authenticate this instance again, so it is replaced.
        Err(LedgerError::KeyUnusable) => {
            let want = Credentials { api_key: keys::generate_key(), ..creds };
            let current = secrets.get(&name).await?;
            let fulfilled = current.annotations().get(ROTATED_FOR).cloned();
            write(secrets, ti, &want, fulfilled.as_deref(), Some(&current)).await?;
            ledger.register_key(&account, &ti.name_any(), &want.api_key).await?;
            (want, Outcome::Rotated)
        }
        Err(e) => return Err(e.into()),
    };
    // Every pass, not only after a rotation: a crash between writing the new
    // key and revoking the old one must not leave the old key valid.
    let revoked = ledger.revoke_other_keys(&account, &ti.name_any(), &keys::hash_key(&creds.api_key)).await?;
    if revoked > 0 {
        tracing::info!(instance = %ti.name_any(), revoked, "revoked keys of the instance other than the current one");
    }
    Ok((creds, outcome))
}

async fn write(
    secrets: &Api<Secret>,
    ti: &TenantInstance,
    creds: &Credentials,
    rotated_for: Option<&str>,
    existing: Option<&Secret>,
) -> Result<(), EngineError> {
    let mut secret = desired_secret(ti, creds, rotated_for);
    // Optimistic concurrency: never overwrite a Secret changed since we read it.
    secret.metadata.resource_version = existing.and_then(|s| s.resource_version());
    let pp = PatchParams::apply(names::FIELD_MANAGER).force();
    secrets.patch(&secret_name(&ti.name_any()), &pp, &Patch::Apply(&secret)).await?;
    Ok(())
}

impl Credentials {
    /// New secrets (API key, gateway token) for `database_url` and `proxy_url`.
    fn fresh(database_url: Option<&str>, proxy_url: &str) -> Self {
        Self {
            database_url: database_url.map(str::to_string),
            api_key: keys::generate_key(),
            gateway_token: random_token(),
            proxy_url: proxy_url.to_string(),
        }
    }
}

/// Revokes the keys of `ti` (on deletion). The Secret goes with its owner.
/// An instance without a controlling Tenant never had a key registered.
///
/// # Errors
/// Ledger failures.
pub async fn revoke(ledger: &Ledger, ti: &TenantInstance) -> Result<(), EngineError> {
    let Ok(account) = account_of(ti) else {
        return Ok(());
    };
    ledger.revoke_keys_named(&account, &ti.name_any(), None).await?;
    Ok(())
}
