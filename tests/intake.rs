//! `winston intake` against a real kube-apiserver, a real PostgreSQL and
//! the emulator's Stripe, which signs and retries its deliveries like
//! Stripe: signatures (valid, tampered, stale, missing, rotated), each
//! event processed once, older subscription states never over newer ones,
//! a refused write retried until it succeeds, a SIGKILL between the Tenant
//! write and the answer, unknown events, email uniqueness, cancellation.
//! Every assertion counts what exists at the other end: Tenants in the API
//! server, rows in the database, attempts the emulator made.
#![allow(clippy::unwrap_used)]
mod intake_support;
mod support;

use std::time::Duration;

use intake_support::*;
use serde_json::json;
use winston::emulator::stripe_delivery::signature_header;

const MINUTE: Duration = Duration::from_secs(60);

fn unknown_event(id: &str) -> Vec<u8> {
    let created = chrono::Utc::now().timestamp();
    serde_json::to_vec(&json!({"id": id, "object": "event", "type": "radar.early_fraud_warning.created",
        "created": created, "data": {"object": {"id": "issfr_1", "object": "radar.early_fraud_warning"}}}))
    .unwrap()
}

#[tokio::test]
async fn signatures_are_verified_as_stripe_specifies() {
    let mut env = Env::new("intake-sig", CONFIG, 100).await;
    env.start_intake(true).await;
    let now = chrono::Utc::now().timestamp();
    let body = unknown_event("evt_sig_ok");

    let (status, answer) = env.post_raw(&body, Some(signature_header(SECRET, now, &body))).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")), "valid: {answer}");

    // The rotated-out secret still verifies while configured, alone or
    // beside a signature under an unknown secret.
    let body2 = unknown_event("evt_sig_rotated");
    let (status, _) = env.post_raw(&body2, Some(signature_header(PREVIOUS_SECRET, now, &body2))).await;
    assert_eq!(status, 200, "signed with the previous secret");
    let wrong = signature_header("whsec_unknown", now, &body2);
    let right = signature_header(PREVIOUS_SECRET, now, &body2);
    let both = format!("{wrong},v1={}", right.split_once("v1=").unwrap().1);
    let (status, answer) = env.post_raw(&body2, Some(both)).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("duplicate")), "second v1 matches: {answer}");

    // A checkout whose body was changed after signing creates nothing.
    let price = env.price("starter-monthly").await;
    env.control("/delivery", json!({"hold": true})).await;
    env.checkout(&price, "tampered@example.com", "Tampered").await;
    let event = env.last_event("checkout.session.completed").await;
    let original = serde_json::to_vec(&event).unwrap();
    let mut forged = event.clone();
    forged["data"]["object"]["customer_details"]["email"] = json!("attacker@example.com");
    let forged = serde_json::to_vec(&forged).unwrap();
    let refusals: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("tampered", forged.clone(), Some(signature_header(SECRET, now, &original))),
        ("stale", original.clone(), Some(signature_header(SECRET, now - 301, &original))),
        ("from the future", original.clone(), Some(signature_header(SECRET, now + 301, &original))),
        ("missing", original.clone(), None),
        ("unknown secret", original.clone(), Some(signature_header("whsec_someone_else", now, &original))),
        ("no v1", original.clone(), Some(format!("t={now},v0=abcd"))),
        ("garbage", original.clone(), Some("hello".into())),
    ];
    for (what, body, header) in refusals {
        let (status, answer) = env.post_raw(&body, header).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_signature", "{what}: {answer}");
    }
    // A header stuffed with signatures is refused before the body is hashed.
    let genuine = signature_header(SECRET, now, &original);
    let stuffed = format!("t={now},{},v1={}", vec!["v1=00"; 64].join(","), genuine.split_once("v1=").unwrap().1);
    let (status, answer) = env.post_raw(&original, Some(stuffed)).await;
    assert_eq!((status, answer["error"]["type"].as_str()), (400, Some("invalid_signature")), "{answer}");
    // Every other refusal is JSON too: too big, wrong method, wrong path.
    let (status, answer) = env.post_raw(&vec![b' '; 3 << 20], Some(genuine)).await;
    assert_eq!((status, answer["error"]["type"].as_str()), (413, Some("invalid_request")), "{answer}");
    let r = env.http.get(env.intake_url()).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["type"], "method_not_allowed");
    let r = env.http.post(env.intake_url().replace("/webhook", "/hook")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["type"], "not_found");
    assert!(env.tenants().await.is_empty(), "a refused delivery created a Tenant");
    assert_eq!(env.store.processed_events().await.unwrap(), 2, "only the two valid deliveries are recorded");
    assert_eq!(env.metric("winston_intake_signature_refusals_total{reason=\"mismatch\"}").await, 2);
    assert_eq!(env.metric("winston_intake_signature_refusals_total{reason=\"stale\"}").await, 2);
    assert_eq!(env.metric("winston_intake_signature_refusals_total{reason=\"missing\"}").await, 1);

    // The genuine delivery still works afterwards.
    env.control("/delivery", json!({"hold": false})).await;
    env.acknowledged(event["id"].as_str().unwrap(), 1).await;
    assert_eq!(env.tenants().await.len(), 1);
    let log = env.intake_log();
    for secret in [SECRET, PREVIOUS_SECRET, "tampered@example.com", "attacker@example.com"] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}

