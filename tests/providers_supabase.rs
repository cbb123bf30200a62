//! The Supabase client against the in-process emulator: a project polled
//! from COMING_UP to ACTIVE_HEALTHY with its keys, health and a connectable
//! pooler endpoint, only the current create body on the wire (the
//! deprecated one refused), a null key in the list, adoption and every
//! fault kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use std::time::Duration;

use providers_common::*;
use serde_json::{Value, json};
use winston::emulator::SUPABASE_PATH;
use winston::providers::supabase::*;
use winston::providers::{Applied, ExternalResource, Marker, Observation, Providers, Secret};

fn spec(marker: &Marker) -> SupabaseProjectSpec {
    SupabaseProjectSpec {
        marker: marker.clone(),
        organization: "acme-org".into(),
        region: "eu-central-1".into(),
        db_pass: Secret::new("db-pass-very-secret"),
        instance_size: Some("micro".into()),
    }
}

async fn settle(res: &SupabaseProjects, spec: &SupabaseProjectSpec) -> Observation<SupabaseProjectState> {
    poll(|| async { res.observe(spec, None).await.unwrap() }, |o| !matches!(o, Observation::InProgress { .. })).await
}

#[tokio::test]
async fn project_comes_up_healthy_with_keys_is_adopted_and_deleted() {
    let env = Env::start(300).await;
    let client = env.providers().supabase;
    let res = SupabaseProjects(client.clone());
    let spec = spec(&Marker::new(&uid()));

    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
    let created = res.create(&spec).await.unwrap();
    assert_eq!(created.id.len(), 20);
    assert!(created.id.chars().all(|c| c.is_ascii_lowercase()), "{}", created.id);
    let Observation::InProgress { id, .. } = res.observe(&spec, Some(&created.id)).await.unwrap() else { panic!() };
    assert_eq!(id, created.id);
    let health = client.health(&id, &["db", "auth", "rest"]).await.unwrap();
    assert!(health.iter().all(|h| h.status == "COMING_UP") && health.len() == 3, "{health:?}");

    let Observation::Ready { id, observed, up_to_date: true } = settle(&res, &spec).await else { panic!() };
    assert_eq!(id, created.id, "adopted by name within the organization");
    assert_eq!(observed.api_url, format!("https://{id}.supabase.co"));
    assert!(observed.anon_key.as_ref().unwrap().expose().starts_with("eyJ"));
    assert!(observed.service_role_key.is_some());
    assert!(!format!("{observed:?}").contains("eyJ"), "keys leaked through Debug");
    assert_eq!(observed.project.database.as_ref().unwrap().host, format!("db.{id}.supabase.co"));
    let health = client.health(&id, &["db", "auth", "rest"]).await.unwrap();
    assert!(health.iter().all(|h| h.status == "ACTIVE_HEALTHY"), "{health:?}");

    // The pooler endpoint the platform reports opens the project's database
    // with the password chosen at create.
    let pooler = observed.pooler.clone().expect("a PRIMARY pooler endpoint");
    assert_eq!(pooler.db_user, format!("postgres.{id}"));
    let db = sqlx::PgPool::connect(&pooler.url(spec.db_pass.expose())).await.unwrap();
    let (who,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&db).await.unwrap();
    db.close().await;
    assert_eq!(who, pooler.db_user);

    // Another organization's project with the same name is not ours.
    let mut other_org = spec.clone();
    other_org.organization = "someone-else".into();
    assert_eq!(res.observe(&other_org, None).await.unwrap(), Observation::Absent);
    let mut moved = spec.clone();
    moved.region = "us-east-1".into();
    assert!(matches!(res.observe(&moved, None).await.unwrap(), Observation::Ready { up_to_date: false, .. }));
    assert!(!res.update(&id, &moved).await.unwrap_err().is_retryable());

    assert_eq!(res.delete(&id, &spec).await.unwrap(), Applied::Done);
    assert_eq!(res.delete(&id, &spec).await.unwrap(), Applied::Done, "delete is repeatable");
    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
    assert_eq!(env.objects("supabase", "project").await, 0);
    assert!(!pg_role_exists(&pooler.db_user).await, "the project's role outlived it");
}

