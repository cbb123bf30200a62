//! The analyzer's model call goes through a real Winston proxy on a real
//! PostgreSQL ledger: the calling account (the `system` account in
//! production) is debited exactly what the upstream generated, one usage
//! record per call, and an account without credits gets a typed refusal.
#![allow(clippy::unwrap_used)]
mod proxy_support;

use proxy_support::*;
use winston::analyzer::{Analyzer, AnalyzerConfig, ApiKey, FetchPolicy, reasons};
use winston::emulator::{self, EmulatorConfig, sites};

fn analyzer(h: &Harness) -> Analyzer {
    let mut config = AnalyzerConfig::new(h.url.clone(), ApiKey::new(h.key.clone()), KIMI);
    config.fetch = FetchPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()]).unwrap();
    Analyzer::new(config).unwrap()
}

#[tokio::test]
async fn the_account_is_debited_exactly_what_the_model_generated() {
    let h = harness(100_000, test_settings()).await;
    let sites_server = emulator::spawn(EmulatorConfig::default()).await.unwrap();
    let a = analyzer(&h);
    assert_eq!(h.balance().await.balance, 100_000);
    assert_eq!(h.usage().await, (0, 0));

    let url = format!("{}{}/green-leaf/", sites_server.base(), sites::SITES_PATH);
    let r = a.analyze(&url).await.unwrap();
    assert_eq!(r.profile.business_name, "Green Leaf Dispensary");
    assert_eq!(r.profile.industry, "cannabis");

    let generated = h.upstream.report().total;
    assert_eq!(generated.generations, 1);
    assert_eq!((r.usage.input_tokens, r.usage.output_tokens), (generated.input_tokens, generated.output_tokens));
    let billed = i64::try_from(generated.input_tokens + generated.output_tokens).unwrap() * KIMI_X;
    let b = h.settled_balance().await;
    assert_eq!((b.balance, b.reserved), (100_000 - billed, 0));
    assert_eq!(h.usage().await, (billed, 1));
    assert_eq!(r.usage.credits_remaining, Some(100_000 - billed));

    // A second analysis of the same page bills again, exactly once more.
    let again = a.analyze(&url).await.unwrap();
    assert_eq!(again.content_hash, r.content_hash);
    let generated = h.upstream.report().total;
    let billed = i64::try_from(generated.input_tokens + generated.output_tokens).unwrap() * KIMI_X;
    assert_eq!(h.balance().await.balance, 100_000 - billed);
    assert_eq!(h.usage().await, (billed, 2));
}

#[tokio::test]
async fn an_account_without_credits_is_refused_and_nothing_is_generated() {
    let h = harness(10, test_settings()).await;
    let sites_server = emulator::spawn(EmulatorConfig::default()).await.unwrap();
    let url = format!("{}{}/bright-smile/", sites_server.base(), sites::SITES_PATH);
    let err = analyzer(&h).analyze(&url).await.unwrap_err();
    assert_eq!(err.reason(), reasons::CREDITS_EXHAUSTED, "{err}");
    assert!(err.is_transient());
    assert!(!err.to_string().contains(&h.key), "the key leaked into {err}");
    assert_eq!(h.upstream.report().total.generations, 0);
    assert_eq!(h.usage().await, (0, 0));
    assert_eq!(h.balance().await.balance, 10);
}
