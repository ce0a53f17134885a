-- MINOOTS standalone store (SQLite), schema version 1.
--
-- Connection pragmas (WAL, synchronous=FULL, foreign_keys, busy_timeout) are
-- set by the store on every connection; they cannot live in a migration,
-- which runs inside a transaction.

-- One row of store-wide counters, all changed only inside write transactions.
CREATE TABLE meta (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    -- Last outbox sequence number handed out (rows may be pruned; numbers are never reused).
    outbox_last_seq INTEGER NOT NULL,
    -- Every outbox row with seq <= this one is published.
    outbox_published_through INTEGER NOT NULL,
    -- Number of timers in status 'scheduled', maintained by every commit.
    pending_count INTEGER NOT NULL
);
INSERT INTO meta (id, outbox_last_seq, outbox_published_through, pending_count) VALUES (1, 0, 0, 0);

-- Leases: who may cancel and fire. The epoch is the fencing token, bumped at
-- every grant; a commit's cancels and fires apply only for the holder of
-- shard 0's lease, at its epoch, before it expires (store clock).
CREATE TABLE leases (
    shard INTEGER PRIMARY KEY NOT NULL,
    node_id TEXT NOT NULL,
    -- Where clients reach the holder (empty for a standalone Open).
    address TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    -- Store clock; 9223372036854775807 (never) for a standalone Open.
    expires_at_ms INTEGER NOT NULL
);

CREATE TABLE timers (
    -- The UUID's 16 bytes: their (memcmp) order is the id order, the listing order.
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    tenant_id TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    name TEXT,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'fired', 'cancelled')),
    created_at_ms INTEGER NOT NULL,
    -- The schedule, as JSON (the core's `Schedule` serialisation).
    schedule TEXT NOT NULL,
    misfire TEXT NOT NULL CHECK (misfire IN ('fire_once', 'fire_all', 'skip')),
    next_due_ms INTEGER NOT NULL,
    next_occurrence INTEGER NOT NULL,
    last_fired_at_ms INTEGER,
    cancelled_at_ms INTEGER,
    cancelled_by TEXT,
    cancel_reason TEXT,
    -- JSON object of string labels.
    labels TEXT NOT NULL,
    -- Client JSON kept as is (NULL when absent).
    metadata TEXT,
    action_bundle TEXT,
    agent_binding TEXT,
    idempotency_key TEXT,
    -- A u64 stored as the i64 with the same bits.
    request_fingerprint INTEGER NOT NULL,
    shard INTEGER NOT NULL
);
-- LoadDue: pending timers in (due, id) order. Partial: a timer leaves the
-- index when it fires or is cancelled, so history does not slow the due scan.
CREATE INDEX timers_due ON timers (next_due_ms, id) WHERE status = 'scheduled';
-- List: a tenant's timers in id order.
CREATE INDEX timers_tenant ON timers (tenant_id, id);
-- Idempotent create: one timer per (tenant, key).
CREATE UNIQUE INDEX timers_idempotency ON timers (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Recorded fires. The primary key is a second line of defence against a
-- double fire: a commit that tried to record an occurrence twice fails whole.
CREATE TABLE timer_fires (
    timer_id BLOB NOT NULL REFERENCES timers (id),
    occurrence INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    fired_at_ms INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    PRIMARY KEY (timer_id, occurrence)
) WITHOUT ROWID;

-- Transactional outbox: one row per event, written with the change.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    -- Hyphenated UUID text (the outbox is read by people and relays, never by id).
    timer_id TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    -- Store clock when written (for pruning published rows).
    created_at_ms INTEGER NOT NULL,
    -- The whole event as JSON (the core's `OutboxEvent` serialisation).
    event TEXT NOT NULL
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- API keys, stored as SHA-256 hashes (never the secret).
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    key_hash TEXT NOT NULL UNIQUE,
    -- JSON array of role names.
    roles TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
