//! Issue 16 end to end: a Tenant with a website goes Ready with the profile
//! the analyzer proposed in its status, analysed through a real Winston
//! proxy on the `system` account (debited exactly what the mock LLM
//! generated), a workspace rendering it with the dispensary skills, and
//! re-analysis only when the annotation asks for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod proxy_support;
mod support;

use std::time::Duration;

use base64::Engine as _;
use kube::Api;
use kube::api::{Patch, PatchParams};
use provisioning_support::{Stack, apply_tenant, ready};
use proxy_support::{KIMI, KIMI_X, catalog_yaml, start_counting_mock, test_settings};
use serde_json::{Value, json};
use support::{TestNamespace, eventually};
use winston::api::{Tenant, conditions};
use winston::emulator::llm::LlmMockConfig;
use winston::ledger::{Ledger, ProxySession};
use winston::proxy::{Catalog, Proxy};

const READY_WITHIN: Duration = Duration::from_secs(90);
const SYSTEM_CREDITS: i64 = 10_000_000;

/// A real proxy over the control database, in front of a counting mock LLM.
async fn proxy(control_db: &str) -> (String, std::sync::Arc<winston::emulator::llm::MockStats>, tempfile::TempDir) {
    let (mock_url, stats) =
        start_counting_mock(LlmMockConfig { api_key: Some("upstream".into()), ..LlmMockConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("upstream.key");
    std::fs::write(&key_file, "upstream\n").unwrap();
    let catalog = Catalog::parse(&catalog_yaml(&mock_url, &key_file)).unwrap();
    let proxy = Proxy::new(
        Ledger::connect(control_db, 10).await.unwrap(),
        ProxySession::open(control_db).await.unwrap(),
        catalog,
        test_settings(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { proxy.serve(listener, None, std::future::pending()).await });
    (url, stats, dir)
}

async fn tenant(ns: &TestNamespace, name: &str) -> Tenant {
    Api::<Tenant>::namespaced(ns.client.clone(), &ns.name).get(name).await.unwrap()
}

/// The workspace files the emulated Railway service received.
async fn deployed_workspace(stack: &Stack, ti: &winston::api::TenantInstance) -> serde_json::Map<String, Value> {
    let ids = ti.status.as_ref().unwrap().external.as_ref().unwrap().railway.clone().unwrap();
    let q =
        "query v($p: String!, $e: String!, $s: String) { variables(projectId: $p, environmentId: $e, serviceId: $s) }";
    let vars = stack.railway(q, json!({"p": ids.project_id, "e": ids.environment_id, "s": ids.service_id})).await;
    let bundle = vars["data"]["variables"]["WINSTON_WORKSPACE"].as_str().expect("a workspace variable").to_string();
    let raw = base64::engine::general_purpose::STANDARD.decode(bundle).unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// A stack whose controller analyses websites through a real proxy on the
/// stack's control database, with the mock upstream's counts.
struct Analyzing {
    stack: Stack,
    generated: std::sync::Arc<winston::emulator::llm::MockStats>,
    _dir: tempfile::TempDir,
    _controller: support::Winston,
}

impl Analyzing {
    async fn start(ns: &TestNamespace) -> Self {
        let stack = Stack::start(100).await;
        winston::ledger::migrate(&stack.control_db).await.unwrap();
        let (proxy_url, generated, _dir) = proxy(&stack.control_db).await;
        let mut env = stack.env(winston::emulator::DEFAULT_TOKEN);
        env.push(("WINSTON_PROXY_URL".into(), proxy_url));
        env.push(("WINSTON_ANALYZER_MODEL".into(), KIMI.into()));
        let (controller, _addr) = stack.controller_with(&ns.name, "a", &["--resync-seconds", "1"], &env);
        Self { stack, generated, _dir, _controller: controller }
    }
}

fn facts(file: &str) -> Value {
    serde_json::from_str(file.split("```json\n").nth(1).unwrap().split("```").next().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_a_website_goes_ready_with_its_profile_skills_and_the_system_account_charged() {
    let ns = TestNamespace::new("site").await;
    let analyzing = Analyzing::start(&ns).await;
    let (stack, generated) = (&analyzing.stack, &analyzing.generated);

    let site = format!("{}{}/green-leaf/", stack.emu.base(), winston::emulator::sites::SITES_PATH);
    apply_tenant(&ns, "green", &format!("  website: {site}\n"));
    let ti = ready(&ns, "green-0", READY_WITHIN).await;

    // status.profile: what the analyzer proposed from the page.
    let t = tenant(&ns, "green").await;
    let st = t.status.clone().unwrap();
    let profile = st.profile.clone().expect("status.profile");
    assert_eq!(profile.source_url, site);
    assert_eq!(profile.fields.business_name, "Green Leaf Dispensary");
    assert_eq!(profile.fields.industry, "cannabis");
    assert_eq!(profile.model, KIMI);
    assert!(profile.content_hash.starts_with("sha256:"));
    assert!(conditions::is_true(&st.conditions, "WebsiteAnalyzed"), "{:?}", st.conditions);

    // The system account paid exactly what the mock generated, and the
    // status shows the same tokens.
    let total = generated.report().total;
    assert_eq!(total.generations, 1, "one analysis");
    assert_eq!((profile.input_tokens, profile.output_tokens), (total.input_tokens, total.output_tokens));
    let billed = i64::try_from(total.input_tokens + total.output_tokens).unwrap() * KIMI_X;
    let ledger = Ledger::connect(&stack.control_db, 2).await.unwrap();
    // The proxy may hold an idle credit lease on the account for a moment
    // (given back after 1 s idle): the balance is read once it is back.
    let balance = eventually("the system account's lease given back", READY_WITHIN, || {
        let ledger = ledger.clone();
        async move { ledger.snapshot("system").await.ok().filter(|b| b.reserved == 0) }
    })
    .await;
    assert_eq!((balance.balance, balance.reserved), (SYSTEM_CREDITS - billed, 0));

    // The instance carries the profile; its workspace renders it and the
    // dispensary skills, the POS ones waiting on their connector.
    assert_eq!(ti.spec.website_profile.as_ref(), Some(&profile.fields));
    let skills = ti.status.as_ref().unwrap().skills.clone().expect("status.skills");
    let inventory = skills.waiting.iter().find(|w| w.skill == "inventory-lookup").expect("inventory-lookup waits");
    assert_eq!(inventory.connectors, ["pos"]);
    assert!(!skills.installed.contains(&"inventory-lookup".to_string()));
    let files = deployed_workspace(stack, &ti).await;
    let user = facts(files["USER.md"].as_str().unwrap());
    assert_eq!(user["industry"], "cannabis");
    assert_eq!(user["description"], profile.fields.description.as_str());
    assert_eq!(facts(files["SOUL.md"].as_str().unwrap())["name"], profile.fields.suggested_agent_name.as_str());
    assert!(!files.contains_key("skills/inventory-lookup/SKILL.md"));
    for s in &skills.installed {
        assert!(files[&format!("skills/{s}/SKILL.md")].as_str().unwrap().starts_with("---\n"), "{s}");
    }
    assert!(files["TOOLS.md"].as_str().unwrap().contains("`inventory-lookup` is not installed"));

    // Passes without a change do not analyse again: a spec change is
    // reconciled (observedGeneration) without a model call.
    let api: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PatchParams::default();
    let patched = api.patch("green", &pp, &Patch::Merge(json!({"spec": {"displayName": "Green Leaf"}}))).await.unwrap();
    let generation = patched.metadata.generation;
    eventually("the new generation reconciled", READY_WITHIN, || {
        let api = api.clone();
        async move {
            let t = api.get("green").await.ok()?;
            (t.status?.observed_generation == generation).then_some(())
        }
    })
    .await;
    assert_eq!(generated.report().total.generations, 1, "no analysis without a change");

    // The annotation asks for one more, exactly one.
    let annotate = json!({"metadata": {"annotations": {"winston.dev/reanalyze": "1"}}});
    api.patch("green", &pp, &Patch::Merge(annotate)).await.unwrap();
    eventually("the re-analysis in status", READY_WITHIN, || {
        let api = api.clone();
        async move {
            let p = api.get("green").await.ok()?.status?.profile?;
            (p.reanalyze_token.as_deref() == Some("1")).then_some(())
        }
    })
    .await;
    let patched =
        api.patch("green", &pp, &Patch::Merge(json!({"spec": {"displayName": "Green Leaf 2"}}))).await.unwrap();
    let generation = patched.metadata.generation;
    eventually("the next generation reconciled", READY_WITHIN, || {
        let api = api.clone();
        async move { (api.get("green").await.ok()?.status?.observed_generation == generation).then_some(()) }
    })
    .await;
    let total = generated.report().total;
    assert_eq!(total.generations, 2, "exactly one re-analysis");
    let billed = i64::try_from(total.input_tokens + total.output_tokens).unwrap() * KIMI_X;
    assert_eq!(ledger.snapshot("system").await.unwrap().balance, SYSTEM_CREDITS - billed);
}

/// A website the policy refuses (a private address) is a condition with the
/// analyzer's reason, never a model call, and provisioning goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_website_is_a_condition_and_the_tenant_still_goes_ready() {
    let ns = TestNamespace::new("siteno").await;
    let analyzing = Analyzing::start(&ns).await;
    let (stack, generated) = (&analyzing.stack, &analyzing.generated);

    apply_tenant(&ns, "closed", "  website: http://10.1.2.3/\n");
    let ti = ready(&ns, "closed-0", READY_WITHIN).await;
    assert_eq!(ti.spec.website_profile, None);
    // The Tenant's status follows its instance's (its triggers gather for a moment).
    let st = eventually("Tenant closed Ready", READY_WITHIN, || {
        let ns = &ns;
        async move {
            let st = tenant(ns, "closed").await.status?;
            conditions::is_true(&st.conditions, "Ready").then_some(st)
        }
    })
    .await;
    assert_eq!(st.profile, None);
    let c = conditions::find(&st.conditions, "WebsiteAnalyzed").expect("the condition").clone();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", winston::analyzer::reasons::WEBSITE_REFUSED));
    assert!(conditions::is_true(&st.conditions, "Ready"), "{:?}", st.conditions);
    assert_eq!(generated.report().total.generations, 0);
    let files = deployed_workspace(stack, &ti).await;
    assert!(files["USER.md"].as_str().unwrap().contains("\"location\": null"));
}

/// `spec.connectors[]`: the POS skills are installed once `pos` is given,
/// the Secret's keys reach the service as variables, and the value is
/// nowhere else: not in status, events or the workspace files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_installs_its_skills_and_its_value_reaches_only_the_service() {
    use k8s_openapi::api::core::v1::{Event, Secret};
    let ns = TestNamespace::new("conn").await;
    let analyzing = Analyzing::start(&ns).await;
    let stack = &analyzing.stack;

    const VALUE: &str = "pos-secret-7c1f9e2a";
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "green-pos"},
        "stringData": {"api-key": VALUE},
    }))
    .unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name).create(&Default::default(), &secret).await.unwrap();
    let site = format!("{}{}/green-leaf/", stack.emu.base(), winston::emulator::sites::SITES_PATH);
    let extra = format!("  website: {site}\n  connectors:\n  - type: pos\n    secretRef: {{name: green-pos}}\n");
    apply_tenant(&ns, "shop", &extra);
    let ti = ready(&ns, "shop-0", READY_WITHIN).await;

    let skills = ti.status.as_ref().unwrap().skills.clone().unwrap();
    assert!(skills.installed.contains(&"inventory-lookup".to_string()), "{skills:?}");
    assert!(skills.waiting.iter().all(|w| w.skill != "inventory-lookup"), "{skills:?}");
    let files = deployed_workspace(stack, &ti).await;
    assert!(files.contains_key("skills/inventory-lookup/SKILL.md"));
    assert!(files["TOOLS.md"].as_str().unwrap().contains("`WINSTON_CONNECTOR_POS_*`"));
    assert!(!serde_json::to_string(&files).unwrap().contains(VALUE), "the value in the workspace");

    let ids = ti.status.as_ref().unwrap().external.as_ref().unwrap().railway.clone().unwrap();
    let q =
        "query v($p: String!, $e: String!, $s: String) { variables(projectId: $p, environmentId: $e, serviceId: $s) }";
    let vars = stack.railway(q, json!({"p": ids.project_id, "e": ids.environment_id, "s": ids.service_id})).await;
    assert_eq!(vars["data"]["variables"]["WINSTON_CONNECTOR_POS_API_KEY"], VALUE);

    let t = serde_json::to_string(&tenant(&ns, "shop").await).unwrap();
    let i = serde_json::to_string(&ti).unwrap();
    let events = Api::<Event>::namespaced(ns.client.clone(), &ns.name).list(&Default::default()).await.unwrap();
    let events = serde_json::to_string(&events).unwrap();
    for (what, text) in [("the Tenant", &t), ("the TenantInstance", &i), ("the events", &events)] {
        assert!(!text.contains(VALUE), "the connector's value in {what}");
    }
    assert!(events.contains("shop"), "events were listed");
}

