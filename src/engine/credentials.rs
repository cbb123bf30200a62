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
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;

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
/// `NoTenantOwner` (which stalls) when the instance has no controlling
/// Tenant: a key registered for it could not bill anybody.
pub fn account_of(ti: &TenantInstance) -> Result<String, EngineError> {
    let owner = ti.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == Tenant::kind(&()));
    match owner {
        Some(o) => Ok(names::ledger_account(&ti.namespace().unwrap_or_default(), &o.name, &o.uid)),
        None => Err(EngineError::NoTenantOwner { instance: ti.name_any() }),
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

    /// The values by key, as the Secret holds them and the agent's
    /// environment receives them.
    #[must_use]
    pub fn variables(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        if let Some(url) = &self.database_url {
            v.insert(DATABASE_URL.to_string(), url.clone());
        }
        v.insert(API_KEY.to_string(), self.api_key.clone());
        v.insert(GATEWAY_TOKEN.to_string(), self.gateway_token.clone());
        v.insert(PROXY_URL.to_string(), self.proxy_url.clone());
        v
    }

    /// The values as the Secret's `data`.
    fn data(&self) -> BTreeMap<String, ByteString> {
        self.variables().into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()
    }
}

/// The Secret object for `ti` holding `creds`, owned by the instance so it
/// goes away with it.
#[must_use]
pub fn desired_secret(ti: &TenantInstance, creds: &Credentials, rotated_for: Option<&str>) -> Secret {
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
        data: Some(creds.data()),
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

impl Outcome {
    /// How the step reports it: "Secret x-credentials <verb>".
    #[must_use]
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Rotated => "rotated",
            Self::Unchanged => "in place",
        }
    }
}

/// What the stored Secret needs (decided without I/O by [`decide`]).
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// It holds the wanted values.
    Keep,
    /// Write the wanted values over it, recording `rotated_for`.
    Write { rotated_for: Option<String>, outcome: Outcome },
    /// There is none: create it.
    Create { rotated_for: Option<String> },
}

/// Converges the credentials Secret of `ti` and registers its key with the
/// ledger account of the instance's Tenant (see [`account_of`]), revoking
/// every other key of the instance. A key the ledger cannot use (revoked,
/// or registered to another account) is replaced. `database_url` is what
/// the database step found (None when the instance has no database).
///
/// # Errors
/// `NoTenantOwner` and `SecretConflict` (which stall) for an instance
/// without a controlling Tenant or a Secret owned by someone else;
/// Kubernetes or ledger failures (retryable).
pub async fn converge(
    secrets: &Api<Secret>,
    host: &dyn super::Host,
    ledger: &Ledger,
    ti: &TenantInstance,
    database_url: Option<&str>,
    proxy_url: &str,
) -> Result<(Credentials, Outcome), EngineError> {
    let account = account_of(ti)?;
    let target = Target { secrets, host, ti, name: secret_name(&ti.name_any()) };
    let stored = target.observe().await?;
    let rotate_request = ti.annotations().get(ROTATE_ANNOTATION).cloned();
    let (want, change) = decide(stored.as_ref(), rotate_request, database_url, proxy_url);
    let (creds, outcome) = target.apply(stored.as_ref(), want, change).await?;
    let (creds, outcome) = target.register(ledger, &account, creds, outcome).await?;
    // Every pass, not only after a rotation: a crash between writing the new
    // key and revoking the old one must not leave the old key valid.
    let revoked = ledger.revoke_other_keys(&account, &ti.name_any(), &keys::hash_key(&creds.api_key)).await?;
    if revoked > 0 {
        tracing::info!(instance = %ti.name_any(), revoked, "revoked keys of the instance other than the current one");
    }
    Ok((creds, outcome))
}

