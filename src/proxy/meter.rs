//! Reading token usage out of upstream responses, from the upstream's own
//! fields: Anthropic `message_start` / cumulative `message_delta` usage
//! (input, cache writes and reads, output, `server_tool_use.*_requests`),
//! OpenAI `usage` (top level or, as Moonshot does, inside `choices[0]`;
//! last writer wins, never summed; `prompt_tokens_details.cached_tokens` or
//! Moonshot's `cached_tokens` as cache reads). Alongside, the text relayed to
//! the client (every choice), from which output is estimated, one token per
//! 4 bytes, when the usage never arrives (a cut stream, an upstream `error`
//! event, a body without `usage`). Pure: fed one SSE frame or one JSON body
//! at a time, no IO; pricing is [`super::pricing`]'s.
use std::collections::BTreeMap;

use serde_json::Value;

use super::catalog::UpstreamKind;
use super::pricing::Tokens;

/// Bytes of relayed text per estimated output token.
const TEXT_BYTES_PER_TOKEN: i64 = 4;

/// Usage seen so far in one response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    kind: Option<UpstreamKind>,
    /// Uncached input tokens as reported.
    input_tokens: i64,
    cache_write_tokens: i64,
    cache_read_tokens: i64,
    output_tokens: i64,
    server_tool_uses: BTreeMap<String, i64>,
    /// True once the upstream reported any input count.
    input_known: bool,
    /// True once the upstream reported its final output count.
    final_usage: bool,
    /// Bytes of generated text relayed, to estimate output when cut short.
    text_bytes: i64,
    /// True when the upstream sent an `error` event/chunk mid-stream.
    pub upstream_error: bool,
    /// True once the terminal event (`message_stop` / `[DONE]`) was seen.
    pub complete: bool,
}

/// What one SSE frame means for forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Normal,
    /// An OpenAI usage-only chunk (`choices: []`), hidden from a client that
    /// did not ask for usage.
    UsageOnly,
}

impl Meter {
    #[must_use]
    pub fn new(kind: UpstreamKind) -> Self {
        Self { kind: Some(kind), ..Self::default() }
    }

    /// Tokens to bill. Output is the upstream's final count when it arrived,
    /// else the larger of the last reported count and the relayed-text
    /// estimate ([`Meter::estimated`] says which). Input is what the upstream
    /// reported (0 when it never did: see [`Meter::input_known`]).
    #[must_use]
    pub fn tokens(&self) -> Tokens {
        let output = if self.final_usage { self.output_tokens } else { self.output_so_far() };
        Tokens {
            input: self.input_tokens.max(0),
            output: output.max(0),
            cache_write: self.cache_write_tokens.max(0),
            cache_read: self.cache_read_tokens.max(0),
            server_tool_uses: self.server_tool_uses.clone(),
        }
    }

    /// True when the output was estimated from relayed text because the
    /// upstream's final usage never arrived.
    #[must_use]
    pub fn estimated(&self) -> bool {
        !self.final_usage
    }

    /// True once the upstream's own final usage was read.
    #[must_use]
    pub fn has_final_usage(&self) -> bool {
        self.final_usage
    }

    /// True once the upstream reported the input (Anthropic `message_start`,
    /// any OpenAI usage); otherwise the caller bills its own input estimate.
    #[must_use]
    pub fn input_known(&self) -> bool {
        self.input_known
    }

    /// Output generated so far: the larger of the last reported count and
    /// the relayed-text estimate, for cutting a stream that passes what was
    /// reserved.
    #[must_use]
    pub fn output_so_far(&self) -> i64 {
        let estimate = self.text_bytes.saturating_add(TEXT_BYTES_PER_TOKEN - 1) / TEXT_BYTES_PER_TOKEN;
        self.output_tokens.max(estimate)
    }