/// Secret keys that would become one service variable (`api-key`,
/// `api_key`, `api.key` of one connector, `key` of a `pos-api` connector:
/// all `WINSTON_CONNECTOR_POS_API_KEY`) are refused, not merged: the
/// instance stalls with `ConnectorVariableCollision` naming every key and
/// no value, and nothing is deployed. Renamed, the instance converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_keys_that_become_one_variable_stall_the_instance_and_name_the_keys() {
    use k8s_openapi::api::core::v1::{Event, Secret};
    let ns = TestNamespace::new("collide").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    let secrets = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    const VALUES: [&str; 4] = ["dash-6b1e0c", "under-9f2d4a", "dot-3c7b1e", "other-5a8e2f"];
    let secret = |name: &str, data: Value| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap()
    };
    let s1 = secret("s1", json!({"api-key": VALUES[0], "api_key": VALUES[1], "api.key": VALUES[2]}));
    secrets.create(&Default::default(), &s1).await.unwrap();
    secrets.create(&Default::default(), &secret("s2", json!({"key": VALUES[3]}))).await.unwrap();
    let connectors =
        "  connectors:\n  - type: pos\n    secretRef: {name: s1}\n  - type: pos-api\n    secretRef: {name: s2}\n";
    apply_tenant(&ns, "clash", connectors);

    let instances = Api::<winston::api::TenantInstance>::namespaced(ns.client.clone(), &ns.name);
    let message = eventually("clash-0 Stalled for ConnectorVariableCollision", READY_WITHIN, || {
        let instances = instances.clone();
        async move {
            let ti = instances.get_opt("clash-0").await.ok()??;
            let c = conditions::find(&ti.status?.conditions, "Stalled")?.clone();
            (c.status == "True" && c.reason == "ConnectorVariableCollision").then_some(c.message)
        }
    })
    .await;
    for key in [r#""api-key" of Secret s1"#, r#""api_key" of Secret s1"#, r#""api.key" of Secret s1"#] {
        assert!(message.contains(key), "{key} not named: {message}");
    }
    assert!(message.contains(r#"key "key" of Secret s2 (connector pos-api)"#), "{message}");
    assert!(message.contains("WINSTON_CONNECTOR_POS_API_KEY"), "{message}");
    assert_eq!(stack.objects().await["railway"]["objects"]["service"].as_array().map_or(0, Vec::len), 0);
    // The Tenant says so too; no value anywhere.
    eventually("Tenant clash Stalled for ConnectorVariableCollision", READY_WITHIN, || async {
        let t = Api::<Tenant>::namespaced(ns.client.clone(), &ns.name).get("clash").await.ok()?;
        let c = conditions::find(&t.status?.conditions, "Stalled")?.clone();
        (c.reason == "ConnectorVariableCollision").then_some(())
    })
    .await;
    let t = serde_json::to_string(&tenant(&ns, "clash").await).unwrap();
    let i = serde_json::to_string(&instances.get("clash-0").await.unwrap()).unwrap();
    let events = Api::<Event>::namespaced(ns.client.clone(), &ns.name).list(&Default::default()).await.unwrap();
    let events = serde_json::to_string(&events).unwrap();
    for (what, text) in [("the Tenant", &t), ("the TenantInstance", &i), ("the events", &events)] {
        for v in VALUES {
            assert!(!text.contains(v), "a connector value in {what}");
        }
    }

    // One key per variable (and a spec change, which retries at once): Ready.
    secrets.replace("s1", &Default::default(), &secret("s1", json!({"api-key": VALUES[0]}))).await.unwrap();
    let one = json!({"spec": {"connectors": [{"type": "pos", "secretRef": {"name": "s1"}}]}});
    Api::<Tenant>::namespaced(ns.client.clone(), &ns.name)
        .patch("clash", &PatchParams::default(), &Patch::Merge(one))
        .await
        .unwrap();
    let ti = ready(&ns, "clash-0", READY_WITHIN).await;
    let ids = ti.status.as_ref().unwrap().external.as_ref().unwrap().railway.clone().unwrap();
    let q =
        "query v($p: String!, $e: String!, $s: String) { variables(projectId: $p, environmentId: $e, serviceId: $s) }";
    let vars = stack.railway(q, json!({"p": ids.project_id, "e": ids.environment_id, "s": ids.service_id})).await;
    assert_eq!(vars["data"]["variables"]["WINSTON_CONNECTOR_POS_API_KEY"], VALUES[0]);
}