/// The credentials wanted and what the stored Secret needs for them: kept
/// (with the database and proxy URLs brought up to date), rotated when the
/// instance asks for a rotation the Secret has not fulfilled, or fresh.
fn decide(
    stored: Option<&Secret>,
    rotate_request: Option<String>,
    database_url: Option<&str>,
    proxy_url: &str,
) -> (Credentials, Change) {
    let current = stored.and_then(parse);
    let fulfilled = stored.and_then(|s| s.annotations().get(ROTATED_FOR).cloned());
    let wants_rotation = rotate_request.is_some() && rotate_request != fulfilled;
    let fresh = || Credentials::fresh(database_url, proxy_url);
    match current {
        Some(c) if !wants_rotation => {
            let want = Credentials {
                database_url: database_url.map(str::to_string),
                proxy_url: proxy_url.to_string(),
                ..c.clone()
            };
            if want == c {
                (c, Change::Keep)
            } else {
                (want, Change::Write { rotated_for: fulfilled, outcome: Outcome::Updated })
            }
        }
        Some(_) => (fresh(), Change::Write { rotated_for: rotate_request, outcome: Outcome::Rotated }),
        // A Secret without its keys is filled as if it were new.
        None if stored.is_some() => (fresh(), Change::Write { rotated_for: rotate_request, outcome: Outcome::Created }),
        None => (fresh(), Change::Create { rotated_for: rotate_request }),
    }
}

/// The credentials Secret of one instance.
struct Target<'a> {
    secrets: &'a Api<Secret>,
    host: &'a dyn super::Host,
    ti: &'a TenantInstance,
    name: String,
}

impl Target<'_> {
    /// The Secret, if there is one and it is ours.
    async fn observe(&self) -> Result<Option<Secret>, EngineError> {
        let existing = self.secrets.get_opt(&self.name).await?;
        if let Some(s) = &existing
            && !s.owner_references().iter().any(|o| Some(&o.uid) == self.ti.meta().uid.as_ref())
        {
            return Err(EngineError::SecretConflict { name: self.name.clone() });
        }
        Ok(existing)
    }

    async fn apply(
        &self,
        stored: Option<&Secret>,
        want: Credentials,
        change: Change,
    ) -> Result<(Credentials, Outcome), EngineError> {
        match change {
            Change::Keep => Ok((want, Outcome::Unchanged)),
            Change::Write { rotated_for, outcome } => {
                self.write(&want, rotated_for.as_deref(), stored).await?;
                Ok((want, outcome))
            }
            Change::Create { rotated_for } => self.create(want, rotated_for.as_deref()).await,
        }
    }

    /// Creates the Secret; one created by a run that crashed before using
    /// it is used as it is.
    async fn create(
        &self,
        want: Credentials,
        rotated_for: Option<&str>,
    ) -> Result<(Credentials, Outcome), EngineError> {
        let pp = PostParams { field_manager: Some(names::FIELD_MANAGER.into()), ..PostParams::default() };
        let ns = self.ti.namespace().unwrap_or_default();
        let secret = desired_secret(self.ti, &want, rotated_for);
        let created = super::write_secret(self.host, &ns, &self.name, self.secrets.create(&pp, &secret)).await;
        match created {
            Ok(_) => return Ok((want, Outcome::Created)),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let again = self.secrets.get(&self.name).await?;
        let c = parse(&again)
            .ok_or_else(|| EngineError::MalformedSecret { name: self.name.clone(), missing: "its keys" })?;
        Ok((c, Outcome::Unchanged))
    }

    /// Registers the key with `account`. The Secret's key may be revoked, or
    /// bill another account (e.g. one registered before accounts were keyed
    /// by the Tenant's uid): it can never authenticate this instance again,
    /// so it is replaced.
    async fn register(
        &self,
        ledger: &Ledger,
        account: &str,
        creds: Credentials,
        outcome: Outcome,
    ) -> Result<(Credentials, Outcome), EngineError> {
        let instance = self.ti.name_any();
        ledger.ensure_account(account).await?;
        match ledger.register_key(account, &instance, &creds.api_key).await {
            Ok(_) => return Ok((creds, outcome)),
            Err(LedgerError::KeyUnusable) => {}
            Err(e) => return Err(e.into()),
        }
        let want = Credentials { api_key: keys::generate_key(), ..creds };
        let current = self.secrets.get(&self.name).await?;
        let fulfilled = current.annotations().get(ROTATED_FOR).cloned();
        self.write(&want, fulfilled.as_deref(), Some(&current)).await?;
        ledger.register_key(account, &instance, &want.api_key).await?;
        Ok((want, Outcome::Rotated))
    }

    async fn write(
        &self,
        creds: &Credentials,
        rotated_for: Option<&str>,
        existing: Option<&Secret>,
    ) -> Result<(), EngineError> {
        let mut secret = desired_secret(self.ti, creds, rotated_for);
        // Optimistic concurrency: never overwrite a Secret changed since we read it.
        secret.metadata.resource_version = existing.and_then(|s| s.resource_version());
        let pp = PatchParams::apply(names::FIELD_MANAGER).force();
        let ns = self.ti.namespace().unwrap_or_default();
        super::write_secret(self.host, &ns, &self.name, self.secrets.patch(&self.name, &pp, &Patch::Apply(&secret)))
            .await?;
        Ok(())
    }
}

