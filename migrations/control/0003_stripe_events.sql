-- Stripe intake (`winston intake`): which webhook events were processed and,
-- per subscription, the newest state applied to its Tenant.
--
-- stripe_events: one row per processed event id. The row is inserted in the
-- same transaction as the bookkeeping below and committed only after the
-- Tenant write succeeded, so a delivery that failed (or a process killed
-- mid-way) leaves no row and Stripe's retry processes the event again; a
-- concurrent duplicate waits on the primary key and then sees it processed.
CREATE TABLE IF NOT EXISTS stripe_events (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    -- What intake did with it: created, updated, paused, deleted, ignored, ...
    outcome      TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- stripe_subscriptions: per subscription, the Tenant it feeds and the
-- `created` time of the newest event applied (older events never overwrite
-- newer state). delete_due_at keeps a pending grace-period deletion across
-- intake restarts.
CREATE TABLE IF NOT EXISTS stripe_subscriptions (
    subscription_id    TEXT PRIMARY KEY,
    customer_id        TEXT NOT NULL,
    namespace          TEXT NOT NULL,
    tenant             TEXT NOT NULL,
    last_event_created BIGINT NOT NULL DEFAULT 0,
    plan               TEXT,
    ended              BOOLEAN NOT NULL DEFAULT false,
    delete_due_at      TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS stripe_subscriptions_due
    ON stripe_subscriptions (delete_due_at) WHERE delete_due_at IS NOT NULL;
