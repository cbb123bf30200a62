//! What the mock LLM upstream generated, per tag and in total: the ground
//! truth a metering test holds the proxy's bills against.
//!
//! Counters are atomics reached through one map lookup per request, so
//! counting a streamed token costs two atomic adds. A snapshot reads each
//! counter on its own: it is exact once the requests it covers have finished.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// How many of the most recent `max_tokens` values are kept per tag (and in
/// the total), so a long-running emulator does not grow without bound.
pub const MAX_TOKENS_KEPT: usize = 10_000;

/// A snapshot of what the mock generated for one tag or in total.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    /// Requests that reached a generation endpoint, refused ones included.
    pub requests: u64,
    /// Requests that started a 200 response (one per request, whatever `n`).
    pub generations: u64,
    /// Uncached input tokens of those generations (Anthropic's
    /// `input_tokens`; OpenAI's `prompt_tokens` is this plus both cache counts).
    pub input_tokens: u64,
    /// Output tokens actually emitted: streamed token frames handed to the
    /// response, or the tokens in a non-streamed body (only those sent, when
    /// the body was cut). Summed over all choices.
    pub output_tokens: u64,
    /// Cache-write input tokens of those generations.
    pub cache_creation_input_tokens: u64,
    /// Cache-read input tokens of those generations.
    pub cache_read_input_tokens: u64,
    /// Server-side web searches (Anthropic only; OpenAI requests count 0).
    pub web_search_requests: u64,
    /// Generations whose response carried no usage (`omit_usage`).
    pub usage_omitted: u64,
    /// Generations the request asked to break (`midstream`, `cut`).
    pub interrupted: u64,
    /// The output cap of each request that passed validation, in arrival
    /// order (`None`: OpenAI request without a cap); the most recent
    /// [`MAX_TOKENS_KEPT`] only.
    pub max_tokens: Vec<Option<u64>>,
}

/// The whole snapshot, as `GET /_mock/stats` serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    pub total: Generated,
    pub tags: BTreeMap<String, Generated>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    generations: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cache_creation_input_tokens: AtomicU64,
    cache_read_input_tokens: AtomicU64,
    web_search_requests: AtomicU64,
    usage_omitted: AtomicU64,
    interrupted: AtomicU64,
    max_tokens: Mutex<VecDeque<Option<u64>>>,
}

impl Counters {
    fn snapshot(&self) -> Generated {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Generated {
            requests: get(&self.requests),
            generations: get(&self.generations),
            input_tokens: get(&self.input_tokens),
            output_tokens: get(&self.output_tokens),
            cache_creation_input_tokens: get(&self.cache_creation_input_tokens),
            cache_read_input_tokens: get(&self.cache_read_input_tokens),
            web_search_requests: get(&self.web_search_requests),
            usage_omitted: get(&self.usage_omitted),
            interrupted: get(&self.interrupted),
            max_tokens: self.max_tokens.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect(),
        }
    }

    fn record_max_tokens(&self, cap: Option<u64>) {
        let mut kept = self.max_tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() == MAX_TOKENS_KEPT {
            kept.pop_front();
        }
        kept.push_back(cap);
    }
}

/// Live counters of one mock upstream (shared by its handlers and the test).
///
/// A request's tag is its body field `mock.tag` or its `x-mock-tag` header;
/// untagged requests count under `""`. Every count lands in the tag and in
/// the total.
#[derive(Debug, Default)]
pub struct MockStats {
    total: Counters,
    tags: Mutex<HashMap<String, Arc<Counters>>>,
}

impl MockStats {
    /// What was generated for `tag` (all zero when the tag was never seen).
    #[must_use]
    pub fn tag(&self, tag: &str) -> Generated {
        self.tags.lock().unwrap_or_else(PoisonError::into_inner).get(tag).map(|c| c.snapshot()).unwrap_or_default()
    }

    /// What was generated over all tags.
    #[must_use]
    pub fn total(&self) -> Generated {
        self.total.snapshot()
    }

    /// Every tag seen so far with what was generated for it.
    #[must_use]
    pub fn tags(&self) -> BTreeMap<String, Generated> {
        let tags: Vec<(String, Arc<Counters>)> = self
            .tags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        tags.into_iter().map(|(k, v)| (k, v.snapshot())).collect()
    }

    /// The total and every tag.
    #[must_use]
    pub fn report(&self) -> StatsReport {
        StatsReport { total: self.total(), tags: self.tags() }
    }

    /// The counters one request writes to.
    pub(super) fn meter(self: &Arc<Self>, tag: &str) -> Meter {
        let counters =
            self.tags.lock().unwrap_or_else(PoisonError::into_inner).entry(tag.to_string()).or_default().clone();
        Meter { stats: self.clone(), tag: counters }
    }
}

/// What a generation costs before its first output token.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Start {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub web_search_requests: u64,
    pub usage_omitted: bool,
    pub interrupted: bool,
}

/// One request's handle on its tag's counters and the total.
#[derive(Debug)]
pub(super) struct Meter {
    stats: Arc<MockStats>,
    tag: Arc<Counters>,
}

impl Meter {
    fn each(&self, f: impl Fn(&Counters)) {
        f(&self.tag);
        f(&self.stats.total);
    }

    pub(super) fn request(&self) {
        self.each(|c| {
            c.requests.fetch_add(1, Ordering::Relaxed);
        });
    }

    pub(super) fn admitted(&self, max_tokens: Option<u64>) {
        self.each(|c| c.record_max_tokens(max_tokens));
    }

    pub(super) fn started(&self, start: Start) {
        self.each(|c| {
            c.generations.fetch_add(1, Ordering::Relaxed);
            c.input_tokens.fetch_add(start.input_tokens, Ordering::Relaxed);
            c.cache_creation_input_tokens.fetch_add(start.cache_creation_input_tokens, Ordering::Relaxed);
            c.cache_read_input_tokens.fetch_add(start.cache_read_input_tokens, Ordering::Relaxed);
            c.web_search_requests.fetch_add(start.web_search_requests, Ordering::Relaxed);
            c.usage_omitted.fetch_add(u64::from(start.usage_omitted), Ordering::Relaxed);
            c.interrupted.fetch_add(u64::from(start.interrupted), Ordering::Relaxed);
        });
    }

    pub(super) fn output(&self, tokens: u64) {
        if tokens > 0 {
            self.each(|c| {
                c.output_tokens.fetch_add(tokens, Ordering::Relaxed);
            });
        }
    }
}
