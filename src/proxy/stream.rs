//! Streaming relay: upstream SSE is passed to the client frame by frame as it
//! arrives while a [`Meter`] reads the usage fields. The relay has two
//! phases, reading (frames in, frames out) and finishing (settle, then the
//! last frame), and these rules:
//!
//! - the **last frame** (`message_stop` / `[DONE]`) is held back until the
//!   usage record is committed, so a client that received a stream in full
//!   was billed for it, even if the proxy dies right after;
//! - when the client goes away, or stops reading for `client_stall_secs`,
//!   the upstream is still read to its end (at most `drain_secs`), so what
//!   the model generated is billed and the hold settles at once;
//! - what was relayed is billed whatever ends the stream: an upstream
//!   `error` event, an upstream that cuts the stream (the client then gets
//!   the API's error event, so an SDK can tell it from a finished answer),
//!   or an upstream that generates past the output cap the hold paid for,
//!   which is cut;
//! - once settled, two SSE comments precede the last frame: what this call
//!   was charged (`: x-winston-credits-charged: N`, the figure of its usage
//!   record) and what is left (`: x-winston-credits-remaining: N`), so a
//!   client can account for each call without differencing balances that
//!   concurrent calls move too.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::errors::{Refusal, stream_error_frame};
use super::forward::{Admitted, credit_headers, settle_durably, upstream_headers};
use super::meter::{FrameKind, Meter, frame_end};
use super::{CREDITS_CHARGED_HEADER, CREDITS_REMAINING_HEADER, InFlightGuard, ProxyState};

/// A frame longer than this without a blank line is forwarded unparsed.
const MAX_FRAME: usize = 1024 * 1024;
/// Frames buffered towards the client before it counts as slow.
const CLIENT_BUFFER: usize = 32;

/// Starts relaying `upstream` and returns the client response at once.
pub(super) fn relay(st: Arc<ProxyState>, a: Admitted, upstream: reqwest::Response) -> Response {
    let mut headers = HeaderMap::new();
    upstream_headers(upstream.headers(), &mut headers);
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Post-reservation figure; the settled one follows in a trailing SSE comment.
    credit_headers(&mut headers, a.reservation.available, a.reservation.low(), Some(&a.reservation));
    let (tx, rx) = mpsc::channel::<Bytes>(CLIENT_BUFFER);
    let guard = st.in_flight.enter();
    st.metrics.open_streams.inc();
    tokio::spawn(pump(st, a, upstream, tx, guard));
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    resp.headers_mut().extend(headers);
    resp
}

/// Forwards to the client while it listens; lets it go when it leaves or
/// stalls (dropping the sender ends its response).
struct Client {
    tx: Option<mpsc::Sender<Bytes>>,
    stall: Duration,
    left: Option<&'static str>,
}

impl Client {
    async fn send(&mut self, frame: Bytes) {
        let Some(tx) = &self.tx else { return };
        match tokio::time::timeout(self.stall, tx.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.leave("client_disconnected"),
            Err(_) => self.leave("client_stalled"),
        }
    }

    fn leave(&mut self, why: &'static str) {
        self.tx = None;
        self.left.get_or_insert(why);
    }

    fn gone(&self) -> bool {
        self.tx.is_none()
    }
}

/// How the upstream's stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The terminal event arrived.
    Complete,
    /// The upstream sent an `error` event.
    UpstreamError,
    /// The stream ended or failed without a terminal event (or the drain
    /// after a client left ran out of time).
    UpstreamCut,
    /// The upstream generated past the output cap the hold paid for.
    OverAllowance,
}

/// The reading phase's state.
struct Reader {
    meter: Meter,
    buf: BytesMut,
    /// The newest frame, held back until the next one (or settlement).
    held: Option<Bytes>,
    client: Client,
    hide_usage_chunk: bool,
    /// Output tokens (estimated from relayed text) past which the stream is cut.
    cut_at: i64,
}

impl Reader {
    /// Passes every complete frame in the buffer on; false once the
    /// upstream went past its allowance.
    async fn frames(&mut self) -> bool {
        while let Some(end) = frame_end(&self.buf) {
            let frame = self.buf.split_to(end).freeze();
            if self.meter.observe_frame(&frame) == FrameKind::UsageOnly && self.hide_usage_chunk {
                continue;
            }
            if self.meter.output_so_far() > self.cut_at {
                return false;
            }
            if let Some(previous) = self.held.replace(frame) {
                self.client.send(previous).await;
            }
        }
        if self.buf.len() > MAX_FRAME
            && let Some(previous) = self.held.replace(self.buf.split().freeze())
        {
            self.client.send(previous).await;
        }
        true
    }

