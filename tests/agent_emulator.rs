//! `winston emulator` runs the reference runtime for real: one `winston
//! agent` process per deployed reference-image Railway service, reachable
//! through `/_emulator/apps/<domain>/`, stopped when the service is
//! deleted, at most `max` at once (the rest get the stand-in).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod agent_support;

use std::collections::BTreeMap;

use agent_support::*;
use serde_json::{Value, json};
use winston::emulator::runtimes::RuntimeConfig;
use winston::emulator::{EmulatorConfig, RAILWAY_PATH, RUNTIMES_PATH};

struct Railway<'a> {
    http: &'a reqwest::Client,
    url: String,
}

impl Railway<'_> {
    async fn gql(&self, query: &str, variables: Value) -> Value {
        let v: Value = self
            .http
            .post(&self.url)
            .bearer_auth(winston::emulator::DEFAULT_TOKEN)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v.get("errors").is_none(), "{v}");
        v["data"].clone()
    }

    /// A project with one service from `image` with `vars`, and its domain.
    async fn service(&self, name: &str, image: &str, vars: &BTreeMap<String, String>) -> (String, String) {
        let p = self
            .gql(
                "mutation projectCreate($input: ProjectCreateInput!) { projectCreate(input: $input) { id environments { edges { node { id name } } } } }",
                json!({"input": {"name": name, "defaultEnvironmentName": "production"}}),
            )
            .await;
        let pid = p["projectCreate"]["id"].as_str().unwrap().to_string();
        let env = p["projectCreate"]["environments"]["edges"][0]["node"]["id"].as_str().unwrap().to_string();
        let s = self
            .gql(
                "mutation serviceCreate($input: ServiceCreateInput!) { serviceCreate(input: $input) { id } }",
                json!({"input": {"projectId": pid, "environmentId": env, "name": name, "source": {"image": image}, "variables": vars}}),
            )
            .await;
        let sid = s["serviceCreate"]["id"].as_str().unwrap().to_string();
        let d = self
            .gql(
                "mutation serviceDomainCreate($input: ServiceDomainCreateInput!) { serviceDomainCreate(input: $input) { id domain } }",
                json!({"input": {"serviceId": sid, "environmentId": env, "targetPort": 8080}}),
            )
            .await;
        (sid, d["serviceDomainCreate"]["domain"].as_str().unwrap().to_string())
    }

    async fn delete(&self, sid: &str) {
        self.gql("mutation serviceDelete($id: String!) { serviceDelete(id: $id) }", json!({"id": sid})).await;
    }
}