#[tokio::test]
async fn a_checkout_creates_one_tenant_and_every_event_is_processed_once() {
    let mut env = Env::new("intake-once", CONFIG, 100).await;
    env.start_intake(false).await;
    let price = env.price("starter-monthly").await;
    let session = env.checkout(&price, "owner@acme-dental.example", "Acme Dental").await;
    let name = tenant_of(&session);
    let tenant = eventually("the Tenant", MINUTE, || env.tenant(&name)).await;
    assert_eq!(tenant.spec.stack.plan, "starter");
    assert_eq!(tenant.spec.profile.contact_email, "owner@acme-dental.example");
    assert_eq!(tenant.spec.profile.display_name, "Acme Dental");
    assert_eq!(tenant.spec.profile.website.as_deref(), Some("https://acme-dental.example"));
    assert_eq!(tenant.spec.profile.industry.as_deref(), Some("Dental clinic"));
    let annotations = tenant.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("winston.dev/stripe-customer"), session["customer"].as_str().map(String::from).as_ref());

    // Delete the Tenant behind intake's back, then deliver the same event
    // five more times at once: processed once means nothing is created again.
    let event = env.last_event("checkout.session.completed").await;
    let id = event["id"].as_str().unwrap();
    env.acknowledged(id, 1).await;
    env.ns.kubectl(&["delete", "tenant", &name, "--wait=true"]).output().unwrap();
    for _ in 0..5 {
        env.control(&format!("/events/{id}/deliver"), json!({})).await;
    }
    env.acknowledged(id, 6).await;
    assert!(env.tenants().await.is_empty(), "a duplicate delivery created the Tenant again");
    assert_eq!(
        env.metric("winston_intake_events_total{type=\"checkout.session.completed\",outcome=\"duplicate\"}").await,
        5
    );
    let sql = env.sql().await;
    let (rows, outcome): (i64, String) =
        sqlx::query_as("SELECT count(*) OVER (), outcome FROM stripe_events WHERE event_id = $1")
            .bind(id)
            .fetch_one(&sql)
            .await
            .unwrap();
    assert_eq!((rows, outcome.as_str()), (1, "created"));
    // customer.created and customer.subscription.created are not intake's: acknowledged, counted.
    assert!(env.metric("winston_intake_events_total{type=\"other\",outcome=\"ignored\"}").await >= 2);
}

