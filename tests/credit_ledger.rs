//! The CreditLedger controller (the real `winston controller` binary) against
//! a real kube-apiserver and a real PostgreSQL: a Tenant's ledger gets its
//! plan's allotment, grants credit once however often they are reconciled,
//! usage spent through the ledger API shows in the ledger's and the Tenant's
//! status, Low / Exhausted flip at once, without waiting for the resync, and
//! only the ledger its Tenant owns drives the Tenant's account (keyed by the
//! Tenant's uid, so a Tenant created again is a new account).
#![allow(clippy::unwrap_used)]

mod ledger_support;
mod support;

use std::time::Duration;

use chrono::{Datelike, Utc};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use support::{TestNamespace, controller, eventually};
use winston::api::{CreditLedger, Tenant};
use winston::ledger::{Ledger, Usage};
use winston::names::ledger_account;

const WAIT: Duration = Duration::from_secs(60);

fn tenant(name: &str, plan: &str) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": { "name": name },
        "spec": { "displayName": "Acme", "contactEmail": format!("ops@{name}.example"), "plan": plan }
    }))
    .unwrap()
}

/// A Tenant whose instances leave nothing outside when it is deleted, with
/// its ledger's allotment and threshold set.
fn tenant_with_credits(name: &str, allotment: i64) -> Tenant {
    let mut t = tenant(name, "free");
    t.spec.stack.deletion_policy = winston::api::DeletionPolicy::Orphan;
    t.spec.credits =
        Some(serde_json::from_value(json!({"allotmentPerPeriod": allotment, "lowBalancePercent": 20})).unwrap());
    t
}

/// The account of the Tenant `t` as the API server returned it.
fn account_of(t: &Tenant) -> String {
    ledger_account(&t.namespace().unwrap(), &t.name_any(), &t.uid().unwrap())
}

