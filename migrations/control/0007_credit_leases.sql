-- Credit leases (issue 18): a proxy replica takes credit from an account in
-- chunks, one durable commit per chunk, and admits requests against the
-- chunk in memory, so admission costs no commit per request.
--
-- A lease is an ordinary reservation row (request_id 'lease:<id>') owned by
-- the replica's session: the account's `reserved` covers it, so nothing else
-- can spend it and it never exceeds the balance when taken; when the
-- replica dies its session lock goes and the sweeper that releases dead
-- proxies' holds (`Ledger::expire_reservations`) releases the lease the same
-- way. A request admitted against a lease is a hold in the replica's memory;
-- its settlement moves what it cost from the lease to the debit in one
-- statement, so `balance - reserved` (what others may take) is unchanged by
-- it and usage records still equal debits.
--
-- Lock order in all three functions: the account row, then the lease row
-- (the group commit already locks its accounts first).

-- Takes a new lease (p_exists false) or grows one (true) by at most p_want,
-- so that the lease never holds more than p_share_pct % of what the account
-- has available beyond every other reservation (the lease itself counted as
-- available), and grants nothing when the growth would be less than p_min
-- (one hold): a low balance is left to exact per-request holds, shared by
-- all replicas. `granted` is -1 when the lease to grow is gone (swept).
CREATE FUNCTION winston_lease_take(
    p_account TEXT, p_lease UUID, p_owner INTEGER, p_exists BOOLEAN,
    p_want BIGINT, p_min BIGINT, p_share_pct BIGINT, p_ttl_ms BIGINT)