#[tokio::test]
async fn older_subscription_states_never_overwrite_newer_ones() {
    let mut env = Env::new("intake-order", CONFIG, 100).await;
    env.start_intake(false).await;
    let starter = env.price("starter-monthly").await;
    let growth = env.price("growth-monthly").await;
    let team = env.price("team-monthly").await;
    let session = env.checkout(&starter, "order@example.com", "Order Co").await;
    let name = tenant_of(&session);
    let uid = eventually("the Tenant", MINUTE, || env.tenant(&name)).await.metadata.uid;
    let sub = session["subscription"].as_str().unwrap();

    env.control("/delivery", json!({"hold": true})).await;
    env.api(reqwest::Method::POST, &format!("/v1/subscriptions/{sub}"), &[("items[0][price]", &growth)]).await;
    let older = env.last_event("customer.subscription.updated").await;
    env.api(reqwest::Method::POST, &format!("/v1/subscriptions/{sub}"), &[("items[0][price]", &team)]).await;
    let newer = env.last_event("customer.subscription.updated").await;
    assert!(newer["created"].as_i64() > older["created"].as_i64());

    // Stripe delivers the newer state first, the older one after.
    let (older_id, newer_id) = (older["id"].as_str().unwrap(), newer["id"].as_str().unwrap());
    env.control(&format!("/events/{newer_id}/deliver"), json!({})).await;
    env.acknowledged(newer_id, 1).await;
    env.control(&format!("/events/{older_id}/deliver"), json!({})).await;
    env.acknowledged(older_id, 1).await;
    let tenant = env.tenant(&name).await.unwrap();
    assert_eq!(tenant.spec.stack.plan, "team", "the older growth state overwrote team");
    assert_eq!(tenant.metadata.uid, uid, "the plan changes in place");
    let row = env.store.subscription(sub).await.unwrap().unwrap();
    assert_eq!((row.plan.as_deref(), row.last_event_created), (Some("team"), newer["created"].as_i64().unwrap()));
    assert_eq!(
        env.metric("winston_intake_events_total{type=\"customer.subscription.updated\",outcome=\"stale\"}").await,
        1
    );
}

/// A ValidatingAdmissionPolicy (and its binding) that forbids creating
/// Tenants in `ns`: the API server refuses the write with 403.
fn refuse_tenant_creates(ns: &str) -> String {
    let name = format!("refuse-tenants-{ns}");
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {name}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: ["winston.dev"]
        apiVersions: ["*"]
        operations: ["CREATE"]
        resources: ["tenants"]
  validations:
    - expression: "false"
      message: "tenant creation is closed in this test"
      reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {name}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: {ns}
"#
    )
}

#[tokio::test]
async fn a_refused_write_is_answered_500_and_stripe_retries_until_it_succeeds() {
    let mut env = Env::new("intake-retry", CONFIG, 200).await;
    env.start_intake(false).await;
    // An admission policy refuses every Tenant create in this namespace (403).
    let policy = refuse_tenant_creates(&env.ns.name);
    let (ok, out) = run_with_stdin(support::control_plane().kubectl(&["apply", "-f", "-"]), &policy);
    assert!(ok, "{out}");
    // Policies take effect asynchronously: wait until a dry-run create is refused.
    let probe = json!({"apiVersion": "winston.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "probe"},
        "spec": {"displayName": "Probe", "contactEmail": "probe@example.com", "plan": "starter"}});
    eventually("the admission policy in effect", MINUTE, || async {
        let (created, _) =
            run_with_stdin(env.ns.kubectl(&["create", "--dry-run=server", "-f", "-"]), &probe.to_string());
        (!created).then_some(())
    })
    .await;
    let price = env.price("growth-monthly").await;
    env.checkout(&price, "retry@example.com", "Retry Co").await;
    let event = env.last_event("checkout.session.completed").await;
    let id = event["id"].as_str().unwrap().to_string();
    eventually("two refused attempts", MINUTE, || async {
        (env.attempts(&id).await.iter().filter(|s| **s == Some(500)).count() >= 2).then_some(())
    })
    .await;
    assert!(env.tenants().await.is_empty());
    let sql = env.sql().await;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE event_id = $1")
        .bind(&id)
        .fetch_one(&sql)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a failed event was recorded as processed");

    let name = format!("refuse-tenants-{}", env.ns.name);
    let out = support::control_plane()
        .kubectl(&["delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", &name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.acknowledged(&id, 1).await;
    let tenants = env.tenants().await;
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].spec.stack.plan, "growth");
    let attempts = env.attempts(&id).await;
    assert_eq!(attempts.last(), Some(&Some(200)), "{attempts:?}");
    assert!(env.metric("winston_intake_failures_total{reason=\"kube\"}").await >= 2);
}