fn condition(cl: &CreditLedger, type_: &str) -> Option<(String, String)> {
    let c = cl.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Spends `credits` (at multiplier 1) for `request` through the ledger API,
/// the way the proxy does.
async fn spend(ledger: &Ledger, account: &str, request: &str, credits: i64) {
    let r = ledger.reserve(account, request, credits, Duration::from_secs(60)).await.unwrap();
    let usage = Usage {
        model: "kimi-k2.6".into(),
        input_tokens: credits / 2,
        output_tokens: credits - credits / 2,
        cost: credits,
        outcome: "complete".into(),
        ..Usage::default()
    };
    assert_eq!(ledger.settle(&r, &usage).await.unwrap().credits, credits);
}

async fn count(ledger: &Ledger, sql: &'static str, param: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(param).fetch_one(ledger.pool()).await.unwrap();
    n
}

async fn reconciles(addr: &str) -> f64 {
    let body = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    body.lines()
        .filter(|l| l.starts_with("winston_reconciles_total{") && l.contains("kind=\"CreditLedger\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn tenant_ledger_gets_its_plan_allotment_grants_once_and_mirrors_usage() {
    let db = ledger_support::fresh_db().await;
    let ns = TestNamespace::new("credits").await;
    let args = ["--database-url", &db.url, "--ledger-resync-seconds", "1", "--ledger-poll-ms", "200"];
    let (ctl, addr) = controller(&ns.name, "solo", &args);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    let l = &db.ledger;

    // The Tenant's ledger is created by the Tenant controller and gets the
    // plan's allotment (free: 50 000) in a period that started once.
    let created = tenants.create(&PostParams::default(), &tenant("acme", "free")).await.unwrap();
    let account = account_of(&created);
    let cl = eventually("ledger status mirrors the allotment", WAIT, || async {
        let cl = ledgers.get_opt("acme").await.unwrap()?;
        (cl.status.as_ref()?.balance == Some(50_000)).then_some(cl)
    })
    .await;
    let s = cl.status.clone().unwrap();
    assert_eq!((s.allotment, s.used_this_period), (Some(50_000), Some(0)));
    let (start, end) = (s.period_start.unwrap(), s.period_end.unwrap());
    assert!(start <= Utc::now() && Utc::now() < end, "{start} .. {end}");
    assert_eq!(condition(&cl, "Ready"), Some(("True".into(), "Ready".into())));
    assert_eq!(condition(&cl, "Low"), Some(("False".into(), "AboveThreshold".into())));
    assert_eq!(s.observed_generation, cl.metadata.generation);
    assert_eq!(s.account.as_deref(), Some(account.as_str()), "the account is recorded in status");
    let snap = l.snapshot(&account).await.unwrap();
    assert_eq!((snap.balance, snap.allotment, snap.low_threshold_pct), (50_000, 50_000, 20));

    // A grant credits once, however often the ledger is reconciled.
    let grant = json!({"spec": {"grants": [{"id": "topup-1", "credits": 1000, "reason": "invoice 1"}]}});
    ledgers.patch("acme", &PatchParams::default(), &Patch::Merge(&grant)).await.unwrap();
    eventually("grant credited", WAIT, || async {
        (l.snapshot(&account).await.unwrap().balance == 51_000).then_some(())
    })
    .await;
    let before = reconciles(&addr).await;
    ledgers.patch("acme", &PatchParams::default(), &Patch::Merge(&grant)).await.unwrap();
    eventually("several more reconciles", WAIT, || async { (reconciles(&addr).await >= before + 3.0).then_some(()) })
        .await;
    assert_eq!(l.snapshot(&account).await.unwrap().balance, 51_000);
    let grants = count(l, "SELECT count(*) FROM grants WHERE account_id = $1 AND id LIKE '%/topup-1'", &account).await;
    assert_eq!(grants, 1);
    let (id,): (String,) =
        sqlx::query_as("SELECT id FROM grants WHERE account_id = $1").bind(&account).fetch_one(l.pool()).await.unwrap();
    assert_eq!(id, format!("{account}/topup-1"));
    assert_eq!(count(l, "SELECT count(*) FROM period_resets WHERE account_id = $1", &account).await, 1);

    // Usage through the ledger API shows in the ledger's status within the
    // resync, and in the Tenant's status right after.
    spend(l, &account, "req-1", 1_500).await;
    eventually("ledger status follows usage", WAIT, || async {
        let s = ledgers.get("acme").await.unwrap().status?;
        (s.balance == Some(49_500) && s.used_this_period == Some(1_500)).then_some(())
    })
    .await;
    let credits = eventually("tenant status shows credits", WAIT, || async {
        let c = tenants.get("acme").await.unwrap().status?.credits?;
        (c.balance == Some(49_500)).then_some(c)
    })
    .await;
    assert_eq!((credits.ledger.as_str(), credits.used_this_period, credits.low), ("acme", Some(1_500), false));

    // A plan change moves the current period's allotment by the difference, once.
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"plan": "starter"}}))).await.unwrap();
    eventually("allotment follows the plan", WAIT, || async {
        let s = ledgers.get("acme").await.unwrap().status?;
        (s.allotment == Some(500_000) && s.balance == Some(499_500)).then_some(())
    })
    .await;
    assert_eq!(count(l, "SELECT count(*) FROM period_resets WHERE account_id = $1", &account).await, 1);

    // Spend most of it, then toggle the plan down and up three times: what
    // was spent stays spent (the old arithmetic by differences minted
    // 450,000 credits per round trip).
    spend(l, &account, "req-2", 450_000).await;
    for round in 0..3 {
        for (plan, balance) in [("free", 1_000), ("starter", 49_500)] {
            let patch = json!({"spec": {"plan": plan}});
            tenants.patch("acme", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
            eventually(&format!("round {round}: plan {plan} leaves {balance}"), WAIT, || async {
                let s = ledgers.get("acme").await.unwrap().status?;
                (s.balance == Some(balance) && s.used_this_period == Some(451_500)).then_some(())
            })
            .await;
        }
    }
    let snap = l.snapshot(&account).await.unwrap();
    assert_eq!((snap.balance, snap.used_this_period), (49_500, 451_500), "a plan toggle minted credits");

    let status = ctl.terminate();
    assert!(status.success(), "controller did not exit cleanly on SIGTERM: {status:?}");
}

