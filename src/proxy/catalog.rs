//! The model catalog: which upstream serves a model id, with which key, at
//! what price, and which optional upstream features (betas, typed tools,
//! server tools) a tenant may use on it. Loaded from YAML; model ids are
//! configuration, never code. The arithmetic on prices lives in
//! [`super::pricing`]; this module only reads and validates.
//!
//! ```yaml
//! models:
//!   claude-sonnet-4-5:
//!     kind: anthropic            # anthropic | openai
//!     base_url: https://api.anthropic.com   # the proxy appends /v1/messages
//!     api_key_file: /secrets/anthropic/key
//!     multiplier: 5              # credits per token
//!     max_output_tokens: 64000   # optional cap on the reservation
//!     prices:                    # optional, credits per 1,000 tokens
//!       cache_write: 6250
//!       cache_read: 500
//!     server_tools:              # optional, priced per use
//!       web_search:
//!         types: [web_search_20250305]
//!         credits_per_use: 50000
//!         max_uses: 5
//!     tool_types: [bash_20250124]             # optional, typed client tools
//!     betas: [prompt-caching-2024-07-31]      # optional, allowed anthropic-beta values
//!   kimi-k2.6:
//!     kind: openai
//!     base_url: https://api.moonshot.ai   # the proxy appends /v1/chat/completions
//!     api_key_file: /secrets/moonshot/key
//!     multiplier: 1
//! ```
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::pricing::{PRICE_UNIT, Prices};

/// Which wire format an upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Anthropic,
    Openai,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCatalog {
    models: BTreeMap<String, FileModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    kind: UpstreamKind,
    base_url: String,
    api_key_file: Option<PathBuf>,
    multiplier: i64,
    max_output_tokens: Option<i64>,
    #[serde(default)]
    prices: FilePrices,
    #[serde(default)]
    server_tools: BTreeMap<String, FileServerTool>,
    #[serde(default)]
    tool_types: Vec<String>,
    #[serde(default)]
    betas: Vec<String>,
    image_tokens: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrices {
    input: Option<i64>,
    output: Option<i64>,
    cache_write: Option<i64>,
    cache_read: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServerTool {
    types: Vec<String>,
    credits_per_use: i64,
    max_uses: i64,
}

/// An upstream credential; never printed.
#[derive(Clone)]
pub struct UpstreamKey(String);

impl UpstreamKey {
    #[must_use]
    pub fn new(key: String) -> Self {
        Self(key)
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamKey(<redacted>)")
    }
}

/// An Anthropic server tool (web search, web fetch, code execution, ...):
/// run by the upstream, billed by it per use, so allowed only when priced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTool {
    /// The `tools[].type` values that enable it (e.g. `web_search_20250305`).
    pub types: BTreeSet<String>,
    /// Credits per use, as counted by `usage.server_tool_use.<name>_requests`.
    pub credits_per_use: i64,
    /// Most uses per request; written into the forwarded tool definition.
    pub max_uses: i64,
}

/// One routable model.
#[derive(Clone, Debug)]
pub struct Model {
    pub id: String,
    pub kind: UpstreamKind,
    /// Upstream base URL without the `/v1/...` path and without a trailing slash.
    pub base_url: String,
    pub key: Option<UpstreamKey>,
    /// Credits per token (input and output alike) when `prices` sets nothing else.
    pub multiplier: i64,
    pub max_output_tokens: Option<i64>,
    /// What each kind of token and each server tool use costs.
    pub prices: Prices,
    /// Priced server tools by usage name (`web_search` for `web_search_requests`).
    pub server_tools: BTreeMap<String, ServerTool>,
    /// Typed client tools (`bash_20250124`, ...) that may be sent; unpriced.
    pub tool_types: BTreeSet<String>,
    /// `anthropic-beta` values that may be sent.
    pub betas: BTreeSet<String>,
    /// Input tokens one image counts for, when set; else the provider's
    /// documented ceiling (see [`super::request`]).
    pub image_tokens: Option<i64>,
}

impl Model {
    /// The upstream endpoint for this model's API.
    #[must_use]
    pub fn endpoint(&self) -> String {
        match self.kind {
            UpstreamKind::Anthropic => format!("{}/v1/messages", self.base_url),
            UpstreamKind::Openai => format!("{}/v1/chat/completions", self.base_url),
        }
    }

    /// A model with only the required fields and flat prices, for tests and
    /// embedding (no key, no optional features).
    #[must_use]
    pub fn new(id: &str, kind: UpstreamKind, base_url: &str, multiplier: i64) -> Self {
        Self {
            id: id.into(),
            kind,
            base_url: base_url.trim_end_matches('/').into(),
            key: None,
            multiplier,
            max_output_tokens: None,
            prices: Prices::flat(multiplier),
            server_tools: BTreeMap::new(),
            tool_types: BTreeSet::new(),
            betas: BTreeSet::new(),
            image_tokens: None,
        }
    }

    /// The priced server tool whose `types` list `tool_type`, by usage name.
    #[must_use]
    pub fn server_tool_for(&self, tool_type: &str) -> Option<(&str, &ServerTool)> {
        self.server_tools.iter().find(|(_, t)| t.types.contains(tool_type)).map(|(n, t)| (n.as_str(), t))
    }
}

/// The whole catalog, by model id.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub models: BTreeMap<String, Model>,
}

