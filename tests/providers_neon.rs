//! The Neon client against the in-process emulator backed by a real
//! PostgreSQL: lifecycle, adoption, asynchronous operations, every fault
//! kind, and the connection URI opened with sqlx.
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
        (created.id.as_str(), spec.marker.name().as_str(), true)
    );

    // A restarted controller without the id adopts the same project.
    let writes = env.mutations("neon").await;
    assert_eq!(res.observe(&spec, None).await.unwrap().id(), Some(created.id.as_str()));
    assert_eq!(env.mutations("neon").await, writes, "observing wrote to the platform");

    let branch = neon.find_branches(&created.id, "main").await.unwrap().pop().unwrap();
    let uri = neon.connection_uri(&created.id, &branch.id, &spec.database_name, &spec.role_name).await.unwrap();
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
async fn branch_role_and_database_follow_their_operations_and_drop_on_delete() {
    let env = Env::start(300).await;
    let neon = env.providers().neon;
    let project = neon.create_project("shared", &Default::default()).await.unwrap().object.id;
    let marker = Marker::new(&uid());
    let branches = NeonBranches(neon.clone());
    let bspec = NeonBranchSpec { project_id: project.clone(), marker: marker.clone() };

    let created = branches.create(&bspec).await.unwrap();
    let op = created.operation_id.clone().expect("branch creation is asynchronous");
    match branches.observe(&bspec, None).await.unwrap() {
        Observation::InProgress { id, .. } => assert_eq!(id, created.id),
        other => panic!("expected InProgress, got {other:?}"),
    }
    let done = poll(|| async { neon.operation(&project, &op).await.unwrap() }, |o| o.is_terminal()).await;
    assert!(done.succeeded(), "{done:?}");
    let state =
        poll(|| async { branches.observe(&bspec, None).await.unwrap() }, |o| matches!(o, Observation::Ready { .. }))
            .await;
    let Observation::Ready { observed, up_to_date: true, .. } = state else { panic!("{state:?}") };
    assert_eq!(observed.endpoint.as_ref().unwrap().kind, "read_write");

    let rspec = NeonRoleSpec { project_id: project.clone(), branch_id: created.id.clone(), name: marker.ident() };
    let dspec = NeonDatabaseSpec {
        project_id: project.clone(),
        branch_id: created.id.clone(),
        name: marker.ident(),
        owner_name: marker.ident(),
    };
    let roles = NeonRoles(neon.clone());
    let dbs = NeonDatabases(neon.clone());
    assert_eq!(roles.observe(&rspec, None).await.unwrap(), Observation::Absent);
    roles.create(&rspec).await.unwrap();
    dbs.create(&dspec).await.unwrap();
    poll(
        || async { dbs.observe(&dspec, None).await.unwrap() },
        |o| matches!(o, Observation::Ready { up_to_date: true, .. }),
    )
    .await;

    let uri = neon.connection_uri(&project, &created.id, &dspec.name, &rspec.name).await.unwrap();
    assert!(!format!("{uri:?}").contains("postgresql://"), "connection URI leaked through Debug");
    let user = query_user(uri.expose()).await;
    assert!(pg_role_exists(&user).await);

    match branches.delete(&created.id, &bspec).await.unwrap() {
        Applied::InProgress { operation_id } => {
            poll(|| async { neon.operation(&project, &operation_id).await.unwrap() }, |o| o.is_terminal()).await;
        }
        Applied::Done => {}
    }
    assert_eq!(branches.delete(&created.id, &bspec).await.unwrap(), Applied::Done, "204 on a deleted branch");
    assert!(!pg_role_exists(&user).await, "role survived branch deletion");
    assert_eq!(branches.observe(&bspec, None).await.unwrap(), Observation::Absent);
    neon.delete_project(&project).await.unwrap();
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
    neon.create_project(&spec.marker.name(), &Default::default()).await.unwrap();
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