#[tokio::test]
async fn low_and_exhausted_flip_without_waiting_for_the_resync() {
    let db = ledger_support::fresh_db().await;
    let ns = TestNamespace::new("flips").await;
    // A resync far longer than the test: only the flip poller can update status.
    let args = ["--database-url", &db.url, "--ledger-resync-seconds", "3600", "--ledger-poll-ms", "200"];
    let (_ctl, _addr) = controller(&ns.name, "solo", &args);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let l = &db.ledger;

    // A ledger written before its Tenant (to set its anchor) is adopted by it.
    let cl: CreditLedger = serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
        "metadata": { "name": "solo" },
        "spec": { "tenantRef": { "name": "solo" }, "allotmentPerPeriod": 1000, "lowBalancePercent": 20,
                  "periodAnchor": "2026-01-15T00:00:00Z" }
    }))
    .unwrap();
    ledgers.create(&PostParams::default(), &cl).await.unwrap();
    let solo = tenants.create(&PostParams::default(), &tenant_with_credits("solo", 1000)).await.unwrap();
    let account = account_of(&solo);
    let cl = eventually("ledger active", WAIT, || async {
        let cl = ledgers.get("solo").await.unwrap();
        (cl.status.as_ref()?.balance == Some(1000)).then_some(cl)
    })
    .await;
    let start = cl.status.as_ref().unwrap().period_start.unwrap();
    assert_eq!(start.day(), 15, "periods follow the anchor: {start}");
    assert_eq!(condition(&cl, "Exhausted"), Some(("False".into(), "CreditsAvailable".into())));

    spend(l, &account, "req-1", 850).await;
    let cl = eventually("Low flips", Duration::from_secs(20), || async {
        let cl = ledgers.get("solo").await.unwrap();
        (condition(&cl, "Low")?.0 == "True").then_some(cl)
    })
    .await;
    assert_eq!(cl.status.as_ref().unwrap().balance, Some(150));
    assert_eq!(condition(&cl, "Low").unwrap().1, "BelowThreshold");
    assert_eq!(condition(&cl, "Exhausted").unwrap().0, "False");

    spend(l, &account, "req-2", 150).await;
    eventually("Exhausted flips", Duration::from_secs(20), || async {
        let cl = ledgers.get("solo").await.unwrap();
        (condition(&cl, "Exhausted")? == ("True".into(), "NoCreditsLeft".into())).then_some(())
    })
    .await;

    // A top-up clears both.
    let grant = json!({"spec": {"grants": [{"id": "rescue", "credits": 5000}]}});
    ledgers.patch("solo", &PatchParams::default(), &Patch::Merge(&grant)).await.unwrap();
    eventually("Low and Exhausted clear", WAIT, || async {
        let cl = ledgers.get("solo").await.unwrap();
        let clear = condition(&cl, "Low")?.0 == "False" && condition(&cl, "Exhausted")?.0 == "False";
        (clear && cl.status?.balance == Some(5000)).then_some(())
    })
    .await;

    // A ledger whose Tenant does not exist touches no account: its grants
    // credit nothing, and it says what to do.
    let orphan: CreditLedger = serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
        "metadata": { "name": "nobody" },
        "spec": { "tenantRef": { "name": "nobody" }, "allotmentPerPeriod": 1000,
                  "grants": [{ "id": "free-money", "credits": 5000 }] }
    }))
    .unwrap();
    ledgers.create(&PostParams::default(), &orphan).await.unwrap();
    let cl = eventually("orphan reports TenantNotFound", WAIT, || async {
        let cl = ledgers.get("nobody").await.unwrap();
        (condition(&cl, "Ready")? == ("False".into(), "TenantNotFound".into())).then_some(cl)
    })
    .await;
    assert_eq!(condition(&cl, "Stalled"), Some(("True".into(), "TenantNotFound".into())));
    assert!(cl.status.as_ref().unwrap().account.is_none());
    let prefix = format!("{}/nobody/%", ns.name);
    assert_eq!(count(l, "SELECT count(*) FROM grants WHERE id LIKE $1", &prefix).await, 0);
    assert_eq!(count(l, "SELECT count(*) FROM accounts WHERE id LIKE $1", &prefix).await, 0);
}

/// Events about `name` with `reason`, and whether any was repeated.
async fn events(ns: &TestNamespace, name: &str, reason: &str) -> (usize, bool) {
    let api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let list = api.list(&ListParams::default()).await.unwrap().items;
    let mine: Vec<_> = list
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect();
    (mine.len(), mine.iter().any(|e| e.series.is_some()))
}

