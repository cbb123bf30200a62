-- Group commit: settlement as a function (the statement `Ledger::settle`
-- ran until now, unchanged), so that many requests settle in one statement
-- and one commit (`unnest ... LEFT JOIN LATERAL winston_settle(...)`),
-- exactly as one request settles alone. Each call sees the effects of the
-- calls before it in the same statement (the function is VOLATILE), the way
-- `winston_reserve` calls in one batch do.
CREATE FUNCTION winston_settle(
    p_id UUID, p_account TEXT, p_model TEXT, p_input BIGINT, p_output BIGINT, p_cost BIGINT,
    p_outcome TEXT, p_key TEXT, p_cache_write BIGINT, p_cache_read BIGINT, p_tool_uses BIGINT,
    p_estimated BOOLEAN)
RETURNS TABLE (debit BIGINT, balance BIGINT, reserved_after BIGINT, allotment BIGINT,
               low_threshold_pct INTEGER, inserted BIGINT)
LANGUAGE sql VOLATILE AS $$
    WITH r AS (
        DELETE FROM reservations WHERE id = p_id RETURNING amount
    ), a AS (
        SELECT id, period_credits, granted_credits, allotment, low_threshold_pct,
               COALESCE((SELECT amount FROM r), 0) AS held,
               GREATEST(reserved - COALESCE((SELECT amount FROM r), 0), 0) AS reserved_after
        FROM accounts WHERE id = p_account FOR UPDATE
    ), c AS (
        SELECT a.*, LEAST(p_cost, held + GREATEST(period_credits + granted_credits - reserved_after - held, 0))
                    AS charge
        FROM a
    ), ins AS (
        INSERT INTO usage_records
            (account_id, request_id, model, input_tokens, output_tokens, cost, credits, outcome,
             idempotency_key, cache_write_tokens, cache_read_tokens, tool_uses, estimated)
        SELECT p_account, p_id::text, p_model, p_input, p_output, p_cost, charge, p_outcome, p_key,
               p_cache_write, p_cache_read, p_tool_uses, p_estimated FROM c
        ON CONFLICT DO NOTHING
        RETURNING credits
    ), k AS (
        UPDATE idempotency_keys SET completed_at = now(), credits = (SELECT credits FROM ins)
        WHERE account_id = p_account AND key = p_key AND reservation_id = p_id AND EXISTS (SELECT 1 FROM ins)
        RETURNING 1
    ), d AS (
        SELECT c.*, COALESCE((SELECT credits FROM ins), 0) AS debit, (SELECT count(*) FROM ins) AS inserted
        FROM c
    ), e AS (
        SELECT d.*, LEAST(GREATEST(d.debit - d.period_credits, 0), d.granted_credits) AS from_granted
        FROM d
    )
    UPDATE accounts acc SET
        period_spent = acc.period_spent + (e.debit - e.from_granted),
        granted_credits = acc.granted_credits - e.from_granted,
        reserved = e.reserved_after,
        used_this_period = acc.used_this_period + e.debit,
        updated_at = now()
    FROM e WHERE acc.id = e.id
    RETURNING e.debit, GREATEST(e.allotment - acc.period_spent, 0) + acc.granted_credits,
              e.reserved_after, e.allotment, e.low_threshold_pct, e.inserted
$$;
