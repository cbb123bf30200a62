//! The Supabase Auth admin client and its [`ExternalResource`] contract
//! against the in-process emulator: absent / created / found by email
//! (paging past the first page) / by id, a taken address refused, a wrong
//! key unauthorized, a lost answer recovered by the lookup, the password
//! never readable back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use providers_common::*;
use serde_json::json;
use winston::emulator::SUPABASE_PROJECTS_PATH;
use winston::providers::supabase::{SupabaseProjectSpec, SupabaseProjects};
use winston::providers::supabase_auth::{AdminUserSpec, SupabaseAdminUsers, SupabaseAuthClient};
use winston::providers::{ExternalResource, Marker, Observation, ProviderError, Secret};

/// A healthy project: its Auth base URL and service-role key.
async fn project(env: &Env) -> (String, Secret) {
    let res = SupabaseProjects(env.providers().supabase);
    let spec = SupabaseProjectSpec {
        marker: Marker::new(&uid()),
        organization: "winston-emulator".into(),
        region: "us-east-1".into(),
        db_pass: Secret::new("pw-for-the-test"),
        instance_size: None,
    };
    let created = res.create(&spec).await.unwrap();
    let observed = poll(
        || async { res.observe(&spec, Some(&created.id)).await.unwrap() },
        |o| matches!(o, Observation::Ready { .. }),
    )
    .await;
    let Observation::Ready { id, observed, .. } = observed else { panic!() };
    (format!("{}{SUPABASE_PROJECTS_PATH}/{id}", env.emu.base()), observed.service_role_key.unwrap())
}

#[tokio::test]
async fn the_admin_user_follows_the_contract() {
    let env = Env::start(50).await;
    let (url, key) = project(&env).await;
    let users = SupabaseAdminUsers(SupabaseAuthClient::new(&url, key.clone(), 10_000).unwrap());
    let spec = AdminUserSpec { email: "Admin@Acme.example".into(), password: Secret::new("Tmp-password-1") };

    assert_eq!(users.observe(&spec, None).await.unwrap(), Observation::Absent, "absent by email");
    let created = users.create(&spec).await.unwrap();
    let Observation::Ready { id, observed, up_to_date: true } = users.observe(&spec, None).await.unwrap() else {
        panic!("not found by email (case-insensitive)")
    };
    assert_eq!(id, created.id);
    assert_eq!(observed.user.user_metadata["must_change_password"], json!(true));
    assert!(observed.user.email_confirmed_at.is_some(), "email confirmed at creation");
    let Observation::Ready { id: by_id, .. } = users.observe(&spec, Some(&created.id)).await.unwrap() else { panic!() };
    assert_eq!(by_id, created.id);
    assert_eq!(users.observe(&spec, Some("00000000-0000-0000-0000-000000000000")).await.unwrap(), Observation::Absent);

    // A second create is refused by the platform (one user per address).
    let e = users.create(&spec).await.expect_err("duplicate");
    assert!(matches!(e, ProviderError::Invalid { status: 422, .. }), "{e:?}");
    // The password is never readable back.
    assert!(!env.objects_json().await.to_string().contains("Tmp-password-1"));

    // A wrong key is unauthorized.
    let wrong = SupabaseAdminUsers(SupabaseAuthClient::new(&url, Secret::new("eyJwrong"), 10_000).unwrap());
    let e = wrong.observe(&spec, Some(&created.id)).await.expect_err("wrong key");
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
}

#[tokio::test]
async fn the_lookup_pages_past_the_first_page_and_a_lost_answer_is_found_again() {
    let env = Env::start(50).await;
    let (url, key) = project(&env).await;
    let client = SupabaseAuthClient::new(&url, key.clone(), 10_000).unwrap();
    // 150 other users first: the admin is on the second page of 100.
    for i in 0..150 {
        client.create_user(&format!("user{i}@acme.example"), &Secret::new("another-pass"), json!({})).await.unwrap();
    }
    let users = SupabaseAdminUsers(client);
    let spec = AdminUserSpec { email: "admin@acme.example".into(), password: Secret::new("Tmp-password-1") };
    env.fault(json!({"platform": "supabase", "operation": "createUser", "kind": "drop_response"})).await;
    let lost = users.create(&spec).await.expect_err("the answer was dropped");
    assert!(matches!(lost, ProviderError::Network { .. }), "{lost:?}");
    let Observation::Ready { observed, .. } = users.observe(&spec, None).await.unwrap() else {
        panic!("the created user was not found past the first page")
    };
    assert_eq!(observed.user.email.as_deref(), Some("admin@acme.example"));
    assert_eq!(env.objects("supabase_auth", "user").await, 151);
}
