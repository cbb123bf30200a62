//! The Railway client against the in-process emulator: project and service
//! lifecycle with deployments polled to SUCCESS, variable drift, adoption,
//! the GraphQL wire shape, and every fault kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use std::collections::BTreeMap;
use std::time::Duration;

use providers_common::*;
use serde_json::json;
use winston::providers::railway::resources::*;
use winston::providers::railway::{DeploymentPhase, RailwayClient};
use winston::providers::{Applied, ExternalResource, Marker, Observation, ProviderError};

async fn project(client: &RailwayClient, marker: &Marker) -> (String, String) {
    let res = RailwayProjects(client.clone());
    let spec = RailwayProjectSpec { marker: marker.clone() };
    let id = res.create(&spec).await.unwrap().id;
    let Observation::Ready { observed, .. } = res.observe(&spec, Some(&id)).await.unwrap() else { panic!() };
    (id, observed.environment_id)
}

fn service_spec(project_id: &str, environment_id: &str, marker: &Marker) -> RailwayServiceSpec {
    RailwayServiceSpec {
        project_id: project_id.into(),
        environment_id: environment_id.into(),
        marker: marker.clone(),
        image: "ghcr.io/acme/agent:1".into(),
        variables: BTreeMap::from([("DATABASE_URL".into(), "postgresql://x".into()), ("PLAN".into(), "free".into())]),
        target_port: Some(8080),
    }
}

async fn settle(res: &RailwayServices, spec: &RailwayServiceSpec) -> Observation<RailwayServiceState> {
    poll(|| async { res.observe(spec, None).await.unwrap() }, |o| !matches!(o, Observation::InProgress { .. })).await
}

#[tokio::test]
async fn project_and_service_converge_adopt_drift_and_delete() {
    let env = Env::start(300).await;
    let client = env.providers().railway;
    let marker = Marker::new(&uid());
    let projects = RailwayProjects(client.clone());
    let pspec = RailwayProjectSpec { marker: marker.clone() };

    assert_eq!(projects.observe(&pspec, None).await.unwrap(), Observation::Absent);
    let (pid, env_id) = project(&client, &marker).await;
    let writes = env.mutations("railway").await;
    let Observation::Ready { id, observed, up_to_date: true } = projects.observe(&pspec, None).await.unwrap() else {
        panic!("project not adopted")
    };
    assert_eq!((id.as_str(), observed.project.name.as_str()), (pid.as_str(), marker.name().as_str()));
    assert_eq!(observed.project.description.as_deref(), Some(marker.value().as_str()));

    let services = RailwayServices(client.clone());
    let spec = service_spec(&pid, &env_id, &marker);
    assert_eq!(services.observe(&spec, None).await.unwrap(), Observation::Absent);
    let created = services.create(&spec).await.unwrap();
    assert_eq!(created.operation_id, None, "Railway deploys a new service by itself");
    match services.observe(&spec, Some(&created.id)).await.unwrap() {
        Observation::InProgress { id, .. } => assert_eq!(id, created.id),
        other => panic!("expected InProgress, got {other:?}"),
    }
    let Observation::Ready { id, observed, up_to_date: true } = settle(&services, &spec).await else { panic!() };
    assert_eq!(id, created.id, "adopted by marker");
    let deployment = observed.deployment.clone().expect("the first deployment").id;
    let d = client.deployment(&deployment).await.unwrap().unwrap();
    assert_eq!((d.status.as_str(), d.phase()), ("SUCCESS", DeploymentPhase::Succeeded));
    let url = observed.url.unwrap();
    assert!(url.starts_with("https://") && url.ends_with(".up.railway.app"), "{url}");
    assert_eq!(client.variables(&pid, &env_id, &id).await.unwrap(), spec.variables);
    assert!(env.mutations("railway").await > writes);
    let steady = env.mutations("railway").await;
    settle(&services, &spec).await;
    assert_eq!(env.mutations("railway").await, steady, "observing wrote to the platform");

    // Drift: a changed variable is written with skipDeploys, then one deploy.
    let mut changed = spec.clone();
    changed.variables.insert("PLAN".into(), "growth".into());
    let Observation::Ready { up_to_date: false, .. } = services.observe(&changed, Some(&id)).await.unwrap() else {
        panic!("drift not seen")
    };
    let Applied::InProgress { operation_id } = services.update(&id, &changed).await.unwrap() else { panic!() };
    assert_ne!(operation_id, deployment);
    let Observation::Ready { up_to_date: true, .. } = settle(&services, &changed).await else { panic!() };
    assert_eq!(env.objects("railway", "deployment").await, 1, "old deployments are replaced");

    assert_eq!(services.delete(&id, &spec).await.unwrap(), Applied::Done);
    assert_eq!(services.delete(&id, &spec).await.unwrap(), Applied::Done, "delete is repeatable");
    assert_eq!(services.observe(&spec, Some(&id)).await.unwrap(), Observation::Absent);
    assert_eq!(env.objects("railway", "service").await, 0);
    assert_eq!(env.objects("railway", "domain").await, 0);
    projects.delete(&pid, &pspec).await.unwrap();
    assert_eq!(projects.observe(&pspec, None).await.unwrap(), Observation::Absent);
}

