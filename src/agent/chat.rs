//! `POST /api/chat`: one turn of a conversation.
//!
//! The turn is stored in the tenant database (conversation, user message,
//! assistant message, usage) and written to the transcript spool before
//! its answer is returned; the reply comes from the LLM through Winston's
//! proxy with the tenant's key, the system prompt built from the workspace
//! and the enabled skills. With `"stream": true` the answer is
//! Server-Sent Events (`delta` pieces, then `done` or `error`), and the turn
//! is finished and stored even when the caller leaves mid-stream.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AgentState;
use super::error::{ApiError, no_nul, parse_json};
use super::llm::{LlmError, Piece, Reply};
use super::spool::{Tokens, TranscriptEvent};
use super::store::Message;

/// Longest channel name.
const MAX_CHANNEL: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    message: String,
    #[serde(default)]
    conversation_id: Option<Uuid>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    stream: bool,
}

/// A validated turn, stored up to the user's message.
struct Turn {
    conversation: Uuid,
    channel: String,
    system: String,
    messages: Vec<Message>,
    /// Idempotency key of the LLM call and the usage row's id.
    request_id: String,
}

fn valid_channel(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_CHANNEL
        && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `POST /api/chat`. Once the turn is stored, an error answer also names
/// its `conversation_id`.
pub async fn chat(State(st): State<Arc<AgentState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let opened = async {
        let body = body.map_err(|r| ApiError::from_body(&r, st.body_limit))?;
        let req: ChatRequest = parse_json(&body)?;
        let stream = req.stream;
        Ok::<_, ApiError>((begin(&st, req).await?, stream))
    };
    let (turn, stream) = match opened.await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let conversation = turn.conversation;
    let answered = if stream { streamed(st, turn).await } else { complete(&st, &turn).await };
    answered.unwrap_or_else(|e| e.in_conversation(conversation))
}

/// The whole answer of one stored turn.
async fn complete(st: &AgentState, turn: &Turn) -> Result<Response, ApiError> {
    let reply = st.llm.complete(&turn.system, &turn.messages, &turn.request_id).await.map_err(|e| refused(st, &e))?;
    finish(st, turn, &reply).await?;
    Ok(Json(answer(turn, &reply)).into_response())
}

/// Validates, opens or continues the conversation, stores and spools the
/// user's message, and builds what the LLM is sent.
async fn begin(st: &AgentState, req: ChatRequest) -> Result<Turn, ApiError> {
    if req.message.trim().is_empty() {
        return Err(ApiError::BadRequest("`message` must not be empty".into()));
    }
    no_nul("message", &req.message)?;
    let channel = req.channel.unwrap_or_else(|| "api".into());
    if !valid_channel(&channel) {
        return Err(ApiError::BadRequest(format!(
            "`channel` must be 1-{MAX_CHANNEL} characters of a-z, 0-9, '-' or '_'"
        )));
    }
    let (conversation, mut messages) = match req.conversation_id {
        Some(id) => {
            if !st.store.conversation_exists(id).await.map_err(|e| ApiError::db(&e))? {
                return Err(ApiError::NotFound("no conversation with that id".into()));
            }
            let mut messages = st.store.history(id, st.history).await.map_err(|e| ApiError::db(&e))?;
            messages.retain(|m| m.role == "user" || m.role == "assistant");
            st.store.add_message(id, "user", &req.message).await.map_err(|e| ApiError::db(&e))?;
            (id, messages)
        }
        None => {
            // With its first message in one transaction: no empty conversation.
            let id = Uuid::new_v4();
            st.store.start_conversation_with(id, &channel, "user", &req.message).await.map_err(|e| ApiError::db(&e))?;
            (id, Vec::new())
        }
    };
    let event = TranscriptEvent::new(&conversation.to_string(), "user", &req.message, &channel);
    st.spool.append(&[event]).await.map_err(|_| ApiError::Spool)?;
    messages.push(Message { role: "user".into(), content: req.message });
    let messages = alternating(messages);
    let enabled: Vec<String> =
        super::api::skill_states(st).await?.into_iter().filter(|(_, on)| *on).map(|(s, _)| s.name).collect();
    Ok(Turn {
        conversation,
        channel,
        system: st.workspace.system_prompt(&enabled),
        messages,
        request_id: Uuid::new_v4().to_string(),
    })
}

/// The caller-facing error for a failed LLM call (logged without detail).
fn refused(st: &AgentState, e: &LlmError) -> ApiError {
    tracing::warn!(error = %e, "LLM call failed");
    match e {
        LlmError::OutOfCredits => {
            st.credits_remaining.store(0, Ordering::Release);
            ApiError::OutOfCredits
        }
        _ => ApiError::LlmUnavailable,
    }
}

/// Stores and spools the assistant's reply and its usage.
async fn finish(st: &AgentState, turn: &Turn, reply: &Reply) -> Result<(), ApiError> {
    // What the proxy charged for this very call, not a difference of
    // balances that concurrent calls (and other instances) move too.
    let credits = reply.credits_charged.unwrap_or_else(|| {
        tracing::warn!("the proxy did not say what the call cost; its usage row records 0 credits");
        0
    });
    if let Some(after) = reply.credits_remaining {
        st.credits_remaining.store(after, Ordering::Release);
    }
    st.store.add_message(turn.conversation, "assistant", &reply.text).await.map_err(|e| ApiError::db(&e))?;
    st.store
        .record_usage(&turn.request_id, st.llm.model(), (reply.input_tokens, reply.output_tokens), credits)
        .await
        .map_err(|e| ApiError::db(&e))?;
    let mut event = TranscriptEvent::new(&turn.conversation.to_string(), "assistant", &reply.text, &turn.channel);
    event.tokens = Some(Tokens { input: reply.input_tokens, output: reply.output_tokens });
    st.spool.append(&[event]).await.map_err(|_| ApiError::Spool)?;
    let line = format!(
        "{} conversation {}: {} tokens",
        turn.channel,
        turn.conversation,
        reply.input_tokens + reply.output_tokens
    );
    st.store.log_daily(Utc::now().date_naive(), &line).await.map_err(|e| ApiError::db(&e))?;
    Ok(())
}

fn answer(turn: &Turn, reply: &Reply) -> Value {
    json!({
        "conversation_id": turn.conversation,
        "reply": reply.text,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        "credits_remaining": reply.credits_remaining,
    })
}

/// Sends a frame unless the caller already left.
async fn emit(tx: &mut futures::channel::mpsc::Sender<Result<Bytes, std::io::Error>>, gone: &mut bool, b: Bytes) {
    if !*gone && tx.send(Ok(b)).await.is_err() {
        *gone = true;
    }
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The streamed answer. The LLM stream is read by a task of its own, so a
/// caller that leaves does not cut the turn short: it is stored either way.
async fn streamed(st: Arc<AgentState>, turn: Turn) -> Result<Response, ApiError> {
    let mut pieces =
        Box::pin(st.llm.stream(&turn.system, &turn.messages, &turn.request_id).await.map_err(|e| refused(&st, &e))?);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut gone = false;
        while let Some(p) = pieces.next().await {
            match p {
                Ok(Piece::Text(t)) => emit(&mut tx, &mut gone, sse("delta", &json!({"text": t}))).await,
                Ok(Piece::Done(reply)) => {
                    let frame = match finish(&st, &turn, &reply).await {
                        Ok(()) => sse("done", &answer(&turn, &reply)),
                        Err(e) => sse("error", &e.body_in(turn.conversation)),
                    };
                    emit(&mut tx, &mut gone, frame).await;
                    return;
                }
                Err(e) => {
                    emit(&mut tx, &mut gone, sse("error", &refused(&st, &e).body_in(turn.conversation))).await;
                    return;
                }
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(rx))
        .into_response())
}

/// The history as the model APIs take it: starting with the user and
/// alternating. A window cut by `--history` can start with an answer, and a
/// turn refused after its message was stored (402, 502) leaves two user
/// messages in a row; those are joined, a leading answer is dropped.
fn alternating(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages.into_iter().skip_while(|m| m.role != "user") {
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => out.push(m),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Message, alternating, valid_channel};

    #[test]
    fn channels_are_short_names() {
        assert!(valid_channel("web-chat_2"));
        for bad in ["", "Web", "a b", "x\n", &"a".repeat(33)] {
            assert!(!valid_channel(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_history_starts_with_the_user_and_alternates() {
        let m = |role: &str, content: &str| Message { role: role.into(), content: content.into() };
        let got = alternating(vec![
            m("assistant", "a0"),
            m("user", "u1"),
            m("assistant", "a1"),
            m("user", "u2"),
            m("user", "u3"),
        ]);
        assert_eq!(got, vec![m("user", "u1"), m("assistant", "a1"), m("user", "u2\n\nu3")]);
        assert!(alternating(vec![m("assistant", "only")]).is_empty());
    }
}
