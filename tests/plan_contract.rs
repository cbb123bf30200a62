//! The plan as a contract, the provisioning deadline and the customer's
//! welcome, on a real kube-apiserver, a real PostgreSQL and the platform
//! emulator. Every promise is checked at the other end: the objects the
//! emulated platforms hold, the emails Resend accepted, the Events and the
//! controller's own log and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use provisioning_support::{Stack, apply_tenant, metric, ready, secret_value};
use serde_json::{Value, json};
use support::{TestNamespace, eventually};
use winston::api::{CreditLedger, StepName, StepState, Tenant, TenantInstance, conditions};

const WITHIN: Duration = Duration::from_secs(120);

/// `(status, reason, message)` of condition `type_` on a Tenant.
async fn tenant_condition(ns: &TestNamespace, name: &str, type_: &str) -> Option<(String, String, String)> {
    let api: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let t = api.get_opt(name).await.ok()??;
    let c = conditions::find(&t.status?.conditions, type_)?.clone();
    Some((c.status, c.reason, c.message))
}

/// Waits until the Tenant `name` is Stalled for `reason` and returns the message.
async fn stalled_for(ns: &TestNamespace, name: &str, reason: &str) -> String {
    eventually(&format!("Tenant {name} Stalled for {reason}"), WITHIN, || async {
        let (status, r, message) = tenant_condition(ns, name, "Stalled").await?;
        (status == "True" && r == reason).then_some(message)
    })
    .await
}

async fn events(ns: &TestNamespace) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    api.list(&ListParams::default()).await.unwrap().items
}

/// The emulator's live objects of `kind` on `platform`.
async fn live(stack: &Stack, platform: &str, kind: &str) -> Vec<Value> {
    stack.objects().await[platform]["objects"][kind].as_array().cloned().unwrap_or_default()
}

/// Emails Resend accepted for `to`.
async fn emails_to(stack: &Stack, to: &str) -> Vec<Value> {
    live(stack, "resend", "email")
        .await
        .into_iter()
        .filter(|e| e["to"] == json!([to]) || e["to"] == json!(to))
        .collect()
}

/// `GET /emails/{id}` on the emulated Resend, as the platform returns it.
async fn email_body(stack: &Stack, id: &str) -> Value {
    stack.platform_get(&format!("{}/emails/{id}", winston::emulator::RESEND_PATH)).await
}

fn frontend_is(ti: &TenantInstance, state: StepState) -> bool {
    let steps = ti.status.as_ref().map(|s| s.steps.as_slice()).unwrap_or_default();
    steps.iter().any(|s| s.name == StepName::Frontend && s.state == state)
}

fn ids(ti: &TenantInstance) -> (Option<String>, Option<String>, Option<String>) {
    let ext = ti.status.as_ref().and_then(|s| s.external.clone()).unwrap_or_default();
    (
        ext.neon.and_then(|n| n.project_id),
        ext.railway.as_ref().and_then(|r| r.service_id.clone()),
        ext.vercel.and_then(|v| v.project_id),
    )
}

/// Applies the Tenant `name` on `plan` with `email` and `extra` spec lines.
fn apply(ns: &TestNamespace, name: &str, plan: &str, email: &str, extra: &str) {
    let yaml = format!(
        "apiVersion: winston.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  displayName: {name}\n  \
         contactEmail: {email}\n  plan: {plan}\n{extra}"
    );
    let (ok, out) = support::run_with_stdin(ns.kubectl(&["apply", "-f", "-"]), &yaml);
    assert!(ok, "kubectl apply: {out}");
}

fn patch_plan(plan: &str) -> Patch<Value> {
    Patch::Merge(json!({"spec": {"plan": plan}}))
}