    /// Reads the upstream to its end (bounded by `drain` once the client is gone).
    async fn read<S, E>(&mut self, mut body: S, drain: Duration) -> End
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if self.client.gone() && drain_deadline.is_none() {
                drain_deadline = Some(tokio::time::Instant::now() + drain);
            }
            let next = match drain_deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, body.next()).await {
                    Ok(next) => next,
                    Err(_) => return End::UpstreamCut,
                },
                None => body.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    if !self.frames().await {
                        return End::OverAllowance;
                    }
                }
                Some(Err(_)) => return self.ended(false).await,
                None => return self.ended(true).await,
            }
        }
    }

    /// Passes on what is left in the buffer and says how the stream ended.
    async fn ended(&mut self, clean: bool) -> End {
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            self.meter.observe_frame(&rest);
            if let Some(previous) = self.held.replace(rest) {
                self.client.send(previous).await;
            }
        }
        if self.meter.upstream_error {
            End::UpstreamError
        } else if clean && self.meter.complete {
            End::Complete
        } else {
            End::UpstreamCut
        }
    }
}

async fn pump(
    st: Arc<ProxyState>,
    a: Admitted,
    upstream: reqwest::Response,
    tx: mpsc::Sender<Bytes>,
    _guard: InFlightGuard,
) {
    let allowance = a.output_allowance();
    let mut reader = Reader {
        meter: Meter::new(a.model.kind),
        buf: BytesMut::new(),
        held: None,
        client: Client { tx: Some(tx), stall: Duration::from_secs(st.settings.client_stall_secs.max(1)), left: None },
        hide_usage_chunk: a.hide_usage_chunk,
        // Relayed text only estimates tokens; an honest upstream never gets
        // near twice its cap, a runaway one is stopped there.
        cut_at: allowance.saturating_mul(2).saturating_add(64),
    };
    let end = reader.read(upstream.bytes_stream(), Duration::from_secs(st.settings.drain_secs)).await;
    st.metrics.open_streams.dec();
    finish(&st, &a, reader, end).await;
}

/// The finishing phase: settle what was relayed, then release the held
/// frame (and an error event when the stream did not end normally).
async fn finish(st: &ProxyState, a: &Admitted, mut reader: Reader, end: End) {
    let outcome = match (reader.client.left, end) {
        (Some(why), _) => why,
        (None, End::Complete) if reader.meter.has_final_usage() => "complete",
        (None, End::Complete) => "usage_missing",
        (None, End::UpstreamError) => "upstream_error",
        (None, End::UpstreamCut) => "upstream_cut",
        (None, End::OverAllowance) => "over_allowance",
    };
    let usage = a.usage(reader.meter.tokens(), outcome, reader.meter.estimated());
    let settled = settle_durably(st, &a.reservation, &usage).await;
    st.metrics.request(a.api.label(), if settled.is_ok() { outcome } else { "ledger_unavailable" });
    let client = &mut reader.client;
    match settled {
        Ok(s) => {
            client.send(Bytes::from(format!(": {CREDITS_CHARGED_HEADER}: {}\n\n", s.credits))).await;
            client.send(Bytes::from(format!(": {CREDITS_REMAINING_HEADER}: {}\n\n", s.available))).await;
            if let Some(last) = reader.held.take() {
                client.send(last).await;
            }
            match end {
                End::Complete | End::UpstreamError => {}
                End::UpstreamCut => {
                    client
                        .send(stream_error_frame(
                            a.api,
                            Refusal::UpstreamUnreachable,
                            "the model provider's stream was cut off",
                        ))
                        .await;
                }
                End::OverAllowance => {
                    let message = format!(
                        "the model generated past the {} output tokens this request reserved; the stream was cut",
                        a.reservation.units
                    );
                    client.send(stream_error_frame(a.api, Refusal::UpstreamUnreachable, &message)).await;
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to record usage; withholding the end of the stream");
            let message = "failed to record usage; the response is incomplete, retry later";
            client.send(stream_error_frame(a.api, Refusal::UpstreamUnreachable, message)).await;
        }
    }
}
