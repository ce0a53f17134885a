-- MINOOTS cluster store (PostgreSQL), schema version 1.
--
-- Several nodes share this database. Leases (table `leases`) decide which of
-- them may cancel and fire; the database clock judges them. Every commit that
-- cancels or fires locks its lease row FOR SHARE and checks holder, epoch and
-- expiry in the same transaction, so a takeover (which locks the row FOR
-- UPDATE) serialises with it. Unsigned Rust integers (u32 occurrences and
-- shards, u64 epochs and fingerprints) are stored as bigint; a u64
-- fingerprint keeps its bits as the i64 with the same bits.

-- One row of store-wide counters. Every commit locks it first (UPDATE), so
-- commits serialise and outbox sequence numbers are handed out in commit
-- order: a relay that reads "every row after seq N" never misses a row that
-- commits later with a smaller number (a bigserial could).
CREATE TABLE meta (
    id smallint PRIMARY KEY CHECK (id = 1),
    -- Last outbox sequence number handed out (rows may be pruned; numbers are never reused).
    outbox_last_seq bigint NOT NULL,
    -- Number of timers in status 'scheduled', maintained by every commit.
    pending_count bigint NOT NULL
);
INSERT INTO meta (id, outbox_last_seq, pending_count) VALUES (1, 0, 0);

-- The relay's watermark: every outbox row with seq <= `through` is published.
-- A row of its own, so that marking rows published never waits for a commit
-- holding the meta row.
CREATE TABLE outbox_published (
    id smallint PRIMARY KEY CHECK (id = 1),
    through bigint NOT NULL
);
INSERT INTO outbox_published (id, through) VALUES (1, 0);

-- Leases: who may cancel and fire. The epoch is the fencing token, bumped at
-- every grant. Times are database-clock milliseconds since the Unix epoch.
-- A row with epoch 0 and an empty holder is "never granted" (the lease
-- operations insert it so that concurrent first acquisitions lock one row).
CREATE TABLE leases (
    shard bigint PRIMARY KEY,
    node_id text NOT NULL,
    -- Where clients reach the holder (the leader hint followers give out).
    address text NOT NULL,
    epoch bigint NOT NULL,
    -- 9223372036854775807 (never) for a standalone Open.
    expires_at_ms bigint NOT NULL
);

CREATE TABLE timers (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    requested_by text NOT NULL,
    name text,
    status text NOT NULL CHECK (status IN ('scheduled', 'fired', 'cancelled')),
    created_at_ms bigint NOT NULL,
    -- The core's `Schedule` serialisation.
    schedule jsonb NOT NULL,
    misfire text NOT NULL CHECK (misfire IN ('fire_once', 'fire_all', 'skip')),
    next_due_ms bigint NOT NULL,
    next_occurrence bigint NOT NULL,
    last_fired_at_ms bigint,
    cancelled_at_ms bigint,
    cancelled_by text,
    cancel_reason text,
    -- Object of string labels (filtered with @>).
    labels jsonb NOT NULL,
    -- Client JSON, kept as the exact text (SQL NULL when absent; JSON null is
    -- kept as JSON null). `json`, not `jsonb`: jsonb stores numbers as
    -- numeric and turns a float such as 1e16 into the integer
    -- 10000000000000000, and it rejects the escape \u0000; clients get
    -- their JSON back as they sent it.
    metadata json,
    action_bundle json,
    agent_binding json,
    idempotency_key text,
    request_fingerprint bigint NOT NULL,
    -- Virtual shard (hash of the id): leases per shard range can split the firing later.
    shard bigint NOT NULL
);
-- LoadDue: pending timers in (due, id) order, an index range scan. Partial: a
-- timer leaves the index when it fires or is cancelled, so history does not
-- slow the due scan.
CREATE INDEX timers_due ON timers (next_due_ms, id) WHERE status = 'scheduled';
-- List: a tenant's timers in id order.
CREATE INDEX timers_tenant ON timers (tenant_id, id);
-- Idempotent create: one timer per (tenant, key).
CREATE UNIQUE INDEX timers_idempotency ON timers (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Recorded fires. The primary key is a second line of defence against a
-- double fire: a commit that tried to record an occurrence twice fails whole.
CREATE TABLE timer_fires (
    timer_id uuid NOT NULL REFERENCES timers (id),
    occurrence bigint NOT NULL,
    due_ms bigint NOT NULL,
    fired_at_ms bigint NOT NULL,
    epoch bigint NOT NULL,
    node_id text NOT NULL,
    PRIMARY KEY (timer_id, occurrence)
);

-- Transactional outbox: one row per event, written with the change.
CREATE TABLE outbox (
    seq bigint PRIMARY KEY,
    kind text NOT NULL,
    tenant_id text NOT NULL,
    timer_id uuid NOT NULL,
    occurrence bigint NOT NULL,
    -- Database clock when written (for pruning published rows).
    created_at_ms bigint NOT NULL,
    -- The whole event as JSON text (the core's `OutboxEvent` serialisation).
    event text NOT NULL
);

CREATE TABLE tenants (
    id text PRIMARY KEY,
    created_at_ms bigint NOT NULL
);

-- API keys, stored as SHA-256 hashes (never the secret).
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (id),
    key_hash text NOT NULL UNIQUE,
    -- JSON array of role names.
    roles jsonb NOT NULL,
    label text NOT NULL,
    created_at_ms bigint NOT NULL,
    revoked_at_ms bigint
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