RETURNS TABLE (granted BIGINT, balance BIGINT, available BIGINT, allotment BIGINT, low_threshold_pct INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    a accounts%ROWTYPE;
    avail BIGINT;
    g BIGINT;
    held BIGINT := 0;
BEGIN
    SELECT * INTO a FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF p_exists THEN
        SELECT amount INTO held FROM reservations WHERE id = p_lease AND account_id = p_account FOR UPDATE;
        IF NOT FOUND THEN
            RETURN QUERY SELECT -1::bigint, a.period_credits + a.granted_credits,
                GREATEST(a.period_credits + a.granted_credits - a.reserved, 0), a.allotment, a.low_threshold_pct;
            RETURN;
        END IF;
    END IF;
    avail := GREATEST(a.period_credits + a.granted_credits - a.reserved, 0);
    g := LEAST(p_want::numeric,
               (avail + held)::numeric * GREATEST(LEAST(p_share_pct, 100), 0) / 100 - held,
               avail::numeric)::bigint;
    IF g < GREATEST(p_min, 1) THEN
        g := 0;
    END IF;
    IF g > 0 THEN
        IF p_exists THEN
            UPDATE reservations SET amount = amount + g, expires_at = now() + p_ttl_ms * interval '1 millisecond'
                WHERE id = p_lease;
        ELSE
            INSERT INTO reservations (id, account_id, request_id, amount, expires_at, owner)
                VALUES (p_lease, p_account, 'lease:' || p_lease::text, g,
                        now() + p_ttl_ms * interval '1 millisecond', p_owner);
        END IF;
        UPDATE accounts SET reserved = reserved + g WHERE id = p_account;
    END IF;
    RETURN QUERY SELECT g, a.period_credits + a.granted_credits, avail - g, a.allotment, a.low_threshold_pct;
END
$$;

-- Gives back up to p_amount of a lease (all of it and the row with it when
-- p_amount covers it). Returns what was given back (0 when the lease is gone).
CREATE FUNCTION winston_lease_return(p_account TEXT, p_lease UUID, p_amount BIGINT)
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    l BIGINT;
    back BIGINT;
BEGIN
    PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
    SELECT amount INTO l FROM reservations WHERE id = p_lease AND account_id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    back := LEAST(GREATEST(p_amount, 0), l);
    IF back >= l THEN
        DELETE FROM reservations WHERE id = p_lease;
    ELSE
        UPDATE reservations SET amount = amount - back WHERE id = p_lease;
    END IF;
    UPDATE accounts SET reserved = GREATEST(reserved - back, 0) WHERE id = p_account;
    RETURN back;
END
$$;

-- Keeps live leases from their backstop expiry (a replica refreshes the
-- leases it still holds; a hung one's leases expire like its holds).
CREATE FUNCTION winston_lease_refresh(p_leases UUID[], p_ttl_ms BIGINT)
RETURNS BIGINT
LANGUAGE sql AS $$
    WITH u AS (UPDATE reservations SET expires_at = now() + p_ttl_ms * interval '1 millisecond'
               WHERE id = ANY(p_leases) RETURNING 1)
    SELECT count(*) FROM u
$$;

-- Settlement of any request: a direct hold (p_lease NULL) settles exactly
-- as `winston_settle` does; a hold taken against a lease debits the cost up
-- to what the lease still covers of its hold (a commitment, like a direct
-- hold) plus what is free beyond every reservation, and takes the covered
-- part out of the lease and out of `reserved` together. `lease_left` is the
-- lease's amount afterwards (NULL when it is gone).
CREATE FUNCTION winston_settle_any(
    p_id UUID, p_lease UUID, p_held BIGINT, p_account TEXT, p_model TEXT, p_input BIGINT,
    p_output BIGINT, p_cost BIGINT, p_outcome TEXT, p_key TEXT, p_cache_write BIGINT,
    p_cache_read BIGINT, p_tool_uses BIGINT, p_estimated BOOLEAN)
RETURNS TABLE (debit BIGINT, balance BIGINT, reserved_after BIGINT, allotment BIGINT,
               low_threshold_pct INTEGER, inserted BIGINT, lease_left BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    a accounts%ROWTYPE;
    l BIGINT;
    covered BIGINT := 0;
    charge BIGINT;
    n BIGINT;
    from_lease BIGINT;
    from_granted BIGINT;
BEGIN
    IF p_lease IS NULL THEN
        RETURN QUERY SELECT s.*, NULL::bigint FROM winston_settle(p_id, p_account, p_model, p_input, p_output,
            p_cost, p_outcome, p_key, p_cache_write, p_cache_read, p_tool_uses, p_estimated) s;
        RETURN;
    END IF;
    SELECT * INTO a FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT amount INTO l FROM reservations WHERE id = p_lease AND account_id = p_account FOR UPDATE;
    IF FOUND THEN
        covered := LEAST(GREATEST(p_held, 0), l);
    ELSE
        l := NULL;
    END IF;
    charge := LEAST(GREATEST(p_cost, 0),
                    covered + GREATEST(a.period_credits + a.granted_credits - a.reserved, 0));
    INSERT INTO usage_records
        (account_id, request_id, model, input_tokens, output_tokens, cost, credits, outcome,
         idempotency_key, cache_write_tokens, cache_read_tokens, tool_uses, estimated)
    VALUES (p_account, p_id::text, p_model, p_input, p_output, GREATEST(p_cost, 0), charge, p_outcome, p_key,
            p_cache_write, p_cache_read, p_tool_uses, p_estimated)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        charge := 0;
    END IF;
    from_lease := LEAST(charge, covered);
    from_granted := LEAST(GREATEST(charge - a.period_credits, 0), a.granted_credits);
    IF l IS NOT NULL THEN
        l := l - from_lease;
        UPDATE reservations SET amount = l WHERE id = p_lease;
    END IF;
    UPDATE accounts SET
        period_spent = period_spent + (charge - from_granted),
        granted_credits = granted_credits - from_granted,
        reserved = GREATEST(reserved - from_lease, 0),
        used_this_period = used_this_period + charge,
        updated_at = now()
    WHERE id = p_account
    RETURNING * INTO a;
    RETURN QUERY SELECT charge, a.period_credits + a.granted_credits, a.reserved, a.allotment,
        a.low_threshold_pct, n, l;
END
$$;
