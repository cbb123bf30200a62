//! The runtime's only way to an LLM: Winston's proxy, Anthropic Messages
//! API, with the tenant's key. Every call carries an `Idempotency-Key`, so
//! the proxy bills it once whatever happens on the wire. The proxy's 402 is
//! [`LlmError::OutOfCredits`]: the proxy refused before any upstream call.
//!
//! Every call is streamed from the proxy, also for an answer the caller
//! wants whole ([`Llm::complete`]): one path, whose end says what the proxy
//! charged for that very call (`: x-winston-credits-charged: N`), the
//! figure the tenant's `usage` table records. A difference of the balance
//! before and after would also count every other call settled meanwhile.
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::config::Secret;
use super::store::Message;
// The names of the header and stream-end SSE comments the proxy writes.
use crate::proxy::{CREDITS_CHARGED_HEADER, CREDITS_REMAINING_HEADER};

/// Why an LLM call gave no reply.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("failed to get a reply: the tenant's credits are spent")]
    OutOfCredits,
    #[error("failed to get a reply: the proxy refused the call ({status})")]
    Refused { status: u16 },
    #[error("failed to reach the proxy")]
    Unreachable,
    #[error("failed to read the proxy's answer: {0}")]
    Malformed(&'static str),
}

/// A complete reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// What the proxy said is left after this call.
    pub credits_remaining: Option<i64>,
    /// What the proxy said it charged for this call.
    pub credits_charged: Option<i64>,
}

/// A piece of a streamed reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// The stream ended; the reply in full.
    Done(Reply),
}

/// A client of the proxy's Messages API.
#[derive(Clone, Debug)]
pub struct Llm {
    http: reqwest::Client,
    url: String,
    key: Secret,
    model: String,
    max_tokens: u32,
}

impl Llm {
    /// A client for the proxy at `proxy_url`.
    #[must_use]
    pub fn new(http: reqwest::Client, proxy_url: &str, key: Secret, model: &str, max_tokens: u32) -> Self {
        Self {
            http,
            url: format!("{}/v1/messages", proxy_url.trim_end_matches('/')),
            key,
            model: model.into(),
            max_tokens,
        }
    }

    /// The model asked for.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    fn request(&self, system: &str, messages: &[Message], idempotency_key: &str) -> reqwest::RequestBuilder {
        let msgs: Vec<Value> = messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        self.http
            .post(&self.url)
            .header("x-api-key", self.key.expose())
            .header("anthropic-version", "2023-06-01")
            .header("idempotency-key", idempotency_key)
            .json(&json!({"model": self.model, "max_tokens": self.max_tokens, "system": system, "messages": msgs, "stream": true}))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
        let resp = req.send().await.map_err(|_| LlmError::Unreachable)?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::PAYMENT_REQUIRED => Err(LlmError::OutOfCredits),
            s => Err(LlmError::Refused { status: s.as_u16() }),
        }
    }

    /// One reply in full (read from a stream, see the module's doc).
    ///
    /// # Errors
    /// [`LlmError`]: out of credits, refused, unreachable, malformed.
    pub async fn complete(&self, system: &str, messages: &[Message], idempotency_key: &str) -> Result<Reply, LlmError> {
        let mut pieces = Box::pin(self.stream(system, messages, idempotency_key).await?);
        while let Some(p) = pieces.next().await {
            if let Piece::Done(reply) = p? {
                return Ok(reply);
            }
        }
        Err(LlmError::Malformed("the stream ended early"))
    }

    /// A streamed reply: text pieces as they arrive, then [`Piece::Done`].
    ///
    /// # Errors
    /// Before the stream starts: as [`Llm::complete`]; inside it, a broken
    /// or failed stream ends with one `Err`.
    pub async fn stream(
        &self,
        system: &str,
        messages: &[Message],
        idempotency_key: &str,
    ) -> Result<impl Stream<Item = Result<Piece, LlmError>> + Send + 'static, LlmError> {
        let resp = self.send(self.request(system, messages, idempotency_key)).await?;
        let reply = Reply { credits_remaining: remaining(resp.headers()), ..Reply::default() };
        let bytes = resp.bytes_stream().map(|r| r.map_err(|_| LlmError::Unreachable));
        Ok(sse_pieces(bytes, reply))
    }
}

fn remaining(h: &reqwest::header::HeaderMap) -> Option<i64> {
    h.get(CREDITS_REMAINING_HEADER)?.to_str().ok()?.trim().parse().ok()
}

