//! The website analyzer: a customer's website in, a proposed agent profile
//! out. [`fetch`] reads the page safely (public addresses only, pinned,
//! redirects re-checked, 5 s, size cap), [`extract`] turns it into clean
//! bounded text, and [`profile`] asks a model through Winston's proxy for the
//! seeds' JSON shape and validates it, retrying a malformed answer once.
//!
//! A pure library below the engine, beside `plans`: it knows no Kubernetes,
//! no platform and no caller. Storing the result in a Tenant's status,
//! deciding when to analyse again and rendering the workspace from it are the
//! engine's and the controller's; `winston analyze` runs it by hand.
pub mod cli;
pub mod error;
pub mod extract;
pub mod fetch;
pub mod model;
pub mod profile;

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use error::{AnalyzeError, reasons};
pub use fetch::{FetchPolicy, Fetcher};
pub use model::ApiKey;
pub use profile::{Profile, Tone};

/// How the analyzer reaches the website and the model.
#[derive(Clone, Debug)]
pub struct AnalyzerConfig {
    /// Base URL of Winston's proxy (`/v1/chat/completions` is appended).
    pub proxy_url: String,
    /// The `system` account's proxy key.
    pub api_key: ApiKey,
    /// Model id from the proxy's catalog.
    pub model: String,
    pub fetch: FetchPolicy,
    /// Deadline of one model call.
    pub model_timeout: Duration,
    /// Characters of page text sent to the model at most.
    pub max_prompt_chars: usize,
    /// Output cap of one model call.
    pub max_output_tokens: u32,
}

impl AnalyzerConfig {
    /// The defaults: the seeds' fetch policy, 30 s per model call, 12,000
    /// characters of page text (about 3,000 tokens), 1,000 output tokens.
    #[must_use]
    pub fn new(proxy_url: impl Into<String>, api_key: ApiKey, model: impl Into<String>) -> Self {
        Self {
            proxy_url: proxy_url.into(),
            api_key,
            model: model.into(),
            fetch: FetchPolicy::default(),
            model_timeout: Duration::from_secs(30),
            max_prompt_chars: 12_000,
            max_output_tokens: 1_000,
        }
    }
}

/// Tokens the model calls used (the proxy bills them on the `system`
/// account) and the balance the proxy reported after the last call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_remaining: Option<i64>,
}

/// A finished analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub profile: Profile,
    /// The URL asked for.
    pub source_url: String,
    /// Where the page was read after redirects.
    pub final_url: String,
    /// `sha256:<hex>` of the extracted text: equal hashes, equal input.
    pub content_hash: String,
    pub model: String,
    /// Model calls made (2 when the first answer was malformed).
    pub attempts: u8,
    pub usage: Usage,
    /// Fetch and extraction, in milliseconds.
    pub fetch_ms: u64,
    /// Model calls, in milliseconds.
    pub model_ms: u64,
    /// The whole analysis, in milliseconds.
    pub elapsed_ms: u64,
}

/// Analyses websites.
#[derive(Clone, Debug)]
pub struct Analyzer {
    fetcher: Fetcher,
    model: model::ModelClient,
    max_prompt_chars: usize,
}

/// Model calls per analysis: the first, and one retry after a malformed answer.
const ATTEMPTS: u8 = 2;

impl Analyzer {
    /// An analyzer with `config`.
    ///
    /// # Errors
    /// When an HTTP client cannot be built.
    pub fn new(config: AnalyzerConfig) -> Result<Self, AnalyzeError> {
        let model = model::ModelClient::new(
            &config.proxy_url,
            config.api_key,
            &config.model,
            config.max_output_tokens,
            config.model_timeout,
        )?;
        Ok(Self { fetcher: Fetcher::new(config.fetch)?, model, max_prompt_chars: config.max_prompt_chars })
    }

    /// Fetches `url`, extracts its text and asks the model for a profile.
    ///
    /// # Errors
    /// Any [`AnalyzeError`]; each has a condition [`AnalyzeError::reason`].
    pub async fn analyze(&self, url: &str) -> Result<Analysis, AnalyzeError> {
        let started = Instant::now();
        let page = self.fetcher.fetch(url).await?;
        let extracted = match page.kind {
            fetch::PageKind::Html => extract::html(&page.body),
            fetch::PageKind::Text => extract::plain(&page.body),
        };
        if extracted.is_empty() {
            return Err(AnalyzeError::Empty);
        }
        let content_hash = format!("sha256:{}", hex::encode(Sha256::digest(extracted.document().as_bytes())));
        let fetch_ms = millis(started.elapsed());
        let asked = Instant::now();
        let prompt = profile::user_prompt(page.url.as_str(), &extracted.bounded(self.max_prompt_chars));
        let (profile, attempts, usage) = self.ask(prompt).await?;
        let model_ms = millis(asked.elapsed());
        Ok(Analysis {
            profile,
            source_url: url.trim().to_string(),
            final_url: page.url.to_string(),
            content_hash,
            model: self.model.model().to_string(),
            attempts,
            usage,
            fetch_ms,
            model_ms,
            elapsed_ms: millis(started.elapsed()),
        })
    }

    /// Asks for the profile; a malformed answer is shown to the model with
    /// what is wrong and asked once more.
    async fn ask(&self, prompt: String) -> Result<(Profile, u8, Usage), AnalyzeError> {
        let mut messages: Vec<Value> = vec![
            json!({"role": "system", "content": profile::system_prompt()}),
            json!({"role": "user", "content": prompt}),
        ];
        let mut usage = Usage::default();
        let mut reason = String::new();
        for attempt in 1..=ATTEMPTS {
            let answer = self.model.ask(&messages).await?;
            usage.input_tokens += answer.input_tokens;
            usage.output_tokens += answer.output_tokens;
            usage.credits_remaining = answer.credits_remaining.or(usage.credits_remaining);
            match Profile::parse(&answer.content) {
                Ok(profile) => return Ok((profile, attempt, usage)),
                Err(invalid) => {
                    tracing::info!(attempt, reason = %invalid, "the model's profile was invalid");
                    reason = invalid.0;
                    messages.push(json!({"role": "assistant", "content": answer.content}));
                    messages.push(json!({"role": "user", "content": profile::correction(&reason)}));
                }
            }
        }
        Err(AnalyzeError::ProfileInvalid { attempts: ATTEMPTS, reason })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