/// A starter Tenant asking for 3 instances gets 1 (maxInstances) and says
/// why; a Tenant naming a compute region Winston cannot honour is refused
/// with `RegionUnsupported`, and creates nothing on Railway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_beyond_the_plan_and_unsupported_regions_are_refused() {
    let ns = TestNamespace::new("limits").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "many", "  instances: 3\n");
    let message = stalled_for(&ns, "many", "PlanLimitExceeded").await;
    assert!(message.contains("spec.instances is 3") && message.contains("at most 1"), "{message}");
    ready(&ns, "many-0", WITHIN).await;
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    for extra in ["many-1", "many-2"] {
        assert!(instances.get_opt(extra).await.unwrap().is_none(), "{extra} exists beyond the plan's limit");
    }
    assert_eq!(live(&stack, "railway", "service").await.len(), 1, "{}", stack.objects().await);
    let (ready_status, ready_reason, _) = tenant_condition(&ns, "many", "Ready").await.unwrap();
    assert_eq!((ready_status.as_str(), ready_reason.as_str()), ("False", "PlanLimitExceeded"));

    // Back within the limit: the refusal clears.
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.patch("many", &PatchParams::default(), &Patch::Merge(json!({"spec": {"instances": 1}}))).await.unwrap();
    eventually("Tenant many Ready once within its plan", WITHIN, || async {
        let (s, _, _) = tenant_condition(&ns, "many", "Ready").await?;
        (s == "True").then_some(())
    })
    .await;

    // A downgrade below the running instances deletes the surplus one.
    apply(&ns, "two", "growth", "ops@two.example", "  instances: 2\n");
    ready(&ns, "two-1", WITHIN).await;
    assert_eq!(live(&stack, "railway", "service").await.len(), 3);
    tenants.patch("two", &PatchParams::default(), &patch_plan("starter")).await.unwrap();
    stalled_for(&ns, "two", "PlanLimitExceeded").await;
    eventually("two-1 deleted with its service", WITHIN, || {
        let (instances, stack) = (instances.clone(), &stack);
        async move {
            let gone = instances.get_opt("two-1").await.ok()?.is_none();
            (gone && live(stack, "railway", "service").await.len() == 2).then_some(())
        }
    })
    .await;
    ready(&ns, "two-0", WITHIN).await;

    let region = "  components:\n    database: {}\n    compute: {region: europe-west4}\n";
    apply_tenant(&ns, "placed", region);
    let message = stalled_for(&ns, "placed", "RegionUnsupported").await;
    assert!(message.contains("europe-west4"), "{message}");
    assert_eq!(live(&stack, "railway", "service").await.len(), 2, "nothing created for the refused region");
}