/// Fails on the old client: it sent `organization_id` and `region` beside
/// the current fields, which the emulator refuses like deprecated fields.
#[tokio::test]
async fn create_sends_only_the_current_fields() {
    let env = Env::start(0).await;
    let res = SupabaseProjects(env.providers().supabase);
    let spec = spec(&Marker::new(&uid()));
    let created = res.create(&spec).await.unwrap();
    let project = res.0.get_project(&created.id).await.unwrap().unwrap();
    assert_eq!(
        (project.organization_slug.as_deref(), project.region.as_str()),
        (Some("acme-org"), "eu-central-1"),
        "region_selection {{type: specific}} carries the region"
    );
}

/// Fails on the old client: one key with `api_key: null` (a key a scoped
/// token may not read) broke decoding of the whole list.
#[tokio::test]
async fn a_null_api_key_does_not_break_the_list() {
    let env = Env::start(0).await;
    let client = env.providers().supabase;
    let p = client
        .create_project(&format!("k-{}", uid()), "acme-org", "us-east-1", &Secret::new("pw"), None)
        .await
        .unwrap();
    let keys = client.api_keys(&p.reference).await.unwrap();
    let null: Vec<&str> = keys.iter().filter(|k| k.api_key.is_none()).map(|k| k.name.as_str()).collect();
    assert_eq!(null, ["scoped"]);
    assert!(keys.iter().find(|k| k.name == "anon").unwrap().api_key.as_ref().unwrap().expose().starts_with("eyJ"));
}