struct Parse<S> {
    bytes: S,
    buf: Vec<u8>,
    reply: Reply,
    done: bool,
}

/// Turns the proxy's Anthropic SSE into [`Piece`]s.
fn sse_pieces<S>(bytes: S, reply: Reply) -> impl Stream<Item = Result<Piece, LlmError>> + Send + 'static
where
    S: Stream<Item = Result<bytes::Bytes, LlmError>> + Send + Unpin + 'static,
{
    let st = Parse { bytes, buf: Vec::new(), reply, done: false };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(end) = find_frame_end(&st.buf) {
                let frame: Vec<u8> = st.buf.drain(..end).collect();
                match frame_event(&String::from_utf8_lossy(&frame), &mut st.reply) {
                    Frame::Nothing => continue,
                    Frame::Text(t) => return Some((Ok(Piece::Text(t)), st)),
                    Frame::Stop => {
                        st.done = true;
                        return Some((Ok(Piece::Done(st.reply.clone())), st));
                    }
                    Frame::Error => {
                        st.done = true;
                        return Some((Err(LlmError::Malformed("the stream ended with an error")), st));
                    }
                }
            }
            match st.bytes.next().await {
                Some(Ok(b)) => st.buf.extend_from_slice(&b),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    return Some((Err(LlmError::Malformed("the stream ended early")), st));
                }
            }
        }
    })
}

/// Length of the first complete frame (with its blank line), if any.
fn find_frame_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

enum Frame {
    Nothing,
    Text(String),
    Stop,
    Error,
}

fn frame_event(frame: &str, reply: &mut Reply) -> Frame {
    let mut event = "";
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if let Some(c) = line.strip_prefix(": ").and_then(|c| c.strip_prefix(CREDITS_REMAINING_HEADER)) {
            reply.credits_remaining = c.trim_start_matches(':').trim().parse().ok().or(reply.credits_remaining);
        } else if let Some(c) = line.strip_prefix(": ").and_then(|c| c.strip_prefix(CREDITS_CHARGED_HEADER)) {
            reply.credits_charged = c.trim_start_matches(':').trim().parse().ok().or(reply.credits_charged);
        }
    }
    let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
    match event {
        "message_start" => {
            reply.input_tokens = v["message"]["usage"]["input_tokens"].as_i64().unwrap_or(0);
            Frame::Nothing
        }
        "content_block_delta" => match v["delta"]["text"].as_str() {
            Some(t) => {
                reply.text.push_str(t);
                Frame::Text(t.to_string())
            }
            None => Frame::Nothing,
        },
        "message_delta" => {
            if let Some(o) = v["usage"]["output_tokens"].as_i64() {
                reply.output_tokens = o;
            }
            Frame::Nothing
        }
        "message_stop" => Frame::Stop,
        "error" => Frame::Error,
        _ => Frame::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sse_is_read_across_chunk_boundaries() {
        let text = "event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":7}}}\n\n\
            event: content_block_delta\ndata: {\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n\
            event: content_block_delta\ndata: {\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n\
            event: message_delta\ndata: {\"usage\":{\"output_tokens\":2}}\n\n\
            : x-winston-credits-charged: 45\n\n\
            : x-winston-credits-remaining: 41\n\n\
            event: message_stop\ndata: {}\n\n";
        let chunks: Vec<Result<bytes::Bytes, LlmError>> =
            text.as_bytes().chunks(7).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        let pieces: Vec<Piece> =
            sse_pieces(futures::stream::iter(chunks), Reply::default()).map(|p| p.expect("piece")).collect().await;
        assert_eq!(pieces[0], Piece::Text("Hel".into()));
        let Some(Piece::Done(r)) = pieces.last() else { panic!("no end: {pieces:?}") };
        assert_eq!((r.text.as_str(), r.input_tokens, r.output_tokens, r.credits_remaining), ("Hello", 7, 2, Some(41)));
        assert_eq!(r.credits_charged, Some(45));
    }

    #[tokio::test]
    async fn a_stream_without_its_end_is_an_error() {
        let chunks =
            vec![Ok(bytes::Bytes::from_static(b"event: content_block_delta\ndata: {\"delta\":{\"text\":\"a\"}}\n\n"))];
        let pieces: Vec<Result<Piece, LlmError>> =
            sse_pieces(futures::stream::iter(chunks), Reply::default()).collect().await;
        assert!(matches!(pieces.last(), Some(Err(LlmError::Malformed(_)))));
    }
}
