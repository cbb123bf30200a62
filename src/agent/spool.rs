//! The transcript spool: session events wait on local disk until Winston
//! acknowledged them.
//!
//! Events are appended (and fsynced) to `current.jsonl` before the chat
//! answer they belong to is returned. Sealing renames `current.jsonl` to
//! the next `batch-<seq>.jsonl` (a rename is atomic), so a batch never
//! changes once it may have been sent. A batch file is deleted only after
//! the proxy answered 2xx for it: a crash at any instant leaves every
//! unacknowledged event on disk, to be sent again (the proxy deduplicates
//! by event id). A torn last line left by a crash mid-append is cut off at
//! open, so the next append starts on a line of its own.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

const CURRENT: &str = "current.jsonl";
/// Lines the proxy refused for good (malformed, too long), kept for an operator.
pub const REJECTED: &str = "rejected.jsonl";

/// Token counts of an LLM call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: i64,
    pub output: i64,
}

/// One session event: a line of the JSONL transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEvent {
    /// Stable id: chosen once when the event happens, so a re-sent event is
    /// recognised as the same one.
    pub id: String,
    /// The conversation the event belongs to.
    pub session_id: String,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    pub content: String,
    pub channel: String,
    /// Tokens of the LLM call that produced the event (assistant events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// Tool calls the event made (none in the reference runtime's chat).
    #[serde(default)]
    pub tool_calls: Vec<serde_json::Value>,
    pub at: DateTime<Utc>,
}

impl TranscriptEvent {
    /// A new event with a fresh id, now.
    #[must_use]
    pub fn new(session_id: &str, role: &str, content: &str, channel: &str) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            session_id: session_id.to_string(),
            role: role.to_string(),
            content: content.to_string(),
            channel: channel.to_string(),
            tokens: None,
            tool_calls: Vec::new(),
            at: Utc::now(),
        }
    }
}

struct Inner {
    /// Lines in `current.jsonl`.
    lines: usize,
    next_seq: u64,
}

/// The spool directory.
pub struct Spool {
    dir: PathBuf,
    max_batch: usize,
    inner: Mutex<Inner>,
}

impl Spool {
    /// Opens (creating) the spool in `dir`; `max_batch` bounds the lines of
    /// one batch.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(dir: &Path, max_batch: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let current = dir.join(CURRENT);
        let lines = match std::fs::read(&current) {
            Ok(bytes) => {
                let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                if keep < bytes.len() {
                    let f = std::fs::OpenOptions::new().write(true).open(&current)?;
                    f.set_len(keep as u64)?;
                    f.sync_all()?;
                }
                bytes[..keep].iter().filter(|b| **b == b'\n').count()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let next_seq = batch_files(dir)?.iter().filter_map(|p| seq_of(p)).max().map_or(1, |s| s + 1);
        Ok(Self { dir: dir.to_path_buf(), max_batch: max_batch.max(1), inner: Mutex::new(Inner { lines, next_seq }) })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `events` durably (written and fsynced when this returns).
    ///
    /// # Errors
    /// When writing fails; the events then may or may not be on disk.
    pub async fn append(&self, events: &[TranscriptEvent]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        let mut inner = self.inner.lock().await;
        let mut f = tokio::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(CURRENT)).await?;
        f.write_all(&buf).await?;
        f.sync_data().await?;
        inner.lines += events.len();
        if inner.lines >= self.max_batch {
            self.seal_locked(&mut inner).await?;
        }
        Ok(())
    }

    /// Turns the current file into the next batch (nothing when it is empty).
    ///
    /// # Errors
    /// When the rename fails.
    pub async fn seal(&self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().await;
        self.seal_locked(&mut inner).await
    }

    async fn seal_locked(&self, inner: &mut Inner) -> std::io::Result<()> {
        if inner.lines == 0 {
            return Ok(());
        }
        let to = self.dir.join(batch_name(inner.next_seq));
        tokio::fs::rename(self.dir.join(CURRENT), &to).await?;
        sync_dir(&self.dir).await;
        inner.next_seq += 1;
        inner.lines = 0;
        Ok(())
    }

    /// The sealed batches, oldest first.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn batches(&self) -> std::io::Result<Vec<PathBuf>> {
        batch_files(&self.dir)
    }