#[tokio::test]
async fn the_current_create_body_and_the_wire_shapes() {
    let env = Env::start(0).await;
    let post = |body: Value| env.raw(reqwest::Method::POST, &format!("{SUPABASE_PATH}/v1/projects")).json(&body).send();

    // The deprecated fields (organization_id, region, plan) are refused, and
    // organization_slug is required (V1CreateProjectBody).
    for old in [
        json!({"name": "old", "db_pass": "p", "organization_id": "org-old", "region": "us-west-1", "plan": "free"}),
        json!({"name": "old", "db_pass": "p", "organization_slug": "o", "organization_id": "o"}),
        json!({"name": "old", "db_pass": "p", "organization_slug": "o", "region": "us-west-1"}),
        json!({"name": "old", "db_pass": "p", "organization_slug": "o", "surprise": 1}),
    ] {
        let r = post(old.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{old}");
    }

    // The current spec: organization_slug + region_selection.
    let r = post(json!({"name": "new", "db_pass": "p", "organization_slug": "org-new",
        "region_selection": {"type": "smartGroup", "code": "emea"}, "desired_instance_size": "small"}))
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["created_at", "id", "name", "organization_id", "organization_slug", "ref", "region", "status"]);
    assert_eq!((v["status"].as_str(), v["id"] == v["ref"]), (Some("COMING_UP"), true), "ready at once");
    assert_eq!((v["organization_slug"].as_str(), v["region"].as_str()), (Some("org-new"), Some("eu-central-1")));
    let reference = v["ref"].as_str().unwrap().to_string();

    let r = post(json!({"name": "both", "db_pass": "p", "organization_slug": "o", "region": "us-east-1",
        "region_selection": {"type": "specific", "code": "us-east-1"}}))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("region"));
    assert_eq!(post(json!({"name": "no-org", "db_pass": "p"})).await.unwrap().status(), 400);

    let masked: Value = env.get_json(&format!("{SUPABASE_PATH}/v1/projects/{reference}/api-keys")).await;
    let names: Vec<(&str, &str)> =
        masked.as_array().unwrap().iter().map(|k| (k["name"].as_str().unwrap(), k["type"].as_str().unwrap())).collect();
    assert_eq!(
        names,
        [
            ("anon", "legacy"),
            ("service_role", "legacy"),
            ("default", "publishable"),
            ("default", "secret"),
            ("scoped", "secret")
        ]
    );
    assert!(masked[3]["api_key"].as_str().unwrap().ends_with("····"), "secret key not masked without reveal");
    assert!(masked[4]["api_key"].is_null(), "a key the token may not read is null");
    let revealed = env.providers().supabase.api_keys(&reference).await.unwrap();
    let secret = revealed[3].api_key.as_ref().unwrap().expose();
    assert!(secret.starts_with("sb_secret_") && !secret.contains('·'));

    let pooler: Value = env.get_json(&format!("{SUPABASE_PATH}/v1/projects/{reference}/config/database/pooler")).await;
    assert_eq!(pooler.as_array().unwrap().len(), 1);
    for field in ["identifier", "database_type", "db_user", "db_host", "db_port", "db_name", "connection_string"] {
        assert!(!pooler[0][field].is_null(), "{field} missing: {pooler}");
    }
    assert!(pooler[0]["connection_string"].as_str().unwrap().contains("[YOUR-PASSWORD]"));

    let r =
        env.raw(reqwest::Method::GET, &format!("{SUPABASE_PATH}/v1/projects/{reference}/health")).send().await.unwrap();
    assert_eq!(r.status(), 400, "services is required");
    let r = env.raw(reqwest::Method::GET, &format!("{SUPABASE_PATH}/v1/projects")).send().await.unwrap();
    for h in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"] {
        assert!(r.headers().contains_key(h), "missing {h}");
    }
    assert_eq!(r.json::<Value>().await.unwrap().as_array().unwrap().len(), 1);
    let del: Value = env
        .raw(reqwest::Method::DELETE, &format!("{SUPABASE_PATH}/v1/projects/{reference}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(del["id"].is_u64() && del["ref"] == reference.as_str() && del["name"] == "new", "{del}");
}

#[tokio::test]
async fn faults_are_classified_and_recovered() {
    let env = Env::start(0).await;
    let client = env.providers().supabase;
    let res = SupabaseProjects(client.clone());
    let spec = spec(&Marker::new(&uid()));

    env.fault(
        json!({"platform": "supabase", "operation": "createProject", "kind": "rate_limit", "retry_after_secs": 1}),
    )
    .await;
    let e = res.create(&spec).await.unwrap_err();
    assert_eq!((e.category(), e.retry_after()), ("rate_limited", Some(Duration::from_secs(1))), "{e}");
    env.fault(json!({"platform": "supabase", "operation": "listProjects", "kind": "server_error", "status": 503}))
        .await;
    assert_eq!(res.observe(&spec, None).await.unwrap_err().category(), "server_error");

    // Created, answer lost: found again by name, no duplicate.
    env.fault(json!({"platform": "supabase", "operation": "createProject", "kind": "drop_response"})).await;
    assert!(res.create(&spec).await.unwrap_err().is_retryable());
    let Observation::Ready { id, .. } = settle(&res, &spec).await else { panic!() };
    assert_eq!(env.objects("supabase", "project").await, 1);
    client
        .create_project(&spec.marker.labelled_name(), &spec.organization, "us-east-1", &spec.db_pass, None)
        .await
        .unwrap();
    let Observation::Ambiguous { ids } = res.observe(&spec, None).await.unwrap() else { panic!() };
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id));

    // A project that fails to initialise is reported as Failed.
    let broken = self::spec(&Marker::new(&uid()));
    env.fault(json!({"platform": "supabase", "kind": "fail_deployment"})).await;
    let created = res.create(&broken).await.unwrap();
    let settled = |o: &Observation<_>| !matches!(o, Observation::InProgress { .. });
    let observed = poll(|| async { res.observe(&broken, Some(&created.id)).await.unwrap() }, settled).await;
    let Observation::Failed { reason, .. } = observed else { panic!("{observed:?}") };
    assert!(reason.contains("INIT_FAILED"), "{reason}");

    let mut cfg = env.config();
    cfg.supabase.timeout_ms = 300;
    env.fault(json!({"platform": "supabase", "operation": "getProject", "kind": "delay", "delay_ms": 1500})).await;
    assert_eq!(Providers::new(&cfg).unwrap().supabase.get_project(&id).await.unwrap_err().category(), "timeout");
    let mut bad = env.config();
    bad.supabase.token = Secret::new("sbp_wrong-token-value");
    let e = Providers::new(&bad).unwrap().supabase.get_project(&id).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("unauthorized", false), "{e}");
    assert!(!format!("{e} {e:?}").contains("wrong-token"));
}