#[tokio::test]
async fn the_emulator_starts_and_stops_one_runtime_per_service() {
    let h = harness(1_000_000, test_settings()).await;
    let emu = winston::emulator::spawn(EmulatorConfig {
        postgres_url: Some(h.db.pg.url("postgres")),
        runtimes: RuntimeConfig {
            agent_bin: Some(env!("CARGO_BIN_EXE_winston").into()),
            max: 2,
            push_millis: 50,
            ..RuntimeConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let rw = Railway { http: &http, url: format!("{}{RAILWAY_PATH}", emu.base()) };
    let vars = |db: &str| {
        BTreeMap::from([
            ("DATABASE_URL".to_string(), db.to_string()),
            ("WINSTON_API_KEY".to_string(), h.key.clone()),
            ("WINSTON_PROXY_URL".to_string(), h.url.clone()),
            ("GATEWAY_TOKEN".to_string(), GATEWAY.to_string()),
            ("WINSTON_WORKSPACE".to_string(), workspace_bundle()),
            ("WINSTON_INSTANCE".to_string(), "acme-0".to_string()),
            ("PORT".to_string(), "8080".to_string()),
        ])
    };
    let (a, a_domain) = rw.service("acme", "ghcr.io/winston-dev/winston:0.1.0", &vars(&tenant_db(&h))).await;
    let (b, b_domain) = rw.service("bella", "ghcr.io/winston-dev/winston:0.1.0", &vars(&tenant_db(&h))).await;
    let (_c, c_domain) = rw.service("other", "ghcr.io/acme/agent:1", &vars(&tenant_db(&h))).await;
    let runtimes = || async {
        http.get(format!("{}{RUNTIMES_PATH}", emu.base())).send().await.unwrap().json::<Value>().await.unwrap()
    };
    let app = |domain: &str, path: &str| format!("{}/_emulator/apps/{domain}{path}", emu.base());

    // Both reference services run a real agent; the other image gets the stand-in.
    assert!(eventually(60, || async { runtimes().await["running"].as_object().unwrap().len() == 2 }).await);
    let healthy = |d: String| {
        let http = http.clone();
        let url = app(&d, "/health");
        async move {
            let r = http.get(&url).send().await.unwrap();
            r.status() == 200 && r.json::<Value>().await.unwrap()["channels"]["api"]["state"] == "ready"
        }
    };
    assert!(eventually(60, || healthy(a_domain.clone())).await);
    assert!(eventually(60, || healthy(b_domain.clone())).await);
    let stand_in: Value = http.get(app(&c_domain, "/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stand_in["status"], "ok");
    assert!(stand_in.get("channels").is_none(), "the stand-in answered {stand_in}");

    // A chat through the service's URL reaches the LLM through the proxy.
    let r = http
        .post(app(&a_domain, "/api/chat"))
        .bearer_auth(GATEWAY)
        .json(&json!({"message": "Hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.json::<Value>().await.unwrap()["reply"].as_str().unwrap().is_empty());
    assert_eq!(h.upstream.total().generations, 1);
    let h2 = &h;
    assert!(eventually(30, || async { transcript_rows(h2).await == (2, 2) }).await);

    // Deleting a service stops its runtime: the process no longer listens.
    let port = runtimes().await["running"][&a].as_u64().unwrap();
    rw.delete(&a).await;
    assert!(eventually(30, || async { runtimes().await["running"].get(&a).is_none() }).await);
    assert!(
        eventually(30, || async { reqwest::get(format!("http://127.0.0.1:{port}/health")).await.is_err() }).await,
        "the deleted service's runtime still answers"
    );
    assert!(runtimes().await["running"].get(&b).is_some());
    assert_eq!(runtimes().await["started"], json!(2));
    drop(emu);
}

/// Audit: a reference-image service past the runtime bound answered the
/// stand-in's 200 `ok`, so Winston's health step passed on an agent that
/// was not running. It now answers 503 naming the bound.
#[tokio::test]
async fn at_most_max_runtimes_run_and_the_rest_answer_503() {
    let h = harness(1000, test_settings()).await;
    let emu = winston::emulator::spawn(EmulatorConfig {
        postgres_url: Some(h.db.pg.url("postgres")),
        runtimes: RuntimeConfig {
            agent_bin: Some(env!("CARGO_BIN_EXE_winston").into()),
            max: 1,
            ..RuntimeConfig::default()
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let rw = Railway { http: &http, url: format!("{}{RAILWAY_PATH}", emu.base()) };
    let vars = BTreeMap::from([
        ("DATABASE_URL".to_string(), tenant_db(&h)),
        ("WINSTON_API_KEY".to_string(), h.key.clone()),
        ("WINSTON_PROXY_URL".to_string(), h.url.clone()),
        ("GATEWAY_TOKEN".to_string(), GATEWAY.to_string()),
    ]);
    let (first, _) = rw.service("one", "ghcr.io/winston-dev/winston", &vars).await;
    let (_, second_domain) = rw.service("two", "ghcr.io/winston-dev/winston", &vars).await;
    let report = || async {
        http.get(format!("{}{RUNTIMES_PATH}", emu.base())).send().await.unwrap().json::<Value>().await.unwrap()
    };
    assert!(eventually(60, || async { report().await["running"].get(&first).is_some() }).await);
    // Give the supervisor several ticks: still one.
    let mut ticks = 0;
    assert!(
        !eventually(1, || {
            ticks += 1;
            async { report().await["running"].as_object().unwrap().len() > 1 }
        })
        .await
    );
    assert!(ticks > 1);
    let resp = http.get(format!("{}/_emulator/apps/{second_domain}/health", emu.base())).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE, "no agent runs for it");
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["status"], "no_runtime_slot");
    assert!(r["message"].as_str().unwrap().contains("--agent-runtimes"), "{r}");
}
