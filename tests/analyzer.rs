//! The website analyzer against the emulator's sample sites and mock LLM:
//! profiles from real pages, every SSRF route refused before a byte reaches
//! its target (counted at the target), redirects re-checked, a server that
//! never answers and an oversized page handled, a malformed model answer
//! retried exactly once.
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use winston::analyzer::{AnalyzeError, Analyzer, AnalyzerConfig, ApiKey, FetchPolicy, extract, reasons};
use winston::emulator::{self, EmulatorConfig, llm::LlmMockConfig, sites};

const MODEL: &str = "kimi-k2.6";

async fn emulator_with(llm: LlmMockConfig) -> emulator::Running {
    emulator::spawn(EmulatorConfig { llm, ..EmulatorConfig::default() }).await.unwrap()
}

/// An analyzer asking the emulator's mock LLM directly, allowing `allow`.
fn analyzer(emu: &emulator::Running, allow: &[&str]) -> Analyzer {
    let mut config = AnalyzerConfig::new(format!("{}/openai", emu.base()), ApiKey::new("k"), MODEL);
    config.fetch = FetchPolicy::allowing(allow.iter().map(|a| a.parse().unwrap()).collect()).unwrap();
    Analyzer::new(config).unwrap()
}

/// A loopback HTTP server on `ip` counting the requests that reach it.
async fn counting_server(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            ([(axum::http::header::CONTENT_TYPE, "text/html")], "<title>Secret admin</title><p>internal</p>")
        }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn site(emu: &emulator::Running, name: &str) -> String {
    format!("{}{}/{name}/", emu.base(), sites::SITES_PATH)
}

#[tokio::test]
async fn the_sample_sites_become_validated_profiles() {
    let emu = emulator_with(LlmMockConfig::default()).await;
    let a = analyzer(&emu, &["127.0.0.1/32"]);
    let expected = [
        (
            "green-leaf",
            "Green Leaf Dispensary",
            "cannabis",
            "dispensary",
            "#2e7d32",
            "3120 W 32nd Ave, Denver, CO 80211, US",
        ),
        (
            "trattoria-luna",
            "Trattoria Luna",
            "restaurant",
            "italian restaurant",
            "#b71c1c",
            "1021 W Randolph St, Chicago, IL 60607, US",
        ),
        (
            "bright-smile",
            "Bright Smile Dental",
            "healthcare",
            "dental clinic",
            "#1e88e5",
            "1200 NW Glisan St, Suite 3, Portland, OR 97209, US",
        ),
    ];
    for (name, business, industry, sub, colour, location) in expected {
        let before = emu.llm_stats.report().total;
        let r = a.analyze(&site(&emu, name)).await.unwrap();
        let after = emu.llm_stats.report().total;
        let p = &r.profile;
        assert_eq!(p.business_name, business);
        assert_eq!(p.industry, industry);
        assert_eq!(p.sub_industry.as_deref(), Some(sub));
        assert_eq!(p.brand_color.as_deref(), Some(colour));
        assert_eq!(p.location.as_deref(), Some(location));
        assert!(p.hours.is_some() && !p.suggested_capabilities.is_empty(), "{p:?}");
        assert_eq!(r.attempts, 1);
        assert_eq!(r.model, MODEL);
        assert_eq!(r.source_url, site(&emu, name));
        assert!(r.content_hash.starts_with("sha256:") && r.content_hash.len() == 71, "{}", r.content_hash);
        // What the analyzer reports used is what the upstream generated.
        assert_eq!(after.generations - before.generations, 1);
        assert_eq!(r.usage.input_tokens, after.input_tokens - before.input_tokens);
        assert_eq!(r.usage.output_tokens, after.output_tokens - before.output_tokens);
        assert!(r.usage.output_tokens > 20, "{:?}", r.usage);
        // The same page gives the same hash and the same profile.
        let again = a.analyze(&site(&emu, name)).await.unwrap();
        assert_eq!((again.content_hash, again.profile), (r.content_hash, r.profile));
    }
    let hours = a.analyze(&site(&emu, "trattoria-luna")).await.unwrap().profile.hours.unwrap();
    assert_eq!(hours, "Tuesday, Wednesday, Thursday 17:00-22:00; Friday, Saturday 17:00-23:00; Sunday 10:30-15:00");
}

