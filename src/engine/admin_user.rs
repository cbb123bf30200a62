//! The `adminUser` step (Supabase stacks with
//! `components.database.adminUser`): the application's first
//! administrator, created through the project's Auth admin API with the
//! service-role key, its email confirmed and `user_metadata` marking a
//! password that must change at first sign-in.
//!
//! The temporary password is generated once and written to Secret
//! `<instance>-admin` BEFORE the user is created, so a controller killed
//! between the create and the status write finds the user by email (the
//! pending marker says a create was announced) and adopts it, and every
//! retry uses the same password: there is never a second user, and the
//! Secret always holds a password the user signs in with.
//!
//! A Secret deleted while the user exists (`kubectl delete secret`) is
//! recreated with a new password and the annotation [`RESET_ANNOTATION`]
//! BEFORE the user is touched; the password is then set on the user
//! (`PUT /admin/users/{id}`, `must_change_password` kept) and only then is
//! the annotation removed, with a warning Event. A controller killed
//! anywhere in between finds the annotation and sets the same password
//! again (idempotent), so the Secret converges to the user's password. No
//! second welcome email is sent: the Event tells the operator that the
//! emailed password no longer works and where the new one is.
//!
//! The password leaves Winston only in the create or set call and in the
//! welcome email; status, Events and logs carry the user's id only.
use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use rand::RngExt;
use serde_json::json;

use super::external::{Converged, Object};
use super::run::Notice;
use super::steps::{Pass, StepResult};
use super::{EngineError, supabase};
use crate::providers::supabase_auth::{AdminUserSpec, SupabaseAdminUsers, SupabaseAuthClient, must_change_password};
use crate::providers::{ExternalResource, Secret};

/// The Secret key holding the temporary password.
pub const PASSWORD_KEY: &str = "ADMIN_TEMPORARY_PASSWORD";
/// On the admin Secret while its password is not yet known to be set on an
/// existing user (the Secret was recreated after the user was created).
pub const RESET_ANNOTATION: &str = "winston.dev/admin-password-reset";
/// The Event reason of a password set on an existing user.
pub const RESET_REASON: &str = "AdminPasswordReset";
/// Timeout of one Auth admin call.
const TIMEOUT_MS: u64 = 30_000;
/// Characters of a temporary password: no look-alikes (0/O, 1/l/I), so it
/// can be typed from an email.
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"23456789";
const SYMBOLS: &[u8] = b"-_.!@#%+=";
/// Length of a temporary password (about 118 bits from the full alphabet).
const LENGTH: usize = 20;

/// The name of the Secret holding the admin's temporary password.
#[must_use]
pub fn secret_name(instance: &str) -> String {
    format!("{instance}-admin")
}

/// A strong temporary password: [`LENGTH`] characters with at least one
/// lowercase letter, uppercase letter, digit and symbol (what password
/// policies ask for), the rest from all four, shuffled.
#[must_use]
pub fn temporary_password() -> String {
    let mut rng = rand::rng();
    let all: Vec<u8> = [LOWER, UPPER, DIGITS, SYMBOLS].concat();
    let mut chars: Vec<u8> =
        [LOWER, UPPER, DIGITS, SYMBOLS].iter().map(|set| set[rng.random_range(0..set.len())]).collect();
    while chars.len() < LENGTH {
        chars.push(all[rng.random_range(0..all.len())]);
    }
    for i in (1..chars.len()).rev() {
        chars.swap(i, rng.random_range(0..=i));
    }
    String::from_utf8(chars).unwrap_or_default()
}

/// The admin's sign-in address: `adminUser.email`, else the contact email.
#[must_use]
pub fn admin_email(pass: &Pass<'_>) -> String {
    let db = pass.ti.spec.stack.components.database.as_ref();
    db.and_then(|d| d.admin_user.as_ref())
        .and_then(|a| a.email.clone())
        .unwrap_or_else(|| pass.ti.spec.profile.contact_email.clone())
}

/// The temporary password from the instance's Secret, for the welcome
/// email. The `adminUser` step writes the Secret and makes its password the
/// user's before the welcome email is sent; nothing here generates one.
///
/// # Errors
/// Kubernetes failures; `MissingInput` while the Secret is absent or its
/// password is not yet set on the user.
pub async fn password(pass: &Pass<'_>) -> Result<String, EngineError> {
    match stored(pass).await? {
        Some(Stored { password, reset: false }) => Ok(password),
        _ => Err(EngineError::MissingInput("the admin password is not settled yet (adminUser step)")),
    }
}

/// The admin Secret's password and whether it still has to be set on an
/// existing user.
struct Stored {
    password: String,
    reset: bool,
}

