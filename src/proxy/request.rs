//! What a client request asks of the upstream, read before anything is
//! reserved or forwarded: the output cap and number of choices it may
//! generate, the input it carries, the server tools it may run, and whether
//! it uses only the features the catalog allows for its model
//! ([`analyze`]); then the limits the proxy reserved for, written back into
//! the body it forwards ([`write_limits`]). Pure: no IO, nothing about
//! credits (see [`super::pricing`]) or HTTP responses (see [`super::errors`]).
//!
//! # Input estimate
//! Text is counted as today's proxy always did, one token per 3 bytes
//! (rounded up), a margin over the ~4 bytes per token real tokenizers average.
//! Base64 media are not text and are counted the way the providers bill them:
//! - Anthropic images: about `width × height / 750` tokens, and images above
//!   ~1.15 megapixels are scaled down first, so one image costs at most about
//!   1,600 tokens (<https://docs.anthropic.com/en/docs/build-with-claude/vision>,
//!   "Calculate image costs").
//! - Anthropic PDFs: each page is extracted as text (1,500–3,000 tokens per
//!   page) and also converted into an image billed as above, and a request
//!   holds at most 100 pages
//!   (<https://docs.anthropic.com/en/docs/build-with-claude/pdf-support>,
//!   "Estimate your costs", "PDF support limitations"). Pages are counted from
//!   the decoded PDF's page objects; the proxy counts 3,000 + 1,600 per page.
//! - OpenAI `image_url` parts: `detail: "low"` costs 85 tokens; otherwise the
//!   image is fit into 2048 × 2048, its short side scaled to 768 and billed 170
//!   per 512 px tile plus 85, at most 8 tiles (768 × 2048): 1,445 tokens
//!   (<https://platform.openai.com/docs/guides/vision#calculating-costs>).
//!
//! A model whose provider counts images differently sets `image_tokens` in
//! the catalog, which then replaces every per-image figure above.
use std::collections::BTreeMap;

use base64::Engine as _;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::catalog::Model;
use super::errors::Api;
use super::pdf::Pages;

/// Bytes of text per input token the estimate assumes.
const BYTES_PER_TOKEN: i64 = 3;
/// Anthropic: the most tokens one image costs after its downscale.
const ANTHROPIC_IMAGE_TOKENS: i64 = 1600;
/// Anthropic: text tokens counted per PDF page (top of the documented range).
const PDF_PAGE_TEXT_TOKENS: i64 = 3000;
/// Anthropic: most pages in one request.
const PDF_MAX_PAGES: i64 = 100;
/// OpenAI: a `detail: "low"` image.
const OPENAI_LOW_DETAIL_TOKENS: i64 = 85;
/// OpenAI: the largest high-detail image (8 tiles × 170 + 85).
const OPENAI_HIGH_DETAIL_TOKENS: i64 = 1445;
/// OpenAI: most completions per request (`n`).
const MAX_CHOICES: i64 = 128;
/// The largest token count (output cap, thinking budget) a request may ask
/// for: far above any model's output limit, and low enough that no hold
/// computed from it can overflow the ledger's 64-bit arithmetic.
pub const MAX_TOKEN_COUNT: i64 = 10_000_000;

/// A request the official API would refuse with 400, and so does the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    /// The offending field (`max_tokens`, `n`, `tools`, `anthropic-beta`, ...).
    pub param: Option<String>,
}

impl Invalid {
    fn new(message: impl Into<String>, param: &str) -> Self {
        Self { message: message.into(), param: Some(param.into()) }
    }
}

/// Which field carries the output cap of an OpenAI request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapField {
    MaxTokens,
    MaxCompletionTokens,
}

impl CapField {
    /// The JSON field name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxTokens => "max_tokens",
            Self::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// The bounds of one request, as far as money is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analyzed {
    pub streaming: bool,
    /// Output cap per choice: the client's, else the default, never above
    /// the model's `max_output_tokens`; at least 1.
    pub requested_output: i64,
    /// Completions generated (OpenAI `n`; 1 on Anthropic).
    pub choices: i64,
    /// Upper-bound guess at the input tokens (see the module docs).
    pub input_estimate: i64,
    /// Worst-case uses of each priced server tool, by usage name.
    pub server_tool_uses: BTreeMap<String, i64>,
    /// The cap field the client set (`None`: neither, the default applies).
    pub cap_field: Option<CapField>,
    /// Anthropic extended thinking budget; the upstream requires the cap above it.
    pub thinking_budget: Option<i64>,
    /// OpenAI `stream_options.include_usage` as the client sent it.
    pub wants_usage: bool,
}