#[tokio::test]
async fn sigkill_between_the_tenant_write_and_the_answer_leaves_exactly_one_tenant() {
    let mut env = Env::new("intake-kill", CONFIG, 200).await;
    env.start_intake(false).await;
    // Every subscription save (made after the Tenant write, before the
    // commit and the answer) now hangs: intake is stuck exactly there.
    let sql = env.sql().await;
    sqlx::raw_sql(
        "CREATE FUNCTION hang() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(600); RETURN NEW; END $$;
         CREATE TRIGGER hang BEFORE UPDATE ON stripe_subscriptions FOR EACH ROW EXECUTE FUNCTION hang();",
    )
    .execute(&sql)
    .await
    .unwrap();
    let price = env.price("team-monthly").await;
    let session = env.checkout(&price, "kill@example.com", "Kill Co").await;
    let name = tenant_of(&session);
    eventually("the Tenant written", MINUTE, || env.tenant(&name)).await;
    let event = env.last_event("checkout.session.completed").await;
    let id = event["id"].as_str().unwrap().to_string();
    assert!(env.attempts(&id).await.is_empty(), "intake answered before the kill");

    env.kill_intake();
    // The dead process's connection goes with it (PostgreSQL would notice
    // only when its sleep ends), then the hang is removed.
    sqlx::raw_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE 'UPDATE stripe_subscriptions%' AND pid <> pg_backend_pid()",
    )
    .execute(&sql)
    .await
    .unwrap();
    sqlx::raw_sql("DROP TRIGGER hang ON stripe_subscriptions").execute(&sql).await.unwrap();
    env.start_intake(false).await;
    env.acknowledged(&id, 1).await;

    let tenants = env.tenants().await;
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(tenants[0].spec.stack.plan, "team");
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM stripe_events WHERE event_id = $1")
        .bind(&id)
        .fetch_one(&sql)
        .await
        .unwrap();
    assert_eq!(outcome, "already_created", "the retry found the Tenant the killed process wrote");
    let attempts = env.attempts(&id).await;
    assert!(attempts.first() == Some(&None) && attempts.last() == Some(&Some(200)), "{attempts:?}");
}

#[tokio::test]
async fn a_second_customer_with_a_taken_email_gets_no_tenant() {
    let mut env = Env::new("intake-email", CONFIG, 100).await;
    env.start_intake(false).await;
    let price = env.price("starter-monthly").await;
    let first = env.checkout(&price, "shared@example.com", "First").await;
    let first_name = tenant_of(&first);
    eventually("the first Tenant", MINUTE, || env.tenant(&first_name)).await;
    let second = env.checkout(&price, "Shared@Example.com", "Second").await;
    let event = env.last_event("checkout.session.completed").await;
    env.acknowledged(event["id"].as_str().unwrap(), 1).await;
    let tenants = env.tenants().await;
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(tenants[0].metadata.name, Some(tenant_of(&first)));
    assert!(env.tenant(&tenant_of(&second)).await.is_none());
    assert_eq!(
        env.metric("winston_intake_events_total{type=\"checkout.session.completed\",outcome=\"email_taken\"}").await,
        1
    );
    let log = env.intake_log();
    assert!(log.contains(second["customer"].as_str().unwrap()), "the refusal is logged by customer id");
    assert!(!log.to_lowercase().contains("shared@example.com"), "the log shows the email:\n{log}");
}