/// growth adds the frontend to a running stack without touching its
/// database or service; free removes it again (the Vercel project is
/// deleted on the platform), still without touching the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_adds_the_frontend_and_a_downgrade_removes_it() {
    let ns = TestNamespace::new("planchange").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    let spec =
        "  components:\n    database: {}\n    compute: {}\n    frontend:\n      gitRepository: {repo: acme/site}\n";
    apply(&ns, "shop", "free", "ops@shop.example", spec);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let on_plan = |plan: &'static str| {
        let instances = instances.clone();
        move || {
            let instances = instances.clone();
            async move {
                let ti = instances.get_opt("shop-0").await.ok()??;
                let st = ti.status.as_ref()?;
                let current = st.observed_generation == ti.metadata.generation && ti.spec.stack.plan == plan;
                (current && conditions::is_true(&st.conditions, "Ready")).then_some(ti)
            }
        }
    };
    let free = eventually("shop-0 Ready on free", WITHIN, on_plan("free")).await;
    let (db, service, frontend) = ids(&free);
    assert!(db.is_some() && service.is_some(), "{:?}", free.status);
    // The free plan has no frontend: none may exist, even briefly created.
    assert_eq!(frontend, None);
    assert_eq!(live(&stack, "vercel", "project").await.len(), 0);

    tenants.patch("shop", &PatchParams::default(), &patch_plan("growth")).await.unwrap();
    let grown = eventually("shop-0 Ready on growth with its frontend", WITHIN, || {
        let check = on_plan("growth");
        async move { check().await.filter(|ti| frontend_is(ti, StepState::Done)) }
    })
    .await;
    assert_eq!((ids(&grown).0, ids(&grown).1), (db.clone(), service.clone()), "the upgrade re-created something");
    assert_eq!(live(&stack, "vercel", "project").await.len(), 1);
    assert!(grown.status.as_ref().and_then(|s| s.urls.as_ref()?.frontend.clone()).is_some());

    tenants.patch("shop", &PatchParams::default(), &patch_plan("free")).await.unwrap();
    let shrunk = eventually("shop-0 Ready on free without its frontend", WITHIN, || {
        let check = on_plan("free");
        async move { check().await.filter(|ti| frontend_is(ti, StepState::Skipped) && ids(ti).2.is_none()) }
    })
    .await;
    assert_eq!(live(&stack, "vercel", "project").await.len(), 0, "the Vercel project outlived the downgrade");
    assert_eq!(
        (ids(&shrunk).0, ids(&shrunk).1),
        (db.clone(), service),
        "the downgrade touched the database or service"
    );
    assert_eq!(live(&stack, "railway", "service").await.len(), 1);
    assert_eq!(live(&stack, "neon", "project").await.len(), 1);
    let urls = shrunk.status.as_ref().and_then(|s| s.urls.clone()).unwrap_or_default();
    assert_eq!(urls.frontend, None);
    assert!(urls.service.is_some());

    // Dropping compute from the spec deletes the Railway service and
    // project; the database stays as it is.
    let database_only = json!({"spec": {"components": {"compute": null, "frontend": null}}});
    tenants.patch("shop", &PatchParams::default(), &Patch::Merge(database_only)).await.unwrap();
    let lean = eventually("shop-0 Ready without its service", WITHIN, || {
        let instances = instances.clone();
        async move {
            let ti = instances.get_opt("shop-0").await.ok()??;
            let st = ti.status.as_ref()?;
            let done = st.observed_generation == ti.metadata.generation && ids(&ti).1.is_none();
            (done && conditions::is_true(&st.conditions, "Ready")).then_some(ti)
        }
    })
    .await;
    assert_eq!(live(&stack, "railway", "service").await.len(), 0, "{}", stack.objects().await);
    assert_eq!(live(&stack, "railway", "project").await.len(), 0, "{}", stack.objects().await);
    assert_eq!(ids(&lean).0, db, "the database was touched");
    assert_eq!(live(&stack, "neon", "project").await.len(), 1);
    assert_eq!(lean.status.as_ref().and_then(|s| s.urls.clone()), None);
}

/// A component the spec asks for and the plan does not include is never
/// dropped silently: the step is skipped with a message saying so, its
/// condition's reason is `ExcludedByPlan`, and the Tenant carries
/// `ComponentsExcluded`. Once the spec stops asking, the skip is plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_the_plan_excludes_is_named_on_the_instance_and_the_tenant() {
    let ns = TestNamespace::new("excluded").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    let spec =
        "  components:\n    database: {}\n    compute: {}\n    frontend:\n      gitRepository: {repo: acme/site}\n";
    apply(&ns, "lean", "free", "ops@lean.example", spec);
    let why = "plan free does not include a frontend; upgrade the plan or remove components.frontend";
    let ti = ready(&ns, "lean-0", WITHIN).await;
    let st = ti.status.clone().unwrap();
    let step = st.steps.iter().find(|s| s.name == StepName::Frontend).unwrap();
    assert_eq!((step.state, step.message.as_deref()), (StepState::Skipped, Some(why)), "{st:?}");
    let c = conditions::find(&st.conditions, "FrontendReady").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str()), ("True", "ExcludedByPlan", why));
    let on_tenant = eventually("Tenant lean names the excluded frontend", WITHIN, || async {
        let (s, r, m) = tenant_condition(&ns, "lean", "ComponentsExcluded").await?;
        (s == "True").then_some((r, m))
    })
    .await;
    assert_eq!(on_tenant, ("ExcludedByPlan".to_string(), why.to_string()));
    assert_eq!(live(&stack, "vercel", "project").await.len(), 0);

    // The spec no longer asks for a frontend: a plain skip, nothing on the Tenant.
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let no_frontend = Patch::Merge(json!({"spec": {"components": {"frontend": null}}}));
    tenants.patch("lean", &PatchParams::default(), &no_frontend).await.unwrap();
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually("lean-0 plainly skips the frontend and the Tenant no longer names it", WITHIN, || {
        let instances = instances.clone();
        let ns = &ns;
        async move {
            let ti = instances.get_opt("lean-0").await.ok()??;
            let c = conditions::find(&ti.status.as_ref()?.conditions, "FrontendReady")?.clone();
            let plain = ti.spec.stack.components.frontend.is_none() && c.reason == "Skipped" && c.message.is_empty();
            let tenant = tenant_condition(ns, "lean", "ComponentsExcluded").await;
            (plain && tenant.is_none() && frontend_is(&ti, StepState::Skipped)).then_some(())
        }
    })
    .await;
}

