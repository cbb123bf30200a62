-- The tenant's own database: what its agent remembers, the conversations it
-- had and the LLM usage it saw. Applied by Winston's `schema` step; the
-- agent service only reads and writes rows.

CREATE TABLE IF NOT EXISTS memories (
    id          BIGSERIAL PRIMARY KEY,
    scope       TEXT        NOT NULL DEFAULT 'global',
    key         TEXT        NOT NULL,
    content     TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (scope, key)
);

CREATE TABLE IF NOT EXISTS conversations (
    id          UUID        PRIMARY KEY,
    channel     TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at    TIMESTAMPTZ,
    summary     TEXT
);

CREATE TABLE IF NOT EXISTS messages (
    id               BIGSERIAL PRIMARY KEY,
    conversation_id  UUID        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role             TEXT        NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content          TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, id);

CREATE TABLE IF NOT EXISTS usage (
    request_id     TEXT        PRIMARY KEY,
    model          TEXT        NOT NULL,
    input_tokens   BIGINT      NOT NULL CHECK (input_tokens >= 0),
    output_tokens  BIGINT      NOT NULL CHECK (output_tokens >= 0),
    credits        BIGINT      NOT NULL CHECK (credits >= 0),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