#[tokio::test]
async fn payment_failure_pauses_and_cancellation_deletes_after_a_grace_period_that_survives_a_restart() {
    let config = format!("{CONFIG}onCancel: Pause\ngracePeriodSeconds: 8\npauseOnPaymentFailed: true\n");
    let mut env = Env::new("intake-cancel", &config, 100).await;
    env.start_intake(false).await;
    let starter = env.price("starter-monthly").await;
    let growth = env.price("growth-monthly").await;
    let session = env.checkout(&starter, "cancel@example.com", "Cancel Co").await;
    let name = tenant_of(&session);
    let sub = session["subscription"].as_str().unwrap();
    eventually("the Tenant", MINUTE, || env.tenant(&name)).await;

    env.control(&format!("/subscriptions/{sub}/fail_invoice"), json!({})).await;
    eventually("paused by the failed payment", MINUTE, || async {
        env.tenant(&name).await.filter(|t| t.spec.stack.paused).map(|_| ())
    })
    .await;
    // Paying (a price change settles the invoice here) resumes it on the new plan.
    env.api(reqwest::Method::POST, &format!("/v1/subscriptions/{sub}"), &[("items[0][price]", &growth)]).await;
    eventually("resumed on growth", MINUTE, || async {
        env.tenant(&name).await.filter(|t| !t.spec.stack.paused && t.spec.stack.plan == "growth").map(|_| ())
    })
    .await;

    env.api(reqwest::Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[]).await;
    let cancelled = env.last_event("customer.subscription.deleted").await;
    env.acknowledged(cancelled["id"].as_str().unwrap(), 1).await;
    assert!(env.tenant(&name).await.unwrap().spec.stack.paused, "cancelled: paused during the grace period");
    let due = env.store.subscription(sub).await.unwrap().unwrap().delete_due_at;
    assert!(due.is_some());
    // The process that scheduled the deletion dies; the next one keeps the promise.
    env.kill_intake();
    env.start_intake(false).await;
    let due = due.unwrap();
    assert!(chrono::Utc::now() < due, "the test was too slow to see the grace period");
    assert!(env.tenant(&name).await.is_some(), "deleted before the grace period was over");
    eventually("deleted when the grace period is over", MINUTE, || async {
        env.tenant(&name).await.is_none().then_some(())
    })
    .await;
    assert!(chrono::Utc::now() >= due, "deleted before the grace period was over");
    eventually("the deletion recorded", MINUTE, || async {
        env.store.subscription(sub).await.unwrap().filter(|r| r.ended && r.delete_due_at.is_none())
    })
    .await;
}

#[tokio::test]
async fn cancellation_with_delete_policy_removes_the_tenant_at_once() {
    let mut env = Env::new("intake-delete", CONFIG, 100).await;
    env.start_intake(false).await;
    let price = env.price("starter-monthly").await;
    let session = env.checkout(&price, "gone@example.com", "Gone Co").await;
    let name = tenant_of(&session);
    eventually("the Tenant", MINUTE, || env.tenant(&name)).await;
    let sub = session["subscription"].as_str().unwrap();
    let growth = env.price("growth-monthly").await;
    // An upgrade and then the cancellation; Stripe delivers the cancellation first.
    env.control("/delivery", json!({"hold": true})).await;
    env.api(reqwest::Method::POST, &format!("/v1/subscriptions/{sub}"), &[("items[0][price]", &growth)]).await;
    let upgrade = env.last_event("customer.subscription.updated").await;
    env.api(reqwest::Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[]).await;
    let cancel = env.last_event("customer.subscription.deleted").await;
    let (upgrade, cancel) = (upgrade["id"].as_str().unwrap(), cancel["id"].as_str().unwrap());
    env.control(&format!("/events/{cancel}/deliver"), json!({})).await;
    env.acknowledged(cancel, 1).await;
    assert!(env.tenant(&name).await.is_none(), "deleted at once");
    // The late upgrade of the ended subscription brings nothing back.
    env.control(&format!("/events/{upgrade}/deliver"), json!({})).await;
    env.acknowledged(upgrade, 1).await;
    assert!(env.tenants().await.is_empty());
    assert_eq!(
        env.metric("winston_intake_events_total{type=\"customer.subscription.updated\",outcome=\"stale\"}").await,
        1
    );
}