/// Skills the persona names and the workspace does not install are
/// reported with why (no such skill, not in the plan), in
/// `status.skills.notInstalled` and the `WorkspaceReady` message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_skills_that_are_unknown_or_off_plan_are_reported() {
    let ns = TestNamespace::new("offplan").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply(&ns, "ava", "free", "ops@ava.example", "  persona: {name: Ava, skills: [doesnotexist, crm, faq]}\n");
    let ti = ready(&ns, "ava-0", WITHIN).await;
    let st = ti.status.clone().unwrap();
    let skills = serde_json::to_value(st.skills.clone().unwrap()).unwrap();
    assert_eq!(
        skills,
        json!({"installed": ["faq"], "notInstalled": [
            {"skill": "doesnotexist", "reason": "UnknownSkill"},
            {"skill": "crm", "reason": "NotInPlan"}
        ]}),
        "{st:?}"
    );
    let c = conditions::find(&st.conditions, "WorkspaceReady").unwrap();
    assert!(
        c.message.ends_with("; persona.skills not installed: doesnotexist (no such skill), crm (not in plan free)"),
        "{}",
        c.message
    );
}

/// An instance past its deadline is Stalled for `ProgressDeadlineExceeded`
/// with an Event, the operator's notification and the customer's failure
/// email (each once); it keeps being retried and the stall clears when it
/// becomes Ready. The provisioning histograms are exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_deadline_stalls_notifies_once_and_clears_when_ready() {
    let ns = TestNamespace::new("deadline").await;
    // Every platform operation takes 3 s: Ready takes well over the 1 s deadline.
    let stack = Stack::start(3000).await;
    let mut env = stack.env(winston::emulator::DEFAULT_TOKEN);
    env.retain(|(k, _)| k != "WINSTON_STALLED_RETRY_SECONDS");
    env.push(("WINSTON_STALLED_RETRY_SECONDS".into(), "1".into()));
    env.push(("WINSTON_OPERATOR_EMAIL".into(), "oncall@winston.test".into()));
    let (_ctl, addr) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "slow", "  provisioningDeadlineSeconds: 1\n");
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let message = eventually("slow-0 Stalled for ProgressDeadlineExceeded", WITHIN, || {
        let instances = instances.clone();
        async move {
            let ti = instances.get_opt("slow-0").await.ok()??;
            let c = conditions::find(&ti.status?.conditions, "Stalled")?.clone();
            (c.status == "True" && c.reason == "ProgressDeadlineExceeded").then_some(c.message)
        }
    })
    .await;
    assert!(message.contains("deadline of 1s") && message.contains("still retrying"), "{message}");
    let ti = ready(&ns, "slow-0", WITHIN).await;
    let stalled = conditions::find(&ti.status.as_ref().unwrap().conditions, "Stalled").unwrap();
    assert_eq!(stalled.status, "False", "the stall clears when Ready: {stalled:?}");

    let exceeded: Vec<_> = events(&ns)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("slow-0"))
        .collect();
    assert_eq!(exceeded.len(), 1, "one Event for the missed deadline");
    assert_eq!(exceeded[0].type_.as_deref(), Some("Warning"));
    let to_operator = emails_to(&stack, "oncall@winston.test").await;
    assert_eq!(to_operator.len(), 1, "{to_operator:?}");
    assert!(to_operator[0]["subject"].as_str().unwrap().contains("slow-0"));
    let to_customer = emails_to(&stack, "ops@slow.example").await;
    let subjects: Vec<&str> = to_customer.iter().filter_map(|e| e["subject"].as_str()).collect();
    assert_eq!(to_customer.len(), 2, "one failure email and, once Ready, one welcome: {subjects:?}");
    assert!(subjects.iter().any(|s| s.contains("longer than expected")), "{subjects:?}");
    assert!(subjects.iter().any(|s| s.contains("is ready")), "{subjects:?}");

    assert!(metric(&addr, "winston_provisioning_duration_seconds_count").await >= 1.0);
    let overall = metric(&addr, "winston_provisioning_duration_seconds_sum").await;
    assert!(overall > 1.0, "apply-to-Ready took longer than the deadline: {overall}");
    assert!(metric(&addr, "winston_provisioning_step_duration_seconds_count{step=\"database\"}").await >= 1.0);
    assert!(metric(&addr, "winston_provisioning_step_duration_seconds_count{step=\"service\"}").await >= 1.0);
}

