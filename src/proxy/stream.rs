//! Streaming relay: upstream SSE is passed to the client frame by frame as it
//! arrives while a [`Meter`] reads the usage fields. Two rules make billing
//! exact and durable:
//!
//! - the **last frame** (`message_stop` / `[DONE]`) is held back until the
//!   usage record is committed, so a client that received a stream in full
//!   was billed for it, even if the proxy dies right after;
//! - when the client goes away the upstream is still read to its end (at
//!   most `drain_secs`), so what the model generated is billed.
//!
//! An upstream `error` event mid-stream charges nothing (as an upstream
//! error status does); the error frame is relayed.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::errors::Api;
use super::forward::{Admitted, credit_headers, release, settle_durably, upstream_headers};
use super::meter::{FrameKind, Meter, frame_end};
use super::{CREDITS_REMAINING_HEADER, InFlightGuard, ProxyState};
use crate::ledger::{Usage, money};

/// A frame longer than this without a blank line is forwarded unparsed.
const MAX_FRAME: usize = 1024 * 1024;

/// Starts relaying `upstream` and returns the client response at once.
pub(super) fn relay(st: Arc<ProxyState>, a: Admitted, upstream: reqwest::Response, hide_usage_chunk: bool) -> Response {
    let mut headers = HeaderMap::new();
    upstream_headers(upstream.headers(), &mut headers);
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Post-reservation figure; the settled one follows in a trailing SSE comment.
    credit_headers(&mut headers, a.reservation.available, a.reservation.low(), Some(&a.reservation));
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let guard = st.in_flight.enter();
    st.metrics.open_streams.inc();
    tokio::spawn(pump(st, a, upstream, hide_usage_chunk, tx, guard));
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    resp.headers_mut().extend(headers);
    resp
}

/// Forwards to the client while it listens; remembers when it left.
struct Client {
    tx: mpsc::Sender<Bytes>,
    gone: bool,
}

impl Client {
    async fn send(&mut self, frame: Bytes) {
        if !self.gone && self.tx.send(frame).await.is_err() {
            self.gone = true;
        }
    }
}

async fn pump(
    st: Arc<ProxyState>,
    a: Admitted,
    upstream: reqwest::Response,
    hide_usage_chunk: bool,
    tx: mpsc::Sender<Bytes>,
    _guard: InFlightGuard,
) {
    let mut meter = Meter::new(a.model.kind);
    let mut body = upstream.bytes_stream();
    let mut buf = BytesMut::new();
    let mut held: Option<Bytes> = None;
    let mut client = Client { tx, gone: false };
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut cut = false;
    let mut timed_out = false;
    loop {
        if client.gone && drain_deadline.is_none() {
            drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(st.settings.drain_secs));
        }
        let next = match drain_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            },
            None => body.next().await,
        };
        let chunk = match next {
            None => break,
            Some(Err(_)) => {
                cut = true;
                break;
            }
            Some(Ok(chunk)) => chunk,
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = frame_end(&buf) {
            let frame = buf.split_to(end).freeze();
            if meter.observe_frame(&frame) == FrameKind::UsageOnly && hide_usage_chunk {
                continue;
            }
            if let Some(previous) = held.replace(frame) {
                client.send(previous).await;
            }
        }
        if buf.len() > MAX_FRAME
            && let Some(previous) = held.replace(buf.split().freeze())
        {
            client.send(previous).await;
        }
    }
    if !buf.is_empty() {
        let rest = buf.split().freeze();
        meter.observe_frame(&rest);
        if let Some(previous) = held.replace(rest) {
            client.send(previous).await;
        }
    }
    st.metrics.open_streams.dec();
    if meter.upstream_error {
        let available = release(&st, &a.reservation).await;
        tracing::debug!(available, "upstream error mid-stream; nothing charged");
        st.metrics.request(a.api.label(), "upstream_error");
        if let Some(last) = held {
            client.send(last).await;
        }
        return;
    }
    let outcome = if client.gone {
        "client_disconnected"
    } else if cut || timed_out || !meter.complete {
        "upstream_cut"
    } else {
        "complete"
    };
    let (mut input, output) = meter.billable();
    if input == 0 {
        // Cut before the upstream reported input: bill the estimate, never zero.
        input = a.input_estimate;
    }
    let usage = Usage {
        model: a.model.id.clone(),
        input_tokens: input,
        output_tokens: output,
        cost: money::cost(input, output, a.model.multiplier),
        outcome: outcome.into(),
        ..Usage::default()
    };
    match settle_durably(&st, &a.reservation, &usage).await {
        Ok(s) => {
            st.metrics.request(a.api.label(), outcome);
            client.send(Bytes::from(format!(": {CREDITS_REMAINING_HEADER}: {}\n\n", s.available))).await;
            if let Some(last) = held {
                client.send(last).await;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to record usage; withholding the end of the stream");
            st.metrics.request(a.api.label(), "ledger_unavailable");
            client.send(error_frame(a.api)).await;
        }
    }
}

/// An in-stream error in the client's API shape.
fn error_frame(api: Api) -> Bytes {
    let msg = "failed to record usage; the response is incomplete, retry later";
    match api {
        Api::Anthropic => Bytes::from(format!(
            "event: error\ndata: {}\n\n",
            serde_json::json!({"type": "error", "error": {"type": "api_error", "message": msg}})
        )),
        Api::Openai => Bytes::from(format!(
            "data: {}\n\n",
            serde_json::json!({"error": {"message": msg, "type": "server_error", "code": "ledger_unavailable"}})
        )),
    }
}
