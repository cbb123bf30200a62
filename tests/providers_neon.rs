//! The Neon client against the in-process emulator backed by a real
//! PostgreSQL: the project lifecycle, adoption, asynchronous operations,
//! every fault kind, and the connection URI opened with sqlx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use std::time::Duration;

use providers_common::*;
use winston::providers::neon::resources::*;
use winston::providers::{Applied, ExternalResource, Marker, Observation, ProviderError};

#[tokio::test]
async fn project_is_created_observed_adopted_used_and_deleted() {
    let env = Env::start(0).await;
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);

    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
    let created = res.create(&spec).await.unwrap();
    let Observation::Ready { id, observed, up_to_date } = res.observe(&spec, Some(&created.id)).await.unwrap() else {
        panic!("not ready")
    };
    assert_eq!(
        (id.as_str(), observed.name.as_str(), up_to_date),
        (created.id.as_str(), spec.marker.labelled_name().as_str(), true)
    );

    // A restarted controller without the id adopts the same project.
    let writes = env.mutations("neon").await;
    assert_eq!(res.observe(&spec, None).await.unwrap().id(), Some(created.id.as_str()));
    assert_eq!(env.mutations("neon").await, writes, "observing wrote to the platform");

    let uri = neon.connection_uri(&created.id, &spec.database_name, &spec.role_name).await.unwrap();
    assert_eq!(observed.connection_uri.as_ref(), Some(&uri), "Ready carries the connection URI");
    let user = query_user(uri.expose()).await;
    assert!(user.starts_with(&spec.role_name), "{user}");
    assert!(pg_role_exists(&user).await);

    assert_eq!(res.delete(&created.id, &spec).await.unwrap(), Applied::Done);
    assert_eq!(res.delete(&created.id, &spec).await.unwrap(), Applied::Done, "delete is repeatable");
    assert_eq!(res.observe(&spec, Some(&created.id)).await.unwrap(), Observation::Absent);
    assert!(!pg_role_exists(&user).await, "role survived project deletion");
    assert_eq!(env.objects("neon", "project").await, 0);
    assert_eq!(env.objects("neon", "database").await, 0);
}

#[tokio::test]
async fn project_follows_its_operations_and_its_role_drops_on_delete() {
    let env = Env::start(300).await;
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);

    let created = res.create(&spec).await.unwrap();
    let op = created.operation_id.clone().expect("project creation is asynchronous");
    match res.observe(&spec, None).await.unwrap() {
        Observation::InProgress { id, .. } => assert_eq!(id, created.id),
        other => panic!("expected InProgress, got {other:?}"),
    }
    let done = poll(|| async { neon.operation(&created.id, &op).await.unwrap() }, |o| o.is_terminal()).await;
    assert!(done.succeeded(), "{done:?}");
    let state = poll(
        || async { res.observe(&spec, None).await.unwrap() },
        |o| matches!(o, Observation::Ready { up_to_date: true, .. }),
    )
    .await;
    let Observation::Ready { observed, .. } = state else { panic!("{state:?}") };

    let uri = neon.connection_uri(&created.id, &spec.database_name, &spec.role_name).await.unwrap();
    assert_eq!(observed.connection_uri.as_ref(), Some(&uri), "Ready carries the connection URI");
    assert!(!format!("{uri:?}").contains("postgresql://"), "connection URI leaked through Debug");
    assert!(!format!("{observed:?}").contains("postgresql://"), "connection URI leaked through Debug");
    let user = query_user(uri.expose()).await;
    assert!(pg_role_exists(&user).await);

    assert_eq!(res.delete(&created.id, &spec).await.unwrap(), Applied::Done);
    assert!(!pg_role_exists(&user).await, "role survived project deletion");
    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
}