/// The welcome email is rendered from the plan's template (mounted as the
/// chart does, `--email-templates`) with the agent's URL and the API key
/// from the credentials Secret; it is sent once although the first answer
/// was lost and the controller restarted, and the key appears nowhere else:
/// not in status, Events or the controller's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_email_comes_from_the_plan_template_once_and_the_key_nowhere_else() {
    let ns = TestNamespace::new("welcome").await;
    let stack = Stack::start(50).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("starter.welcome.subject"), "Starter {{agent_name}} for {{display_name}}").unwrap();
    std::fs::write(dir.path().join("starter.welcome.txt"), "URL={{agent_url}}\nKEY={{api_key}}\n").unwrap();
    std::fs::write(dir.path().join("starter.welcome.html"), "<p><a href=\"{{agent_url}}\">{{agent_url}}</a></p>")
        .unwrap();
    let templates = dir.path().to_str().unwrap().to_string();
    // The first send is performed but its answer lost: the retry must not send again.
    stack.fault(json!({"platform": "resend", "operation": "sendEmail", "kind": "drop_response"})).await;
    let (ctl, _) = stack.controller(&ns.name, "a", &["--email-templates", &templates]);
    apply_tenant(&ns, "hello", "");
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let ti = eventually("hello-0 welcomed", WITHIN, || {
        let instances = instances.clone();
        async move {
            let ti = instances.get_opt("hello-0").await.ok()??;
            ti.status.as_ref()?.external.as_ref()?.welcome_email_id.as_ref()?;
            Some(ti)
        }
    })
    .await;
    let key = secret_value(&ns, "hello-0-credentials", "WINSTON_API_KEY").await;
    let url = ti.status.as_ref().unwrap().urls.as_ref().unwrap().service.clone().unwrap();
    let id = ti.status.as_ref().unwrap().external.as_ref().unwrap().welcome_email_id.clone().unwrap();
    let sent = email_body(&stack, &id).await;
    assert_eq!(sent["subject"], "Starter Winston for hello");
    assert_eq!(sent["text"], format!("URL={url}\nKEY={key}\n"));
    assert_eq!(sent["html"], format!("<p><a href=\"{url}\">{url}</a></p>"));
    assert_eq!(emails_to(&stack, "ops@hello.example").await.len(), 1);

    let logs_before = ctl.logs();
    ctl.kill();
    let (ctl, addr) = stack.controller(&ns.name, "b", &["--email-templates", &templates]);
    // The new leader has looked at the instance (a full pass) before we count.
    eventually("the restarted controller reconciled hello-0", WITHIN, || {
        let addr = addr.clone();
        async move { (metric(&addr, "winston_reconciles_total{kind=\"TenantInstance\"}").await >= 1.0).then_some(()) }
    })
    .await;
    ready(&ns, "hello-0", WITHIN).await;
    assert_eq!(emails_to(&stack, "ops@hello.example").await.len(), 1, "exactly one welcome email");

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let everywhere = [
        serde_json::to_string(&instances.get("hello-0").await.unwrap()).unwrap(),
        serde_json::to_string(&tenants.get("hello").await.unwrap()).unwrap(),
        serde_json::to_string(&events(&ns).await).unwrap(),
        logs_before,
        ctl.logs(),
    ];
    for (i, text) in everywhere.iter().enumerate() {
        assert!(!text.contains(&key), "the API key leaked into place {i}");
    }
}

