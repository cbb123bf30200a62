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

/// Sends `n` requests and returns the statuses and the first 429 (if any),
/// with whether they all fell in one window of `window_s` seconds.
async fn burst(
    env: &Env,
    n: usize,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
    window_s: i64,
) -> (Vec<u16>, Option<reqwest::header::HeaderMap>, bool) {
    let window = || chrono::Utc::now().timestamp() / window_s;
    let start = window();
    let (mut statuses, mut refused) = (Vec::new(), None);
    for _ in 0..n {
        let r = send(env, method.clone(), path, body).await;
        if r.status() == 429 && refused.is_none() {
            refused = Some(r.headers().clone());
        }
        statuses.push(r.status().as_u16());
    }
    (statuses, refused, window() == start)
}

fn refusals(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| **s == 429).count()
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> u64 {
    h[name].to_str().unwrap().parse().unwrap()
}

/// Issue 12: Supabase's Management API allows 120 requests per minute per
/// token, and says so in `x-ratelimit-*` (reset in seconds).
#[tokio::test]
async fn supabase_refuses_the_121st_request_of_a_minute() {
    let tokens = vec![winston::emulator::DEFAULT_TOKEN.to_string(), "second-token".to_string()];
    let env = Env::with_config(EmulatorConfig { tokens, ..EmulatorConfig::default() }).await;
    let path = format!("{SUPABASE_PATH}/v1/projects");
    let (statuses, refused, one_window) = burst(&env, 130, reqwest::Method::GET, &path, None, 60).await;
    if one_window {
        assert_eq!(refusals(&statuses), 10, "{statuses:?}");
        assert!(statuses[..120].iter().all(|s| *s == 200), "{statuses:?}");
    }
    let h = refused.expect("a 429");
    assert_eq!((header(&h, "x-ratelimit-limit"), header(&h, "x-ratelimit-remaining")), (120, 0));
    let reset = header(&h, "x-ratelimit-reset");
    assert!((1..=60).contains(&reset), "reset in seconds, not epoch: {reset}");
    assert_eq!(header(&h, "retry-after"), reset);
    // Another token has its own budget.
    let url = format!("{}{path}", env.emu.base());
    let other = reqwest::Client::new().get(url).bearer_auth("second-token").send().await.unwrap();
    assert_eq!(other.status(), 200);
}

/// Issue 12: Vercel limits project and deployment creation per endpoint;
/// reads of the same platform are not refused by them.
#[tokio::test]
async fn vercel_limits_project_and_deployment_creation_per_endpoint() {
    use winston::emulator::limits::{Limit, PlatformLimits};
    let limits = PlatformLimits {
        vercel_project_creates: Some(Limit::per_minute(3)),
        vercel_deployment_creates: Some(Limit::per_minute(2)),
        ..PlatformLimits::none()
    };
    let env = Env::with_config(EmulatorConfig { limits, ..EmulatorConfig::default() }).await;
    for (path, limit) in [("/v11/projects", 3), ("/v13/deployments", 2)] {
        let path = format!("{VERCEL_PATH}{path}");
        let (statuses, refused, one_window) =
            burst(&env, limit + 2, reqwest::Method::POST, &path, Some(&json!({"name": "x"})), 60).await;
        if one_window {
            assert_eq!(refusals(&statuses), 2, "{path}: {statuses:?}");
        }
        let h = refused.expect("a 429");
        assert_eq!(header(&h, "x-ratelimit-limit"), limit as u64, "{path}");
        assert_eq!(header(&h, "x-ratelimit-remaining"), 0, "{path}");
        let now = chrono::Utc::now().timestamp() as u64;
        let reset = header(&h, "x-ratelimit-reset");
        assert!(reset > now && reset <= now + 61, "epoch reset: {reset} vs {now}");
        assert!(header(&h, "retry-after") >= 1);
    }
    let (reads, _, _) = burst(&env, 10, reqwest::Method::GET, &format!("{VERCEL_PATH}/v9/projects/x"), None, 60).await;
    assert_eq!(refusals(&reads), 0, "reads are not creations: {reads:?}");
}

/// Issue 12: Railway limits each token by plan; on the Free plan, 100
/// requests an hour, with `x-ratelimit-*` (epoch reset) and `Retry-After`.
#[tokio::test]
async fn railway_free_plan_refuses_the_101st_request_of_the_hour() {
    use winston::emulator::limits::{PlatformLimits, RailwayPlan};
    let limits = PlatformLimits { railway_plan: RailwayPlan::Free, ..PlatformLimits::none() };
    let env = Env::with_config(EmulatorConfig { limits, ..EmulatorConfig::default() }).await;
    let body = json!({"query": "query { me { id } }"});
    let (statuses, refused, one_window) =
        burst(&env, 104, reqwest::Method::POST, RAILWAY_PATH, Some(&body), 3600).await;
    if one_window {
        assert_eq!(refusals(&statuses), 4, "{statuses:?}");
    }
    let h = refused.expect("a 429");
    assert_eq!((header(&h, "x-ratelimit-limit"), header(&h, "x-ratelimit-remaining")), (100, 0));
    let retry = header(&h, "retry-after");
    assert!((1..=3600).contains(&retry), "{retry}");
    let now = chrono::Utc::now().timestamp() as u64;
    assert!(header(&h, "x-ratelimit-reset") >= now, "epoch reset");
}

/// Railway's paid plans also limit requests per second (Hobby: 10): a
/// burst of concurrent requests is refused past it.
#[tokio::test]
async fn railway_hobby_plan_refuses_a_burst_past_ten_per_second() {
    use winston::emulator::limits::{PlatformLimits, RailwayPlan};
    let limits = PlatformLimits { railway_plan: RailwayPlan::Hobby, ..PlatformLimits::none() };
    let env = Env::with_config(EmulatorConfig { limits, ..EmulatorConfig::default() }).await;
    let body = json!({"query": "query { me { id } }"});
    let (statuses, refused, one_window) = burst(&env, 15, reqwest::Method::POST, RAILWAY_PATH, Some(&body), 1).await;
    if one_window {
        assert_eq!(refusals(&statuses), 5, "{statuses:?}");
    }
    // Split across two seconds, all 15 may pass (at most 20 could); a
    // refusal, whenever one came, carries the per-second limit's headers.
    assert!(statuses.len() - refusals(&statuses) <= 20, "{statuses:?}");
    if let Some(h) = refused {
        assert_eq!((header(&h, "x-ratelimit-limit"), header(&h, "x-ratelimit-remaining")), (10, 0));
        assert_eq!(header(&h, "retry-after"), 1);
    } else {
        assert!(!one_window, "no 429 within one second: {statuses:?}");
    }
}
