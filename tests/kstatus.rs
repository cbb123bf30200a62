//! What kstatus — the health model of sigs.k8s.io/cli-utils that Argo CD,
//! Flux and kpt use — says of Winston's objects, computed by the real
//! library (`tests/kstatus`, a small Go probe built and cached by its
//! `build.sh`) on objects the real controller wrote on a real API server:
//! provisioning is `InProgress`, Ready is `Current`, a spec edit is
//! `InProgress` until it converged (a serving Tenant stays `Ready` meanwhile)
//! and a terminal problem is `Failed` with a message written for people.
//!
//! Without the engine, the instances' statuses are written by the test the
//! way the TenantInstance controller reports them, so the Tenant's
//! aggregation is checked on exact inputs; with the engine and the platform
//! emulator, every kind is checked as the whole controller leaves it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use provisioning_support::{Stack, apply_tenant};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use support::{History, TestNamespace, controller, eventually};
use winston::api::{CreditLedger, Tenant, TenantInstance, conditions};

const WAIT: Duration = Duration::from_secs(60);
const READY_WITHIN: Duration = Duration::from_secs(120);

static PROBE: OnceLock<PathBuf> = OnceLock::new();

/// The kstatus probe, built once per test binary (a warm cache costs a stat).
fn probe() -> &'static PathBuf {
    PROBE.get_or_init(|| {
        let out = Command::new(support::root().join("tests/kstatus/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/kstatus/build.sh");
        assert!(out.status.success(), "tests/kstatus/build.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// kstatus' verdict on one object: its status (`InProgress`, `Current`,
/// `Failed`, ...) and message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
struct Verdict {
    status: String,
    message: String,
}

fn kstatus<K: Serialize>(obj: &K) -> Verdict {
    let (ok, out) = support::run_with_stdin(Command::new(probe()), &serde_json::to_string(obj).unwrap());
    assert!(ok, "kstatus probe: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("kstatus probe answered {out:?}: {e}"))
}

/// Waits until kstatus says `status` of the object `name` and returns it with the verdict.
async fn until_kstatus<K>(api: &Api<K>, name: &str, status: &str, timeout: Duration) -> (K, Verdict)
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    eventually(&format!("kstatus {status} for {name}"), timeout, || async {
        let obj = api.get_opt(name).await.ok()??;
        let v = kstatus(&obj);
        (v.status == status).then_some((obj, v))
    })
    .await
}

fn condition<'a>(
    conds: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> (&'a str, &'a str, &'a str) {
    let c = conditions::find(conds, type_).unwrap_or_else(|| panic!("no {type_} condition in {conds:?}"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn tenant_conditions(t: &Tenant) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
    t.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
}

/// The Warning Events about the object `name`, as `(reason, note)`.
async fn warnings(ns: &TestNamespace, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Whether `text` shows a Rust debug representation instead of words.
fn looks_like_debug(text: &str) -> bool {
    ["Status {", "ErrorResponse", "KubeApiError {", "Api(", "Some("].iter().any(|d| text.contains(d))
}

fn tenant(name: &str, persona: &str) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": { "name": name },
        "spec": { "displayName": "Acme", "contactEmail": format!("ops@{name}.example"), "plan": "starter",
                  "persona": { "name": persona } }
    }))
    .unwrap()
}

/// Writes the status of instance `name` as the TenantInstance controller
/// would: `observed` generation seen, serving or not, still working or
/// not, stalled with `(reason, message)` or not.
async fn instance_reports(
    api: &Api<TenantInstance>,
    name: &str,
    observed: i64,
    ready: bool,
    reconciling: bool,
    stalled: Option<(&str, &str)>,
) {
    let cond = |type_: &str, status: bool, reason: &str, message: &str| {
        json!({ "type": type_, "status": if status { "True" } else { "False" }, "reason": reason,
                "message": message, "observedGeneration": observed, "lastTransitionTime": "2026-01-01T00:00:00Z" })
    };
    let (stalled_reason, stalled_message) = stalled.unwrap_or(("NotStalled", ""));
    let phase = if stalled.is_some() {
        "Failed"
    } else if ready {
        "Ready"
    } else {
        "Provisioning"
    };
    let status = json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "TenantInstance",
        "status": {
            "phase": phase,
            "observedGeneration": observed,
            "conditions": [
                cond("Ready", ready, if ready { "Ready" } else { stalled_reason }, stalled_message),
                cond("Reconciling", reconciling, if reconciling { "Progressing" } else { "Idle" }, ""),
                cond("Stalled", stalled.is_some(), stalled_reason, stalled_message),
            ],
            "urls": { "service": format!("https://{name}.example") }
        }
    });
    api.patch_status(name, &PatchParams::apply("test-instance-controller").force(), &Patch::Apply(status))
        .await
        .unwrap();
}

async fn wait_ready(addr: &str) {
    eventually("controller /readyz", WAIT, || async {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tenant_is_in_progress_current_stays_ready_through_an_edit_and_fails_with_its_instance() {
    let ns = TestNamespace::new("kstatus-tenant").await;
    let (_ctl, addr) = controller(&ns.name, "solo", &[]);
    wait_ready(&addr).await;
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.create(&PostParams::default(), &tenant("acme", "Ava")).await.unwrap();

    // Provisioning: the instance exists and is not Ready yet.
    let (_, v) = until_kstatus(&tenants, "acme", "InProgress", WAIT).await;
    assert!(v.message.contains("0/1 instances ready"), "{v:?}");
    let ti = eventually("acme-0", WAIT, || async { instances.get_opt("acme-0").await.unwrap() }).await;
    let generation = ti.metadata.generation.unwrap();
    instance_reports(&instances, "acme-0", generation, false, true, None).await;
    assert_eq!(kstatus(&instances.get("acme-0").await.unwrap()).status, "InProgress");

    // Ready.
    instance_reports(&instances, "acme-0", generation, true, false, None).await;
    let (t, _) = until_kstatus(&tenants, "acme", "Current", WAIT).await;
    assert_eq!(condition(tenant_conditions(&t), "Ready").0, "True");

    // A harmless edit: InProgress while the instance converges, Ready all along.
    let history = History::of(&tenants, "acme").await;
    let from = history.all().len();
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"persona": {"name": "Bea"}}})))
        .await
        .unwrap();
    let edited = eventually("the instance follows the edit", WAIT, || async {
        let ti = instances.get("acme-0").await.unwrap();
        (ti.spec.profile.persona.as_ref()?.name == "Bea").then_some(ti)
    })
    .await;
    let generation = edited.metadata.generation.unwrap();
    // The instance's controller has not seen the new generation yet...
    let t = eventually("the Tenant to observe the edit", WAIT, || async {
        let t = tenants.get("acme").await.unwrap();
        (t.status.as_ref()?.observed_generation == t.metadata.generation).then_some(t)
    })
    .await;
    let v = kstatus(&t);
    assert_eq!(v.status, "InProgress", "{v:?}");
    assert_eq!(condition(tenant_conditions(&t), "Reconciling").0, "True");
    assert!(v.message.contains("acme-0"), "{v:?}");
    // ...then works on it while serving...
    instance_reports(&instances, "acme-0", generation, true, true, None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kstatus(&tenants.get("acme").await.unwrap()).status, "InProgress");
    // ...and is done.
    instance_reports(&instances, "acme-0", generation, true, false, None).await;
    until_kstatus(&tenants, "acme", "Current", WAIT).await;
    let versions: Vec<Tenant> = history.all().split_off(from);
    let verdicts: Vec<String> = versions.iter().map(|t| kstatus(t).status).collect();
    assert!(verdicts.contains(&"InProgress".to_string()) && verdicts.last().unwrap() == "Current", "{verdicts:?}");
    for t in &versions {
        let (ready, reason, message) = condition(tenant_conditions(t), "Ready");
        assert_eq!(ready, "True", "the serving Tenant stopped being Ready during the edit: {reason}: {message}");
        assert_eq!(t.status.as_ref().unwrap().phase, Some(winston::api::Phase::Ready), "not Degraded for an edit");
    }

    // Stalled for good: Failed, with the instance's reason and message.
    let why = "step service: failed to authenticate to railway (401): check the platform token";
    instance_reports(&instances, "acme-0", generation, false, false, Some(("Unauthorized", why))).await;
    let (t, v) = until_kstatus(&tenants, "acme", "Failed", WAIT).await;
    assert_eq!(v.message, format!("acme-0: {why}"));
    for type_ in ["Ready", "Stalled"] {
        let (_, reason, message) = condition(tenant_conditions(&t), type_);
        assert_eq!((reason, message), ("Unauthorized", format!("acme-0: {why}").as_str()), "{type_}");
    }
    assert_eq!(t.status.as_ref().unwrap().phase, Some(winston::api::Phase::Failed));
    for (reason, note) in warnings(&ns, "acme").await {
        assert!(!looks_like_debug(&note), "{reason}: {note}");
    }
}

