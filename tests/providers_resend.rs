//! The Resend client against the in-process emulator: exactly-once sends
//! through the Idempotency-Key (also after a lost answer), payload
//! conflicts, validation errors, the wire shapes and every fault kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use std::time::Duration;

use providers_common::*;
use serde_json::{Value, json};
use winston::providers::resend::*;
use winston::providers::{Applied, ExternalResource, Marker, Observation, ProviderError, Providers};

fn welcome(marker: &Marker) -> WelcomeEmail {
    WelcomeEmail {
        marker: marker.clone(),
        email: Email {
            from: "Winston <hello@winston.dev>".into(),
            to: vec!["owner@acme.test".into()],
            subject: "Your agent is ready".into(),
            html: Some("<p>Hello</p>".into()),
            text: None,
            tags: Vec::new(),
        },
    }
}

#[tokio::test]
async fn welcome_email_is_sent_exactly_once_even_after_a_lost_answer() {
    let env = Env::start(0).await;
    let res = ResendEmails(env.providers().resend);
    let spec = welcome(&Marker::new(&uid()));

    assert_eq!(res.observe(&spec, None).await.unwrap(), Observation::Absent);
    let first = res.create(&spec).await.unwrap();
    assert_eq!(res.create(&spec).await.unwrap().id, first.id, "same key, same email");
    let Observation::Ready { observed, .. } = res.observe(&spec, Some(&first.id)).await.unwrap() else { panic!() };
    assert_eq!((observed.to, observed.subject.as_str()), (spec.email.to.clone(), "Your agent is ready"));
    assert_eq!(env.objects("resend", "email").await, 1);

    // The email is sent but the answer is lost: the retry gets the same id.
    let other = welcome(&Marker::new(&uid()));
    env.fault(json!({"platform": "resend", "operation": "sendEmail", "kind": "drop_response"})).await;
    assert!(res.create(&other).await.unwrap_err().is_retryable());
    let id = res.create(&other).await.unwrap().id;
    assert_eq!(env.objects("resend", "email").await, 2, "a retried send was delivered twice");
    let objects = env.objects_json().await;
    let listed = objects["resend"]["objects"]["email"].as_array().unwrap();
    assert!(listed.iter().any(|e| e["id"] == id.as_str() && e["idempotency_key"] == other.marker.uid()), "{objects}");

    // The same key with another payload is a terminal conflict.
    let mut changed = other.clone();
    changed.email.subject = "Different".into();
    let e = res.create(&changed).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid { status: 409, .. }), "{e}");
    assert!(e.to_string().contains("invalid_idempotent_request"), "{e}");

    assert_eq!(res.update(&id, &spec).await.unwrap(), Applied::Done);
    assert_eq!(res.delete(&id, &spec).await.unwrap(), Applied::Done);
    assert_eq!(res.observe(&spec, Some("4f9d0000-0000-0000-0000-000000000000")).await.unwrap(), Observation::Absent);
}

#[tokio::test]
async fn wire_shapes_validation_and_faults() {
    let env = Env::start(0).await;
    let client = env.providers().resend;
    let mut email = welcome(&Marker::new(&uid())).email;
    email.subject = String::new();
    let e = client.send(&email, "k1").await.unwrap_err();
    assert!(
        matches!(e, ProviderError::Invalid { status: 422, .. }) && e.to_string().contains("missing_required_field"),
        "{e}"
    );
    let e = client.send(&welcome(&Marker::new(&uid())).email, &"k".repeat(257)).await.unwrap_err();
    assert!(e.to_string().contains("invalid_idempotency_key"), "{e}");

    let r = env
        .raw(reqwest::Method::POST, &format!("{}/emails", winston::emulator::RESEND_PATH))
        .header("Idempotency-Key", "shape-1")
        .json(&json!({"from": "a@winston.dev", "to": "b@acme.test", "subject": "s", "text": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(r.headers().contains_key(h), "missing {h}");
    }
    let v: Value = r.json().await.unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    let got: Value =
        env.get_json(&format!("{}/emails/{}", winston::emulator::RESEND_PATH, v["id"].as_str().unwrap())).await;
    assert_eq!((got["object"].as_str(), got["to"].clone()), (Some("email"), json!(["b@acme.test"])));
    let r =
        env.raw(reqwest::Method::GET, &format!("{}/emails/nope", winston::emulator::RESEND_PATH)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["statusCode"].as_u64(), v["name"].as_str()), (Some(404), Some("not_found")), "{v}");

    let spec = welcome(&Marker::new(&uid()));
    env.fault(json!({"platform": "resend", "kind": "rate_limit", "retry_after_secs": 1})).await;
    let e = client.send(&spec.email, spec.key()).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)), "{e}");
    assert!(e.to_string().contains("rate_limit_exceeded"), "{e}");
    env.fault(json!({"platform": "resend", "kind": "server_error"})).await;
    assert_eq!(client.send(&spec.email, spec.key()).await.unwrap_err().category(), "server_error");
    let mut cfg = env.config();
    cfg.resend.timeout_ms = 300;
    env.fault(json!({"platform": "resend", "kind": "delay", "delay_ms": 1500})).await;
    let e = Providers::new(&cfg).unwrap().resend.send(&spec.email, spec.key()).await.unwrap_err();
    assert_eq!(e.category(), "timeout");
    let mut bad = env.config();
    bad.resend.token = winston::providers::Secret::new("re_wrong-token-value");
    let e = Providers::new(&bad).unwrap().resend.send(&spec.email, spec.key()).await.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("unauthorized", false), "{e}");
    assert!(!format!("{e} {e:?}").contains("wrong-token"));
    // Whether or not the timed-out send was delivered, its retry under the same key sends once.
    client.send(&spec.email, spec.key()).await.unwrap();
    assert_eq!(env.objects("resend", "email").await, 2);
}

