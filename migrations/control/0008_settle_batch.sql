-- One statement per batch of settlements (issue 18: the proxy's added p99).
--
-- Once requests run on credit leases, a group-commit batch is settlements
-- only. In a transaction of its own it cost four round trips to the
-- database (BEGIN, lock the accounts, settle, COMMIT), each a wake-up of the
-- database and of the proxy on a busy machine. This function locks the
-- batch's accounts in id order (as the transaction did, so two proxies'
-- batches cannot deadlock) and settles every row with `winston_settle_any`
-- in the order given; called alone it is its own transaction, committed
-- (and flushed) before its answer: one round trip. The money rules are
-- `winston_settle_any`'s, unchanged. A row whose account is gone answers
-- NULLs, as the LEFT JOIN of the transaction's statement did.
CREATE FUNCTION winston_settle_batch(
    p_id UUID[], p_account TEXT[], p_model TEXT[], p_input BIGINT[], p_output BIGINT[], p_cost BIGINT[],
    p_outcome TEXT[], p_key TEXT[], p_cache_write BIGINT[], p_cache_read BIGINT[], p_tool_uses BIGINT[],
    p_estimated BOOLEAN[], p_lease UUID[], p_held BIGINT[])
RETURNS TABLE (debit BIGINT, balance BIGINT, reserved_after BIGINT, allotment BIGINT,
               low_threshold_pct INTEGER, inserted BIGINT, lease_left BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM accounts a WHERE a.id = ANY(p_account) ORDER BY a.id FOR UPDATE;
    RETURN QUERY
    SELECT r.debit, r.balance, r.reserved_after, r.allotment, r.low_threshold_pct, r.inserted, r.lease_left
    FROM unnest(p_id, p_account, p_model, p_input, p_output, p_cost, p_outcome, p_key, p_cache_write,
                p_cache_read, p_tool_uses, p_estimated, p_lease, p_held)
         WITH ORDINALITY AS b(id, account, model, input, output, cost, outcome, key, cache_write, cache_read,
                              tool_uses, estimated, lease, held, ord)
    LEFT JOIN LATERAL winston_settle_any(b.id, b.lease, b.held, b.account, b.model, b.input, b.output, b.cost,
                                         b.outcome, b.key, b.cache_write, b.cache_read, b.tool_uses,
                                         b.estimated) r ON true
    ORDER BY b.ord;
END
$$;