/// Errors loading the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("failed to read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("failed to parse the model catalog: {0}")]
    Parse(#[from] serde_saphyr::Error),
    #[error("failed to accept model {0:?}: {1}")]
    Invalid(String, String),
}

impl Catalog {
    /// Reads the catalog YAML at `path` and every key file it names.
    ///
    /// # Errors
    /// Unreadable files, invalid YAML, unknown fields, or a model that
    /// [`Catalog::parse`] refuses.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read { path: path.into(), source })?;
        Self::parse(&text)
    }

    /// Parses catalog YAML (key files are read from disk).
    ///
    /// # Errors
    /// As [`Catalog::load`]; a model is refused for a non-positive
    /// multiplier, price, `credits_per_use`, `max_output_tokens` or
    /// `image_tokens`, a `max_uses` below 1, an empty base URL or server tool
    /// `types`, or a tool type listed twice (in `tool_types` or across server
    /// tools), so a typo cannot silently make something free.
    pub fn parse(yaml: &str) -> Result<Self, CatalogError> {
        let file: FileCatalog = serde_saphyr::from_str(yaml)?;
        let mut models = BTreeMap::new();
        for (id, m) in file.models {
            let key = match &m.api_key_file {
                Some(p) => Some(UpstreamKey::new(
                    std::fs::read_to_string(p)
                        .map_err(|source| CatalogError::Read { path: p.clone(), source })?
                        .trim()
                        .to_string(),
                )),
                None => None,
            };
            let model = accept(&id, m, key).map_err(|why| CatalogError::Invalid(id.clone(), why))?;
            models.insert(id, model);
        }
        Ok(Self { models })
    }
}

/// Validates one file entry into a [`Model`].
fn accept(id: &str, m: FileModel, key: Option<UpstreamKey>) -> Result<Model, String> {
    check_scalars(&m)?;
    let mut prices = prices(&m)?;
    let server_tools = server_tools(&m)?;
    prices.per_use = server_tools.iter().map(|(n, t): (&String, &ServerTool)| (n.clone(), t.credits_per_use)).collect();
    Ok(Model {
        id: id.to_string(),
        kind: m.kind,
        base_url: m.base_url.trim_end_matches('/').to_string(),
        key,
        multiplier: m.multiplier,
        max_output_tokens: m.max_output_tokens,
        prices,
        server_tools,
        tool_types: m.tool_types.into_iter().collect(),
        betas: m.betas.into_iter().collect(),
        image_tokens: m.image_tokens,
    })
}

fn check_scalars(m: &FileModel) -> Result<(), String> {
    if m.multiplier <= 0 {
        return Err("multiplier must be a positive integer".into());
    }
    if m.base_url.trim().is_empty() {
        return Err("base_url must not be empty".into());
    }
    for (field, value) in [("max_output_tokens", m.max_output_tokens), ("image_tokens", m.image_tokens)] {
        if value.is_some_and(|v| v <= 0) {
            return Err(format!("{field} must be a positive integer"));
        }
    }
    Ok(())
}

/// Token prices, each defaulting to `multiplier` credits per token (server
/// tool prices are filled in by the caller).
fn prices(m: &FileModel) -> Result<Prices, String> {
    let default = m.multiplier.checked_mul(PRICE_UNIT).ok_or("multiplier is too large")?;
    let price = |field: &str, v: Option<i64>| match v {
        Some(p) if p <= 0 => Err(format!("prices.{field} must be a positive integer (credits per 1,000 tokens)")),
        Some(p) => Ok(p),
        None => Ok(default),
    };
    Ok(Prices {
        input: price("input", m.prices.input)?,
        output: price("output", m.prices.output)?,
        cache_write: price("cache_write", m.prices.cache_write)?,
        cache_read: price("cache_read", m.prices.cache_read)?,
        per_use: BTreeMap::new(),
    })
}