#[tokio::test]
async fn graphql_wire_shape_matches_the_schema() {
    let env = Env::start(0).await;
    let raw = |q: &str, v: serde_json::Value| {
        env.raw(reqwest::Method::POST, winston::emulator::RAILWAY_PATH).json(&json!({"query": q, "variables": v}))
    };
    let r: serde_json::Value = raw(
        "mutation projectCreate($input: ProjectCreateInput!) { p: projectCreate(input: $input) { id name environments { edges { node { id name } } } } }",
        json!({"input": {"name": "shape"}}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let p = &r["data"]["p"];
    assert_eq!(p.as_object().unwrap().keys().collect::<Vec<_>>(), ["environments", "id", "name"]);
    assert_eq!(p["environments"]["edges"][0]["node"]["name"], "production");
    let pid = p["id"].as_str().unwrap();
    let env_id = p["environments"]["edges"][0]["node"]["id"].as_str().unwrap();

    let r: serde_json::Value =
        raw("mutation { serviceCreate(input: {projectId: \"", json!({})).send().await.unwrap().json().await.unwrap();
    assert!(r["data"].is_null() && r["errors"][0]["message"].as_str().unwrap().contains("Syntax Error"), "{r}");

    let q = "mutation s($input: ServiceCreateInput!) { serviceCreate(input: $input) { id name projectId } }";
    let r: serde_json::Value = raw(q, json!({"input": {"projectId": pid, "environmentId": env_id, "name": "svc", "source": {"image": "nginx"}, "variables": {"A": "1"}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = r["data"]["serviceCreate"]["id"].as_str().unwrap();
    assert_eq!(r["data"]["serviceCreate"]["projectId"], pid);
    let q = "mutation d($s: String!, $e: String!) { serviceInstanceDeployV2(serviceId: $s, environmentId: $e) }";
    let r: serde_json::Value = raw(q, json!({"s": sid, "e": env_id})).send().await.unwrap().json().await.unwrap();
    let did = r["data"]["serviceInstanceDeployV2"].as_str().unwrap();
    let q = "query d($id: String!) { deployment(id: $id) { id status statusUpdatedAt createdAt url staticUrl serviceId environmentId projectId meta canRedeploy } }";
    let resp = raw(q, json!({"id": did})).send().await.unwrap();
    assert!(resp.headers().contains_key("x-ratelimit-remaining"));
    let r: serde_json::Value = resp.json().await.unwrap();
    let d = &r["data"]["deployment"];
    assert_eq!(d.as_object().unwrap().len(), 11);
    assert_eq!(
        (d["status"].as_str(), d["serviceId"].as_str(), d["projectId"].as_str()),
        (Some("SUCCESS"), Some(sid), Some(pid))
    );
    let q = "mutation dc($input: ServiceDomainCreateInput!) { serviceDomainCreate(input: $input) { id domain suffix serviceId environmentId targetPort syncStatus createdAt } }";
    let r: serde_json::Value =
        raw(q, json!({"input": {"serviceId": sid, "environmentId": env_id, "targetPort": 8080}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let dom = &r["data"]["serviceDomainCreate"];
    assert_eq!(
        (dom["suffix"].as_str(), dom["syncStatus"].as_str(), dom["targetPort"].as_i64()),
        (Some("up.railway.app"), Some("ACTIVE"), Some(8080))
    );
    let r: serde_json::Value =
        raw("query { deployment(id: \"nope\") { id } }", json!({})).send().await.unwrap().json().await.unwrap();
    assert!(r["data"].is_null() && r["errors"][0]["message"] == "Deployment not found", "{r}");

    // Relay pagination: first/after with the cursor of the last edge.
    raw("mutation { projectCreate(input: {name: \"second\"}) { id } }", json!({})).send().await.unwrap();
    let q = "query p($after: String) { projects(workspaceId: \"ws-emulator\", first: 1, after: $after) { edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }";
    let r: serde_json::Value = raw(q, json!({"after": null})).send().await.unwrap().json().await.unwrap();
    // Creation times may tie, so the order of the two is not asserted.
    let conn = &r["data"]["projects"];
    let first_name = conn["edges"][0]["node"]["name"].as_str().unwrap().to_string();
    assert_eq!(conn["pageInfo"]["hasNextPage"], true);
    assert_eq!(conn["edges"][0]["cursor"], conn["pageInfo"]["endCursor"]);
    let r: serde_json::Value =
        raw(q, json!({"after": conn["pageInfo"]["endCursor"]})).send().await.unwrap().json().await.unwrap();
    let conn = &r["data"]["projects"];
    let mut names = [first_name.as_str(), conn["edges"][0]["node"]["name"].as_str().unwrap()];
    names.sort_unstable();
    assert_eq!(names, ["second", "shape"]);
    assert_eq!(conn["pageInfo"]["hasNextPage"], false);

    // A variable upsert redeploys unless skipDeploys is set.
    let latest = || async {
        let q =
            "query l($input: DeploymentListInput!) { deployments(input: $input, first: 1) { edges { node { id } } } }";
        let r: serde_json::Value =
            raw(q, json!({"input": {"serviceId": sid}})).send().await.unwrap().json().await.unwrap();
        r["data"]["deployments"]["edges"][0]["node"]["id"].as_str().unwrap().to_string()
    };
    let upsert = |skip: bool| {
        let q = "mutation u($input: VariableCollectionUpsertInput!) { variableCollectionUpsert(input: $input) }";
        raw(q, json!({"input": {"projectId": pid, "environmentId": env_id, "serviceId": sid, "variables": {"B": "2"}, "skipDeploys": skip}}))
            .send()
    };
    let before = latest().await;
    let r: serde_json::Value = upsert(true).await.unwrap().json().await.unwrap();
    assert_eq!(r["data"]["variableCollectionUpsert"], true);
    assert_eq!(latest().await, before, "skipDeploys redeployed");
    upsert(false).await.unwrap();
    assert_ne!(latest().await, before, "an upsert without skipDeploys did not redeploy");
}

#[tokio::test]
async fn faults_are_classified_and_recovered() {
    let env = Env::start(0).await;
    let client = env.providers().railway;
    let marker = Marker::new(&uid());
    let (pid, env_id) = project(&client, &marker).await;
    let services = RailwayServices(client.clone());
    let spec = service_spec(&pid, &env_id, &marker);

    // A 429 from the edge with a plain-text body.
    env.fault(
        json!({"platform": "railway", "operation": "serviceCreate", "kind": "rate_limit", "retry_after_secs": 1}),
    )
    .await;
    let e = services.create(&spec).await.unwrap_err();
    assert!(matches!(e, ProviderError::RateLimited { .. }), "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));

    env.fault(json!({"platform": "railway", "operation": "serviceCreate", "kind": "server_error", "status": 502}))
        .await;
    let e = services.create(&spec).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("server_error", true), "{e}");
    assert_eq!(env.objects("railway", "service").await, 0, "failed calls created nothing");

    // The next deployment fails: observe reports it, update redeploys.
    env.fault(json!({"platform": "railway", "kind": "fail_deployment"})).await;
    let id = services.create(&spec).await.unwrap().id;
    let Observation::Failed { id: failed, reason } = settle(&services, &spec).await else { panic!("not failed") };
    assert_eq!(failed, id);
    assert!(reason.contains("FAILED"), "{reason}");
    assert!(matches!(services.update(&id, &spec).await.unwrap(), Applied::InProgress { .. }));
    assert!(matches!(settle(&services, &spec).await, Observation::Ready { up_to_date: true, .. }));

    // The service is created but the answer is lost: adoption, no duplicate.
    let other = Marker::new(&uid());
    let spec2 = service_spec(&pid, &env_id, &other);
    env.fault(json!({"platform": "railway", "operation": "serviceCreate", "kind": "drop_response"})).await;
    assert!(services.create(&spec2).await.unwrap_err().is_retryable());
    let adopted = settle(&services, &spec2).await;
    assert!(adopted.id().is_some(), "{adopted:?}");
    assert_eq!(env.objects("railway", "service").await, 2);

    // Two services under one marker are never guessed between.
    client.create_service(&pid, &env_id, &other.name(), "nginx", &BTreeMap::new()).await.unwrap();
    let Observation::Ambiguous { ids } = services.observe(&spec2, None).await.unwrap() else { panic!() };
    assert_eq!(ids.len(), 2);

    // Slow answers become timeouts; bad tokens arrive as HTTP 200 GraphQL errors.
    let mut cfg = env.config();
    cfg.railway.timeout_ms = 300;
    let slow = winston::providers::Providers::new(&cfg).unwrap().railway;
    env.fault(json!({"platform": "railway", "operation": "project", "kind": "delay", "delay_ms": 1500})).await;
    let e = slow.get_project(&pid).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("timeout", true), "{e}");
    let mut bad = env.config();
    bad.railway.token = winston::providers::Secret::new("rw-wrong-token-value");
    let e = winston::providers::Providers::new(&bad).unwrap().railway.get_project(&pid).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("unauthorized", false), "{e}");
    assert!(!format!("{e} {e:?}").contains("wrong-token"));
}

/// Railway starts the first deployment of a service created with a source
/// by itself, a moment after `serviceCreate` answers. The old client listed
/// deployments right away, saw none, and deployed a second time.
#[tokio::test]
async fn a_new_service_is_built_once() {
    let env = Env::start(1_000).await;
    let client = env.providers().railway;
    let marker = Marker::new(&uid());
    let (pid, env_id) = project(&client, &marker).await;
    let services = RailwayServices(client.clone());
    let spec = service_spec(&pid, &env_id, &marker);
    let id = services.create(&spec).await.unwrap().id;
    let Observation::InProgress { .. } = services.observe(&spec, Some(&id)).await.unwrap() else {
        panic!("a new service without a listed deployment is waited on, not redeployed")
    };
    let Observation::Ready { up_to_date: true, .. } = settle(&services, &spec).await else { panic!() };
    assert_eq!(env.objects("railway", "deployment_started").await, 1, "Railway built the service more than once");
}

/// `projects` without `workspaceId` lists personal projects only, while a
/// project created without one lands in the token's workspace: the old
/// client, with no workspace configured, never found its own project by
/// marker (a lost create answer then duplicated it).
#[tokio::test]
async fn projects_are_created_and_searched_in_the_same_workspace() {
    let env = Env::start(0).await;
    let client = env.providers().railway;
    let marker = Marker::new(&uid());
    let projects = RailwayProjects(client.clone());
    let spec = RailwayProjectSpec { marker: marker.clone() };
    env.fault(json!({"platform": "railway", "operation": "projectCreate", "kind": "drop_response"})).await;
    assert!(projects.create(&spec).await.is_err(), "the answer was dropped");
    let Observation::Ready { id, .. } = projects.observe(&spec, None).await.unwrap() else {
        panic!("the project created without its answer was not found by marker")
    };
    assert_eq!(client.workspace().await.unwrap(), winston::emulator::railway::EMULATOR_WORKSPACE);
    assert_eq!(env.objects("railway", "project").await, 1);
    let raw = env.raw(reqwest::Method::POST, winston::emulator::RAILWAY_PATH);
    let q = "query { projects { edges { node { id } } } }";
    let r: serde_json::Value = raw.json(&json!({"query": q})).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["data"]["projects"]["edges"], json!([]), "personal listing shows workspace project {id}");
}

/// Railway answers "Not Authorized" to a valid token asking for another
/// workspace's project, as it does to a rejected token. The old client read
/// both as rejected credentials.
#[tokio::test]
async fn another_workspaces_project_is_forbidden_not_unauthorized() {
    let mut config = winston::emulator::EmulatorConfig::default();
    config.tokens.push("token-of-another-workspace".into());
    let env = Env::with_config(config).await;
    let mine = env.providers().railway;
    let mut other = env.config();
    other.railway.token = winston::providers::Secret::new("token-of-another-workspace");
    let theirs = winston::providers::Providers::new(&other).unwrap().railway;
    let their_project = theirs.create_project("theirs", "winston:someone-else").await.unwrap();
    assert_ne!(theirs.workspace().await.unwrap(), mine.workspace().await.unwrap());

    let e = mine.get_project(&their_project.id).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("forbidden", false), "{e}");
    let e = mine.delete_project(&their_project.id).await.unwrap_err();
    assert_eq!(e.category(), "forbidden", "{e}");
    assert_eq!(env.objects("railway", "project").await, 1, "another workspace's project was deleted");

    let mut bad = env.config();
    bad.railway.token = winston::providers::Secret::new("rw-wrong-token-value");
    let e = winston::providers::Providers::new(&bad).unwrap().railway.get_project(&their_project.id).await.unwrap_err();
    assert_eq!(e.category(), "unauthorized", "{e}");
}

/// Two instances whose UIDs share the first 12 hex digits share the short
/// name; only the full marker in the description tells their projects
/// apart. A project named by hand without the marker is never adopted.
#[tokio::test]
async fn colliding_short_names_adopt_and_delete_only_the_marked_project() {
    let env = Env::start(0).await;
    let client = env.providers().railway;
    let projects = RailwayProjects(client.clone());
    let a = Marker::new("3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    let b = Marker::new("3f2504e0-4f89-41d3-8a0c-0305e82c3302");
    let (sa, sb) = (RailwayProjectSpec { marker: a.clone() }, RailwayProjectSpec { marker: b.clone() });
    client.create_project(&a.name(), "made by hand").await.unwrap();
    assert_eq!(projects.observe(&sa, None).await.unwrap(), Observation::Absent, "an unmarked project was adopted");
    let ida = projects.create(&sa).await.unwrap().id;
    assert_eq!(projects.observe(&sb, None).await.unwrap(), Observation::Absent, "b adopted a's project");
    let idb = projects.create(&sb).await.unwrap().id;
    for (spec, want) in [(&sa, &ida), (&sb, &idb)] {
        match projects.observe(spec, None).await.unwrap() {
            Observation::Ready { id, .. } => assert_eq!(&id, want),
            other => panic!("expected one project, got {other:?}"),
        }
    }
    // Teardown deletes what the search finds: only b's project goes.
    let Observation::Ready { id, .. } = projects.observe(&sb, None).await.unwrap() else { panic!() };
    projects.delete(&id, &sb).await.unwrap();
    assert_eq!(env.objects("railway", "project").await, 2);
    assert!(client.get_project(&ida).await.unwrap().is_some());
}

/// Railway's own deployment states: a CRASHED deployment is a failure that
/// `update` redeploys, a SLEEPING one succeeded; while a new deployment
/// builds, the previous one stays live (listed and serving) until the new
/// one succeeds.
#[tokio::test]
async fn crashed_and_sleeping_deployments_and_the_previous_one_stays_live() {
    let env = Env::start(600).await;
    let client = env.providers().railway;
    let marker = Marker::new(&uid());
    let (pid, env_id) = project(&client, &marker).await;
    let services = RailwayServices(client.clone());
    let spec = service_spec(&pid, &env_id, &marker);

    env.fault(json!({"platform": "railway", "kind": "fail_deployment", "state": "CRASHED"})).await;
    let id = services.create(&spec).await.unwrap().id;
    let Observation::Failed { reason, .. } = settle(&services, &spec).await else { panic!("CRASHED is a failure") };
    assert!(reason.contains("CRASHED"), "{reason}");

    env.fault(json!({"platform": "railway", "kind": "fail_deployment", "state": "SLEEPING"})).await;
    let Applied::InProgress { operation_id: sleeping } = services.update(&id, &spec).await.unwrap() else { panic!() };
    let Observation::Ready { up_to_date: true, observed, .. } = settle(&services, &spec).await else {
        panic!("SLEEPING succeeded")
    };
    assert_eq!(observed.deployment.map(|d| (d.id, d.status)), Some((sleeping.clone(), "SLEEPING".into())));

    // A redeploy: the sleeping one stays listed as live while the new one builds.
    let new = client.deploy(&id, &env_id).await.unwrap();
    let old = client.deployment(&sleeping).await.unwrap().unwrap();
    assert_eq!(old.status, "SLEEPING", "the previous deployment was taken down before the new one is live");
    let building = client.deployment(&new).await.unwrap().unwrap();
    assert_eq!(building.phase(), DeploymentPhase::InProgress, "{building:?}");
    poll(|| async { client.deployment(&new).await.unwrap().unwrap().status }, |s| s == "SUCCESS").await;
    assert_eq!(client.deployment(&sleeping).await.unwrap().unwrap().status, "REMOVED");
}

/// The emulator validates every operation against Railway's public schema:
/// a field or argument the schema lacks is a GraphQL error, not `null`, so
/// a client that drifts from the schema fails here first.
#[tokio::test]
async fn unknown_fields_and_arguments_are_graphql_errors() {
    let env = Env::start(0).await;
    let raw = |q: &str| {
        env.raw(reqwest::Method::POST, winston::emulator::RAILWAY_PATH).json(&json!({"query": q, "variables": {}}))
    };
    let r: serde_json::Value = raw("query { projects(workspaceId: \"ws-emulator\") { edges { node { id owner } } } }")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["data"].is_null(), "{r}");
    assert_eq!(r["errors"][0]["message"], "Cannot query field \"owner\" on type \"Project\".");
    assert_eq!(r["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    let client = env.providers().railway;
    let e = client.gql("query { projects(search: \"wn-\") { edges { node { id } } } }", json!({})).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("invalid", false), "{e}");
    assert!(e.to_string().contains("Unknown argument \"search\""), "{e}");
    assert_eq!(env.mutations("railway").await, 0);
}

/// Audit: the emulator deployed a service from the image `a::b@@c:`;
/// Railway refuses an invalid image reference, and Winston must not retry.
#[tokio::test]
async fn an_invalid_image_reference_is_refused() {
    let env = Env::start(0).await;
    let client = env.providers().railway;
    let marker = Marker::new(&uid());
    let (pid, env_id) = project(&client, &marker).await;
    let services = RailwayServices(client.clone());
    let mut spec = service_spec(&pid, &env_id, &marker);
    spec.image = "a::b@@c:".into();
    let e = services.create(&spec).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid { .. }), "{e:?}");
    assert!(!e.is_retryable() && e.to_string().contains("a::b@@c:"), "{e}");
    assert_eq!(env.objects("railway", "service").await, 0);
}