    /// Reads a complete (non-streaming) JSON response body: its usage and the
    /// text it carries (the estimate when the usage is missing).
    pub fn observe_body(&mut self, body: &Value) {
        match self.kind {
            Some(UpstreamKind::Anthropic) => {
                for block in body.get("content").and_then(Value::as_array).into_iter().flatten() {
                    for key in ["text", "thinking", "data"] {
                        self.count_text(block.get(key));
                    }
                    if matches!(block.get("type").and_then(Value::as_str), Some("tool_use" | "server_tool_use"))
                        && let Some(input) = block.get("input")
                    {
                        self.add_text(&input.to_string());
                    }
                }
                if let Some(u) = body.get("usage").filter(|u| u.is_object()) {
                    self.anthropic_usage(u);
                    self.final_usage = true;
                }
            }
            Some(UpstreamKind::Openai) | None => {
                for c in body.get("choices").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(m) = c.get("message") {
                        self.openai_text(m);
                    }
                }
                if self.openai_usage(body) {
                    self.final_usage = true;
                }
            }
        }
    }

    /// Reads one SSE frame (the bytes between blank lines) and says how to
    /// forward it.
    pub fn observe_frame(&mut self, frame: &[u8]) -> FrameKind {
        let Ok(text) = std::str::from_utf8(frame) else {
            return FrameKind::Normal;
        };
        let mut data = String::new();
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        if data.is_empty() {
            return FrameKind::Normal;
        }
        if data.trim() == "[DONE]" {
            self.complete = true;
            return FrameKind::Normal;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return FrameKind::Normal;
        };
        match self.kind {
            Some(UpstreamKind::Anthropic) => {
                self.anthropic_event(&v);
                FrameKind::Normal
            }
            Some(UpstreamKind::Openai) | None => self.openai_chunk(&v),
        }
    }

    fn add_text(&mut self, s: &str) {
        self.text_bytes = self.text_bytes.saturating_add(i64::try_from(s.len()).unwrap_or(i64::MAX));
    }

    fn count_text(&mut self, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str) {
            self.add_text(s);
        }
    }

    /// Anthropic usage objects are cumulative: each field present replaces
    /// the last value seen.
    fn anthropic_usage(&mut self, u: &Value) {
        let field = |name: &str| u.get(name).and_then(Value::as_i64);
        if let Some(n) = field("input_tokens") {
            self.input_tokens = n;
            self.input_known = true;
        }
        if let Some(n) = field("cache_creation_input_tokens") {
            self.cache_write_tokens = n;
        }
        if let Some(n) = field("cache_read_input_tokens") {
            self.cache_read_tokens = n;
        }
        if let Some(n) = field("output_tokens") {
            self.output_tokens = n;
        }
        for (key, value) in u.get("server_tool_use").and_then(Value::as_object).into_iter().flatten() {
            if let (Some(name), Some(n)) = (key.strip_suffix("_requests"), value.as_i64()) {
                self.server_tool_uses.insert(name.to_string(), n);
            }
        }
    }

    fn anthropic_event(&mut self, v: &Value) {
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(u) = v.pointer("/message/usage") {
                    self.anthropic_usage(u);
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    self.anthropic_usage(u);
                    self.final_usage = true;
                }
            }
            Some("content_block_delta") => {
                let delta = v.get("delta");
                for key in ["text", "partial_json", "thinking"] {
                    self.count_text(delta.and_then(|d| d.get(key)));
                }
            }
            Some("message_stop") => self.complete = true,
            Some("error") => self.upstream_error = true,
            _ => {}
        }
    }

    /// Takes usage from `usage` or `choices[0].usage`; true when found.
    /// `prompt_tokens` includes cached tokens, which are split off.
    fn openai_usage(&mut self, v: &Value) -> bool {
        let mut found = false;
        for u in [v.get("usage"), v.pointer("/choices/0/usage")].into_iter().flatten() {
            let field = |name: &str| u.get(name).and_then(Value::as_i64);
            if let (Some(p), Some(c)) = (field("prompt_tokens"), field("completion_tokens")) {
                let cached = u
                    .pointer("/prompt_tokens_details/cached_tokens")
                    .and_then(Value::as_i64)
                    .or_else(|| field("cached_tokens"))
                    .unwrap_or(0)
                    .clamp(0, p.max(0));
                self.input_tokens = p - cached;
                self.cache_read_tokens = cached;
                self.output_tokens = c;
                self.input_known = true;
                found = true;
            }
        }
        found
    }

    /// Generated text of one OpenAI message or delta.
    fn openai_text(&mut self, m: &Value) {
        for key in ["content", "reasoning_content", "reasoning", "refusal"] {
            match m.get(key) {
                Some(Value::String(s)) => self.add_text(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        self.count_text(p.get("text"));
                    }
                }
                _ => {}
            }
        }
        for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            self.count_text(call.pointer("/function/arguments"));
        }
    }

    fn openai_chunk(&mut self, v: &Value) -> FrameKind {
        if v.get("error").is_some_and(|e| !e.is_null()) {
            self.upstream_error = true;
            return FrameKind::Normal;
        }
        if self.openai_usage(v) {
            self.final_usage = true;
        }
        let choices = v.get("choices").and_then(Value::as_array);
        for c in choices.into_iter().flatten() {
            if let Some(d) = c.get("delta") {
                self.openai_text(d);
            }
        }
        if choices.is_some_and(Vec::is_empty) && v.get("usage").is_some_and(|u| !u.is_null()) {
            FrameKind::UsageOnly
        } else {
            FrameKind::Normal
        }
    }
}

