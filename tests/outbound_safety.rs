//! Outbound safety end to end on a real kube-apiserver, a real PostgreSQL
//! and the platform emulator: a frontend repository of an organisation the
//! operator did not allow stalls the instance with `RepositoryNotAllowed`
//! and creates nothing on Vercel, and without `--outbound-allow-cidr` the
//! health check refuses the emulated agent on loopback instead of calling it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use kube::Api;
use provisioning_support::{Stack, apply_tenant};
use support::{TestNamespace, eventually};
use winston::api::{StepName, TenantInstance};

const WITHIN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_of_an_organisation_not_allowed_stalls_and_creates_nothing_on_vercel() {
    let ns = TestNamespace::new("orgs").await;
    let stack = Stack::start(0).await;
    // The stack allows `storm/*` only.
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    let frontend = "  components:\n    database: {provider: Neon}\n    compute: {provider: Railway}\n    frontend:\n      \
                    provider: Vercel\n      gitRepository: {repo: operator-private/billing, ref: main}\n";
    apply_tenant(&ns, "sneaky", frontend);

    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let stalled = eventually("Stalled on RepositoryNotAllowed", WITHIN, || {
        let api = api.clone();
        async move {
            let ti = api.get("sneaky-0").await.ok()?;
            ti.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True").cloned()
        }
    })
    .await;
    assert_eq!(stalled.reason, "RepositoryNotAllowed", "{stalled:?}");
    assert!(stalled.message.contains("operator-private"), "{}", stalled.message);
    let objects = stack.objects().await;
    assert_eq!(objects["vercel"]["objects"]["project"].as_array().unwrap().len(), 0, "{objects}");
    assert_eq!(objects["vercel"]["mutations"].as_u64().unwrap_or(0), 0, "{objects}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_allowed_network_the_health_check_refuses_loopback() {
    let ns = TestNamespace::new("outbound").await;
    let stack = Stack::start(0).await;
    let env: Vec<(String, String)> = stack
        .env(winston::emulator::DEFAULT_TOKEN)
        .into_iter()
        .filter(|(k, _)| k != "WINSTON_OUTBOUND_ALLOW_CIDRS")
        .collect();
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "local", "");

    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let message = eventually("the health step refuses loopback", WITHIN, || {
        let api = api.clone();
        async move {
            let ti = api.get("local-0").await.ok()?;
            let step = ti.status.as_ref()?.steps.iter().find(|s| s.name == StepName::Health)?.clone();
            let message = step.message.clone().unwrap_or_default();
            message.contains("is not a public address").then_some(message)
        }
    })
    .await;
    assert!(message.contains("127.0.0.1"), "{message}");
    let ti = api.get("local-0").await.unwrap();
    let ready = ti.status.unwrap().conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(!ready, "Ready although the health check never reached the agent");
}
