-- MINOOTS action store (SQLite, its own file beside the timer store so
-- delivery bookkeeping never waits on timer commits), schema version 1.

-- Deliveries: one row per (timer, occurrence, action), keyed by the
-- idempotency key every attempt carries. A durable work queue: the runner
-- claims due pending rows, runs them, records each attempt.
CREATE TABLE deliveries (
    idempotency_key TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    timer_id TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    action_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- The action and its bundle's retry policy, as JSON (core `Action`, `RetryPolicy`).
    action TEXT NOT NULL,
    retry_policy TEXT NOT NULL,
    -- The fire's event envelope, as JSON (the default body / payload).
    envelope TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'dead')),
    -- Attempts made in all, and since the delivery was queued or last replayed.
    attempts BIGINT NOT NULL,
    round_attempts BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    -- A runner working on it holds it until then (a crashed runner's claim lapses).
    claimed_until_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_ms) WHERE status = 'pending';
CREATE INDEX deliveries_timer ON deliveries (tenant_id, timer_id);

-- Every attempt, for the delivery history API.
CREATE TABLE delivery_attempts (
    idempotency_key TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    tenant_id TEXT NOT NULL,
    timer_id TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    action_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    -- succeeded | retry | failed (no attempt left, or not retryable)
    outcome TEXT NOT NULL,
    status_code BIGINT,
    error TEXT,
    -- Response body or program output (tail).
    output TEXT,
    runner TEXT NOT NULL,
    PRIMARY KEY (idempotency_key, attempt)
);
CREATE INDEX delivery_attempts_timer ON delivery_attempts (tenant_id, timer_id, started_at_ms);

-- The dead-letter queue: deliveries that used up their attempts.
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY NOT NULL,
    idempotency_key TEXT NOT NULL REFERENCES deliveries (idempotency_key),
    tenant_id TEXT NOT NULL,
    timer_id TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    action_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    dead_at_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT,
    replayed_at_ms BIGINT
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_id, id);