#[tokio::test]
async fn a_child_the_api_server_refuses_makes_the_tenant_failed_with_its_message() {
    let ns = TestNamespace::new("kstatus-quota").await;
    // No TenantInstance may be created in this namespace. Nothing runs the
    // quota controller here, so the test writes the quota's status itself.
    let quotas: Api<ResourceQuota> = Api::namespaced(ns.client.clone(), &ns.name);
    let hard = |n: &str| json!({ "count/tenantinstances.winston.dev": n });
    let quota =
        serde_json::from_value(json!({"metadata": {"name": "no-instances"}, "spec": {"hard": hard("0")}})).unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let quota_status = |n: &str| Patch::Merge(json!({"status": {"hard": hard(n), "used": hard("0")}}));
    quotas.patch_status("no-instances", &PatchParams::default(), &quota_status("0")).await.unwrap();

    let (_ctl, addr) = controller(&ns.name, "solo", &[]);
    wait_ready(&addr).await;
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.create(&PostParams::default(), &tenant("quota", "Ava")).await.unwrap();

    let (t, v) = until_kstatus(&tenants, "quota", "Failed", WAIT).await;
    assert!(v.message.starts_with("failed to create TenantInstance quota-0: "), "{v:?}");
    assert!(v.message.contains("exceeded quota: no-instances"), "the API server's words: {v:?}");
    assert!(!looks_like_debug(&v.message), "{v:?}");
    for type_ in ["Ready", "Stalled"] {
        let (_, reason, message) = condition(tenant_conditions(&t), type_);
        assert_eq!((reason, message), ("ChildRefused", v.message.as_str()), "{type_}");
    }
    assert_eq!(t.status.as_ref().unwrap().phase, Some(winston::api::Phase::Failed));
    let refused = eventually("a Warning Event for the refusal", WAIT, || async {
        warnings(&ns, "quota").await.into_iter().find(|(r, _)| r == "ChildRefused")
    })
    .await;
    assert_eq!(refused.1, v.message, "the Event says what the status says");
    for (reason, note) in warnings(&ns, "quota").await {
        assert!(!looks_like_debug(&note), "{reason}: {note}");
    }

    // Once the quota allows it, the retry creates the instance and the stall clears.
    quotas
        .patch("no-instances", &PatchParams::default(), &Patch::Merge(json!({"spec": {"hard": hard("1")}})))
        .await
        .unwrap();
    quotas.patch_status("no-instances", &PatchParams::default(), &quota_status("1")).await.unwrap();
    let (t, _) = until_kstatus(&tenants, "quota", "InProgress", READY_WITHIN).await;
    assert_eq!(condition(tenant_conditions(&t), "Stalled").0, "False");
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    assert!(instances.get_opt("quota-0").await.unwrap().is_some());
}

