//! `winston analyze <url>`: the analyzer by hand, printing the analysis
//! (profile, hash, model, usage, timings) as JSON on stdout, or on failure
//! `{"error": {"reason", "message"}}` and a non-zero exit.
use std::time::Duration;

use serde_json::json;

use super::{AnalyzeError, Analyzer, AnalyzerConfig, ApiKey, FetchPolicy};

/// The environment variable holding the proxy key (never a flag: a flag
/// shows in the process list).
pub const API_KEY_ENV: &str = "WINSTON_ANALYZER_API_KEY";

/// Command-line options of `winston analyze`.
#[derive(clap::Args, Debug, Clone)]
pub struct AnalyzeArgs {
    /// The website to analyse (http or https).
    pub url: String,
    /// Base URL of Winston's proxy; the key comes from WINSTON_ANALYZER_API_KEY.
    #[arg(long, env = "WINSTON_PROXY_URL", default_value = "http://127.0.0.1:8080")]
    pub proxy_url: String,
    /// Model id from the proxy's catalog.
    #[arg(long, env = "WINSTON_ANALYZER_MODEL", default_value = "kimi-k2")]
    pub model: String,
    /// Non-public CIDR blocks to allow (repeatable or comma-separated), e.g.
    /// 127.0.0.1/32 for the emulator's sample sites. Metadata addresses stay refused.
    #[arg(long = "allow-cidr", env = "WINSTON_ANALYZER_ALLOW_CIDRS", value_delimiter = ',')]
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Deadline of the whole fetch, redirects included, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub fetch_timeout_ms: u64,
    /// Largest page read, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_page_bytes: usize,
}

/// Runs `winston analyze`.
///
/// # Errors
/// The analysis failed (already printed as JSON), or the key is missing.
pub async fn run(args: AnalyzeArgs) -> Result<(), AnalyzeError> {
    let result = analyze(args).await;
    match &result {
        Ok(analysis) => println!("{}", serde_json::to_string_pretty(analysis).unwrap_or_default()),
        Err(e) => println!("{}", json!({"error": {"reason": e.reason(), "message": e.to_string()}})),
    }
    result.map(|_| ())
}

async fn analyze(args: AnalyzeArgs) -> Result<super::Analysis, AnalyzeError> {
    let key = std::env::var(API_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| AnalyzeError::Model(format!("{API_KEY_ENV} is not set: the system account's proxy key")))?;
    let mut config = AnalyzerConfig::new(args.proxy_url, ApiKey::new(key.trim()), args.model);
    config.fetch = FetchPolicy::allowing(args.allow_cidrs)?;
    config.fetch.timeout = Duration::from_millis(args.fetch_timeout_ms);
    config.fetch.max_bytes = args.max_page_bytes;
    Analyzer::new(config)?.analyze(&args.url).await
}