/// Reads and validates `body` (already parsed JSON) for `model`.
///
/// # Errors
/// [`Invalid`] for what the official APIs refuse with 400: a body that is
/// not an object; `max_tokens` / `max_completion_tokens` that is not a JSON
/// integer of at least 1 (OpenAI also refuses both at once); `n` outside
/// 1..=128; a non-boolean `stream`; an `anthropic-beta` value or a typed tool
/// the catalog does not allow for the model; a malformed `tools` list,
/// server tool `max_uses` or thinking budget. OpenAI's nullable fields may
/// be `null` (meaning absent); Anthropic's may not.
pub fn analyze(
    api: Api,
    headers: &HeaderMap,
    body: &Value,
    model: &Model,
    default_max_tokens: i64,
) -> Result<Analyzed, Invalid> {
    let Some(obj) = body.as_object() else {
        return Err(Invalid { message: "request body must be a JSON object".into(), param: None });
    };
    let fields = Fields { obj, nullable: api == Api::Openai };
    let streaming = match fields.present("stream") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| Invalid::new("stream: must be a boolean", "stream"))?,
    };
    let (cap, cap_field) = output_cap(api, &fields)?;
    let requested = cap.unwrap_or(default_max_tokens).max(1);
    let requested_output = model.max_output_tokens.map_or(requested, |m| requested.min(m)).max(1);
    let choices = choices(api, &fields)?;
    if api == Api::Anthropic {
        check_betas(headers, model)?;
    }
    let server_tool_uses = match fields.present("tools") {
        None => BTreeMap::new(),
        Some(tools) => check_tools(api, tools, model)?,
    };
    let wants_usage = obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool);
    Ok(Analyzed {
        streaming,
        requested_output,
        choices,
        input_estimate: estimate_input(api, obj, model),
        server_tool_uses,
        cap_field,
        thinking_budget: thinking_budget(api, obj)?,
        wants_usage: wants_usage.unwrap_or(false),
    })
}

/// The request's top-level fields; OpenAI's nullable ones read `null` as absent.
struct Fields<'a> {
    obj: &'a serde_json::Map<String, Value>,
    nullable: bool,
}

impl Fields<'_> {
    fn present(&self, name: &str) -> Option<&Value> {
        self.obj.get(name).filter(|v| !(self.nullable && v.is_null()))
    }

    /// A token count that, when present, must be a JSON integer from 1 to
    /// [`MAX_TOKEN_COUNT`].
    fn token_count(&self, name: &str) -> Result<Option<i64>, Invalid> {
        match self.present(name) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) if (1..=MAX_TOKEN_COUNT).contains(&n) => Ok(Some(n)),
                _ => {
                    Err(Invalid::new(format!("{name}: must be an integer from 1 to {MAX_TOKEN_COUNT}, got {v}"), name))
                }
            },
        }
    }
}

/// The output cap the client asked for, and the field it used.
fn output_cap(api: Api, fields: &Fields<'_>) -> Result<(Option<i64>, Option<CapField>), Invalid> {
    let (cap, field) = match api {
        Api::Anthropic => (fields.token_count("max_tokens")?, Some(CapField::MaxTokens)),
        Api::Openai => match (fields.token_count("max_tokens")?, fields.token_count("max_completion_tokens")?) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "set only one of max_tokens and max_completion_tokens",
                    "max_completion_tokens",
                ));
            }
            (Some(n), None) => (Some(n), Some(CapField::MaxTokens)),
            (None, Some(n)) => (Some(n), Some(CapField::MaxCompletionTokens)),
            (None, None) => (None, None),
        },
    };
    Ok((cap, cap.and(field)))
}

/// OpenAI `n` (1 when absent); Anthropic has one choice.
fn choices(api: Api, fields: &Fields<'_>) -> Result<i64, Invalid> {
    if api == Api::Anthropic {
        return Ok(1);
    }
    match fields.present("n") {
        None => Ok(1),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n),
            _ => Err(Invalid::new(format!("n: must be an integer from 1 to {MAX_CHOICES}, got {v}"), "n")),
        },
    }
}

/// Anthropic's extended-thinking budget, when thinking is enabled.
fn thinking_budget(api: Api, obj: &serde_json::Map<String, Value>) -> Result<Option<i64>, Invalid> {
    let Some(t) = obj.get("thinking").filter(|_| api == Api::Anthropic) else {
        return Ok(None);
    };
    if t.get("type").and_then(Value::as_str) != Some("enabled") {
        return Ok(None);
    }
    match t.get("budget_tokens").and_then(Value::as_i64) {
        Some(b) if (1..=MAX_TOKEN_COUNT).contains(&b) => Ok(Some(b)),
        _ => Err(Invalid::new(
            format!("thinking.budget_tokens: must be an integer from 1 to {MAX_TOKEN_COUNT}"),
            "thinking.budget_tokens",
        )),
    }
}