/// The engine on the platform emulator: every kind through provisioning,
/// Ready and an edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_in_progress_then_current_through_provisioning_and_an_edit() {
    let ns = TestNamespace::new("kstatus-engine").await;
    let stack = Stack::start(300).await;
    let (ctl, _) = stack.controller(&ns.name, "a", &[]);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    apply_tenant(&ns, "kst", "  persona:\n    name: Ava\n");

    // Provisioning, watched version by version.
    let t_history = History::of(&tenants, "kst").await;
    eventually("kst-0", WAIT, || async { instances.get_opt("kst-0").await.unwrap() }).await;
    let i_history = History::of(&instances, "kst-0").await;
    for (what, verdicts) in [
        ("Tenant", until_current(&tenants, "kst", &t_history).await),
        ("TenantInstance", until_current(&instances, "kst-0", &i_history).await),
    ] {
        assert!(verdicts.contains(&"InProgress".to_string()), "{what} never InProgress: {verdicts:?}");
        assert!(!verdicts.contains(&"Failed".to_string()), "{what}: {verdicts:?}");
    }
    let (cl, _) = until_kstatus(&ledgers, "kst", "Current", WAIT).await;
    assert!(conditions::is_true(&cl.status.unwrap().conditions, "Ready"));

    // An edit: InProgress until converged, then Current again.
    let (t_from, i_from) = (t_history.all().len(), i_history.all().len());
    tenants
        .patch("kst", &PatchParams::default(), &Patch::Merge(json!({"spec": {"persona": {"name": "Bea"}}})))
        .await
        .unwrap();
    eventually("the instance follows the edit", WAIT, || async {
        let ti = instances.get("kst-0").await.unwrap();
        (ti.spec.profile.persona.as_ref()?.name == "Bea").then_some(())
    })
    .await;
    let t_edit = until_current_after(&tenants, "kst", &t_history, t_from).await;
    let i_edit = until_current_after(&instances, "kst-0", &i_history, i_from).await;
    assert!(t_edit.iter().any(|(v, _)| v == "InProgress"), "Tenant: {t_edit:?}");
    assert!(i_edit.iter().any(|(v, _)| v == "InProgress"), "TenantInstance: {i_edit:?}");
    // The Tenant's Ready says what its instance's Ready says (whether it
    // serves); it never calls the edit a failure. The instance redeploys a
    // service that still serves: it stays Ready all along, and so does the Tenant.
    assert!(t_edit.iter().all(|(v, _)| v != "Failed"), "Tenant: {t_edit:?}");
    let instance_stayed_ready = i_history.all()[i_from..]
        .iter()
        .all(|ti| conditions::is_true(&ti.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(), "Ready"));
    assert!(instance_stayed_ready, "the instance left Ready during a harmless edit: {i_edit:?}");
    assert!(t_edit.iter().all(|(_, ready)| *ready), "the Tenant left Ready while its instance served: {t_edit:?}");

    // The ledger: an edit its controller has not seen is InProgress, then Current.
    drop(ctl);
    ledgers
        .patch(
            "kst",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grants": [{"id": "welcome", "credits": 5}]}})),
        )
        .await
        .unwrap();
    let v = kstatus(&ledgers.get("kst").await.unwrap());
    assert_eq!(v.status, "InProgress", "{v:?}");
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    let (cl, _) = until_kstatus(&ledgers, "kst", "Current", WAIT).await;
    assert_eq!(cl.status.as_ref().unwrap().observed_generation, cl.metadata.generation);
}