#[tokio::test]
async fn a_customer_who_buys_again_within_the_grace_period_keeps_the_tenant() {
    let config = format!("{CONFIG}onCancel: Pause\ngracePeriodSeconds: 5\n");
    let mut env = Env::new("intake-return", &config, 100).await;
    env.start_intake(false).await;
    let starter = env.price("starter-monthly").await;
    let growth = env.price("growth-monthly").await;
    let first = env.checkout(&starter, "back@example.com", "Back Co").await;
    let name = tenant_of(&first);
    let uid = eventually("the Tenant", MINUTE, || env.tenant(&name)).await.metadata.uid;
    let old_sub = first["subscription"].as_str().unwrap();
    env.api(reqwest::Method::DELETE, &format!("/v1/subscriptions/{old_sub}"), &[]).await;
    let due = eventually("the deletion scheduled", MINUTE, || async {
        env.store.subscription(old_sub).await.unwrap().and_then(|r| r.delete_due_at)
    })
    .await;

    let again = env.checkout_as(&growth, "back@example.com", "Back Co", first["customer"].as_str()).await;
    assert_eq!(tenant_of(&again), name);
    eventually("resumed on growth", MINUTE, || async {
        env.tenant(&name).await.filter(|t| !t.spec.stack.paused && t.spec.stack.plan == "growth").map(|_| ())
    })
    .await;
    assert!(env.store.subscription(old_sub).await.unwrap().unwrap().delete_due_at.is_none(), "deletion still pending");
    // Past the old due time and two sweeps: the tenant is the same object, still there.
    let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(2500);
    tokio::time::sleep(wait).await;
    let tenant = env.tenant(&name).await.expect("the returning customer's tenant was deleted");
    assert_eq!(tenant.metadata.uid, uid);
}