/// The priced server tools; no tool type may be listed twice across them
/// and `tool_types`.
fn server_tools(m: &FileModel) -> Result<BTreeMap<String, ServerTool>, String> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut tools = BTreeMap::new();
    for (name, t) in &m.server_tools {
        if t.credits_per_use <= 0 {
            return Err(format!("server_tools.{name}.credits_per_use must be a positive integer"));
        }
        if t.max_uses < 1 {
            return Err(format!("server_tools.{name}.max_uses must be at least 1"));
        }
        if t.types.is_empty() {
            return Err(format!("server_tools.{name}.types must name at least one tool type"));
        }
        let tool = ServerTool {
            types: t.types.iter().cloned().collect(),
            credits_per_use: t.credits_per_use,
            max_uses: t.max_uses,
        };
        tools.insert(name.clone(), tool);
    }
    for ty in m.server_tools.values().flat_map(|t| &t.types).chain(&m.tool_types) {
        if !seen.insert(ty) {
            return Err(format!("tool type {ty:?} is listed twice"));
        }
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "models:\n  m:\n    kind: anthropic\n    base_url: http://u/\n    multiplier: 3\n";

    fn one(extra: &str) -> Result<Model, CatalogError> {
        Catalog::parse(&format!("{BASE}{extra}")).map(|c| c.models["m"].clone())
    }

    #[test]
    fn multiplier_alone_prices_every_token_kind_alike() {
        let m = one("").unwrap();
        assert_eq!(m.base_url, "http://u");
        assert_eq!(m.prices, Prices::flat(3));
        assert_eq!(
            (m.prices.input, m.prices.output, m.prices.cache_write, m.prices.cache_read),
            (3000, 3000, 3000, 3000)
        );
        assert!(m.server_tools.is_empty() && m.tool_types.is_empty() && m.betas.is_empty());
    }

    #[test]
    fn prices_server_tools_and_allow_lists_are_read() {
        let m = one(concat!(
            "    prices:\n      input: 2500\n      cache_write: 3125\n      cache_read: 250\n",
            "    server_tools:\n      web_search:\n        types: [web_search_20250305]\n        credits_per_use: 50000\n        max_uses: 5\n",
            "    tool_types: [bash_20250124, text_editor_20250124]\n",
            "    betas: [prompt-caching-2024-07-31]\n",
            "    image_tokens: 4784\n",
        ))
        .unwrap();
        assert_eq!(
            (m.prices.input, m.prices.output, m.prices.cache_write, m.prices.cache_read),
            (2500, 3000, 3125, 250)
        );
        assert_eq!(m.prices.per_use, BTreeMap::from([("web_search".to_string(), 50_000)]));
        let (name, tool) = m.server_tool_for("web_search_20250305").unwrap();
        assert_eq!((name, tool.max_uses, tool.credits_per_use), ("web_search", 5, 50_000));
        assert!(m.server_tool_for("bash_20250124").is_none());
        assert!(m.tool_types.contains("text_editor_20250124"));
        assert!(m.betas.contains("prompt-caching-2024-07-31"));
        assert_eq!(m.image_tokens, Some(4784));
    }

    #[test]
    fn refuses_what_would_make_something_free_or_unbounded() {
        let cases: &[(&str, &str)] = &[
            ("    prices:\n      output: 0\n", "prices.output"),
            ("    prices:\n      cache_read: -1\n", "prices.cache_read"),
            ("    prices:\n      cache_reads: 1\n", "unknown field"),
            (
                "    server_tools:\n      ws:\n        types: [a]\n        credits_per_use: 0\n        max_uses: 1\n",
                "credits_per_use",
            ),
            (
                "    server_tools:\n      ws:\n        types: [a]\n        credits_per_use: 5\n        max_uses: 0\n",
                "max_uses",
            ),
            ("    server_tools:\n      ws:\n        types: [a]\n        credits_per_use: 5\n", "max_uses"),
            (
                "    server_tools:\n      ws:\n        types: []\n        credits_per_use: 5\n        max_uses: 1\n",
                "types",
            ),
            (
                "    server_tools:\n      ws:\n        types: [a]\n        credits_per_use: 5\n        max_uses: 1\n        cost: 1\n",
                "unknown field",
            ),
            (
                "    server_tools:\n      ws:\n        types: [a]\n        credits_per_use: 5\n        max_uses: 1\n    tool_types: [a]\n",
                "listed twice",
            ),
            ("    max_output_tokens: 0\n", "max_output_tokens"),
            ("    image_tokens: 0\n", "image_tokens"),
            ("    beta: [x]\n", "unknown field"),
        ];
        for (extra, want) in cases {
            let err = one(extra).expect_err(extra).to_string();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        let err = Catalog::parse("models:\n  m:\n    kind: openai\n    base_url: x\n    multiplier: 0\n").unwrap_err();
        assert!(err.to_string().contains("multiplier"), "{err}");
        let huge = format!("models:\n  m:\n    kind: openai\n    base_url: x\n    multiplier: {}\n", i64::MAX);
        assert!(Catalog::parse(&huge).is_err());
    }
}
