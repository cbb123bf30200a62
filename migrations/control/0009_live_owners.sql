-- The sweeper reads the live proxy sessions once per sweep (issue 18: the
-- proxy's added p99).
--
-- `winston_owner_alive` reads `pg_locks`, and reading `pg_locks` takes every
-- lock-manager partition lock and every backend's fast-path lock in turn:
-- while it runs, no other transaction can take or release a heavyweight
-- lock. The sweep called it once per reservation row (every lease and every
-- hold in flight), which cost 5-10 ms every 2 s at 1,000 requests/s and held
-- up every settlement committing meanwhile. `winston_live_owners` is the one
-- read; the sweep joins against it, and `winston_owner_alive` (one owner,
-- on an idempotency key's conflict) is defined by it, so both agree on what
-- a live session is.
CREATE FUNCTION winston_live_owners() RETURNS SETOF INTEGER
LANGUAGE sql STABLE AS $$
    SELECT l.objid::bigint::integer FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = 1464421971::oid              -- 'WINS': Winston's advisory-lock class
      AND l.objsubid = 2
$$;

CREATE OR REPLACE FUNCTION winston_owner_alive(p_owner INTEGER) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT p_owner IS NULL OR p_owner IN (SELECT winston_live_owners())
$$;