/// Two Tenants with one contact email: the later one is not provisioned
/// (no instance, no ledger, nothing on any platform) and says why without
/// the address in any Event; once the first is gone it is provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tenant_with_the_same_contact_email_is_refused() {
    let ns = TestNamespace::new("dupemail").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply(&ns, "aaa-first", "starter", "owner@shared.example", "");
    ready(&ns, "aaa-first-0", WITHIN).await;
    // Created after aaa-first (or in the same second, when the name decides),
    // with the same address in other letter cases.
    apply(&ns, "zzz-later", "starter", "Owner@Shared.EXAMPLE", "");
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let message = stalled_for(&ns, "zzz-later", "DuplicateContactEmail").await;
    assert!(message.contains("Tenant aaa-first"), "{message}");
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    assert!(ledgers.get_opt("zzz-later").await.unwrap().is_none(), "a refused Tenant got a ledger");
    assert!(instances.get_opt("zzz-later-0").await.unwrap().is_none(), "a refused Tenant got an instance");
    assert_eq!(live(&stack, "neon", "project").await.len(), 1, "only aaa-first's database");
    let refusal: Vec<_> =
        events(&ns).await.into_iter().filter(|e| e.reason.as_deref() == Some("DuplicateContactEmail")).collect();
    assert_eq!(refusal.len(), 1, "one warning Event");
    let all = serde_json::to_string(&events(&ns).await).unwrap().to_lowercase();
    assert!(!all.contains("owner@shared.example"), "the address is in an Event");

    tenants.delete("aaa-first", &DeleteParams::default()).await.unwrap();
    ready(&ns, "zzz-later-0", WITHIN).await;
    let (status, _, _) = tenant_condition(&ns, "zzz-later", "Stalled").await.unwrap();
    assert_eq!(status, "False");
}

/// `components.database.region` is honoured on both database platforms:
/// the Neon and the Supabase project are created where the Tenant asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_regions_are_honoured_on_neon_and_supabase() {
    let ns = TestNamespace::new("regions").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    let neon = "  components:\n    database: {provider: Neon, region: aws-eu-central-1}\n    compute: {}\n";
    let supabase = "  components:\n    database: {provider: Supabase, region: eu-central-1}\n    compute: {}\n";
    apply(&ns, "on-neon", "starter", "ops@on-neon.example", neon);
    apply(&ns, "on-supa", "starter", "ops@on-supa.example", supabase);
    let neon_ti = ready(&ns, "on-neon-0", WITHIN).await;
    let supa_ti = ready(&ns, "on-supa-0", WITHIN).await;
    let ext = |ti: &TenantInstance| ti.status.as_ref().unwrap().external.clone().unwrap();
    let project_id = ext(&neon_ti).neon.unwrap().project_id.unwrap();
    let reference = ext(&supa_ti).supabase.unwrap().project_ref.unwrap();
    let neon_project = stack.platform_get(&format!("{}/projects/{project_id}", winston::emulator::NEON_PATH)).await;
    assert_eq!(neon_project["project"]["region_id"], "aws-eu-central-1", "{neon_project}");
    let path = format!("{}/v1/projects/{reference}", winston::emulator::SUPABASE_PATH);
    let supa_project = stack.platform_get(&path).await;
    assert_eq!(supa_project["region"], "eu-central-1", "{supa_project}");
}
