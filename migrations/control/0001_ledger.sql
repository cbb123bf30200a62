-- Winston's own database: the credit ledger and what hangs off it.
-- Money is integer credits (BIGINT) everywhere; no floating point.

-- One row per metered account ("<namespace>/<tenant>" or "system").
-- Credits live in two pools: the period allotment (reset each period) and
-- granted credits (carry over). Spending takes from the allotment first.
-- `reserved` is the sum of open reservations; a reservation is only taken
-- when period_credits + granted_credits - reserved covers it. (A smaller new
-- allotment may leave it briefly over-committed; settlement then clamps.)
CREATE TABLE accounts (
    id                  TEXT PRIMARY KEY,
    allotment           BIGINT NOT NULL DEFAULT 0 CHECK (allotment >= 0),
    period_credits      BIGINT NOT NULL DEFAULT 0 CHECK (period_credits >= 0),
    granted_credits     BIGINT NOT NULL DEFAULT 0 CHECK (granted_credits >= 0),
    reserved            BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    used_this_period    BIGINT NOT NULL DEFAULT 0 CHECK (used_this_period >= 0),
    low_threshold_pct   INTEGER NOT NULL DEFAULT 20 CHECK (low_threshold_pct BETWEEN 0 AND 100),
    period_start        TIMESTAMPTZ,
    period_end          TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Credit grants (top-ups, plan bonuses). The id is chosen by the writer
-- (e.g. the CreditLedger spec entry), so applying a grant twice credits once.
CREATE TABLE grants (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    amount      BIGINT NOT NULL CHECK (amount > 0),
    reason      TEXT NOT NULL DEFAULT '',
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX grants_account ON grants(account_id);

-- One row per period reset: the primary key makes a reset happen once.
CREATE TABLE period_resets (
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    period_start  TIMESTAMPTZ NOT NULL,
    period_end    TIMESTAMPTZ NOT NULL,
    allotment     BIGINT NOT NULL CHECK (allotment >= 0),
    applied_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, period_start)
);

-- Worst-case holds taken before forwarding a request. A crashed proxy's
-- holds are released by the sweeper once `expires_at` has passed.
CREATE TABLE reservations (
    id          UUID PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    request_id  TEXT NOT NULL,
    amount      BIGINT NOT NULL CHECK (amount >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (account_id, request_id)
);
CREATE INDEX reservations_expiry ON reservations(expires_at);

-- One row per billed request; the key makes settlement idempotent.
-- `credits` is what was debited (never more than the account could pay);
-- `cost` is what the tokens were worth at the model's multiplier.
CREATE TABLE usage_records (
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    request_id     TEXT NOT NULL,
    model          TEXT NOT NULL,
    input_tokens   BIGINT NOT NULL CHECK (input_tokens >= 0),
    output_tokens  BIGINT NOT NULL CHECK (output_tokens >= 0),
    cost           BIGINT NOT NULL CHECK (cost >= 0),
    credits        BIGINT NOT NULL CHECK (credits >= 0),
    outcome        TEXT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, request_id)
);
CREATE INDEX usage_records_time ON usage_records(account_id, recorded_at);

-- Tenant API keys: only the SHA-256 of the key is stored; `prefix` is the
-- first characters of the key, shown to humans to tell keys apart.
CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name        TEXT NOT NULL DEFAULT '',
    prefix      TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_account ON api_keys(account_id);

-- Append-only record of money-relevant administrative actions.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    account_id  TEXT,
    action      TEXT NOT NULL,
    detail      JSONB NOT NULL DEFAULT '{}'::jsonb,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_account ON audit_log(account_id, at);

-- Agent session logs synced from tenant services (deduplicated per line).
CREATE TABLE session_transcripts (
    id           BIGSERIAL PRIMARY KEY,
    account_id   TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    line_hash    BYTEA NOT NULL,
    entry        JSONB NOT NULL,
    occurred_at  TIMESTAMPTZ,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (account_id, session_id, line_hash)
);
CREATE INDEX session_transcripts_retention ON session_transcripts(recorded_at);
