//! The Vercel client against the in-process emulator: a team-scoped
//! frontend converging to READY with its alias, env drift, the bulk env
//! partial-failure answer, the REST wire shapes, adoption and every fault kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use std::collections::BTreeMap;
use std::time::Duration;

use providers_common::*;
use serde_json::{Value, json};
use winston::providers::vercel::resources::*;
use winston::providers::vercel::{EnvInput, GitSource, VercelClient};
use winston::providers::{Applied, ExternalResource, Marker, Observation, ProviderError, Providers};

fn spec(marker: &Marker) -> VercelFrontendSpec {
    VercelFrontendSpec {
        marker: marker.clone(),
        framework: Some("nextjs".into()),
        git: GitSource { provider: "github".into(), org: "acme".into(), repo: "site".into(), git_ref: "main".into() },
        env: BTreeMap::from([("NEXT_PUBLIC_AGENT_URL".into(), "https://a.up.railway.app".into())]),
        kinds: BTreeMap::new(),
    }
}

fn client(env: &Env, team: Option<&str>) -> VercelClient {
    let mut c = env.config();
    c.vercel_team_id = team.map(str::to_string);
    Providers::new(&c).unwrap().vercel
}

async fn settle(res: &VercelFrontends, spec: &VercelFrontendSpec) -> Observation<VercelFrontendState> {
    poll(|| async { res.observe(spec, None).await.unwrap() }, |o| !matches!(o, Observation::InProgress { .. })).await
}

