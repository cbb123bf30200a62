-- Transcripts pushed by the agent runtimes (issue 15): each event has a
-- stable id chosen by the runtime, so a batch sent twice is stored once,
-- and an expiry after which the retention sweep deletes it (90 days by
-- default, `--transcript-retention-days` on the proxy).

ALTER TABLE session_transcripts ADD COLUMN event_id TEXT;
ALTER TABLE session_transcripts ADD COLUMN expires_at TIMESTAMPTZ;
-- Rows synced before this migration had no event id: their line hash is one.
UPDATE session_transcripts
   SET event_id = encode(line_hash, 'hex'),
       expires_at = recorded_at + interval '90 days'
 WHERE event_id IS NULL;
ALTER TABLE session_transcripts ALTER COLUMN event_id SET NOT NULL;
ALTER TABLE session_transcripts ALTER COLUMN expires_at SET NOT NULL;
ALTER TABLE session_transcripts ALTER COLUMN expires_at SET DEFAULT now() + interval '90 days';

CREATE UNIQUE INDEX session_transcripts_event ON session_transcripts (account_id, event_id);
CREATE INDEX session_transcripts_expiry ON session_transcripts (expires_at);
CREATE INDEX session_transcripts_export ON session_transcripts (account_id, occurred_at, id);