#[test]
fn the_sample_sites_are_extracted_without_noise() {
    for (name, _) in sites::SITES {
        let e = extract::html(sites::page(name).unwrap());
        assert!(e.title.is_some() && e.description.is_some(), "{name}");
        assert!(e.business.as_ref().and_then(|b| b.name.as_ref()).is_some(), "{name}: no JSON-LD business");
        assert!(!e.business.as_ref().unwrap().opening_hours.is_empty(), "{name}");
        assert!(!e.colours.is_empty() && e.headings.len() >= 2, "{name}: {e:?}");
        for noise in
            ["gtag", "dataLayer", "console.log", "Shop the menu", "Private events", "Book online", "Are you 21"]
        {
            assert!(!e.text.contains(noise), "{name}: {noise:?} in {}", e.text);
        }
    }
    let leaf = extract::html(sites::page("green-leaf").unwrap());
    assert!(leaf.text.contains("Flower Friday: 20% off eighths."));
    assert_eq!(leaf.colours[..2], ["#2e7d32".to_string(), "#f9a825".to_string()]);
    assert_eq!(leaf.business.unwrap().opening_hours, ["Mo-Sa 09:00-21:50", "Su 10:00-20:00"]);
}

#[tokio::test]
async fn private_loopback_link_local_and_metadata_targets_are_refused_before_any_request() {
    let emu = emulator_with(LlmMockConfig::default()).await;
    let (target, hits) = counting_server("127.0.0.1").await;
    let port = target.port();
    let strict = analyzer(&emu, &[]);
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_string(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://172.16.0.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://[fc00::1]/".to_string(),
        "http://224.0.0.1/".to_string(),
    ] {
        let err = strict.analyze(&url).await.unwrap_err();
        assert_eq!(err.reason(), reasons::WEBSITE_REFUSED, "{url}: {err}");
    }
    for url in ["ftp://example.com/", "file:///etc/passwd", "https://admin:hunter2@example.com/"] {
        let err = strict.analyze(url).await.unwrap_err();
        assert_eq!(err.reason(), reasons::WEBSITE_REFUSED, "{url}: {err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a refused request reached the target");
    assert_eq!(emu.llm_stats.report().total.requests, 0, "the model was asked about a refused site");
    // The same target is reached once allowed: the refusals above were the policy's.
    let allowed = analyzer(&emu, &["127.0.0.1/32"]);
    allowed.analyze(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // No configuration opens the metadata service.
    for block in ["169.254.0.0/16", "169.254.169.254/32", "fd00::/8", "0.0.0.0/0"] {
        assert!(FetchPolicy::allowing(vec![block.parse().unwrap()]).is_err(), "{block}");
    }
}

#[tokio::test]
async fn every_redirect_target_is_checked_again() {
    let emu = emulator_with(LlmMockConfig::default()).await;
    // 127.0.0.2 is loopback too, but not in the allowed block.
    let (inner, hits) = counting_server("127.0.0.2").await;
    let a = analyzer(&emu, &["127.0.0.1/32"]);
    let redirect = |to: &str, hops: u32| {
        let to: String = to.bytes().map(|b| format!("%{b:02X}")).collect();
        format!("{}{}/_redirect?hops={hops}&to={to}", emu.base(), sites::SITES_PATH)
    };
    for to in [
        format!("http://{inner}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://[::1]/".to_string(),
        "ftp://127.0.0.1/".to_string(),
        "https://admin:pw@127.0.0.1/".to_string(),
    ] {
        for hops in [0, 2] {
            let err = a.analyze(&redirect(&to, hops)).await.unwrap_err();
            assert_eq!(err.reason(), reasons::WEBSITE_REFUSED, "{to} after {hops}: {err}");
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a redirect reached a refused address");
    // At most five redirects: five arrive, six are refused.
    let page = site(&emu, "green-leaf");
    let five = a.analyze(&redirect(&page, 4)).await.unwrap();
    assert_eq!(five.profile.business_name, "Green Leaf Dispensary");
    assert_eq!(five.final_url, page);
    let six = a.analyze(&redirect(&page, 5)).await.unwrap_err();
    assert_eq!(six.reason(), reasons::WEBSITE_REFUSED, "{six}");
    assert!(six.to_string().contains("more than 5 redirects"), "{six}");
    // Allowing the inner address lets the same redirect through: the check is what refused it.
    let wide = analyzer(&emu, &["127.0.0.0/8"]);
    wide.analyze(&redirect(&format!("http://{inner}/"), 1)).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_site_that_never_answers_times_out() {
    let emu = emulator_with(LlmMockConfig::default()).await;
    // Accepts connections and never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let mut config = AnalyzerConfig::new(format!("{}/openai", emu.base()), ApiKey::new("k"), MODEL);
    config.fetch = FetchPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()]).unwrap();
    config.fetch.timeout = Duration::from_millis(400);
    let a = Analyzer::new(config).unwrap();
    let err = a.analyze(&format!("http://{addr}/")).await.unwrap_err();
    assert!(matches!(err, AnalyzeError::Timeout { .. } | AnalyzeError::Unreachable(_)), "{err}");
    assert_eq!(err.reason(), reasons::WEBSITE_UNREACHABLE);
    assert!(err.is_transient());
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the request never got to the silent server");
    assert_eq!(emu.llm_stats.report().total.requests, 0);
}

#[tokio::test]
async fn oversized_and_non_text_pages_are_refused() {
    let emu = emulator_with(LlmMockConfig::default()).await;
    let a = analyzer(&emu, &["127.0.0.1/32"]);
    let large = |bytes: usize, chunked: bool| {
        format!("{}{}/_large?bytes={bytes}&chunked={chunked}", emu.base(), sites::SITES_PATH)
    };
    for chunked in [false, true] {
        let err = a.analyze(&large(3 * 1024 * 1024, chunked)).await.unwrap_err();
        assert_eq!(err.reason(), reasons::WEBSITE_TOO_LARGE, "chunked={chunked}: {err}");
        // Just under the cap is read.
        a.analyze(&large(2 * 1024 * 1024 - 1, chunked)).await.unwrap();
    }
    let err = a.analyze(&format!("{}{}/_image", emu.base(), sites::SITES_PATH)).await.unwrap_err();
    assert_eq!(err.reason(), reasons::WEBSITE_UNSUPPORTED, "{err}");
    let err = a.analyze(&format!("{}{}/no-such-site/", emu.base(), sites::SITES_PATH)).await.unwrap_err();
    assert_eq!(err.reason(), reasons::WEBSITE_UNREACHABLE, "{err}");
    assert_eq!(emu.llm_stats.report().total.generations, 2, "only the two pages under the cap reached the model");
}

#[tokio::test]
async fn a_malformed_answer_is_retried_once_then_reported() {
    let once = emulator_with(LlmMockConfig { analyzer_malformed: 1, ..LlmMockConfig::default() }).await;
    let r = analyzer(&once, &["127.0.0.1/32"]).analyze(&site(&once, "bright-smile")).await.unwrap();
    assert_eq!(r.attempts, 2);
    assert_eq!(r.profile.business_name, "Bright Smile Dental");
    let stats = once.llm_stats.report().total;
    assert_eq!(stats.generations, 2);
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (stats.input_tokens, stats.output_tokens));

    let always = emulator_with(LlmMockConfig { analyzer_malformed: 5, ..LlmMockConfig::default() }).await;
    let err = analyzer(&always, &["127.0.0.1/32"]).analyze(&site(&always, "bright-smile")).await.unwrap_err();
    assert_eq!(err.reason(), reasons::PROFILE_INVALID, "{err}");
    assert!(matches!(err, AnalyzeError::ProfileInvalid { attempts: 2, .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(always.llm_stats.report().total.generations, 2, "asked more than twice");
}

#[test]
fn the_emulator_knows_the_analyzer_marker() {
    assert_eq!(winston::analyzer::profile::PROMPT_MARKER, emulator::llm::ANALYZER_MARKER);
}

#[tokio::test]
async fn winston_analyze_prints_the_profile_as_json() {
    let emu = emulator_with(LlmMockConfig::default()).await;
    let run = |url: String| {
        let base = emu.base();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_winston"))
                .args([
                    "analyze",
                    &url,
                    "--proxy-url",
                    &format!("{base}/openai"),
                    "--model",
                    MODEL,
                    "--allow-cidr",
                    "127.0.0.1/32",
                ])
                .env("WINSTON_ANALYZER_API_KEY", "system-key")
                .env_remove("WINSTON_PROXY_URL")
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(site(&emu, "green-leaf")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["profile"]["business_name"], "Green Leaf Dispensary");
    assert_eq!(v["profile"]["tone"], "friendly");
    assert!(v["contentHash"].as_str().unwrap().starts_with("sha256:"));
    let out = run("http://169.254.169.254/".into()).await;
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["reason"], reasons::WEBSITE_REFUSED);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("system-key"));
}