/// Defect 6 of issue 10: a second ledger for a Tenant is refused at apply; a
/// ledger its Tenant does not own credits nothing, even when it names
/// another Tenant as its owner; and a Tenant deleted and created again under
/// the same name gets a fresh account whose grant ids are credited again,
/// while the old account's balance and usage stay exactly as they were.
#[tokio::test]
async fn only_the_owning_tenant_drives_its_account_and_a_recreated_tenant_starts_fresh() {
    let db = ledger_support::fresh_db().await;
    let ns = TestNamespace::new("owned").await;
    let args = ["--database-url", &db.url, "--ledger-resync-seconds", "1", "--ledger-poll-ms", "200"];
    let (_ctl, addr) = controller(&ns.name, "solo", &args);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    let l = &db.ledger;

    let first = tenants.create(&PostParams::default(), &tenant_with_credits("acme", 1000)).await.unwrap();
    let old = account_of(&first);
    eventually("acme's ledger active on its account", WAIT, || async {
        let s = ledgers.get_opt("acme").await.unwrap()?.status?;
        (s.balance == Some(1000) && s.account.as_deref() == Some(old.as_str())).then_some(())
    })
    .await;

    // A second ledger naming the same Tenant is refused at admission.
    let second: CreditLedger = serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
        "metadata": { "name": "acme-extra" },
        "spec": { "tenantRef": { "name": "acme" }, "grants": [{ "id": "g1", "credits": 99999 }] }
    }))
    .unwrap();
    match ledgers.create(&PostParams::default(), &second).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("metadata.name must equal spec.tenantRef.name"), "{}", e.message);
        }
        other => panic!("a second ledger for acme was accepted: {other:?}"),
    }

    // A ledger that names acme's Tenant as its controller, written before
    // Tenant beta: beta does not own it, so it drives no account (neither
    // beta's nor acme's), however often it is reconciled.
    let mut foreign: CreditLedger = serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
        "metadata": { "name": "beta" },
        "spec": { "tenantRef": { "name": "beta" }, "allotmentPerPeriod": 1000,
                  "grants": [{ "id": "stolen-1", "credits": 5000 }] }
    }))
    .unwrap();
    foreign.metadata.owner_references = Some(vec![first.controller_owner_ref(&()).unwrap()]);
    ledgers.create(&PostParams::default(), &foreign).await.unwrap();
    let beta = tenants.create(&PostParams::default(), &tenant_with_credits("beta", 1000)).await.unwrap();
    let cl = eventually("beta's foreign ledger reports NotOwned", WAIT, || async {
        let cl = ledgers.get("beta").await.unwrap();
        (condition(&cl, "Ready")? == ("False".into(), "NotOwned".into())).then_some(cl)
    })
    .await;
    assert_eq!(condition(&cl, "Stalled"), Some(("True".into(), "NotOwned".into())));
    let ready = cl.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Ready").unwrap().message.clone();
    assert!(ready.contains("Delete it"), "the message says what to do: {ready}");
    let before = reconciles(&addr).await;
    eventually("several more reconciles", WAIT, || async { (reconciles(&addr).await >= before + 5.0).then_some(()) })
        .await;
    assert_eq!(count(l, "SELECT count(*) FROM grants WHERE id LIKE $1", "%/stolen-1").await, 0);
    assert_eq!(count(l, "SELECT count(*) FROM accounts WHERE id = $1", &account_of(&beta)).await, 0);
    assert_eq!(l.snapshot(&old).await.unwrap().balance, 1000, "acme's account got beta's grant");
    assert_eq!(events(&ns, "beta", "NotOwned").await, (1, false), "one event for the transition, no storm");

    // acme gets a grant and spends some; then the Tenant is deleted and a
    // new customer takes the name.
    let g1 = json!({"spec": {"grants": [{"id": "g1", "credits": 500}]}});
    ledgers.patch("acme", &PatchParams::default(), &Patch::Merge(&g1)).await.unwrap();
    eventually("g1 credited to acme", WAIT, || async {
        (l.snapshot(&old).await.unwrap().balance == 1500).then_some(())
    })
    .await;
    spend(l, &old, "req-old-1", 300).await;
    let old_snapshot = l.snapshot(&old).await.unwrap();
    let old_usage = count(l, "SELECT count(*) FROM usage_records WHERE account_id = $1", &old).await;
    assert_eq!((old_snapshot.balance, old_usage), (1200, 1));

    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    eventually("acme and its ledger gone", WAIT, || async {
        let gone = tenants.get_opt("acme").await.unwrap().is_none() && ledgers.get_opt("acme").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
    let again = tenants.create(&PostParams::default(), &tenant_with_credits("acme", 1000)).await.unwrap();
    let new = account_of(&again);
    assert_ne!(new, old);
    eventually("the new acme's ledger active on a fresh account", WAIT, || async {
        let s = ledgers.get_opt("acme").await.unwrap()?.status?;
        (s.account.as_deref() == Some(new.as_str()) && s.balance == Some(1000) && s.used_this_period == Some(0))
            .then_some(())
    })
    .await;
    ledgers.patch("acme", &PatchParams::default(), &Patch::Merge(&g1)).await.unwrap();
    eventually("the same grant id credited to the new account", WAIT, || async {
        (l.snapshot(&new).await.unwrap().balance == 1500).then_some(())
    })
    .await;
    assert_eq!(count(l, "SELECT count(*) FROM grants WHERE id LIKE $1", "%/g1").await, 2);
    // The old account's history is untouched.
    let snapshot = l.snapshot(&old).await.unwrap();
    assert_eq!(
        (snapshot.balance, snapshot.used_this_period, snapshot.allotment),
        (old_snapshot.balance, old_snapshot.used_this_period, old_snapshot.allotment)
    );
    assert_eq!(count(l, "SELECT count(*) FROM usage_records WHERE account_id = $1", &old).await, old_usage);
    assert_eq!(count(l, "SELECT count(*) FROM usage_records WHERE account_id = $1", &new).await, 0);
}

/// The ledger controller's own status write starts no pass of its ledger:
/// each grant costs exactly one pass (two before: the write's own watch
/// event came back as a change). A status changed by someone else still
/// starts one, and is put back.
#[tokio::test]
async fn a_ledgers_own_status_write_starts_no_pass_but_a_foreign_one_does() {
    let db = ledger_support::fresh_db().await;
    let ns = TestNamespace::new("own-status").await;
    // No resync inside the test's time: every pass counted has a cause.
    let (_ctl, addr) = controller(&ns.name, "solo", &["--database-url", &db.url, "--ledger-resync-seconds", "600"]);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.create(&PostParams::default(), &tenant("acme", "free")).await.unwrap();
    let tenant_shows = |balance: i64| {
        let tenants = tenants.clone();
        async move {
            let credits = tenants.get("acme").await.ok()?.status?.credits?;
            (credits.balance == Some(balance)).then_some(())
        }
    };
    // The Tenant's status mirrors the ledger's last: the chain has run.
    eventually("the Tenant shows the allotment", WAIT, || tenant_shows(50_000)).await;
    let before = reconciles(&addr).await;

    let mut grants = Vec::new();
    for (n, balance) in [(1, 51_000), (2, 52_000)] {
        grants.push(json!({"id": format!("topup-{n}"), "credits": 1000, "reason": "invoice"}));
        let patch = json!({"spec": {"grants": grants}});
        ledgers.patch("acme", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        // Its ledger's status event reached the Tenant, debounced (0.5 s):
        // an extra ledger pass on that event would have run by now.
        eventually("the Tenant shows the grant", WAIT, || tenant_shows(balance)).await;
    }
    assert_eq!(reconciles(&addr).await - before, 2.0, "one ledger pass per grant, none for its own status write");

    let foreign = json!({"status": {"balance": 1}});
    ledgers.patch_status("acme", &PatchParams::default(), &Patch::Merge(&foreign)).await.unwrap();
    eventually("the balance put back", WAIT, || async {
        (ledgers.get("acme").await.ok()?.status?.balance == Some(52_000)).then_some(())
    })
    .await;
    assert_eq!(reconciles(&addr).await - before, 3.0, "one pass for the foreign write");
}