/// Reads the admin Secret; `None` when absent.
async fn stored(pass: &Pass<'_>) -> Result<Option<Stored>, EngineError> {
    let name = secret_name(&pass.ti.name_any());
    let Some(s) = pass.secrets.get_opt(&name).await? else { return Ok(None) };
    let password = s.data.as_ref().and_then(|d| d.get(PASSWORD_KEY)).map(|b| String::from_utf8_lossy(&b.0).to_string());
    let password = password.ok_or(EngineError::MalformedSecret { name, missing: PASSWORD_KEY })?;
    let reset = s.annotations().contains_key(RESET_ANNOTATION);
    Ok(Some(Stored { password, reset }))
}

/// The admin Secret, created when absent: a fresh password, marked
/// [`RESET_ANNOTATION`] when the user already exists (by recorded id or by
/// email), written before anything uses it. A Secret created meanwhile by
/// another writer wins.
async fn secret(pass: &Pass<'_>, users: &SupabaseAdminUsers, email: &str) -> Result<Stored, EngineError> {
    let name = secret_name(&pass.ti.name_any());
    for _ in 0..2 {
        if let Some(s) = stored(pass).await? {
            return Ok(s);
        }
        let probe = AdminUserSpec { email: email.to_string(), password: Secret::new(String::new()) };
        let known = pass.known(Object::AdminUser);
        let exists = users.observe(&probe, known.as_deref()).await.map_err(EngineError::from)?.id().is_some();
        let password = temporary_password();
        let annotations = exists.then(|| BTreeMap::from([(RESET_ANNOTATION.to_string(), "pending".to_string())]));
        let secret = supabase::owned_secret(pass, &name, PASSWORD_KEY, &password, annotations);
        let ns = pass.ti.namespace().unwrap_or_default();
        match super::write_secret(pass.rec.host(), &ns, &name, pass.secrets.create(&PostParams::default(), &secret))
            .await
        {
            Ok(_) => return Ok(Stored { password, reset: exists }),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::MalformedSecret { name, missing: PASSWORD_KEY })
}

/// Sets the Secret's password on user `id` (idempotent: the same password
/// again is harmless), then removes the reset mark and asks for an Event.
async fn reset(
    pass: &mut Pass<'_>,
    users: &SupabaseAdminUsers,
    id: &str,
    password: &Secret,
) -> Result<(), EngineError> {
    users.0.set_password(id, password, must_change_password()).await?;
    let name = secret_name(&pass.ti.name_any());
    let ns = pass.ti.namespace().unwrap_or_default();
    let unmark = json!({"metadata": {"annotations": {RESET_ANNOTATION: null}}});
    let (params, patch) = (PatchParams::default(), Patch::Merge(&unmark));
    super::write_secret(pass.rec.host(), &ns, &name, pass.secrets.patch(&name, &params, &patch)).await?;
    tracing::warn!(instance = %pass.ti.name_any(), user = id, secret = %name, "admin password set from a recreated Secret");
    pass.rec.notices.push(Notice {
        warning: true,
        reason: RESET_REASON,
        action: "Provision",
        note: format!(
            "Secret {name} was missing: admin user {id} now has the new temporary password stored in it (must change \
             at sign-in); the password in the welcome email no longer works"
        ),
    });
    Ok(())
}

/// Converges the admin user.
///
/// # Errors
/// See [`EngineError`].
pub async fn run(pass: &mut Pass<'_>) -> Result<StepResult, EngineError> {
    let Some(api) = pass.supabase.clone() else {
        return Ok(StepResult::Waiting("waiting for the Supabase project".into()));
    };
    let key = api.service_role_key.clone().ok_or(EngineError::SupabaseKeyMissing("service_role"))?;
    let users = SupabaseAdminUsers(SupabaseAuthClient::new(&api.url, key, TIMEOUT_MS)?);
    let email = admin_email(pass);
    let stored = secret(pass, &users, &email).await?;
    let spec = AdminUserSpec { email, password: Secret::new(stored.password) };
    let (Converged::Waiting { id, .. } | Converged::Ready { id, .. }) =
        pass.converge(&users, &spec, Object::AdminUser).await?;
    if stored.reset {
        reset(pass, &users, &id, &spec.password).await?;
    }
    Ok(StepResult::Done(format!("admin user {id} in Supabase Auth (email confirmed, must change password)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_passwords_are_strong_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = temporary_password();
            assert_eq!(p.len(), LENGTH);
            for set in [LOWER, UPPER, DIGITS, SYMBOLS] {
                assert!(p.bytes().any(|b| set.contains(&b)), "{p} lacks a class");
            }
            assert!(seen.insert(p), "a repeated password");
        }
    }
}
