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