#[tokio::test]
async fn frontend_converges_to_ready_with_alias_adopts_drifts_and_deletes() {
    let env = Env::start(300).await;
    let res = VercelFrontends(client(&env, Some("team_acme")));
    let marker = Marker::new(&uid());
    let spec = spec(&marker);

    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
    let created = res.create(&spec).await.unwrap();
    let dpl = created.operation_id.clone().unwrap();
    match res.observe(&spec, Some(&created.id)).await.unwrap() {
        Observation::InProgress { id, operation_id } => {
            assert_eq!((id, operation_id), (created.id.clone(), dpl.clone()))
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    let Observation::Ready { id, observed, up_to_date: true } = settle(&res, &spec).await else { panic!() };
    assert_eq!(id, created.id, "adopted by name");
    assert_eq!(observed.url.as_deref(), Some(format!("https://{}.vercel.app", marker.name()).as_str()));
    assert_eq!(observed.deployment.unwrap().id, dpl);

    // Another scope does not see the team's project.
    assert_eq!(VercelFrontends(client(&env, None)).observe(&spec, None).await.unwrap(), Observation::Absent);

    let steady = env.mutations("vercel").await;
    settle(&res, &spec).await;
    assert_eq!(env.mutations("vercel").await, steady, "observing wrote to the platform");

    let mut changed = spec.clone();
    changed.env.insert("NEXT_PUBLIC_AGENT_URL".into(), "https://b.up.railway.app".into());
    assert!(matches!(res.observe(&changed, Some(&id)).await.unwrap(), Observation::Ready { up_to_date: false, .. }));
    let Applied::InProgress { operation_id } = res.update(&id, &changed).await.unwrap() else { panic!() };
    assert_ne!(operation_id, dpl);
    assert!(matches!(settle(&res, &changed).await, Observation::Ready { up_to_date: true, .. }));
    assert_eq!(res.update(&id, &changed).await.unwrap(), Applied::Done, "a converged update writes nothing");
    assert_eq!(env.objects("vercel", "env").await, 2, "upsert replaced the variable (the other is the marker)");

    assert_eq!(res.delete(&id, &spec).await.unwrap(), Applied::Done);
    assert_eq!(res.delete(&id, &spec).await.unwrap(), Applied::Done, "delete is repeatable");
    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
    let objects = env.objects_json().await;
    for kind in ["project", "env", "deployment"] {
        assert_eq!(objects["vercel"]["objects"][kind].as_array().unwrap().len(), 0, "{kind} left behind");
    }
}

#[tokio::test]
async fn bulk_env_partial_failure_is_reported_per_variable() {
    let env = Env::start(0).await;
    let c = client(&env, None);
    let p = c.create_project("partial", None, None, &[]).await.unwrap();
    let input = |k: &str| EnvInput {
        key: k.into(),
        value: "v".into(),
        kind: "encrypted".into(),
        target: vec!["production".into()],
        comment: None,
    };
    let failed = c.upsert_env(&p.id, &[input("GOOD_ONE"), input("9-bad key")]).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].key.as_str(), failed[0].code.as_str()), ("9-bad key", "invalid_key"));
    assert_eq!(c.list_env(&p.id).await.unwrap().iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["GOOD_ONE"]);

    // The resource turns refused variables into a terminal error with Vercel's message.
    let marker = Marker::new(&uid());
    let mut bad = spec(&marker);
    bad.env.insert("9-bad key".into(), "x".into());
    let e = VercelFrontends(c.clone()).create(&bad).await.unwrap_err();
    assert!(!e.is_retryable() && e.to_string().contains("invalid_key"), "{e}");

    // Wire shape: 201 with created + failed, and without upsert a conflict per item.
    let raw = |path: &str| env.raw(reqwest::Method::POST, &format!("{}{path}", winston::emulator::VERCEL_PATH));
    let r = raw(&format!("/v10/projects/{}/env", p.id))
        .json(&json!([{"key": "GOOD_ONE", "value": "w", "type": "plain", "target": ["production"]}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["created"], json!([]));
    assert_eq!(v["failed"][0]["error"]["code"], "ENV_CONFLICT");
    let r = raw("/v11/projects").json(&json!({"name": "partial"})).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
    let r = env
        .raw(reqwest::Method::GET, &format!("{}/v13/deployments/dpl_missing", winston::emulator::VERCEL_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-ratelimit-limit"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "not_found");

    let git = GitSource { provider: "github".into(), org: "acme".into(), repo: "site".into(), git_ref: "main".into() };
    let d = c.create_deployment("partial", &git, Some("production"), &json!({"k": "v"})).await.unwrap();
    let v: Value = env
        .raw(reqwest::Method::GET, &format!("{}/v13/deployments/{}", winston::emulator::VERCEL_PATH, d.id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in [
        "id",
        "url",
        "name",
        "projectId",
        "readyState",
        "target",
        "alias",
        "aliasAssigned",
        "aliasError",
        "createdAt",
        "buildingAt",
        "meta",
        "gitSource",
        "creator",
    ] {
        assert!(v.get(field).is_some(), "deployment lacks {field}: {v}");
    }
    assert_eq!((v["readyState"].as_str(), v["aliasAssigned"].as_bool()), (Some("READY"), Some(true)));
    assert!(v["id"].as_str().unwrap().starts_with("dpl_") && v["projectId"].as_str().unwrap().starts_with("prj_"));
}

#[tokio::test]
async fn faults_are_classified_and_recovered() {
    let env = Env::start(0).await;
    let c = client(&env, None);
    let res = VercelFrontends(c.clone());
    let marker = Marker::new(&uid());
    let spec = spec(&marker);

    env.fault(json!({"platform": "vercel", "operation": "createProject", "kind": "rate_limit", "retry_after_secs": 1}))
        .await;
    let e = res.create(&spec).await.unwrap_err();
    assert!(matches!(e, ProviderError::RateLimited { .. }) && e.retry_after() == Some(Duration::from_secs(1)), "{e}");
    assert!(e.to_string().contains("rate_limited"), "{e}");
    env.fault(json!({"platform": "vercel", "operation": "getProject", "kind": "server_error"})).await;
    assert_eq!(res.observe(&spec, None).await.unwrap_err().category(), "server_error");

    // The project is made but the answer lost: observe adopts it by name and
    // update finishes env + deployment.
    env.fault(json!({"platform": "vercel", "operation": "createProject", "kind": "drop_response"})).await;
    assert!(res.create(&spec).await.unwrap_err().is_retryable());
    let Observation::Ready { id, up_to_date: false, .. } = res.observe(&spec, None).await.unwrap() else { panic!() };

    // The first build fails: Failed with Vercel's message, update redeploys.
    env.fault(json!({"platform": "vercel", "kind": "fail_deployment"})).await;
    assert!(matches!(res.update(&id, &spec).await.unwrap(), Applied::InProgress { .. }));
    let Observation::Failed { reason, .. } = settle(&res, &spec).await else { panic!("not failed") };
    assert!(reason.contains("ERROR"), "{reason}");
    assert!(matches!(res.update(&id, &spec).await.unwrap(), Applied::InProgress { .. }));
    assert!(matches!(settle(&res, &spec).await, Observation::Ready { up_to_date: true, .. }));
    assert_eq!(env.objects("vercel", "project").await, 1);

    let mut cfg = env.config();
    cfg.vercel.timeout_ms = 300;
    let slow = Providers::new(&cfg).unwrap().vercel;
    env.fault(json!({"platform": "vercel", "operation": "getProject", "kind": "delay", "delay_ms": 1500})).await;
    assert_eq!(slow.get_project(&id).await.unwrap_err().category(), "timeout");
    let mut bad = env.config();
    bad.vercel.token = winston::providers::Secret::new("vc-wrong-token-value");
    let e = Providers::new(&bad).unwrap().vercel.get_project(&id).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("unauthorized", false), "{e}");
    assert!(!format!("{e} {e:?}").contains("wrong-token"));
}

/// Sets the Vercel emulator's strictness options (JSON merge).
async fn options(env: &Env, patch: Value) {
    let path = format!("{}/_emulator/options", winston::emulator::VERCEL_PATH);
    let r = env.raw(reqwest::Method::PUT, &path).json(&patch).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Issue 12: deployment list items carry `uid` and no `alias`; the URL is
/// read from `GET /v13/deployments/{id}`, and a READY deployment whose alias
/// is not assigned yet is still in progress. The old client (URL from the
/// list item) never had a URL here.
#[tokio::test]
async fn frontend_url_is_read_from_the_deployment_and_waits_for_the_alias() {
    let env = Env::start(200).await;
    options(&env, json!({"aliasLagMs": 1500})).await;
    let c = client(&env, None);
    let res = VercelFrontends(c.clone());
    let marker = Marker::new(&uid());
    let spec = spec(&marker);
    let created = res.create(&spec).await.unwrap();
    let dpl = created.operation_id.unwrap();

    // READY, alias still missing: the client keeps waiting.
    let d = poll(|| async { c.get_deployment(&dpl).await.unwrap().unwrap() }, |d| d.ready_state == "READY").await;
    assert!(d.alias.is_empty(), "{d:?}");
    assert!(matches!(res.observe(&spec, None).await.unwrap(), Observation::InProgress { .. }));

    // The list's real shape: `uid`, no `id` and no `alias`.
    let list: Value =
        env.get_json(&format!("{}/v6/deployments?projectId={}", winston::emulator::VERCEL_PATH, created.id)).await;
    let item = &list["deployments"][0];
    assert_eq!(item["uid"], json!(dpl));
    assert!(item.get("id").is_none() && item.get("alias").is_none(), "{item}");
    for field in ["name", "url", "created", "state", "readyState", "type", "creator", "inspectorUrl"] {
        assert!(item.get(field).is_some(), "list item lacks {field}: {item}");
    }

    let Observation::Ready { observed, up_to_date: true, .. } = settle(&res, &spec).await else { panic!() };
    assert_eq!(observed.url.as_deref(), Some(format!("https://{}.vercel.app", marker.name()).as_str()));
    assert_eq!(observed.deployment.unwrap().id, dpl);
}

/// Issue 12: INITIALIZING is on the way; BLOCKED, CANCELED and DELETED are
/// terminal failures that `update` replaces with a new deployment. The old
/// client saw BLOCKED and DELETED as in progress forever.
#[tokio::test]
async fn blocked_canceled_and_deleted_deployments_fail_and_are_redeployed() {
    let env = Env::start(0).await;
    let c = client(&env, None);
    let res = VercelFrontends(c.clone());
    let marker = Marker::new(&uid());
    let mut spec = spec(&marker);
    res.create(&spec).await.unwrap();
    let Observation::Ready { id, .. } = settle(&res, &spec).await else { panic!() };

    for state in ["BLOCKED", "CANCELED", "DELETED"] {
        // A changed spec asks for a new deployment; it ends in `state`.
        spec.env.insert("NEXT_PUBLIC_AGENT_URL".into(), format!("https://{state}.up.railway.app"));
        options(&env, json!({"nextDeploymentState": state})).await;
        assert!(matches!(res.update(&id, &spec).await.unwrap(), Applied::InProgress { .. }));
        let Observation::Failed { reason, .. } = settle(&res, &spec).await else { panic!("{state}: not failed") };
        assert!(reason.contains(state), "{reason}");
        assert!(matches!(res.update(&id, &spec).await.unwrap(), Applied::InProgress { .. }), "{state}");
        assert!(matches!(settle(&res, &spec).await, Observation::Ready { up_to_date: true, .. }), "{state}");
    }
    let r = env
        .raw(reqwest::Method::PUT, &format!("{}/_emulator/options", winston::emulator::VERCEL_PATH))
        .json(&json!({"nextDeploymentState": "SLEEPING"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn initializing_is_in_progress() {
    let env = Env::start(3000).await;
    let c = client(&env, None);
    let res = VercelFrontends(c.clone());
    let spec = spec(&Marker::new(&uid()));
    let dpl = res.create(&spec).await.unwrap().operation_id.unwrap();
    poll(|| async { c.get_deployment(&dpl).await.unwrap().unwrap() }, |d| d.ready_state == "INITIALIZING").await;
    assert!(matches!(res.observe(&spec, None).await.unwrap(), Observation::InProgress { .. }));
}

/// Issue 12: the env list is paginated. The old client read only the first
/// page, so a project with many variables was rewritten and redeployed on
/// every pass.
#[tokio::test]
async fn env_list_reads_every_page() {
    let env = Env::start(0).await;
    options(&env, json!({"envPageSize": 7, "stringTargets": false})).await;
    let c = client(&env, None);
    let res = VercelFrontends(c.clone());
    let mut spec = spec(&Marker::new(&uid()));
    for i in 0..30 {
        spec.env.insert(format!("VAR_{i:02}"), format!("value-{i}"));
    }
    let created = res.create(&spec).await.unwrap();
    let raw: Value = env.get_json(&format!("{}/v9/projects/{}/env", winston::emulator::VERCEL_PATH, created.id)).await;
    assert_eq!(raw["envs"].as_array().unwrap().len(), 7);
    assert!(raw["pagination"]["next"].is_number(), "{raw}");
    assert_eq!(c.list_env(&created.id).await.unwrap().len(), 32, "every page read (30, the agent URL and the marker)");

    let Observation::Ready { id, up_to_date, .. } = settle(&res, &spec).await else { panic!() };
    assert!(up_to_date, "variables past the first page were missed");
    let before = env.mutations("vercel").await;
    assert_eq!(res.update(&id, &spec).await.unwrap(), Applied::Done);
    assert_eq!(env.mutations("vercel").await, before, "a converged project was rewritten");
}

/// Issue 12: a variable's `target` may be a single string. The old client
/// failed to decode the whole list over one such variable.
#[tokio::test]
async fn one_string_target_does_not_break_the_env_list() {
    let env = Env::start(0).await;
    let c = client(&env, None);
    let res = VercelFrontends(c.clone());
    let spec = spec(&Marker::new(&uid()));
    let created = res.create(&spec).await.unwrap();
    // A variable someone added by hand for one target (listed as a string).
    let r = env
        .raw(reqwest::Method::POST, &format!("{}/v10/projects/{}/env", winston::emulator::VERCEL_PATH, created.id))
        .json(&json!({"key": "HAND_MADE", "value": "x", "type": "plain", "target": "development"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let raw: Value = env.get_json(&format!("{}/v9/projects/{}/env", winston::emulator::VERCEL_PATH, created.id)).await;
    assert!(raw["envs"].as_array().unwrap().iter().any(|e| e["target"] == json!("development")), "{raw}");

    let listed = c.list_env(&created.id).await.unwrap();
    assert_eq!(listed.iter().find(|e| e.key == "HAND_MADE").unwrap().target, ["development"]);
    assert!(matches!(settle(&res, &spec).await, Observation::Ready { up_to_date: true, .. }));
}

/// Vercel project names are unique per scope and only 48 bits of the UID:
/// another instance with the same short name, or a project named by hand,
/// holds the name without this instance's marker. It is never adopted nor
/// deleted; creating under the taken name fails with Vercel's conflict.
#[tokio::test]
async fn a_project_holding_the_name_without_the_marker_is_neither_adopted_nor_deleted() {
    let env = Env::start(0).await;
    let c = client(&env, None);
    let res = VercelFrontends(c.clone());
    let a = spec(&Marker::new("3f2504e0-4f89-11d3-9a0c-0305e82c3301"));
    let b = spec(&Marker::new("3f2504e0-4f89-41d3-8a0c-0305e82c3302"));
    let ida = res.create(&a).await.unwrap().id;
    let Observation::Ready { id, .. } = settle(&res, &a).await else { panic!("a's own project not adopted") };
    assert_eq!(id, ida);
    assert_eq!(res.observe(&b, None).await.unwrap(), Observation::Absent, "b adopted a's project");
    let e = res.create(&b).await.unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    // b's teardown finds nothing of its own: a's project stays.
    assert_eq!(res.observe(&b, None).await.unwrap(), Observation::Absent);
    assert_eq!(env.objects("vercel", "project").await, 1);

    res.delete(&ida, &a).await.unwrap();
    c.create_project(&a.marker.name(), None, None, &[]).await.unwrap();
    assert_eq!(res.observe(&a, None).await.unwrap(), Observation::Absent, "a project named by hand was adopted");
}