#[tokio::test]
async fn faults_are_classified_and_a_lost_answer_is_recovered_by_adoption() {
    let env = Env::start(0).await;
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);

    env.fault(serde_json::json!({"platform": "neon", "operation": "createProject", "kind": "locked"})).await;
    let e = res.create(&spec).await.unwrap_err();
    assert!(matches!(e, ProviderError::Locked { .. }) && e.is_retryable(), "{e}");

    env.fault(
        serde_json::json!({"platform": "neon", "operation": "listProjects", "kind": "server_error", "status": 503}),
    )
    .await;
    let e = res.observe(&spec, None).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("server_error", true), "{e}");

    env.fault(serde_json::json!({"platform": "neon", "operation": "listProjects", "kind": "rate_limit", "retry_after_secs": 1})).await;
    let e = res.observe(&spec, None).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{e}");

    // The platform creates the project but the answer is lost: the next
    // observe finds it by its marker, so no duplicate is made.
    env.fault(serde_json::json!({"platform": "neon", "operation": "createProject", "kind": "drop_response"})).await;
    let e = res.create(&spec).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let adopted = res.observe(&spec, None).await.unwrap();
    assert!(matches!(adopted, Observation::Ready { .. }), "{adopted:?}");
    assert_eq!(env.objects("neon", "project").await, 1);

    // Two projects under one marker: never guessed, reported as ambiguous.
    neon.create_project(&spec.marker.labelled_name(), &Default::default()).await.unwrap();
    let Observation::Ambiguous { ids } = res.observe(&spec, None).await.unwrap() else { panic!("not ambiguous") };
    assert_eq!(ids.len(), 2);
    for id in ids {
        res.delete(&id, &spec).await.unwrap();
    }
}

#[tokio::test]
async fn timeouts_bad_tokens_and_the_circuit_breaker() {
    let env = Env::start(0).await;
    let mut cfg = env.config();
    cfg.neon.timeout_ms = 300;
    let neon = winston::providers::Providers::new(&cfg).unwrap().neon;
    env.fault(serde_json::json!({"platform": "neon", "operation": "getProject", "kind": "delay", "delay_ms": 1500}))
        .await;
    let e = neon.get_project("p").await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("timeout", true), "{e}");

    let mut bad = env.config();
    bad.neon.token = winston::providers::Secret::new("napi-wrong-token-value");
    let neon_bad = winston::providers::Providers::new(&bad).unwrap().neon;
    let e = neon_bad.get_project("p").await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("unauthorized", false));
    assert!(!e.to_string().contains("wrong-token") && !format!("{e:?}").contains("wrong-token"));

    let mut c = env.config();
    c.neon.budget = Some(winston::providers::budget::BudgetConfig { breaker_threshold: 3, ..Default::default() });
    let neon = winston::providers::Providers::new(&c).unwrap().neon;
    env.fault(serde_json::json!({"platform": "neon", "kind": "server_error", "count": 3})).await;
    for _ in 0..3 {
        assert_eq!(neon.get_project("p").await.unwrap_err().category(), "server_error");
    }
    assert_eq!(neon.get_project("p").await.unwrap_err().category(), "circuit_open");
    assert!(neon.http().budget().circuit_open());
}