/// Finds the end of the first complete SSE frame in `buf` (index just past
/// the blank line), accepting `\n\n` and `\r\n\r\n`.
#[must_use]
pub fn frame_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input (cache tokens included) and output, as one rate would bill them.
    fn billable(m: &Meter) -> (i64, i64) {
        let t = m.tokens();
        (t.total_input(), t.output)
    }
    use serde_json::json;

    fn tokens(input: i64, output: i64, cache_write: i64, cache_read: i64, tools: &[(&str, i64)]) -> Tokens {
        let server_tool_uses = tools.iter().map(|(k, v)| ((*k).to_string(), *v)).collect();
        Tokens { input, output, cache_write, cache_read, server_tool_uses }
    }

    fn frame(v: &Value) -> Vec<u8> {
        format!("data: {v}\n\n").into_bytes()
    }

    #[test]
    fn anthropic_cache_and_server_tools_are_reported_apart() {
        let mut m = Meter::new(UpstreamKind::Anthropic);
        m.observe_frame(&frame(&json!({"type": "message_start", "message": {"usage": {
            "input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 3000, "output_tokens": 1}}})));
        m.observe_frame(&frame(&json!({"type": "message_delta", "usage": {
            "output_tokens": 40, "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1}}})));
        m.observe_frame(&frame(&json!({"type": "message_delta", "usage": {
            "input_tokens": 12, "output_tokens": 50, "server_tool_use": {"web_search_requests": 3}}})));
        assert_eq!(m.tokens(), tokens(12, 50, 200, 3000, &[("web_search", 3), ("web_fetch", 1)]));
        assert_eq!(billable(&m), (3212, 50));
        assert!(!m.estimated() && m.input_known());

        let mut body = Meter::new(UpstreamKind::Anthropic);
        body.observe_body(&json!({"content": [{"type": "text", "text": "hi"}], "usage": {
            "input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 9,
            "server_tool_use": {"web_search_requests": 4}}}));
        assert_eq!(body.tokens(), tokens(5, 9, 0, 7, &[("web_search", 4)]));
    }

    #[test]
    fn openai_cached_tokens_are_split_off_the_prompt() {
        let cases: &[(Value, Tokens)] = &[
            (json!({"prompt_tokens": 100, "completion_tokens": 5}), tokens(100, 5, 0, 0, &[])),
            (
                json!({"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 64}}),
                tokens(36, 5, 0, 64, &[]),
            ),
            // Moonshot reports it at the top of usage.
            (json!({"prompt_tokens": 100, "completion_tokens": 5, "cached_tokens": 30}), tokens(70, 5, 0, 30, &[])),
            // A nonsensical count never makes input negative.
            (
                json!({"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 64}}),
                tokens(0, 5, 0, 10, &[]),
            ),
        ];
        for (usage, want) in cases {
            let mut m = Meter::new(UpstreamKind::Openai);
            m.observe_body(&json!({"choices": [{"message": {"content": "x"}}], "usage": usage}));
            assert_eq!(&m.tokens(), want, "{usage}");
            let mut s = Meter::new(UpstreamKind::Openai);
            assert_eq!(s.observe_frame(&frame(&json!({"choices": [], "usage": usage}))), FrameKind::UsageOnly);
            assert_eq!(&s.tokens(), want, "{usage}");
        }
    }

    #[test]
    fn bodies_without_usage_are_estimated_from_their_text() {
        let cases: &[(UpstreamKind, Value, i64)] = &[
            (UpstreamKind::Anthropic, json!({"content": [{"type": "text", "text": "a".repeat(400)}]}), 100),
            (
                UpstreamKind::Anthropic,
                json!({"content": [
                    {"type": "thinking", "thinking": "b".repeat(401)},
                    {"type": "tool_use", "id": "t", "name": "f", "input": {"k": "c".repeat(90)}},
                ]}),
                125, // 401 + 99 bytes of input JSON, rounded up
            ),
            (UpstreamKind::Openai, json!({"choices": [{"message": {"content": "d".repeat(40)}}]}), 10),
            (
                UpstreamKind::Openai,
                json!({"choices": [
                    {"message": {"content": "e".repeat(40), "reasoning_content": "f".repeat(40)}},
                    {"message": {"content": null, "tool_calls": [{"function": {"name": "g", "arguments": "h".repeat(41)}}]}},
                ]}),
                31,
            ),
            (
                UpstreamKind::Openai,
                json!({"choices": [{"message": {"content": [{"type": "text", "text": "i".repeat(8)}]}}]}),
                2,
            ),
        ];
        for (kind, body, output) in cases {
            let mut m = Meter::new(*kind);
            m.observe_body(body);
            assert!(m.estimated() && !m.input_known(), "{body}");
            assert_eq!(m.tokens().output, *output, "{body}");
        }
        // With usage the upstream's count wins, however long the text.
        let mut m = Meter::new(UpstreamKind::Openai);
        m.observe_body(&json!({"choices": [{"message": {"content": "j".repeat(400)}}], "usage": {"prompt_tokens": 1, "completion_tokens": 3}}));
        assert_eq!((m.tokens().output, m.estimated()), (3, false));
    }

    #[test]
    fn an_upstream_error_mid_stream_keeps_what_was_relayed() {
        let mut m = Meter::new(UpstreamKind::Anthropic);
        m.observe_frame(&frame(&json!({"type": "message_start", "message": {"usage": {
            "input_tokens": 30, "cache_read_input_tokens": 4, "output_tokens": 1}}})));
        for _ in 0..10 {
            m.observe_frame(&frame(
                &json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "k".repeat(40)}}),
            ));
        }
        assert_eq!(m.output_so_far(), 100);
        m.observe_frame(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n",
        );
        assert!(m.upstream_error && m.estimated() && m.input_known());
        assert_eq!(m.tokens(), tokens(30, 100, 0, 4, &[]));

        let mut o = Meter::new(UpstreamKind::Openai);
        o.observe_frame(&frame(&json!({"choices": [{"index": 0, "delta": {"content": "l".repeat(80)}}]})));
        o.observe_frame(&frame(&json!({"error": {"message": "boom"}})));
        assert!(o.upstream_error && o.estimated() && !o.input_known());
        assert_eq!(o.tokens().output, 20);
    }

    #[test]
    fn output_so_far_is_the_larger_of_reported_and_relayed() {
        let mut m = Meter::new(UpstreamKind::Anthropic);
        m.observe_frame(&frame(&json!({"type": "content_block_delta", "delta": {"partial_json": "m".repeat(41)}})));
        assert_eq!(m.output_so_far(), 11);
        m.observe_frame(&frame(&json!({"type": "message_delta", "usage": {"output_tokens": 30}})));
        assert_eq!(m.output_so_far(), 30);
        // The final count is billed even when below the text estimate.
        m.observe_frame(&frame(&json!({"type": "message_delta", "usage": {"output_tokens": 5}})));
        assert_eq!((m.output_so_far(), m.tokens().output), (11, 5));
    }

    #[test]
    fn every_choice_of_an_n_stream_is_counted() {
        let mut m = Meter::new(UpstreamKind::Openai);
        for i in 0..4 {
            m.observe_frame(&frame(&json!({"choices": [{"index": i, "delta": {"content": "n".repeat(40)}}]})));
        }
        m.observe_frame(&frame(&json!({"choices": [
            {"index": 0, "delta": {"content": "o".repeat(40)}},
            {"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "p".repeat(40)}}]}},
        ]})));
        assert_eq!(m.output_so_far(), 60);
    }

    #[test]
    fn anthropic_stream_takes_cumulative_usage() {
        let mut m = Meter::new(UpstreamKind::Anthropic);
        m.observe_frame(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n");
        m.observe_frame(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"abcdefgh\"}}\n\n");
        assert_eq!(billable(&m), (15, 2), "cut short: estimated from relayed text");
        m.observe_frame(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
        );
        m.observe_frame(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
        );
        m.observe_frame(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert_eq!(billable(&m), (15, 9));
        assert!(m.complete && !m.upstream_error);
    }

    #[test]
    fn openai_usage_last_writer_wins_and_usage_chunk_is_recognised() {
        let mut m = Meter::new(UpstreamKind::Openai);
        let k = m.observe_frame(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}]}\n\n");
        assert_eq!(k, FrameKind::Normal);
        let k = m.observe_frame(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n");
        assert_eq!(k, FrameKind::UsageOnly);
        m.observe_frame(b"data: [DONE]\n\n");
        assert_eq!(billable(&m), (3, 5));
        assert!(m.complete);
    }

    #[test]
    fn errors_are_flagged() {
        let mut m = Meter::new(UpstreamKind::Openai);
        m.observe_frame(b"data: {\"error\":{\"message\":\"x\",\"type\":\"y\"}}\n\n");
        assert!(m.upstream_error);
        let mut a = Meter::new(UpstreamKind::Anthropic);
        a.observe_frame(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n");
        assert!(a.upstream_error);
    }

    #[test]
    fn frames_split_on_blank_lines() {
        assert_eq!(frame_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(frame_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(frame_end(b"data: a\n"), None);
    }
}