#[tokio::test]
async fn buying_again_while_the_old_tenant_is_still_deleting_waits_for_it() {
    let mut env = Env::new("intake-redo", CONFIG, 200).await;
    env.start_intake(false).await;
    let starter = env.price("starter-monthly").await;
    let first = env.checkout(&starter, "redo@example.com", "Redo Co").await;
    let name = tenant_of(&first);
    let old_uid = eventually("the Tenant", MINUTE, || env.tenant(&name)).await.metadata.uid;
    // A finalizer (the controller's teardown, here held by the test) keeps the deleted Tenant around.
    let (ok, out) = run_with_stdin(
        env.ns.kubectl(&["patch", "tenant", &name, "--type=merge", "--patch-file=/dev/stdin"]),
        r#"{"metadata":{"finalizers":["test.winston.dev/hold"]}}"#,
    );
    assert!(ok, "{out}");
    let sub = first["subscription"].as_str().unwrap();
    env.api(reqwest::Method::DELETE, &format!("/v1/subscriptions/{sub}"), &[]).await;
    eventually("the Tenant deleting", MINUTE, || async {
        env.tenant(&name).await.filter(|t| t.metadata.deletion_timestamp.is_some()).map(|_| ())
    })
    .await;

    env.checkout_as(&starter, "redo@example.com", "Redo Co", first["customer"].as_str()).await;
    let event = env.last_event("checkout.session.completed").await;
    let id = event["id"].as_str().unwrap().to_string();
    eventually("a refused attempt", MINUTE, || async { env.attempts(&id).await.contains(&Some(500)).then_some(()) })
        .await;
    env.ns
        .kubectl(&["patch", "tenant", &name, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#])
        .output()
        .unwrap();
    env.acknowledged(&id, 1).await;
    let tenant = env.tenant(&name).await.expect("the new Tenant");
    assert_ne!(tenant.metadata.uid, old_uid, "a new customer life is a new Tenant (and a new ledger account)");
    assert!(tenant.metadata.deletion_timestamp.is_none());
    assert!(env.metric("winston_intake_failures_total{reason=\"kube\"}").await >= 1);
}

/// Audit (session 16): every subscription event of a customer acted on the
/// one Tenant, so cancelling an old subscription deleted a Tenant the
/// customer still paid for through a newer one, and changing the old one's
/// price downgraded it. The Tenant now follows the newest checkout.
#[tokio::test]
async fn a_tenant_follows_the_newest_subscription_and_an_old_one_cannot_delete_it() {
    let mut env = Env::new("intake-subs", CONFIG, 100).await;
    env.start_intake(false).await;
    let [starter, growth, team] =
        [env.price("starter-monthly").await, env.price("growth-monthly").await, env.price("team-monthly").await];
    let outcome = |kind: &'static str, outcome: &'static str| {
        format!("winston_intake_events_total{{type=\"customer.subscription.{kind}\",outcome=\"{outcome}\"}}")
    };
    let follows = |name: String, sub: String, plan: &'static str| {
        let env = &env;
        async move {
            eventually(&format!("{name} following {sub} on {plan}"), MINUTE, || async {
                env.tenant(&name)
                    .await
                    .filter(|t| {
                        t.spec.stack.plan == plan
                            && t.metadata.annotations.as_ref().and_then(|a| a.get("winston.dev/stripe-subscription"))
                                == Some(&sub)
                    })
                    .map(|_| ())
            })
            .await;
        }
    };
    let first = env.checkout(&starter, "two@example.com", "Two Co").await;
    let name = tenant_of(&first);
    let customer = first["customer"].as_str().unwrap().to_string();
    let sub = |s: &serde_json::Value| s["subscription"].as_str().unwrap().to_string();
    follows(name.clone(), sub(&first), "starter").await;
    let second = env.checkout_as(&growth, "two@example.com", "Two Co", Some(&customer)).await;
    follows(name.clone(), sub(&second), "growth").await;

    // The old subscription moves to team: recorded, the Tenant stays on growth.
    env.api(reqwest::Method::POST, &format!("/v1/subscriptions/{}", sub(&first)), &[("items[0][price]", &team)]).await;
    eventually("the old subscription's update", MINUTE, || async {
        (env.metric(&outcome("updated", "superseded")).await == 1).then_some(())
    })
    .await;
    follows(name.clone(), sub(&second), "growth").await;
    // The followed one ends while the old one is live: the Tenant follows the old one.
    env.api(reqwest::Method::DELETE, &format!("/v1/subscriptions/{}", sub(&second)), &[]).await;
    follows(name.clone(), sub(&first), "team").await;
    assert_eq!(env.metric(&outcome("deleted", "switched")).await, 1);

    // A third checkout; then the old one is cancelled: the Tenant stays.
    let third = env.checkout_as(&growth, "two@example.com", "Two Co", Some(&customer)).await;
    follows(name.clone(), sub(&third), "growth").await;
    let uid = env.tenant(&name).await.unwrap().metadata.uid;
    env.api(reqwest::Method::DELETE, &format!("/v1/subscriptions/{}", sub(&first)), &[]).await;
    eventually("the old subscription's cancellation", MINUTE, || async {
        (env.metric(&outcome("deleted", "superseded")).await == 1).then_some(())
    })
    .await;
    let tenant = env.tenant(&name).await.expect("cancelling an old subscription deleted the paid-for Tenant");
    assert_eq!((tenant.metadata.uid, tenant.spec.stack.plan.as_str()), (uid, "growth"));
    // The last live one ends: now the Tenant goes (onCancel: Delete).
    env.api(reqwest::Method::DELETE, &format!("/v1/subscriptions/{}", sub(&third)), &[]).await;
    eventually("the Tenant deleted", MINUTE, || async { env.tenant(&name).await.is_none().then_some(()) }).await;
}

/// Audit (session 16): checkouts with one address (in different case)
/// handled at the same moment each created a Tenant (6 of 6 pairs). Here
/// six customers race for each address, all delivered at once.
#[tokio::test]
async fn checkouts_racing_for_one_email_create_one_tenant() {
    let mut env = Env::new("intake-race", CONFIG, 100).await;
    env.start_intake(false).await;
    let price = env.price("starter-monthly").await;
    env.control("/delivery", json!({"hold": true})).await;
    const ADDRESSES: usize = 3;
    const RACERS: usize = 6;
    for i in 0..ADDRESSES {
        for r in 0..RACERS {
            let email = if r % 2 == 0 { format!("race{i}@shop.example") } else { format!("RACE{i}@Shop.example") };
            env.checkout(&price, &email, "Racer").await;
        }
    }
    let sessions: Vec<Vec<u8>> = env
        .events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "checkout.session.completed")
        .map(|e| serde_json::to_vec(&e).unwrap())
        .collect();
    assert_eq!(sessions.len(), ADDRESSES * RACERS);
    for group in sessions.chunks(RACERS) {
        let now = chrono::Utc::now().timestamp();
        let answers = futures::future::join_all(
            group.iter().map(|body| env.post_raw(body, Some(signature_header(SECRET, now, body)))),
        )
        .await;
        let created = answers.iter().filter(|(_, a)| a["outcome"] == "created").count();
        let taken = answers.iter().filter(|(_, a)| a["outcome"] == "email_taken").count();
        assert_eq!((created, taken), (1, RACERS - 1), "{answers:?}");
    }
    assert_eq!(env.tenants().await.len(), ADDRESSES);
}