/// Writes the limits the proxy reserved for into the body it forwards: the
/// output cap per choice (`cap_per_choice`, never raised above what the
/// client asked and at least 1) in the field the client used (Anthropic
/// `max_tokens`; OpenAI `max_completion_tokens` when the client used it,
/// else `max_tokens`), a thinking budget lowered below that cap, and each
/// priced server tool's `max_uses` as the lower of the client's and the
/// catalog's.
///
/// # Guarantees
/// [`analyze`] of the written body finds no more output, choices or server
/// tool uses than `analyzed` with the cap lowered to `cap_per_choice`.
pub fn write_limits(api: Api, body: &mut Value, analyzed: &Analyzed, cap_per_choice: i64, model: &Model) {
    let cap = cap_per_choice.clamp(1, analyzed.requested_output.max(1));
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    match api {
        Api::Anthropic => {
            obj.insert("max_tokens".into(), Value::from(cap));
            let budget = obj.get("thinking").and_then(|t| t.get("budget_tokens")).and_then(Value::as_i64);
            if budget.is_some_and(|b| b >= cap) {
                // The upstream requires the budget below the cap; with no
                // room left for one, thinking is off.
                if cap > 1
                    && let Some(t) = obj.get_mut("thinking").and_then(Value::as_object_mut)
                {
                    t.insert("budget_tokens".into(), Value::from(cap - 1));
                } else {
                    obj.insert("thinking".into(), serde_json::json!({"type": "disabled"}));
                }
            }
        }
        Api::Openai => {
            let field = analyzed.cap_field.unwrap_or(CapField::MaxTokens);
            obj.insert(field.name().into(), Value::from(cap));
        }
    }
    if api != Api::Anthropic {
        return;
    }
    for tool in obj.get_mut("tools").and_then(Value::as_array_mut).into_iter().flatten() {
        let Some((_, server)) = tool.get("type").and_then(Value::as_str).and_then(|t| model.server_tool_for(t)) else {
            continue;
        };
        let uses = tool
            .get("max_uses")
            .and_then(Value::as_i64)
            .filter(|&n| n >= 1)
            .map_or(server.max_uses, |n| n.min(server.max_uses));
        if let Some(t) = tool.as_object_mut() {
            t.insert("max_uses".into(), Value::from(uses));
        }
    }
}

/// Every `anthropic-beta` value (comma-separated, in any number of headers)
/// must be allowed for the model.
fn check_betas(headers: &HeaderMap, model: &Model) -> Result<(), Invalid> {
    for value in headers.get_all("anthropic-beta") {
        let text = value.to_str().map_err(|_| Invalid::new("anthropic-beta: header is not text", "anthropic-beta"))?;
        for beta in text.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            if !model.betas.contains(beta) {
                return Err(Invalid::new(
                    format!("anthropic-beta: {beta:?} is not enabled for model {:?}", model.id),
                    "anthropic-beta",
                ));
            }
        }
    }
    Ok(())
}

/// Allows untyped / custom / function tools, the catalog's `tool_types`
/// and (Anthropic only, the only API whose usage reports them) its priced
/// server tools, whose worst-case uses it returns.
fn check_tools(api: Api, tools: &Value, model: &Model) -> Result<BTreeMap<String, i64>, Invalid> {
    let Some(list) = tools.as_array() else {
        return Err(Invalid::new("tools: must be an array", "tools"));
    };
    let mut uses: BTreeMap<String, i64> = BTreeMap::new();
    for (i, tool) in list.iter().enumerate() {
        if !tool.is_object() {
            return Err(Invalid::new(format!("tools.{i}: must be an object"), "tools"));
        }
        let ty = match tool.get("type") {
            None => continue,
            Some(Value::Null) if api == Api::Openai => continue,
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(Invalid::new(format!("tools.{i}.type: must be a string"), "tools")),
        };
        let plain = match api {
            Api::Anthropic => ty == "custom",
            Api::Openai => ty == "function" || ty == "custom",
        };
        if plain || model.tool_types.contains(ty) {
            continue;
        }
        if api == Api::Anthropic
            && let Some((name, server)) = model.server_tool_for(ty)
        {
            let n = match tool.get("max_uses") {
                None => server.max_uses,
                Some(v) => match v.as_i64() {
                    Some(n) if n >= 1 => n.min(server.max_uses),
                    _ => {
                        return Err(Invalid::new(
                            format!("tools.{i}.max_uses: must be an integer of at least 1, got {v}"),
                            "tools",
                        ));
                    }
                },
            };
            let total = uses.entry(name.to_string()).or_insert(0);
            *total = total.saturating_add(n);
            continue;
        }
        return Err(Invalid::new(format!("tools.{i}.type: {ty:?} is not enabled for model {:?}", model.id), "tools"));
    }
    Ok(uses)
}

/// Text bytes and media tokens of a request body.
#[derive(Default)]
struct Estimate {
    bytes: i64,
    tokens: i64,
}

fn estimate_input(api: Api, body: &Map<String, Value>, model: &Model) -> i64 {
    let mut e = Estimate::default();
    e.bytes += 2 + commas(body.len());
    for (key, value) in body {
        e.bytes += len(key) + 3;
        match (key.as_str(), value.as_array()) {
            ("messages", Some(messages)) => {
                e.bytes += 2 + commas(messages.len());
                for m in messages {
                    e.message(api, m, model);
                }
            }
            _ => e.bytes += json_size(value),
        }
    }
    ceil_div(e.bytes, BYTES_PER_TOKEN).saturating_add(e.tokens)
}

impl Estimate {
    fn message(&mut self, api: Api, message: &Value, model: &Model) {
        let Some(m) = message.as_object() else {
            self.bytes += json_size(message);
            return;
        };
        self.bytes += 2 + commas(m.len());
        for (key, value) in m {
            self.bytes += len(key) + 3;
            match (key.as_str(), value.as_array()) {
                ("content", Some(parts)) => {
                    self.bytes += 2 + commas(parts.len());
                    for part in parts {
                        match api {
                            Api::Anthropic => self.anthropic_part(part, model),
                            Api::Openai => self.openai_part(part, model),
                        }
                    }
                }
                _ => self.bytes += json_size(value),
            }
        }
    }

