//! Every 429 the emulator answers carries the platform's own rate-limit
//! headers (Railway and Vercel `x-ratelimit-*` with an epoch reset,
//! Supabase `x-ratelimit-*` in seconds, Resend the IETF draft `ratelimit-*`,
//! Neon none) and `Retry-After`, whether the window ran out or a fault was
//! injected: a client that reads them must find them on the answer that
//! matters most.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod providers_common;

use providers_common::*;
use serde_json::json;
use winston::emulator::{EmulatorConfig, NEON_PATH, RAILWAY_PATH, RESEND_PATH, SUPABASE_PATH, VERCEL_PATH};

/// One request per platform: (platform, method, path, body, the headers its 429 carries).
type Probe = (&'static str, reqwest::Method, String, Option<serde_json::Value>, &'static [&'static str]);

fn requests() -> Vec<Probe> {
    let x = &["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"][..];
    vec![
        ("railway", reqwest::Method::POST, RAILWAY_PATH.into(), Some(json!({"query": "query { me { id } }"})), x),
        ("vercel", reqwest::Method::GET, format!("{VERCEL_PATH}/v9/projects/x"), None, x),
        ("supabase", reqwest::Method::GET, format!("{SUPABASE_PATH}/v1/projects"), None, x),
        (
            "resend",
            reqwest::Method::GET,
            format!("{RESEND_PATH}/emails/x"),
            None,
            &["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
        ),
        ("neon", reqwest::Method::GET, format!("{NEON_PATH}/projects"), None, &[]),
    ]
}

async fn send(env: &Env, method: reqwest::Method, path: &str, body: Option<&serde_json::Value>) -> reqwest::Response {
    let r = env.raw(method, path);
    let r = match body {
        Some(b) => r.json(b),
        None => r,
    };
    r.send().await.unwrap()
}

#[tokio::test]
async fn an_injected_429_carries_the_platforms_headers() {
    let env = Env::start(0).await;
    for (platform, method, path, body, headers) in requests() {
        env.fault(json!({"platform": platform, "kind": "rate_limit", "retry_after_secs": 3})).await;
        let r = send(&env, method, &path, body.as_ref()).await;
        assert_eq!(r.status(), 429, "{platform}");
        assert_eq!(r.headers()["retry-after"], "3", "{platform}");
        for h in headers {
            assert!(r.headers().contains_key(*h), "{platform}: {h} missing from {:?}", r.headers());
        }
        let remaining = headers.iter().find(|h| h.ends_with("remaining"));
        if let Some(h) = remaining {
            assert_eq!(r.headers()[*h], "0", "{platform}");
        }
    }
}

#[tokio::test]
async fn a_window_run_out_carries_the_platforms_headers() {
    let env = Env::with_config(EmulatorConfig { rate_limit_per_minute: 1, ..EmulatorConfig::default() }).await;
    for (platform, method, path, body, headers) in requests() {
        // The first call of the minute passes, a second is refused (a
        // minute boundary in between may let one more through).
        let mut last = send(&env, method.clone(), &path, body.as_ref()).await;
        for _ in 0..2 {
            if last.status() == 429 {
                break;
            }
            last = send(&env, method.clone(), &path, body.as_ref()).await;
        }
        assert_eq!(last.status(), 429, "{platform}");
        assert!(last.headers().contains_key("retry-after"), "{platform}");
        for h in headers {
            assert!(last.headers().contains_key(*h), "{platform}: {h} missing from {:?}", last.headers());
        }
    }
}
