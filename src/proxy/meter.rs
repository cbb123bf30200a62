//! Reading token usage out of upstream responses, from the upstream's own
//! fields: Anthropic `message_start` / cumulative `message_delta` usage,
//! OpenAI `usage` (top level or, as Moonshot does, inside `choices[0]`;
//! last writer wins, never summed). Pure: fed one SSE frame or one JSON body
//! at a time, no IO.
use serde_json::Value;

use super::catalog::UpstreamKind;

/// Usage seen so far in one response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    kind: Option<UpstreamKind>,
    input_tokens: i64,
    output_tokens: i64,
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

    /// Input and output tokens to bill. When the final usage never arrived
    /// (stream cut), output is the larger of the last reported count and an
    /// estimate of one token per 4 bytes of relayed text.
    #[must_use]
    pub fn billable(&self) -> (i64, i64) {
        let output =
            if self.final_usage { self.output_tokens } else { self.output_tokens.max((self.text_bytes + 3) / 4) };
        (self.input_tokens, output)
    }

    /// True once the upstream's own final usage was read.
    #[must_use]
    pub fn has_final_usage(&self) -> bool {
        self.final_usage
    }

    /// Reads the usage of a complete (non-streaming) JSON response body.
    pub fn observe_body(&mut self, body: &Value) {
        match self.kind {
            Some(UpstreamKind::Anthropic) => {
                if let Some(u) = body.get("usage") {
                    self.anthropic_usage(u);
                    self.final_usage = true;
                }
            }
            Some(UpstreamKind::Openai) | None => {
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

    fn anthropic_usage(&mut self, u: &Value) {
        let field = |name: &str| u.get(name).and_then(Value::as_i64);
        // Input-side fields are cumulative too: the latest value wins.
        if let Some(input) = field("input_tokens") {
            self.input_tokens = input
                + field("cache_creation_input_tokens").unwrap_or(0)
                + field("cache_read_input_tokens").unwrap_or(0);
        }
        if let Some(out) = field("output_tokens") {
            self.output_tokens = out;
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
                if let Some(u) = v.get("usage") {
                    self.anthropic_usage(u);
                    self.final_usage = true;
                }
            }
            Some("content_block_delta") => {
                let delta = v.get("delta");
                for key in ["text", "partial_json", "thinking"] {
                    if let Some(s) = delta.and_then(|d| d.get(key)).and_then(Value::as_str) {
                        self.text_bytes += i64::try_from(s.len()).unwrap_or(i64::MAX);
                    }
                }
            }
            Some("message_stop") => self.complete = true,
            Some("error") => self.upstream_error = true,
            _ => {}
        }
    }

    /// Takes usage from `usage` or `choices[0].usage`; true when found.
    fn openai_usage(&mut self, v: &Value) -> bool {
        let mut found = false;
        for u in [v.get("usage"), v.pointer("/choices/0/usage")].into_iter().flatten() {
            if let (Some(p), Some(c)) =
                (u.get("prompt_tokens").and_then(Value::as_i64), u.get("completion_tokens").and_then(Value::as_i64))
            {
                self.input_tokens = p;
                self.output_tokens = c;
                found = true;
            }
        }
        found
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
            for key in ["content", "reasoning_content"] {
                if let Some(s) = c.pointer(&format!("/delta/{key}")).and_then(Value::as_str) {
                    self.text_bytes += i64::try_from(s.len()).unwrap_or(i64::MAX);
                }
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

    #[test]
    fn anthropic_stream_takes_cumulative_usage() {
        let mut m = Meter::new(UpstreamKind::Anthropic);
        m.observe_frame(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n");
        m.observe_frame(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"abcdefgh\"}}\n\n");
        assert_eq!(m.billable(), (15, 2), "cut short: estimated from relayed text");
        m.observe_frame(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
        );
        m.observe_frame(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
        );
        m.observe_frame(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert_eq!(m.billable(), (15, 9));
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
        assert_eq!(m.billable(), (3, 5));
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
