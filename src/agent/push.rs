//! Delivers spooled transcript batches to Winston: `POST
//! {WINSTON_PROXY_URL}/v1/transcripts` with the tenant key, one sealed
//! batch per request, oldest first.
//!
//! A batch file is deleted only after a 2xx: lines the proxy refused for
//! good (named per line in its answer) move to `rejected.jsonl`; a 413
//! splits the batch in two; anything else keeps the batch for the next
//! round, with a growing pause while the proxy stays away.
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::config::Secret;
use super::spool::Spool;

/// Path of the proxy's transcript endpoint.
pub const TRANSCRIPTS_PATH: &str = "/v1/transcripts";
/// Longest pause between attempts while the proxy is away.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a round stopped early (the batches stay on disk).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("failed to reach the proxy")]
    Unreachable,
    #[error("failed to deliver transcripts: the proxy answered {0}")]
    Status(u16),
    #[error("failed to use the spool: {0}")]
    Spool(#[from] std::io::Error),
}

/// One line the proxy refused, as its answer names it.
#[derive(Debug, Deserialize)]
struct RejectedLine {
    /// 0-based line number within the batch.
    line: usize,
}

#[derive(Debug, Default, Deserialize)]
struct IngestAnswer {
    #[serde(default)]
    rejected: Vec<RejectedLine>,
}

/// Sends batches to the proxy.
pub struct Pusher {
    http: reqwest::Client,
    url: String,
    key: Secret,
}

impl Pusher {
    #[must_use]
    pub fn new(http: reqwest::Client, proxy_url: &str, key: Secret) -> Self {
        Self { http, url: format!("{}{TRANSCRIPTS_PATH}", proxy_url.trim_end_matches('/')), key }
    }

    /// Seals the current file and delivers every batch; returns how many
    /// events were acknowledged.
    ///
    /// # Errors
    /// The first batch that could not be delivered stops the round.
    pub async fn round(&self, spool: &Spool) -> Result<usize, PushError> {
        spool.seal().await?;
        let mut acked = 0;
        for batch in spool.batches()? {
            acked += self.deliver(spool, &batch).await?;
        }
        Ok(acked)
    }

    async fn deliver(&self, spool: &Spool, batch: &Path) -> Result<usize, PushError> {
        let body = tokio::fs::read(batch).await?;
        let lines: Vec<&[u8]> = body.split_inclusive(|b| *b == b'\n').collect();
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.key.expose())
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .map_err(|_| PushError::Unreachable)?;
        let status = resp.status();
        if status.as_u16() == 413 && lines.len() > 1 {
            spool.split(batch).await?;
            return Ok(0);
        }
        if status.as_u16() == 413 {
            spool.reject(&lines).await?;
            tokio::fs::remove_file(batch).await?;
            return Ok(0);
        }
        if !status.is_success() {
            return Err(PushError::Status(status.as_u16()));
        }
        let answer: IngestAnswer = resp.json().await.unwrap_or_default();
        let refused: Vec<&[u8]> = answer.rejected.iter().filter_map(|r| lines.get(r.line).copied()).collect();
        if !refused.is_empty() {
            tracing::warn!(lines = refused.len(), "the proxy refused transcript lines; kept in rejected.jsonl");
        }
        spool.reject(&refused).await?;
        tokio::fs::remove_file(batch).await?;
        Ok(lines.len() - refused.len())
    }
}

/// The pause after `failures` failed rounds in a row.
#[must_use]
pub fn backoff(every: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return every;
    }
    every.saturating_mul(2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF.max(every))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stops_at_the_cap() {
        let every = Duration::from_millis(100);
        assert_eq!(backoff(every, 0), every);
        assert_eq!(backoff(every, 1), Duration::from_millis(200));
        assert_eq!(backoff(every, 30), MAX_BACKOFF);
    }
}