/// Revokes the keys of `ti` (on deletion; the Secret is deleted after it
/// by [`delete_owned`]). An instance without a controlling Tenant never had a key registered.
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

/// Deletes the Secret `name` when `ti` owns it and says whether it is gone
/// (`false` while it still exists, e.g. held by a finalizer of someone
/// else's: look again later). A Secret of that name owned by another object
/// is not ours and counts as gone. The delete is conditional on the uid
/// read, so a newer Secret under the name is never removed.
///
/// # Errors
/// Kubernetes failures.
pub async fn delete_owned(secrets: &Api<Secret>, name: &str, ti: &TenantInstance) -> Result<bool, EngineError> {
    let Some(s) = secrets.get_opt(name).await? else { return Ok(true) };
    if !s.owner_references().iter().any(|o| Some(&o.uid) == ti.meta().uid.as_ref()) {
        return Ok(true);
    }
    if s.metadata.deletion_timestamp.is_none() {
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: s.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match secrets.delete(name, &dp).await {
            Ok(_) => {}
            // Gone already, or replaced by another Secret since the read.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(secrets.get_opt(name).await?.is_none_or(|now| now.uid() != s.uid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(api_key: &str) -> Credentials {
        Credentials {
            database_url: Some("postgresql://db/x".into()),
            api_key: api_key.into(),
            gateway_token: "wgt_1".into(),
            proxy_url: "http://proxy".into(),
        }
    }

    fn stored(c: Option<&Credentials>, rotated_for: Option<&str>) -> Secret {
        let annotations = rotated_for.map(|r| BTreeMap::from([(ROTATED_FOR.to_string(), r.to_string())]));
        Secret {
            metadata: ObjectMeta { annotations, ..ObjectMeta::default() },
            data: c.map(Credentials::data),
            ..Secret::default()
        }
    }

    #[test]
    fn decide_keeps_updates_rotates_and_creates() {
        let c = creds("wsk_old");
        let (url, proxy) = (Some("postgresql://db/x"), "http://proxy");
        let same = stored(Some(&c), Some("r1"));
        assert_eq!(decide(Some(&same), None, url, proxy), (c.clone(), Change::Keep));
        assert_eq!(decide(Some(&same), Some("r1".into()), url, proxy), (c.clone(), Change::Keep), "fulfilled");

        let (want, change) = decide(Some(&same), None, Some("postgresql://db/new"), proxy);
        assert_eq!(want, Credentials { database_url: Some("postgresql://db/new".into()), ..c.clone() });
        assert_eq!(change, Change::Write { rotated_for: Some("r1".into()), outcome: Outcome::Updated });

        let (want, change) = decide(Some(&same), Some("r2".into()), url, proxy);
        assert_ne!(want.api_key, c.api_key);
        assert_ne!(want.gateway_token, c.gateway_token);
        assert_eq!(change, Change::Write { rotated_for: Some("r2".into()), outcome: Outcome::Rotated });

        let empty = stored(None, None);
        let (_, change) = decide(Some(&empty), Some("r3".into()), url, proxy);
        assert_eq!(change, Change::Write { rotated_for: Some("r3".into()), outcome: Outcome::Created });
        let (want, change) = decide(None, None, None, proxy);
        assert_eq!((want.database_url, change), (None, Change::Create { rotated_for: None }));
    }
}
