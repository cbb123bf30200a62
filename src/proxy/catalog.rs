//! The model catalog: which upstream serves a model id, with which key, at
//! how many credits per token. Loaded from YAML; model ids are configuration,
//! never code.
//!
//! ```yaml
//! models:
//!   claude-sonnet-4-5:
//!     kind: anthropic            # anthropic | openai
//!     base_url: https://api.anthropic.com   # the proxy appends /v1/messages
//!     api_key_file: /secrets/anthropic/key
//!     multiplier: 5              # credits per token
//!     max_output_tokens: 64000   # optional cap on the reservation
//!   kimi-k2.6:
//!     kind: openai
//!     base_url: https://api.moonshot.ai   # the proxy appends /v1/chat/completions
//!     api_key_file: /secrets/moonshot/key
//!     multiplier: 1
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// One routable model.
#[derive(Clone, Debug)]
pub struct Model {
    pub id: String,
    pub kind: UpstreamKind,
    /// Upstream base URL without the `/v1/...` path and without a trailing slash.
    pub base_url: String,
    pub key: Option<UpstreamKey>,
    /// Credits per token (input and output alike).
    pub multiplier: i64,
    pub max_output_tokens: Option<i64>,
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
    Parse(#[from] serde_yaml_ng::Error),
    #[error("failed to accept model {0:?}: {1}")]
    Invalid(String, &'static str),
}

impl Catalog {
    /// Reads the catalog YAML at `path` and every key file it names.
    ///
    /// # Errors
    /// Unreadable files, invalid YAML, a non-positive multiplier or an empty base URL.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read { path: path.into(), source })?;
        Self::parse(&text)
    }

    /// Parses catalog YAML (key files are read from disk).
    ///
    /// # Errors
    /// As [`Catalog::load`].
    pub fn parse(yaml: &str) -> Result<Self, CatalogError> {
        let file: FileCatalog = serde_yaml_ng::from_str(yaml)?;
        let mut models = BTreeMap::new();
        for (id, m) in file.models {
            if m.multiplier <= 0 {
                return Err(CatalogError::Invalid(id, "multiplier must be a positive integer"));
            }
            if m.base_url.trim().is_empty() {
                return Err(CatalogError::Invalid(id, "base_url must not be empty"));
            }
            let key = match &m.api_key_file {
                Some(p) => Some(UpstreamKey::new(
                    std::fs::read_to_string(p)
                        .map_err(|source| CatalogError::Read { path: p.clone(), source })?
                        .trim()
                        .to_string(),
                )),
                None => None,
            };
            let model = Model {
                id: id.clone(),
                kind: m.kind,
                base_url: m.base_url.trim_end_matches('/').to_string(),
                key,
                multiplier: m.multiplier,
                max_output_tokens: m.max_output_tokens,
            };
            models.insert(id, model);
        }
        Ok(Self { models })
    }
}