    /// One content block; media blocks are counted as the provider bills
    /// them, their base64 payload is not text.
    fn anthropic_part(&mut self, part: &Value, model: &Model) {
        let image = model.image_tokens.unwrap_or(ANTHROPIC_IMAGE_TOKENS);
        let source = part.get("source");
        let source_type = source.and_then(|s| s.get("type")).and_then(Value::as_str);
        let data = source.and_then(|s| s.get("data")).and_then(Value::as_str);
        match (part.get("type").and_then(Value::as_str), source_type) {
            (Some("image"), Some(_)) => {
                self.tokens = self.tokens.saturating_add(image);
                self.bytes += json_size(part) - data.filter(|d| is_base64(d)).map_or(0, len);
            }
            (Some("document"), Some("base64")) if data.is_some_and(is_base64) => {
                let data = data.unwrap_or_default();
                self.tokens = self.tokens.saturating_add(pdf_tokens(data, image));
                self.bytes += json_size(part) - len(data);
            }
            (Some("document"), Some("url" | "file")) => {
                // The page count is unknown before the upstream fetches it.
                self.tokens = self.tokens.saturating_add(PDF_MAX_PAGES * (PDF_PAGE_TEXT_TOKENS + image));
                self.bytes += json_size(part);
            }
            (Some("document"), Some("content")) => {
                self.nested(part, source.and_then(|s| s.get("content")), |e, p| e.anthropic_part(p, model));
            }
            (Some("tool_result"), _) => self.nested(part, part.get("content"), |e, p| e.anthropic_part(p, model)),
            _ => self.bytes += json_size(part),
        }
    }

    fn openai_part(&mut self, part: &Value, model: &Model) {
        match part.get("type").and_then(Value::as_str) {
            Some("image_url") => {
                let low = part.pointer("/image_url/detail").and_then(Value::as_str) == Some("low");
                let tokens = model.image_tokens.unwrap_or(if low {
                    OPENAI_LOW_DETAIL_TOKENS
                } else {
                    OPENAI_HIGH_DETAIL_TOKENS
                });
                self.tokens = self.tokens.saturating_add(tokens);
                let payload = part.pointer("/image_url/url").and_then(Value::as_str).and_then(data_url_payload);
                self.bytes += json_size(part) - payload.map_or(0, len);
            }
            Some("file") => {
                let image = model.image_tokens.unwrap_or(ANTHROPIC_IMAGE_TOKENS);
                match part.pointer("/file/file_data").and_then(Value::as_str).and_then(data_url_payload) {
                    Some(payload) => {
                        self.tokens = self.tokens.saturating_add(pdf_tokens(payload, image));
                        self.bytes += json_size(part) - len(payload);
                    }
                    None => {
                        if part.pointer("/file/file_id").is_some() {
                            self.tokens = self.tokens.saturating_add(PDF_MAX_PAGES * (PDF_PAGE_TEXT_TOKENS + image));
                        }
                        self.bytes += json_size(part);
                    }
                }
            }
            _ => self.bytes += json_size(part),
        }
    }

    /// A block that holds more blocks in `inner`: its own fields are text,
    /// the inner blocks are counted one by one.
    fn nested(&mut self, part: &Value, inner: Option<&Value>, mut each: impl FnMut(&mut Self, &Value)) {
        match inner.and_then(Value::as_array) {
            Some(blocks) => {
                self.bytes += json_size(part) - inner.map_or(0, json_size) + 2 + commas(blocks.len());
                for b in blocks {
                    each(self, b);
                }
            }
            None => self.bytes += json_size(part),
        }
    }
}

/// Tokens of a base64 PDF: 3,000 text tokens and one image per page
/// ([`super::pdf::pages`]). A PDF whose pages cannot be counted the way a
/// reader would (an unreadable filter, a truncated stream) is held at the
/// 100 pages the upstream accepts; one where no page is found at all at its
/// decoded size, one token per 3 bytes; undecodable base64 at its
/// approximate decoded size. Never more than 100 pages.
fn pdf_tokens(data: &str, image_tokens: i64) -> i64 {
    let per_page = PDF_PAGE_TEXT_TOKENS + image_tokens;
    let by_size = |bytes: i64| ceil_div(bytes, BYTES_PER_TOKEN);
    let most = PDF_MAX_PAGES * per_page;
    let tokens = match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
        Ok(pdf) => match super::pdf::pages(&pdf) {
            Pages::Unknown => most,
            Pages::Counted(0) => by_size(len_bytes(&pdf)),
            Pages::Counted(pages) => pages.saturating_mul(per_page),
        },
        Err(_) => by_size(len(data) / 4 * 3),
    };
    tokens.min(most)
}

/// The base64 payload of a `data:...;base64,` URL.
fn data_url_payload(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    (meta.ends_with(";base64") && is_base64(payload)).then_some(payload)
}