#[tokio::test]
async fn the_emulator_enforces_its_rate_limit_window_with_headers() {
    let env = Env::with_config(winston::emulator::EmulatorConfig {
        rate_limit_per_minute: 3,
        ..winston::emulator::EmulatorConfig::default()
    })
    .await;
    // Ten calls against a limit of three: even if a minute boundary resets
    // the window once, some calls must be refused.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = env
            .raw(reqwest::Method::GET, &format!("{}/emails/x", winston::emulator::RESEND_PATH))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 429 {
            let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["name"], "rate_limit_exceeded");
        } else {
            assert!(r.headers().contains_key("ratelimit-remaining"));
        }
        statuses.push(status);
    }
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 4, "{statuses:?}");
}

/// An emulator as strict as Resend's published limits: 2 requests a second
/// per team, `limit` emails a day.
async fn strict(daily_quota: Option<u32>, send_ms: u64) -> Env {
    Env::with_config(winston::emulator::EmulatorConfig {
        resend_daily_quota: daily_quota,
        resend_send_ms: send_ms,
        ..winston::emulator::EmulatorConfig::default()
    })
    .await
}

#[tokio::test]
async fn a_team_gets_two_requests_a_second_and_the_429_says_so() {
    let env = strict(None, 0).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = env
            .raw(reqwest::Method::GET, &format!("{}/emails/x", winston::emulator::RESEND_PATH))
            .send()
            .await
            .unwrap();
        let h = r.headers().clone();
        let status = r.status().as_u16();
        assert_eq!(h["ratelimit-limit"], "2", "{h:?}");
        if status == 429 {
            assert_eq!(h["ratelimit-remaining"], "0");
            assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["name"], "rate_limit_exceeded");
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..2], [404, 404], "{statuses:?}");
    assert!(statuses.contains(&429), "five requests at once passed a 2/s limit: {statuses:?}");

    // A client paced by Resend's published budget is never refused.
    let mut cfg = env.config();
    cfg.resend.budget = Some(winston::providers::budget::BudgetConfig::published(winston::platform::Platform::Resend));
    let client = Providers::new(&cfg).unwrap().resend;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..5 {
        let spec = welcome(&Marker::new(&uid()));
        client.send(&spec.email, spec.key()).await.unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    assert_eq!(env.objects("resend", "email").await, 5);
}

#[tokio::test]
async fn an_unknown_key_is_403_invalid_api_key_and_no_key_401() {
    let env = strict(None, 0).await;
    let url = format!("{}{}/emails/x", env.emu.base(), winston::emulator::RESEND_PATH);
    let r = reqwest::Client::new().get(&url).bearer_auth("re_unknown").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "invalid_api_key");
    let r = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "missing_api_key");
}

/// A second send with the key of one still in progress is 409
/// `concurrent_idempotent_requests`; the old client read it as a rejected
/// request (stall) instead of a retry that answers the same email.
#[tokio::test]
async fn a_concurrent_send_with_the_same_key_is_locked_and_its_retry_answers_the_same_email() {
    let env = strict(None, 400).await;
    let client = env.providers().resend;
    let spec = welcome(&Marker::new(&uid()));
    let (a, b) = tokio::join!(client.send(&spec.email, spec.key()), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send(&spec.email, spec.key()).await
    });
    let id = a.unwrap();
    let e = b.unwrap_err();
    assert_eq!((e.category(), e.is_retryable()), ("locked", true), "{e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(client.send(&spec.email, spec.key()).await.unwrap(), id);
    assert_eq!(env.objects("resend", "email").await, 1);
}

#[tokio::test]
async fn past_the_daily_quota_sends_are_refused_until_midnight() {
    let env = strict(Some(2), 0).await;
    let mut cfg = env.config();
    cfg.resend.budget = Some(winston::providers::budget::BudgetConfig::published(winston::platform::Platform::Resend));
    let client = Providers::new(&cfg).unwrap().resend;
    let first = welcome(&Marker::new(&uid()));
    let id = client.send(&first.email, first.key()).await.unwrap();
    let second = welcome(&Marker::new(&uid()));
    client.send(&second.email, second.key()).await.unwrap();
    let third = welcome(&Marker::new(&uid()));
    let e = client.send(&third.email, third.key()).await.unwrap_err();
    assert_eq!(e.category(), "rate_limited", "{e}");
    assert!(e.to_string().contains("daily_quota_exceeded"), "{e}");
    assert!(e.retry_after().is_some_and(|d| d >= Duration::from_secs(1)), "{e:?}");
    // A replay of a key already sent is no new email: it still answers (a
    // fresh client: the 429 paused this one's budget until the reset).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let fresh = Providers::new(&cfg).unwrap().resend;
    assert_eq!(fresh.send(&first.email, first.key()).await.unwrap(), id);
    assert_eq!(env.objects("resend", "email").await, 2);
}
