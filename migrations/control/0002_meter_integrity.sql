-- Meter integrity (issue 10): derived period credits, idempotency keys that
-- complete, and holds that belong to a live proxy process.

-- 1. The period's remaining credits are derived from the allotment and what
--    was spent from it, never adjusted by differences: no sequence of
--    allotment changes can mint credits.
ALTER TABLE accounts ADD COLUMN period_spent BIGINT NOT NULL DEFAULT 0 CHECK (period_spent >= 0);
UPDATE accounts SET period_spent = GREATEST(allotment - period_credits, 0);
ALTER TABLE accounts DROP COLUMN period_credits;
ALTER TABLE accounts ADD COLUMN period_credits BIGINT
    GENERATED ALWAYS AS (GREATEST(allotment - period_spent, 0)) STORED;

-- 2. Holds belong to the proxy process that took them. A live proxy holds
--    the session advisory lock (WINSTON_LOCK_CLASS, owner) on a dedicated
--    connection; PostgreSQL drops it the moment that process dies, so its
--    holds can be released at once instead of after their TTL. NULL owner:
--    a hold taken outside a proxy session (tests, tools): TTL only.
ALTER TABLE reservations ADD COLUMN owner INTEGER;
CREATE INDEX reservations_owner ON reservations(owner);

CREATE FUNCTION winston_owner_alive(p_owner INTEGER) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT p_owner IS NULL OR EXISTS (
        SELECT 1 FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = 1464421971::oid          -- 'WINS': Winston's advisory-lock class
          AND l.objid = p_owner::oid AND l.objsubid = 2)
$$;

-- 3. Idempotency keys (the client's `Idempotency-Key`, scoped to the account
--    and to `expires_at`). A key that completed never reaches the upstream
--    again; a key whose request failed or whose proxy died is free again.
CREATE TABLE idempotency_keys (
    account_id      TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    reservation_id  UUID NOT NULL,
    completed_at    TIMESTAMPTZ,
    credits         BIGINT,
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);

-- Usage records are keyed by the request (the reservation id); what the
-- upstream reported is kept beside what was billed.
ALTER TABLE usage_records ADD COLUMN idempotency_key TEXT;
ALTER TABLE usage_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0);
ALTER TABLE usage_records ADD COLUMN cache_read_tokens BIGINT NOT NULL DEFAULT 0 CHECK (cache_read_tokens >= 0);
ALTER TABLE usage_records ADD COLUMN tool_uses BIGINT NOT NULL DEFAULT 0 CHECK (tool_uses >= 0);
ALTER TABLE usage_records ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false;

-- 4. Admission in one round trip: check the key, size the hold to what the
--    balance can pay (lowering the output cap), take it, claim the key.
--    `units` are output tokens per choice; the hold is
--    fixed + ceil(units * unit_milli / 1000).
CREATE FUNCTION winston_reserve(
    p_account TEXT, p_id UUID, p_key TEXT, p_owner INTEGER,
    p_fixed BIGINT, p_unit_milli BIGINT, p_max_units BIGINT, p_min_units BIGINT,
    p_ttl_ms BIGINT, p_key_ttl_ms BIGINT)
RETURNS TABLE (outcome TEXT, amount BIGINT, units BIGINT, balance BIGINT, available BIGINT,
               allotment BIGINT, low_threshold_pct INTEGER, prior_credits BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    a accounts%ROWTYPE;
    k idempotency_keys%ROWTYPE;
    held reservations%ROWTYPE;
    avail BIGINT;
    u BIGINT;
    amt BIGINT;
BEGIN
    SELECT * INTO a FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown_account'::text, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, 0, NULL::bigint;
        RETURN;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT * INTO k FROM idempotency_keys i WHERE i.account_id = p_account AND i.key = p_key FOR UPDATE;
        IF FOUND AND k.expires_at > now() THEN
            IF k.completed_at IS NOT NULL THEN
                RETURN QUERY SELECT 'completed'::text, 0::bigint, 0::bigint, a.period_credits + a.granted_credits,
                    GREATEST(a.period_credits + a.granted_credits - a.reserved, 0), a.allotment, a.low_threshold_pct, k.credits;
                RETURN;
            END IF;
            SELECT * INTO held FROM reservations r WHERE r.id = k.reservation_id FOR UPDATE;
            IF FOUND THEN
                IF winston_owner_alive(held.owner) AND held.expires_at > now() THEN
                    RETURN QUERY SELECT 'in_flight'::text, 0::bigint, 0::bigint, a.period_credits + a.granted_credits,
                        GREATEST(a.period_credits + a.granted_credits - a.reserved, 0), a.allotment, a.low_threshold_pct, NULL::bigint;
                    RETURN;
                END IF;
                -- Its proxy died (or the hold outlived its TTL): release it now.
                DELETE FROM reservations WHERE id = held.id;
                UPDATE accounts SET reserved = GREATEST(reserved - held.amount, 0) WHERE id = p_account
                    RETURNING * INTO a;
            END IF;
        END IF;
    END IF;
    avail := a.period_credits + a.granted_credits - a.reserved;
    IF p_unit_milli > 0 AND avail >= p_fixed THEN
        u := LEAST(p_max_units, floor((avail - p_fixed)::numeric * 1000 / p_unit_milli)::bigint);
    ELSE
        u := p_max_units;
    END IF;
    IF avail < p_fixed OR u < p_min_units THEN
        RETURN QUERY SELECT 'insufficient'::text,
            p_fixed + (p_min_units * p_unit_milli + 999) / 1000, 0::bigint,
            a.period_credits + a.granted_credits, GREATEST(avail, 0), a.allotment, a.low_threshold_pct, NULL::bigint;
        RETURN;
    END IF;
    amt := p_fixed + (u * p_unit_milli + 999) / 1000;
    UPDATE accounts SET reserved = reserved + amt WHERE id = p_account;
    INSERT INTO reservations (id, account_id, request_id, amount, expires_at, owner)
        VALUES (p_id, p_account, COALESCE(p_key, p_id::text), amt, now() + p_ttl_ms * interval '1 millisecond', p_owner);
    IF p_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (account_id, key, reservation_id, expires_at)
            VALUES (p_account, p_key, p_id, now() + p_key_ttl_ms * interval '1 millisecond')
        ON CONFLICT (account_id, key) DO UPDATE
            SET reservation_id = EXCLUDED.reservation_id, completed_at = NULL, credits = NULL,
                expires_at = EXCLUDED.expires_at;
    END IF;
    RETURN QUERY SELECT 'reserved'::text, amt, u, a.period_credits + a.granted_credits,
        avail - amt, a.allotment, a.low_threshold_pct, NULL::bigint;
END
$$;

-- The request id of a reservation is no longer unique per account (a key
-- may be reused after it expires); the reservation id is the request.
ALTER TABLE reservations DROP CONSTRAINT reservations_account_id_request_id_key;
