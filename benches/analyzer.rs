//! `make bench`, analyzer part: website-to-profile time that is Winston's
//! own, against the emulator's sample sites and its mock LLM (which answers
//! at once), so what is measured is the fetch (name check, pinned
//! connection, size-capped read), the HTML extraction, the prompt, the JSON
//! round trip and the validation: everything but the model's thinking time.
//! Printed next to the seeds' 5.8 s (measured with the real model) and
//! their 10 s target, which the model's own time dominates.
//!
//! Sequential analyses first (latency per analysis, p50/p99), then 16 at
//! once (throughput).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use winston::analyzer::{Analyzer, AnalyzerConfig, ApiKey, FetchPolicy};
use winston::emulator::{self, EmulatorConfig, sites};

const SEQUENTIAL: usize = 300;
const CONCURRENT: usize = 16;
const CONCURRENT_TOTAL: usize = 960;

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("analyzer benchmark: run it with `make bench` (cargo bench --bench analyzer)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let emu = emulator::spawn(EmulatorConfig::default()).await.unwrap();
    let mut config = AnalyzerConfig::new(format!("{}/openai", emu.base()), ApiKey::new("bench"), "kimi-k2.6");
    config.fetch = FetchPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()]).unwrap();
    let analyzer = Arc::new(Analyzer::new(config).unwrap());
    let urls: Vec<String> =
        sites::SITES.iter().map(|(name, _)| format!("{}{}/{name}/", emu.base(), sites::SITES_PATH)).collect();
    // Warm-up: connections, allocator, first parse.
    for url in &urls {
        analyzer.analyze(url).await.unwrap();
    }

    let mut total = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        let started = Instant::now();
        analyzer.analyze(&urls[i % urls.len()]).await.unwrap();
        total.push(started.elapsed());
    }

    let started = Instant::now();
    let mut next = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while next < CONCURRENT_TOTAL || !tasks.is_empty() {
        while next < CONCURRENT_TOTAL && tasks.len() < CONCURRENT {
            let (a, url) = (analyzer.clone(), urls[next % urls.len()].clone());
            tasks.spawn(async move { a.analyze(&url).await.map(|_| ()) });
            next += 1;
        }
        tasks.join_next().await.unwrap().unwrap().unwrap();
    }
    let wall = started.elapsed();

    let generated = emu.llm_stats.report().total;
    println!("analyzer: website to profile against the emulator's sample sites and an instant mock LLM");
    println!("  (Winston's own time: fetch, extraction, prompt, validation; not the model's)");
    println!(
        "  sequential, {SEQUENTIAL} analyses: p50 {} / p99 {} / max {}",
        ms(pct(&total, 50)),
        ms(pct(&total, 99)),
        ms(pct(&total, 100))
    );
    println!(
        "  {CONCURRENT} at once, {CONCURRENT_TOTAL} analyses: {:.0} analyses/s ({:.2} s wall)",
        CONCURRENT_TOTAL as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "  seeds: 5.8 s website to profile with the real model, target under 10 s; Winston's share here: p99 {} ({:.3} % of 10 s)",
        ms(pct(&total, 99)),
        pct(&total, 99).as_secs_f64() / 10.0 * 100.0
    );
    println!("  mock LLM generations: {} (every analysis asked the model once)", generated.generations);
}

fn pct(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
