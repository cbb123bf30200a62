-- One statement per group-commit batch: settlements, holds and credit-lease
-- takes (issue 18: the proxy's added p99).
--
-- A batch with a hold in it (an account too low for a credit lease, a
-- request with an idempotency key) ran as a transaction of its own: BEGIN,
-- lock the accounts, settle, hold, COMMIT, five round trips to the database,
-- each a wake-up of the database and of the proxy on a busy machine, all of
-- them with the batch's account rows locked. A lease take ran as a
-- transaction of its own beside the batches, so when every tenant came back
-- after a quiet spell, each took its first lease in a commit of its own at
-- once, all of them fighting the batches for the same account rows.
--
-- This function does a whole batch in one statement: it locks every account
-- of the batch in id order (so two proxies' batches cannot deadlock), settles
-- every settlement with `winston_settle_any`, then holds every hold with
-- `winston_reserve`, then takes every take with `winston_lease_take`, each
-- in the order given and each seeing what came before it, and, called
-- alone, commits (and flushes) before its answer. The money rules are those
-- three functions', unchanged.
--
-- Rows come back settlements first, then holds, then takes, one per
-- operation: a settlement's columns are the first seven (all NULL when its
-- account is gone), a hold's the next eight, a take's the last five (all
-- NULL when its account is gone). `winston_settle_batch` stays for proxies
-- of the previous version during a rolling upgrade.
CREATE FUNCTION winston_commit_batch(
    p_id UUID[], p_account TEXT[], p_model TEXT[], p_input BIGINT[], p_output BIGINT[], p_cost BIGINT[],
    p_outcome TEXT[], p_key TEXT[], p_cache_write BIGINT[], p_cache_read BIGINT[], p_tool_uses BIGINT[],
    p_estimated BOOLEAN[], p_lease UUID[], p_held BIGINT[],
    h_account TEXT[], h_id UUID[], h_key TEXT[], h_owner INTEGER[], h_fixed BIGINT[], h_unit_milli BIGINT[],
    h_max_units BIGINT[], h_min_units BIGINT[], h_ttl_ms BIGINT[], p_key_ttl_ms BIGINT,
    t_account TEXT[], t_lease UUID[], t_owner INTEGER[], t_exists BOOLEAN[], t_want BIGINT[], t_min BIGINT[],
    t_share_pct BIGINT[], t_ttl_ms BIGINT[])
RETURNS TABLE (debit BIGINT, balance BIGINT, reserved_after BIGINT, allotment BIGINT,
               low_threshold_pct INTEGER, inserted BIGINT, lease_left BIGINT,
               outcome TEXT, amount BIGINT, units BIGINT, h_balance BIGINT, available BIGINT,
               h_allotment BIGINT, h_low_threshold_pct INTEGER, prior_credits BIGINT,
               granted BIGINT, t_balance BIGINT, t_available BIGINT, t_allotment BIGINT,
               t_low_threshold_pct INTEGER)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM accounts a WHERE a.id = ANY(p_account || h_account || t_account) ORDER BY a.id FOR UPDATE;
    RETURN QUERY
    SELECT r.debit, r.balance, r.reserved_after, r.allotment, r.low_threshold_pct, r.inserted, r.lease_left,
           NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::INTEGER,
           NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::INTEGER
    FROM unnest(p_id, p_account, p_model, p_input, p_output, p_cost, p_outcome, p_key, p_cache_write,
                p_cache_read, p_tool_uses, p_estimated, p_lease, p_held)
         WITH ORDINALITY AS b(id, account, model, input, output, cost, outcome, key, cache_write, cache_read,
                              tool_uses, estimated, lease, held, ord)
    LEFT JOIN LATERAL winston_settle_any(b.id, b.lease, b.held, b.account, b.model, b.input, b.output, b.cost,
                                         b.outcome, b.key, b.cache_write, b.cache_read, b.tool_uses,
                                         b.estimated) r ON true
    ORDER BY b.ord;
    RETURN QUERY
    SELECT NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::INTEGER, NULL::BIGINT, NULL::BIGINT,
           r.outcome, r.amount, r.units, r.balance, r.available, r.allotment, r.low_threshold_pct, r.prior_credits,
           NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::INTEGER
    FROM unnest(h_account, h_id, h_key, h_owner, h_fixed, h_unit_milli, h_max_units, h_min_units, h_ttl_ms)
         WITH ORDINALITY AS b(account, id, key, owner, fixed, unit_milli, max_units, min_units, ttl_ms, ord)
    CROSS JOIN LATERAL winston_reserve(b.account, b.id, b.key, b.owner, b.fixed, b.unit_milli,
                                       b.max_units, b.min_units, b.ttl_ms, p_key_ttl_ms) r
    ORDER BY b.ord;
    RETURN QUERY
    SELECT NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::INTEGER, NULL::BIGINT, NULL::BIGINT,
           NULL::TEXT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::INTEGER,
           NULL::BIGINT,
           r.granted, r.balance, r.available, r.allotment, r.low_threshold_pct
    FROM unnest(t_account, t_lease, t_owner, t_exists, t_want, t_min, t_share_pct, t_ttl_ms)
         WITH ORDINALITY AS b(account, lease, owner, present, want, min, share_pct, ttl_ms, ord)
    LEFT JOIN LATERAL winston_lease_take(b.account, b.lease, b.owner, b.present, b.want, b.min, b.share_pct,
                                         b.ttl_ms) r ON true
    ORDER BY b.ord;
END
$$;