    /// Replaces `batch` by two batches holding its halves (for a batch the
    /// proxy found too large). The halves take the batch's place in the order.
    ///
    /// # Errors
    /// When reading or writing fails; the original batch is then kept.
    pub async fn split(&self, batch: &Path) -> std::io::Result<()> {
        let text = tokio::fs::read(batch).await?;
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        let (a, b) = lines.split_at(lines.len() / 2);
        let mut inner = self.inner.lock().await;
        // Both halves sort after every existing batch; the order of events
        // across batches carries no meaning (each has its own timestamp).
        for half in [a, b] {
            let name = self.dir.join(batch_name(inner.next_seq));
            let tmp = name.with_extension("tmp");
            tokio::fs::write(&tmp, half.concat()).await?;
            tokio::fs::File::open(&tmp).await?.sync_all().await?;
            tokio::fs::rename(&tmp, &name).await?;
            inner.next_seq += 1;
        }
        tokio::fs::remove_file(batch).await?;
        sync_dir(&self.dir).await;
        Ok(())
    }

    /// Keeps lines the proxy refused for good in [`REJECTED`].
    ///
    /// # Errors
    /// When writing fails.
    pub async fn reject(&self, lines: &[&[u8]]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut f = tokio::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(REJECTED)).await?;
        for l in lines {
            f.write_all(l).await?;
            if !l.ends_with(b"\n") {
                f.write_all(b"\n").await?;
            }
        }
        f.sync_data().await
    }

    /// Events not yet acknowledged (sealed and current).
    ///
    /// # Errors
    /// When the files cannot be read.
    pub async fn pending(&self) -> std::io::Result<usize> {
        let inner = self.inner.lock().await;
        let mut n = inner.lines;
        for b in batch_files(&self.dir)? {
            n += tokio::fs::read(&b).await?.iter().filter(|c| **c == b'\n').count();
        }
        Ok(n)
    }
}

fn batch_name(seq: u64) -> String {
    format!("batch-{seq:020}.jsonl")
}

fn seq_of(p: &Path) -> Option<u64> {
    p.file_name()?.to_str()?.strip_prefix("batch-")?.strip_suffix(".jsonl")?.parse().ok()
}

fn batch_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| seq_of(p).is_some()).collect();
    v.sort_by_key(|p| seq_of(p));
    Ok(v)
}

/// Makes a rename durable (best effort: not every filesystem supports it).
async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> TranscriptEvent {
        TranscriptEvent::new("s1", "user", &format!("hello {n}"), "api")
    }

    #[tokio::test]
    async fn batches_seal_at_the_limit_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 3).expect("open");
        for i in 0..7 {
            spool.append(&[ev(i)]).await.expect("append");
        }
        assert_eq!(spool.batches().expect("list").len(), 2);
        assert_eq!(spool.pending().await.expect("pending"), 7);
        drop(spool);
        let spool = Spool::open(dir.path(), 3).expect("reopen");
        assert_eq!(spool.pending().await.expect("pending"), 7);
        spool.seal().await.expect("seal");
        let names = spool.batches().expect("list");
        assert_eq!(names.len(), 3);
        assert!(names.windows(2).all(|w| seq_of(&w[0]) < seq_of(&w[1])));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_and_the_next_event_starts_clean() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 100).expect("open");
        spool.append(&[ev(1)]).await.expect("append");
        drop(spool);
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(CURRENT)).expect("open");
        std::io::Write::write_all(&mut f, b"{\"id\":\"torn").expect("write");
        let spool = Spool::open(dir.path(), 100).expect("reopen");
        spool.append(&[ev(2)]).await.expect("append");
        let text = std::fs::read_to_string(dir.path().join(CURRENT)).expect("read");
        let parsed: Vec<TranscriptEvent> =
            text.lines().map(|l| serde_json::from_str(l).expect("every line parses")).collect();
        assert_eq!(parsed.len(), 2);
    }

    #[tokio::test]
    async fn a_split_batch_keeps_every_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 100).expect("open");
        spool.append(&(0..5).map(ev).collect::<Vec<_>>()).await.expect("append");
        spool.seal().await.expect("seal");
        let b = spool.batches().expect("list").remove(0);
        spool.split(&b).await.expect("split");
        assert_eq!(spool.batches().expect("list").len(), 2);
        assert_eq!(spool.pending().await.expect("pending"), 5);
    }
}