/// Audit (session 16): a website the CRD refuses (a port `8o8o`, a bad
/// escape) turned a paid checkout into no Tenant, answered 200 so Stripe
/// never retried. The Tenant is created without the hint; a checkout whose
/// payment is still pending creates nothing until it succeeds.
#[tokio::test]
async fn a_refused_website_hint_is_dropped_and_an_unpaid_checkout_waits() {
    let mut env = Env::new("intake-hint", CONFIG, 100).await;
    env.start_intake(false).await;
    let price = env.price("starter-monthly").await;
    for (i, site) in
        ["https://bella.example:8o8o/", "https://bella%zz.example/", "http://[bella.example]/"].iter().enumerate()
    {
        let s = env.checkout_with(&price, &format!("hint{i}@bella.example"), "Bella", None, site).await;
        let name = tenant_of(&s);
        let t = eventually(&format!("the Tenant of {site}"), MINUTE, || env.tenant(&name)).await;
        assert_eq!(t.spec.profile.website, None, "{site}");
        assert_eq!(t.spec.profile.industry.as_deref(), Some("Dental clinic"), "only the website was dropped");
    }
    assert_eq!(
        env.metric("winston_intake_events_total{type=\"checkout.session.completed\",outcome=\"created\"}").await,
        3
    );

    env.control("/delivery", json!({"hold": true})).await;
    env.checkout(&price, "later@bella.example", "Later").await;
    let mut event = env.last_event("checkout.session.completed").await;
    event["data"]["object"]["payment_status"] = json!("unpaid");
    let body = serde_json::to_vec(&event).unwrap();
    let (status, answer) =
        env.post_raw(&body, Some(signature_header(SECRET, chrono::Utc::now().timestamp(), &body))).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")), "{answer}");
    assert_eq!(env.tenants().await.len(), 3, "an unpaid checkout created a Tenant");
    event["id"] = json!("evt_async_paid");
    event["type"] = json!("checkout.session.async_payment_succeeded");
    event["data"]["object"]["payment_status"] = json!("paid");
    let body = serde_json::to_vec(&event).unwrap();
    let (status, answer) =
        env.post_raw(&body, Some(signature_header(SECRET, chrono::Utc::now().timestamp(), &body))).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("created")), "{answer}");
    assert_eq!(env.tenants().await.len(), 4);
}