#[tokio::test]
async fn wire_shapes_match_the_v2_spec() {
    let env = Env::start(0).await;
    let path = |p: &str| format!("{}{p}", winston::emulator::NEON_PATH);
    let r = env
        .raw(reqwest::Method::POST, &path("/projects"))
        .json(&serde_json::json!({"project": {"name": "shape", "branch": {"database_name": "appdb"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["branch", "connection_uris", "databases", "endpoints", "operations", "project", "roles"]);
    assert_eq!(v["roles"][0]["name"], "appdb_owner", "role defaults to {{database_name}}_owner");
    assert!(v["roles"][0]["password"].is_string(), "password only in the create answer");
    assert!(v["databases"][0]["id"].is_u64());
    let params = &v["connection_uris"][0]["connection_parameters"];
    for k in ["database", "password", "role", "host", "pooler_host"] {
        assert!(params[k].is_string(), "connection_parameters.{k}");
    }
    assert!(v["branch"]["id"].as_str().unwrap().starts_with("br-"));
    assert!(v["endpoints"][0]["id"].as_str().unwrap().starts_with("ep-"));
    assert_eq!(v["endpoints"][0]["type"], "read_write");
    for op in v["operations"].as_array().unwrap() {
        for k in
            ["id", "project_id", "action", "status", "failures_count", "created_at", "updated_at", "total_duration_ms"]
        {
            assert!(op.get(k).is_some(), "operation.{k}");
        }
        assert_eq!(op["status"], "finished", "instant emulator");
    }
    let pid = v["project"]["id"].as_str().unwrap();

    let r = env
        .raw(reqwest::Method::GET, &path(&format!("/projects/{pid}/operations/op-missing")))
        .header("X-Request-ID", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["code"].is_string() && e["message"].is_string() && e["request_id"] == "req-42", "{e}");
    let r = env
        .raw(
            reqwest::Method::GET,
            &path(&format!("/projects/{pid}/connection_uri?database_name=appdb&role_name=appdb_owner")),
        )
        .send()
        .await
        .unwrap();
    let uri: serde_json::Value = r.json().await.unwrap();
    assert!(uri["uri"].as_str().unwrap().starts_with("postgresql://appdb_owner_"), "{uri}");
    let r = reqwest::Client::new().get(format!("{}{}", env.emu.base(), path("/projects"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

/// Issue 12, gap 1: a personal API key must name its organization on
/// project list and create. Without `WINSTON_NEON_ORG_ID` the client finds
/// the key's only organization; with it, it sends the configured one.
/// (Failed before: the first observe answered 400 `org_id is required`.)
#[tokio::test]
async fn a_personal_key_names_its_organization() {
    use winston::emulator::neon::{PERSONAL_ORG_ID, PERSONAL_TOKEN_PREFIX};
    let personal = format!("{PERSONAL_TOKEN_PREFIX}alice");
    let config = winston::emulator::EmulatorConfig {
        tokens: vec![winston::emulator::DEFAULT_TOKEN.into(), personal.clone()],
        postgres_url: Some(pg().url("postgres")),
        ..Default::default()
    };
    let env = Env::with_config(config).await;
    let mut cfg = env.config();
    cfg.neon.token = winston::providers::Secret::new(personal.clone());
    cfg.neon_org_id = None;
    let neon = winston::providers::Providers::new(&cfg).unwrap().neon;
    let res = NeonProjects(neon.clone());
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);

    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
    assert_eq!(neon.org_id().as_deref(), Some(PERSONAL_ORG_ID), "discovered once, then remembered");
    let created = res.create(&spec).await.unwrap();
    let Observation::Ready { observed, .. } = res.observe(&spec, None).await.unwrap() else { panic!("not ready") };
    assert_eq!(observed.org_id.as_deref(), Some(PERSONAL_ORG_ID));

    // Configured: sent as is, nothing discovered.
    cfg.neon_org_id = Some(PERSONAL_ORG_ID.into());
    let configured = NeonProjects(winston::providers::Providers::new(&cfg).unwrap().neon);
    assert_eq!(configured.observe(&spec, None).await.unwrap().id(), Some(created.id.as_str()));

    // The platform's own answer without it.
    let r = reqwest::Client::new()
        .get(format!("{}{}/projects", env.emu.base(), winston::emulator::NEON_PATH))
        .bearer_auth(&personal)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["message"], "org_id is required", "{e}");
    res.delete(&created.id, &spec).await.unwrap();
}

/// Issue 12, gap 2: Neon answers a delete of something already gone with
/// 204 and no body; the client reads that as gone and decodes nothing.
/// (Failed before: the second delete reported a deletion.)
#[tokio::test]
async fn a_repeated_delete_answers_204_and_reads_as_gone() {
    let env = Env::start(0).await;
    let neon = env.providers().neon;
    let created = neon.create_project(&Marker::new(&uid()).name(), &Default::default()).await.unwrap();
    let id = created.project.id;
    assert!(neon.delete_project(&id).await.unwrap(), "the first delete deletes");
    assert!(!neon.delete_project(&id).await.unwrap(), "the second finds it gone");

    let r = env
        .raw(reqwest::Method::DELETE, &format!("{}/projects/{id}", winston::emulator::NEON_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty(), "204 has no body");
}

/// Issue 12, gap 3: a `failed` operation is retried by Neon, so the client
/// keeps waiting through it. (Failed before: create reported no pending
/// operation and observe said Ready while the operations were failed.)
#[tokio::test]
async fn a_failed_operation_is_waited_through_until_neon_retries_it() {
    let env = Env::start(800).await;
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);
    env.fault(serde_json::json!({"platform": "neon", "kind": "fail_deployment"})).await;

    let created = res.create(&spec).await.unwrap();
    let op_id = created.operation_id.clone().expect("a failed operation is still pending");
    let op = neon.operation(&created.id, &op_id).await.unwrap();
    assert_eq!((op.status.as_str(), op.is_terminal()), ("failed", false), "{op:?}");
    assert!(matches!(res.observe(&spec, None).await.unwrap(), Observation::InProgress { .. }));

    let statuses = std::sync::Mutex::new(Vec::new());
    let done = poll(
        || async {
            let o = neon.operation(&created.id, &op_id).await.unwrap();
            statuses.lock().unwrap().push(o.status.clone());
            o
        },
        |o| o.is_terminal(),
    )
    .await;
    assert!(done.succeeded() && done.failures_count == 1, "{done:?}");
    assert!(statuses.lock().unwrap().iter().any(|s| s == "running"), "retried after failing");
    assert!(matches!(res.observe(&spec, None).await.unwrap(), Observation::Ready { .. }));
    res.delete(&created.id, &spec).await.unwrap();
}

/// Issue 12, Neon delete atomicity: a caller that gives up mid-request does
/// not stop the delete; the real role is dropped and the delete counted.
/// (Failed before: the dropped request future never deleted the project.)
#[tokio::test]
async fn a_delete_finishes_when_the_caller_disconnects() {
    let env = Env::start(0).await;
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);
    let created = res.create(&spec).await.unwrap();
    let uri = neon.connection_uri(&created.id, &spec.database_name, &spec.role_name).await.unwrap();
    let user = query_user(uri.expose()).await;
    let writes = env.mutations("neon").await;

    let mut cfg = env.config();
    cfg.neon.timeout_ms = 300;
    let impatient = winston::providers::Providers::new(&cfg).unwrap().neon;
    env.fault(serde_json::json!({"platform": "neon", "operation": "deleteProject", "kind": "delay", "delay_ms": 1000}))
        .await;
    let e = impatient.delete_project(&created.id).await.unwrap_err();
    assert_eq!(e.category(), "timeout", "{e}");

    poll(|| async { env.objects("neon", "project").await }, |n| *n == 0).await;
    assert!(!pg_role_exists(&user).await, "role survived the abandoned delete");
    assert_eq!(env.mutations("neon").await, writes + 1, "the delete was counted");
}

/// Two instances whose UIDs share the first 12 hex digits share the short
/// name; the name carries the full marker, which alone tells their projects
/// apart. A project named by hand with the short name only is never
/// adopted nor deleted.
#[tokio::test]
async fn colliding_short_names_adopt_and_delete_only_the_marked_project() {
    let env = Env::start(0).await;
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let a = NeonProjectSpec::new(Marker::new("3f2504e0-4f89-11d3-9a0c-0305e82c3301"), "aws-us-east-2", 17);
    let b = NeonProjectSpec::new(Marker::new("3f2504e0-4f89-41d3-8a0c-0305e82c3302"), "aws-us-east-2", 17);
    assert_eq!(a.marker.name(), b.marker.name());
    let by_hand = neon.create_project(&a.marker.name(), &Default::default()).await.unwrap().project.id;
    assert_eq!(res.observe(&a, None).await.unwrap(), Observation::Absent, "an unmarked project was adopted");
    let ida = res.create(&a).await.unwrap().id;
    assert_eq!(res.observe(&b, None).await.unwrap(), Observation::Absent, "b adopted a's project");
    let idb = res.create(&b).await.unwrap().id;
    for (spec, want) in [(&a, &ida), (&b, &idb)] {
        let settled = |o: &Observation<_>| !matches!(o, Observation::InProgress { .. });
        let got = poll(|| async { res.observe(spec, None).await.unwrap() }, settled).await;
        assert_eq!(got.id(), Some(want.as_str()), "{got:?}");
    }
    // Teardown deletes what the search finds: only b's project goes.
    let found = res.observe(&b, None).await.unwrap();
    res.delete(found.id().unwrap(), &b).await.unwrap();
    let left: Vec<String> = env.objects_json().await["neon"]["objects"]["project"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert!(left.contains(&ida) && left.contains(&by_hand) && !left.contains(&idb), "{left:?}");
}

/// Neon's project list may lag a moment behind a create (eventual
/// consistency): a create whose answer was lost is not found by marker at
/// once, and is adopted (not duplicated) once the list shows it.
#[tokio::test]
async fn a_lost_create_is_adopted_once_the_list_catches_up() {
    let config = winston::emulator::EmulatorConfig {
        list_lag_ms: 600,
        postgres_url: Some(pg().url("postgres")),
        ..winston::emulator::EmulatorConfig::default()
    };
    let env = Env::with_config(config).await;
    let res = NeonProjects(env.providers().neon);
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);
    env.fault(serde_json::json!({"platform": "neon", "operation": "createProject", "kind": "drop_response"})).await;
    assert!(res.create(&spec).await.is_err());
    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent, "listed before the lag passed");
    let settled = |o: &Observation<_>| matches!(o, Observation::Ready { .. });
    let adopted = poll(|| async { res.observe(&spec, None).await.unwrap() }, settled).await;
    assert!(adopted.id().is_some());
    assert_eq!(env.objects("neon", "project").await, 1);
}

/// Issue 12, Neon 423: a mutation of a project while one of its operations
/// still runs is refused with 423 Locked (no fault armed), classified as
/// retryable, and the caller's retry deletes the project once the creation
/// finished. (Failed before: the emulator deleted a project mid-creation.)
#[tokio::test]
async fn a_delete_beside_a_running_operation_is_locked_then_converges() {
    let env = Env::start(1500).await;
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);
    let created = res.create(&spec).await.unwrap();
    let e = res.delete(&created.id, &spec).await.unwrap_err();
    assert!(matches!(e, ProviderError::Locked { .. }) && e.is_retryable(), "{e:?}");
    assert_eq!(env.objects("neon", "project").await, 1, "the locked delete deleted");
    let deleted =
        poll(|| async { res.delete(&created.id, &spec).await }, |r| !matches!(r, Err(ProviderError::Locked { .. })))
            .await;
    assert_eq!(deleted.unwrap(), Applied::Done);
    assert_eq!(env.objects("neon", "project").await, 0, "the retried delete deleted");
}

/// With a database pool (as the provisioning benchmark runs it), projects
/// claim the databases made at start and, once the pool is empty, get new
/// ones: either way the connection URI opens an empty database of that name
/// owned by the project's role, and a deleted project's database is gone.
#[tokio::test]
async fn pooled_databases_are_the_projects_own_and_the_pool_runs_dry_gracefully() {
    let config = winston::emulator::EmulatorConfig {
        postgres_url: Some(pg().url("postgres")),
        database_pool: 2,
        limits: winston::emulator::limits::PlatformLimits::none(),
        ..Default::default()
    };
    let env = Env::with_config(config).await;
    assert_eq!(env.emu.emulator.databases.len(), 2);
    let neon = env.providers().neon;
    let res = NeonProjects(neon.clone());
    let admin = sqlx::PgPool::connect(&pg().url("postgres")).await.unwrap();
    let mut made = Vec::new();
    for _ in 0..3 {
        let spec = NeonProjectSpec::new(Marker::new(&uid()), "aws-us-east-2", 17);
        let created = res.create(&spec).await.unwrap();
        let uri = neon.connection_uri(&created.id, &spec.database_name, &spec.role_name).await.unwrap();
        let db = sqlx::PgPool::connect(uri.expose()).await.unwrap();
        let (name, owner, user, tables): (String, String, String, i64) = sqlx::query_as(
            "SELECT current_database()::text, pg_get_userbyid(d.datdba)::text, current_user::text,
                    (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')
             FROM pg_database d WHERE d.datname = current_database()",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!((owner.as_str(), tables), (user.as_str(), 0), "database {name} is the role's and empty");
        assert!(name.starts_with(&spec.database_name), "{name}");
        sqlx::query("CREATE TABLE mine (id int)").execute(&db).await.unwrap();
        db.close().await;
        made.push((created.id, spec, name));
    }
    assert!(env.emu.emulator.databases.is_empty(), "two claimed from the pool, the third created");

    for (id, spec, name) in made {
        assert_eq!(res.delete(&id, &spec).await.unwrap(), Applied::Done);
        let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(left, 0, "database {name} survived its project");
    }
}

/// Audit: the emulator created a project in `mars-north-1`; Neon refuses a
/// region id it does not list with 400, which Winston must not retry.
#[tokio::test]
async fn an_unknown_region_is_refused_like_neon_does() {
    let env = Env::start(0).await;
    let res = NeonProjects(env.providers().neon);
    let spec = NeonProjectSpec::new(Marker::new(&uid()), "mars-north-1", 17);
    let e = res.create(&spec).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid { status: 400, .. }), "{e:?}");
    assert!(!e.is_retryable() && e.to_string().contains("mars-north-1"), "{e}");
    assert_eq!(env.objects("neon", "project").await, 0);
}