/// Two instances whose UIDs share the first 12 hex digits share the short
/// name; the project name carries the full marker, which alone tells them
/// apart. A project named by hand with the short name only is never adopted.
#[tokio::test]
async fn colliding_short_names_adopt_and_delete_only_the_marked_project() {
    let env = Env::start(0).await;
    let client = env.providers().supabase;
    let res = SupabaseProjects(client.clone());
    let a = spec(&Marker::new("3f2504e0-4f89-11d3-9a0c-0305e82c3301"));
    let b = spec(&Marker::new("3f2504e0-4f89-41d3-8a0c-0305e82c3302"));
    let by_hand = client
        .create_project(&a.marker.name(), &a.organization, "us-east-1", &a.db_pass, None)
        .await
        .unwrap()
        .reference;
    assert_eq!(res.observe(&a, None).await.unwrap(), Observation::Absent, "an unmarked project was adopted");
    let ida = res.create(&a).await.unwrap().id;
    assert_eq!(res.observe(&b, None).await.unwrap(), Observation::Absent, "b adopted a's project");
    let idb = res.create(&b).await.unwrap().id;
    for (spec, want) in [(&a, &ida), (&b, &idb)] {
        let got = settle(&res, spec).await;
        assert_eq!(got.id(), Some(want.as_str()), "{got:?}");
    }
    // Teardown deletes what the search finds: only b's project goes.
    let found = res.observe(&b, None).await.unwrap();
    res.delete(found.id().unwrap(), &b).await.unwrap();
    let left: Vec<String> = env.objects_json().await["supabase"]["objects"]["project"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert!(left.contains(&ida) && left.contains(&by_hand) && !left.contains(&idb), "{left:?}");
}

/// A project passing through RESTARTING (or UNKNOWN) after COMING_UP is
/// still coming up: observed InProgress, never Failed, then Ready.
#[tokio::test]
async fn restarting_and_unknown_are_waited_through() {
    let env = Env::with_config(winston::emulator::EmulatorConfig {
        supabase_coming_up_ms: Some(800),
        postgres_url: Some(pg().url("postgres")),
        ..winston::emulator::EmulatorConfig::default()
    })
    .await;
    let res = SupabaseProjects(env.providers().supabase);
    for state in ["RESTARTING", "UNKNOWN"] {
        let spec = spec(&Marker::new(&uid()));
        env.fault(json!({"platform": "supabase", "kind": "fail_deployment", "state": state})).await;
        let id = res.create(&spec).await.unwrap().id;
        let seen = poll(
            || async { env.get_json(&format!("{SUPABASE_PATH}/v1/projects/{id}")).await["status"].clone() },
            |s| s != "COMING_UP",
        )
        .await;
        assert_eq!(seen, state);
        let o = res.observe(&spec, Some(&id)).await.unwrap();
        assert!(matches!(o, Observation::InProgress { .. }), "{state}: {o:?}");
        let Observation::Ready { .. } = settle(&res, &spec).await else { panic!("{state} never became ready") };
    }
}

/// Audit: the emulator created a project in `mars-north-1`; Supabase
/// refuses a region code it does not offer with 400, not to be retried.
#[tokio::test]
async fn an_unknown_region_is_refused_like_supabase_does() {
    let env = Env::start(0).await;
    let res = SupabaseProjects(env.providers().supabase);
    let mut spec = spec(&Marker::new(&uid()));
    spec.region = "mars-north-1".into();
    let e = res.create(&spec).await.unwrap_err();
    assert!(matches!(e, winston::providers::ProviderError::Invalid { status: 400, .. }), "{e:?}");
    assert!(!e.is_retryable() && e.to_string().contains("mars-north-1"), "{e}");
    assert_eq!(env.objects("supabase", "project").await, 0);
}
