-- What the reference runtime (`winston agent`) keeps beyond 0001: which of
-- the workspace's skills are switched on or off, and the full-text index
-- behind `GET /api/memory/search`. Applied by the runtime at start (and by
-- Winston's schema step once it embeds this file); both are idempotent.

CREATE TABLE IF NOT EXISTS skill_settings (
    name        TEXT        PRIMARY KEY,
    enabled     BOOLEAN     NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS memories_search
    ON memories USING GIN (to_tsvector('english', key || ' ' || content));