/// kstatus of every version of `name` with a status until it is Current.
async fn until_current<K>(api: &Api<K>, name: &str, history: &History<K>) -> Vec<String>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static,
{
    until_kstatus(api, name, "Current", READY_WITHIN).await;
    history.all().iter().filter(|o| has_status(*o)).map(|o| kstatus(o).status).collect()
}

/// kstatus and whether `Ready` is true, for every version of `name` from
/// `from` on, once it observed its latest generation and is Current again.
async fn until_current_after<K>(api: &Api<K>, name: &str, history: &History<K>, from: usize) -> Vec<(String, bool)>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug + Send + Sync + 'static,
{
    let latest = eventually(&format!("{name} converged after the edit"), READY_WITHIN, || async {
        let obj = api.get(name).await.ok()?;
        let v = serde_json::to_value(&obj).ok()?;
        let observed = v["status"]["observedGeneration"] == v["metadata"]["generation"];
        (observed && kstatus(&obj).status == "Current").then_some(obj)
    })
    .await;
    let seen = |o: &K| o.meta().resource_version == latest.meta().resource_version;
    eventually(&format!("the watch of {name} to catch up"), WAIT, || async {
        history.all().iter().any(seen).then_some(())
    })
    .await;
    history.all()[from..]
        .iter()
        .map(|o| {
            let v = serde_json::to_value(o).unwrap();
            let ready = v["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            (kstatus(o).status, ready)
        })
        .collect()
}

fn has_status<K: Serialize>(obj: &K) -> bool {
    serde_json::to_value(obj).unwrap().get("status").is_some_and(|s| !s.is_null())
}

/// Terminal problems through the engine: an unknown plan (the ledger and the
/// instance) and a platform token that is refused (the instance), each
/// `Failed` and carried up to the Tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_problems_are_failed_and_reach_the_tenant() {
    let ns = TestNamespace::new("kstatus-stalled").await;
    let stack = Stack::start(50).await;
    let env = stack.env_with(&[("WINSTON_RAILWAY_TOKEN", "not-a-valid-token")]);
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    apply_tenant(&ns, "auth", "");
    let yaml = "apiVersion: winston.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: gold\nspec:\n  displayName: Gold\n  \
                contactEmail: ops@gold.example\n  plan: gold\n";
    let (ok, out) = support::run_with_stdin(ns.kubectl(&["apply", "-f", "-"]), yaml);
    assert!(ok, "kubectl apply: {out}");

    // An unknown plan: the ledger is Failed (not InProgress forever).
    let (cl, v) = until_kstatus(&ledgers, "gold", "Failed", READY_WITHIN).await;
    let conds = cl.status.unwrap().conditions;
    assert_eq!(condition(&conds, "Stalled").1, "UnknownPlan");
    assert_eq!(condition(&conds, "Ready"), ("False", "UnknownPlan", v.message.as_str()));
    assert!(v.message.contains("plan \"gold\" is not in the plan catalog"), "{v:?}");
    let (_, v) = until_kstatus(&instances, "gold-0", "Failed", READY_WITHIN).await;
    assert!(v.message.contains("gold"), "{v:?}");
    let (t, v) = until_kstatus(&tenants, "gold", "Failed", READY_WITHIN).await;
    assert!(v.message.starts_with("gold-0: "), "{v:?}");
    assert_eq!(condition(tenant_conditions(&t), "Stalled").1, "UnknownPlan");

    // A platform token that is refused: the instance and its Tenant are Failed
    // with the platform's reason, and the token never shows.
    let (_, v) = until_kstatus(&instances, "auth-0", "Failed", READY_WITHIN).await;
    assert!(v.message.contains("railway") && !v.message.contains("not-a-valid-token"), "{v:?}");
    let (t, tv) = until_kstatus(&tenants, "auth", "Failed", READY_WITHIN).await;
    assert_eq!(tv.message, format!("auth-0: {}", v.message));
    for type_ in ["Ready", "Stalled"] {
        let (_, reason, message) = condition(tenant_conditions(&t), type_);
        assert_eq!((reason, message), ("Unauthorized", tv.message.as_str()), "{type_}");
    }
    // The ledger of a tenant on a known plan is fine whatever its instances do.
    until_kstatus(&ledgers, "auth", "Current", READY_WITHIN).await;
    for name in ["auth", "auth-0", "gold", "gold-0"] {
        for (reason, note) in warnings(&ns, name).await {
            assert!(!looks_like_debug(&note), "{name}: {reason}: {note}");
        }
    }
}
