//! The CreditLedger controller (the real `winston controller` binary) against
//! a real kube-apiserver and a real PostgreSQL: a Tenant's ledger gets its
//! plan's allotment, grants credit once however often they are reconciled,
//! usage spent through the ledger API shows in the ledger's and the Tenant's
//! status, and Low / Exhausted flip at once, without waiting for the resync.
#![allow(clippy::unwrap_used)]

mod ledger_support;
mod support;

use std::time::Duration;

use chrono::{Datelike, Utc};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestNamespace, controller, eventually};
use winston::api::{CreditLedger, Tenant};
use winston::ledger::{Ledger, Usage};

const WAIT: Duration = Duration::from_secs(60);

fn tenant(name: &str, plan: &str) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": { "name": name },
        "spec": { "displayName": "Acme", "contactEmail": "ops@acme.example", "plan": plan }
    }))
    .unwrap()
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
        multiplier: 1,
        outcome: "complete".into(),
    };
    assert_eq!(ledger.settle(&r, &usage).await.unwrap().credits, credits);
}

async fn count(ledger: &Ledger, sql: &'static str, account: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(account).fetch_one(ledger.pool()).await.unwrap();
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
    let account = format!("{}/acme", ns.name);
    let l = &db.ledger;

    // The Tenant's ledger is created by the Tenant controller and gets the
    // plan's allotment (free: 50 000) in a period that started once.
    tenants.create(&PostParams::default(), &tenant("acme", "free")).await.unwrap();
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
    let account = format!("{}/solo", ns.name);
    let l = &db.ledger;

    let cl: CreditLedger = serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
        "metadata": { "name": "solo" },
        "spec": { "tenantRef": { "name": "solo" }, "allotmentPerPeriod": 1000, "lowBalancePercent": 20,
                  "periodAnchor": "2026-01-15T00:00:00Z" }
    }))
    .unwrap();
    ledgers.create(&PostParams::default(), &cl).await.unwrap();
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

    // A ledger that leaves its allotment to a Tenant that does not exist says so.
    let orphan: CreditLedger = serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
        "metadata": { "name": "orphan" }, "spec": { "tenantRef": { "name": "nobody" } }
    }))
    .unwrap();
    ledgers.create(&PostParams::default(), &orphan).await.unwrap();
    eventually("orphan reports TenantNotFound", WAIT, || async {
        let cl = ledgers.get("orphan").await.unwrap();
        (condition(&cl, "Ready")? == ("False".into(), "TenantNotFound".into())).then_some(())
    })
    .await;
}