/// Only base64 characters: such a payload reaches the model decoded, as
/// media, never as text, so it is safe not to count it as text.
fn is_base64(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// Size of a JSON value serialized compactly (escapes aside).
fn json_size(v: &Value) -> i64 {
    match v {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => len(&n.to_string()),
        Value::String(s) => len(s) + 2,
        Value::Array(a) => 2 + commas(a.len()) + a.iter().map(json_size).sum::<i64>(),
        Value::Object(o) => 2 + commas(o.len()) + o.iter().map(|(k, x)| len(k) + 3 + json_size(x)).sum::<i64>(),
    }
}

/// Separators between `n` items.
fn commas(n: usize) -> i64 {
    i64::try_from(n.saturating_sub(1)).unwrap_or(i64::MAX)
}

fn len(s: &str) -> i64 {
    len_bytes(s.as_bytes())
}

fn len_bytes(b: &[u8]) -> i64 {
    i64::try_from(b.len()).unwrap_or(i64::MAX)
}

fn ceil_div(n: i64, d: i64) -> i64 {
    if n <= 0 { 0 } else { n.saturating_add(d - 1) / d }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::catalog::{Catalog, UpstreamKind};
    use http::HeaderValue;
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::parse(concat!(
            "models:\n",
            "  claude:\n    kind: anthropic\n    base_url: http://a\n    multiplier: 5\n    max_output_tokens: 64000\n",
            "    server_tools:\n      web_search:\n        types: [web_search_20250305]\n        credits_per_use: 50000\n        max_uses: 5\n",
            "    tool_types: [bash_20250124, text_editor_20250124]\n",
            "    betas: [prompt-caching-2024-07-31, pdfs-2024-09-25]\n",
            "  kimi:\n    kind: openai\n    base_url: http://o\n    multiplier: 1\n",
        ))
        .unwrap()
    }

    fn claude() -> Model {
        catalog().models["claude"].clone()
    }

    fn kimi() -> Model {
        catalog().models["kimi"].clone()
    }

    fn anthropic(body: &Value) -> Result<Analyzed, Invalid> {
        analyze(Api::Anthropic, &HeaderMap::new(), body, &claude(), 4096)
    }

    fn openai(body: &Value) -> Result<Analyzed, Invalid> {
        analyze(Api::Openai, &HeaderMap::new(), body, &kimi(), 4096)
    }

    fn msg(content: Value) -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": content}]})
    }

    fn with(mut body: Value, key: &str, value: Value) -> Value {
        body[key] = value;
        body
    }

    #[test]
    fn output_caps_must_be_positive_json_integers() {
        let base = msg(json!("hi"));
        let bad = [json!(-5), json!(0), json!(12.5), json!(12.0), json!("100"), json!(1e30), json!(true), json!([1])];
        for field in ["max_tokens", "max_completion_tokens"] {
            for v in &bad {
                let err = openai(&with(base.clone(), field, v.clone())).expect_err(&format!("{field}={v}"));
                assert_eq!(err.param.as_deref(), Some(field), "{field}={v}");
            }
        }
        for v in bad.iter().chain([&json!(null), &json!(u64::MAX)]) {
            let err = anthropic(&with(base.clone(), "max_tokens", v.clone())).expect_err(&format!("{v}"));
            assert_eq!(err.param.as_deref(), Some("max_tokens"));
        }
        // OpenAI documents these fields as nullable: null is absent.
        let a = openai(&with(base.clone(), "max_tokens", Value::Null)).unwrap();
        assert_eq!((a.requested_output, a.cap_field), (4096, None));
        let both = with(with(base.clone(), "max_tokens", json!(10)), "max_completion_tokens", json!(10));
        let err = openai(&both).unwrap_err();
        assert!(err.message.contains("only one"), "{err:?}");
    }

    #[test]
    fn requested_output_applies_default_and_model_cap() {
        let base = msg(json!("hi"));
        let cases: &[(Api, Value, i64, Option<CapField>)] = &[
            (Api::Anthropic, base.clone(), 4096, None),
            (Api::Anthropic, with(base.clone(), "max_tokens", json!(100)), 100, Some(CapField::MaxTokens)),
            (Api::Anthropic, with(base.clone(), "max_tokens", json!(1_000_000)), 64000, Some(CapField::MaxTokens)),
            (Api::Openai, with(base.clone(), "max_tokens", json!(7)), 7, Some(CapField::MaxTokens)),
            (
                Api::Openai,
                with(base.clone(), "max_completion_tokens", json!(9)),
                9,
                Some(CapField::MaxCompletionTokens),
            ),
            (
                Api::Openai,
                with(base.clone(), "max_completion_tokens", json!(MAX_TOKEN_COUNT)),
                MAX_TOKEN_COUNT,
                Some(CapField::MaxCompletionTokens),
            ),
        ];
        for (api, body, want, field) in cases {
            let a = match api {
                Api::Anthropic => anthropic(body),
                Api::Openai => openai(body),
            }
            .unwrap();
            assert_eq!((a.requested_output, a.cap_field), (*want, *field), "{body}");
        }
        let tiny_default = analyze(Api::Openai, &HeaderMap::new(), &base, &kimi(), 0).unwrap();
        assert_eq!(tiny_default.requested_output, 1);
    }

    #[test]
    fn choices_and_stream() {
        let base = msg(json!("hi"));
        assert_eq!(openai(&base).unwrap().choices, 1);
        assert_eq!(openai(&with(base.clone(), "n", json!(128))).unwrap().choices, 128);
        assert_eq!(openai(&with(base.clone(), "n", Value::Null)).unwrap().choices, 1);
        for v in [json!(0), json!(129), json!(2.5), json!("2"), json!(-1)] {
            assert_eq!(openai(&with(base.clone(), "n", v.clone())).unwrap_err().param.as_deref(), Some("n"), "{v}");
        }
        assert_eq!(anthropic(&with(base.clone(), "n", json!(50))).unwrap().choices, 1);
        assert!(openai(&with(base.clone(), "stream", json!(true))).unwrap().streaming);
        assert!(!openai(&with(base.clone(), "stream", Value::Null)).unwrap().streaming);
        for v in [json!("true"), json!(1)] {
            assert_eq!(openai(&with(base.clone(), "stream", v.clone())).unwrap_err().param.as_deref(), Some("stream"));
        }
        assert!(anthropic(&with(base.clone(), "stream", Value::Null)).is_err());
        let usage = with(base.clone(), "stream_options", json!({"include_usage": true}));
        assert!(openai(&usage).unwrap().wants_usage && !openai(&base).unwrap().wants_usage);
        assert!(anthropic(&json!([1])).unwrap_err().param.is_none());
    }

    #[test]
    fn betas_must_be_allowed_for_the_model() {
        let body = msg(json!("hi"));
        let cases: &[(&[&str], bool)] = &[
            (&[], true),
            (&["prompt-caching-2024-07-31"], true),
            (&["prompt-caching-2024-07-31, pdfs-2024-09-25"], true),
            (&["prompt-caching-2024-07-31", "pdfs-2024-09-25"], true),
            (&[" , prompt-caching-2024-07-31 ,"], true),
            (&["prompt-caching-2024-07-31,mcp-client-2025-04-04"], false),
            (&["prompt-caching-2024-07-31", "code-execution-2025-05-22"], false),
            (&["PROMPT-CACHING-2024-07-31"], false),
        ];
        for (values, ok) in cases {
            let mut headers = HeaderMap::new();
            for v in *values {
                headers.append("anthropic-beta", HeaderValue::from_str(v).unwrap());
            }
            let got = analyze(Api::Anthropic, &headers, &body, &claude(), 4096);
            assert_eq!(got.is_ok(), *ok, "{values:?}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.param.as_deref(), Some("anthropic-beta"));
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-beta", HeaderValue::from_bytes(b"\xff").unwrap());
        assert!(analyze(Api::Anthropic, &headers, &body, &claude(), 4096).is_err());
    }

    #[test]
    fn tools_are_allow_listed_and_server_tools_counted_at_worst_case() {
        let base = msg(json!("hi"));
        let ws = |max: Option<Value>| {
            let mut t = json!({"type": "web_search_20250305", "name": "web_search"});
            if let Some(m) = max {
                t["max_uses"] = m;
            }
            t
        };
        let ok: &[(Value, i64)] = &[
            (json!([{"name": "f", "input_schema": {}}]), 0),
            (json!([{"type": "custom", "name": "f", "input_schema": {}}]), 0),
            (json!([{"type": "bash_20250124", "name": "bash"}]), 0),
            (json!([ws(None)]), 5),
            (json!([ws(Some(json!(2)))]), 2),
            (json!([ws(Some(json!(99)))]), 5),
            (json!([ws(Some(json!(2))), ws(None)]), 7),
        ];
        for (tools, uses) in ok {
            let a = anthropic(&with(base.clone(), "tools", tools.clone())).unwrap();
            assert_eq!(a.server_tool_uses.get("web_search").copied().unwrap_or(0), *uses, "{tools}");
        }
        let bad = [
            json!([{"type": "code_execution_20250522", "name": "code_execution"}]),
            json!([{"type": "computer_20250124", "name": "computer"}]),
            json!([{"type": "function", "function": {"name": "f"}}]),
            json!([ws(Some(json!(0)))]),
            json!([ws(Some(json!(1.5)))]),
            json!([{"type": 5}]),
            json!(["x"]),
            json!({"type": "custom"}),
        ];
        for tools in bad {
            let err = anthropic(&with(base.clone(), "tools", tools.clone())).expect_err(&tools.to_string());
            assert_eq!(err.param.as_deref(), Some("tools"), "{tools}");
        }
        // OpenAI: functions pass, typed tools need the allow-list, server tools are Anthropic-only.
        assert!(openai(&with(base.clone(), "tools", json!([{"type": "function", "function": {"name": "f"}}]))).is_ok());
        assert!(openai(&with(base.clone(), "tools", Value::Null)).is_ok());
        for ty in ["builtin_function", "web_search_20250305"] {
            let err = openai(&with(base.clone(), "tools", json!([{"type": ty}]))).unwrap_err();
            assert_eq!(err.param.as_deref(), Some("tools"));
        }
    }

    #[test]
    fn thinking_budget_is_read_and_validated() {
        let base = with(msg(json!("hi")), "max_tokens", json!(8000));
        let t = anthropic(&with(base.clone(), "thinking", json!({"type": "enabled", "budget_tokens": 2048}))).unwrap();
        assert_eq!(t.thinking_budget, Some(2048));
        assert_eq!(
            anthropic(&with(base.clone(), "thinking", json!({"type": "disabled"}))).unwrap().thinking_budget,
            None
        );
        for b in [json!(0), json!("2048"), Value::Null, json!(MAX_TOKEN_COUNT + 1), json!(i64::MAX - 1)] {
            let err =
                anthropic(&with(base.clone(), "thinking", json!({"type": "enabled", "budget_tokens": b}))).unwrap_err();
            assert_eq!(err.param.as_deref(), Some("thinking.budget_tokens"));
        }
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn image_block(data: &str) -> Value {
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}})
    }

    fn pdf(pages: usize) -> Vec<u8> {
        let mut out = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n".to_vec();
        out.extend_from_slice(format!("2 0 obj << /Type/Pages /Count {pages} >> endobj\n").as_bytes());
        out.extend_from_slice(b"3 0 obj << /Type /PageLabel >> endobj\n");
        for i in 0..pages {
            let sep = ["/Type /Page", "/Type/Page", "/Type\n/Page>>", "/Type  /Page/Parent"][i % 4];
            out.extend_from_slice(format!("{} 0 obj << {sep} /Parent 2 0 R >> endobj\n", i + 4).as_bytes());
        }
        out
    }

    #[test]
    fn text_is_a_token_per_three_bytes() {
        let body = msg(json!("x".repeat(3000)));
        let raw = serde_json::to_vec(&body).unwrap().len() as i64;
        let est = anthropic(&body).unwrap().input_estimate;
        assert_eq!(est, (raw + 2) / 3, "the same figure as counting the compact body");
    }

    #[test]
    fn a_large_image_costs_what_the_provider_bills_not_its_bytes() {
        let three_mib = b64(&vec![0x5a; 3 * 1024 * 1024]);
        let text = msg(json!([{"type": "text", "text": "what is this?"}])).to_string().len() as i64;
        let body = msg(json!([{"type": "text", "text": "what is this?"}, image_block(&three_mib)]));
        let est = anthropic(&body).unwrap().input_estimate;
        assert!((1600..1600 + text).contains(&est), "{est}");
        // Inside a tool result too.
        let nested = msg(json!([{"type": "tool_result", "tool_use_id": "t", "content": [image_block(&three_mib)]}]));
        assert!((1600..1700).contains(&anthropic(&nested).unwrap().input_estimate));
        // URL images cost the same ceiling.
        let url = msg(json!([{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]));
        assert!((1600..1700).contains(&anthropic(&url).unwrap().input_estimate));
        // A catalog override replaces the ceiling.
        let mut big = claude();
        big.image_tokens = Some(4784);
        let est = analyze(Api::Anthropic, &HeaderMap::new(), &body, &big, 1).unwrap().input_estimate;
        assert!((4784..4784 + text).contains(&est), "{est}");
    }

    #[test]
    fn text_dressed_as_media_is_still_text() {
        // Not base64: the upstream would see it as something other than an
        // image, so the proxy counts its bytes.
        let prose = "this is no image, it is prose. ".repeat(1000);
        let est = anthropic(&msg(json!([image_block(&prose)]))).unwrap().input_estimate;
        assert!(est > prose.len() as i64 / 3, "{est}");
        // An image-shaped object outside a content list is plain JSON.
        let data = b64(&vec![0; 30_000]);
        let body = with(msg(json!("hi")), "metadata", json!({"x": image_block(&data)}));
        assert!(anthropic(&body).unwrap().input_estimate > 10_000);
        let url = msg(json!([{"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{prose}")}}]));
        assert!(openai(&url).unwrap().input_estimate > prose.len() as i64 / 3);
    }

    #[test]
    fn pdfs_are_counted_by_pages() {
        let doc = |data: &str| {
            msg(
                json!([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}]),
            )
        };
        let padded = |pages| {
            let mut p = pdf(pages);
            p.extend(std::iter::repeat_n(b'\n', 500_000));
            p
        };
        for pages in [1_i64, 3, 7] {
            let est = anthropic(&doc(&b64(&padded(pages as usize)))).unwrap().input_estimate;
            assert!((pages * 4600..pages * 4600 + 100).contains(&est), "{pages} pages: {est}");
        }
        // Audit (session 16): 40 pages hidden in a Flate object stream were held
        // at the decoded size (a few hundred tokens); they are pages.
        let objects = "<< /Type /Page /Parent 2 0 R >> ".repeat(40);
        let mut packed = b"%PDF-1.5\n9 0 obj << /Type /ObjStm /N 40 /Filter /FlateDecode >>\nstream\n".to_vec();
        packed.extend(miniz_oxide::deflate::compress_to_vec_zlib(objects.as_bytes(), 9));
        packed.extend_from_slice(b"\nendstream\nendobj\n");
        let est = anthropic(&doc(&b64(&packed))).unwrap().input_estimate;
        assert!((40 * 4600..40 * 4600 + 100).contains(&est), "{est}");
        // A filter the proxy cannot read: the worst case.
        let lzw = b"9 0 obj << /Type /ObjStm /Filter /LZWDecode >>\nstream\n\x80\x0b\nendstream\n";
        let est = anthropic(&doc(&b64(lzw))).unwrap().input_estimate;
        assert!((100 * 4600..100 * 4600 + 100).contains(&est), "{est}");
        // No page found at all, or undecodable: by size.
        let est = anthropic(&doc(&b64(&[b'q'; 30_000]))).unwrap().input_estimate;
        assert!((10_000..10_100).contains(&est), "{est}");
        let est = anthropic(&doc(&"QUJD".repeat(10_000)[1..])).unwrap().input_estimate;
        assert!((9_900..10_100).contains(&est), "{est}");
        // Never more than the 100 pages the upstream accepts; a URL document is that worst case.
        let est = anthropic(&doc(&b64(&pdf(150)))).unwrap().input_estimate;
        assert!((460_000..460_100).contains(&est), "{est}");
        let url = msg(json!([{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]));
        assert!((460_000..460_100).contains(&anthropic(&url).unwrap().input_estimate));
        // OpenAI file parts with a PDF data URL.
        let file = msg(
            json!([{"type": "file", "file": {"filename": "a.pdf", "file_data": format!("data:application/pdf;base64,{}", b64(&padded(2)))}}]),
        );
        assert!((9200..9300).contains(&openai(&file).unwrap().input_estimate));
    }

    #[test]
    fn openai_images_by_detail() {
        let data = format!("data:image/jpeg;base64,{}", b64(&vec![7; 3 * 1024 * 1024]));
        let part = |detail: Option<&str>| {
            let mut url = json!({"url": data});
            if let Some(d) = detail {
                url["detail"] = json!(d);
            }
            msg(json!([{"type": "image_url", "image_url": url}]))
        };
        for (detail, tokens) in [(Some("low"), 85), (Some("high"), 1445), (Some("auto"), 1445), (None, 1445)] {
            let est = openai(&part(detail)).unwrap().input_estimate;
            assert!((tokens..tokens + 60).contains(&est), "{detail:?}: {est}");
        }
    }

    /// After [`write_limits`], the forwarded body can ask for no more than
    /// was reserved.
    #[test]
    fn written_limits_bound_the_forwarded_request() {
        let prices = claude().prices;
        let cases: Vec<(Api, Model, Value)> = vec![
            (Api::Anthropic, claude(), msg(json!("hi"))),
            (Api::Anthropic, claude(), with(msg(json!("hi")), "max_tokens", json!(50_000))),
            (
                Api::Anthropic,
                claude(),
                with(
                    with(
                        msg(json!("hi")),
                        "tools",
                        json!([{"type": "web_search_20250305", "name": "w", "max_uses": 50}, {"type": "web_search_20250305", "name": "v"}]),
                    ),
                    "thinking",
                    json!({"type": "enabled", "budget_tokens": 30_000}),
                ),
            ),
            (Api::Openai, kimi(), msg(json!("hi"))),
            (Api::Openai, kimi(), with(with(msg(json!("hi")), "n", json!(4)), "max_completion_tokens", json!(9000))),
            (Api::Openai, kimi(), with(msg(json!("hi")), "max_tokens", json!(9000))),
        ];
        for (api, model, body) in cases {
            let first = analyze(api, &HeaderMap::new(), &body, &model, 4096).unwrap();
            for cap in [1, 100, 3000, first.requested_output, first.requested_output + 1000] {
                let mut forwarded = body.clone();
                write_limits(api, &mut forwarded, &first, cap, &model);
                let again = analyze(api, &HeaderMap::new(), &forwarded, &model, i64::MAX).unwrap();
                let reserved = cap.clamp(1, first.requested_output);
                assert_eq!(again.requested_output, reserved, "{api:?} {body} cap {cap}: {forwarded}");
                assert_eq!(again.choices, first.choices);
                for (tool, uses) in &again.server_tool_uses {
                    assert!(*uses <= first.server_tool_uses[tool], "{forwarded}");
                }
                if let Some(b) = again.thinking_budget {
                    assert!(b < reserved, "{forwarded}");
                }
                // The written fields are not prompt text; only they may add to the estimate.
                assert!(again.input_estimate <= first.input_estimate + 20, "{forwarded}");
                let again = Analyzed { input_estimate: first.input_estimate, ..again };
                let shape = prices.hold_shape(&first, 1);
                assert!(prices.hold_shape(&again, 1).hold(reserved) <= shape.hold(reserved), "{forwarded}");
                let field = match (api, first.cap_field) {
                    (Api::Openai, Some(CapField::MaxCompletionTokens)) => "max_completion_tokens",
                    _ => "max_tokens",
                };
                assert_eq!(forwarded[field], json!(reserved));
            }
        }
        // Every server tool entry carries the written bound.
        let body = with(
            msg(json!("hi")),
            "tools",
            json!([{"type": "web_search_20250305", "name": "w", "max_uses": 2}, {"type": "web_search_20250305", "name": "v"}]),
        );
        let a = anthropic(&body).unwrap();
        let mut forwarded = body.clone();
        write_limits(Api::Anthropic, &mut forwarded, &a, 10, &claude());
        assert_eq!(
            (forwarded["tools"][0]["max_uses"].clone(), forwarded["tools"][1]["max_uses"].clone()),
            (json!(2), json!(5))
        );
        let _ = UpstreamKind::Anthropic;
    }
}
