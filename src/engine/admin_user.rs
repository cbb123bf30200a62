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
//! retry uses the same password: there is never a second user nor a second
//! password. The password leaves Winston only in the create call and in
//! the welcome email; status, Events and logs carry the user's id only.
use kube::ResourceExt;
use rand::RngExt;

use super::external::{Converged, Object};
use super::steps::{Pass, StepResult};
use super::{EngineError, supabase};
use crate::providers::Secret;
use crate::providers::supabase_auth::{AdminUserSpec, SupabaseAdminUsers, SupabaseAuthClient};

/// The Secret key holding the temporary password.
pub const PASSWORD_KEY: &str = "ADMIN_TEMPORARY_PASSWORD";
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

/// The temporary password from the instance's Secret (generated and stored
/// on first use).
///
/// # Errors
/// Kubernetes failures.
pub async fn password(pass: &Pass<'_>) -> Result<String, EngineError> {
    supabase::stored_once(pass, &secret_name(&pass.ti.name_any()), PASSWORD_KEY, temporary_password).await
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
    let spec = AdminUserSpec { email: admin_email(pass), password: Secret::new(password(pass).await?) };
    let users = SupabaseAdminUsers(SupabaseAuthClient::new(&api.url, key, TIMEOUT_MS)?);
    match pass.converge(&users, &spec, Object::AdminUser).await? {
        Converged::Waiting { id, .. } | Converged::Ready { id, .. } => {
            Ok(StepResult::Done(format!("admin user {id} in Supabase Auth (email confirmed, must change password)")))
        }
    }
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
