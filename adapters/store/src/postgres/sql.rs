//! The SQL texts only the PostgreSQL store runs; the rest are shared with
//! SQLite ([`crate::sql`]). These differ because PostgreSQL must, or can do
//! better:
//!
//! - **the write path**: batches are bound as arrays and expanded with
//!   `UNNEST`, so one statement writes any number of rows;
//! - **locking**: several nodes share the database, so a commit locks the
//!   meta row (serialising commits) and reads the lease `FOR KEY SHARE`,
//!   a takeover locks it `FOR UPDATE` (SQLite has one writer instead);
//! - **the store clock** is the database's (`coalesce($n, clock_timestamp())`);
//! - **batches of keys and filters** are arrays and `@>` (SQLite reads JSON
//!   with `json_each`);
//! - **the outbox watermark** is a row of its own, so that marking never
//!   waits behind a commit holding the meta row.
//!
//! Each is a constant text with numbered parameters, so the server prepares
//! it once per connection (sqlx caches prepared statements by text).
//!
//! **The store clock.** Every statement that needs the store's "now" takes it
//! as `coalesce($n::bigint, <database clock>)`: the store binds NULL in
//! production (the database clock decides) and the injected clock's reading
//! in tests (the conformance suite's manual clock). The database clock is
//! `clock_timestamp()` (the real time when the expression runs, not the
//! transaction's start) in whole milliseconds, rounded **down**, so that a
//! fire recorded at `now` is never before its due time and a lease expiring at
//! `E` is over exactly when the true time reaches `E`.

use std::sync::LazyLock;

use crate::rows::timer_select;

/// The database clock in milliseconds since the Unix epoch, rounded down.
macro_rules! db_now {
    () => {
        "floor(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// The store clock: `$1` when bound, else the database clock.
pub(crate) const STORE_NOW: &str = concat!("SELECT coalesce($1::bigint, ", db_now!(), ")");

/// Locks the meta row (serialising commits) and returns the last outbox
/// sequence number and the store clock, read after the lock is held (`$1`:
/// injected clock or NULL).
pub(crate) const LOCK_META: &str = concat!(
    "UPDATE meta SET outbox_last_seq = outbox_last_seq WHERE id = 1 ",
    "RETURNING outbox_last_seq, coalesce($1::bigint, ",
    db_now!(),
    ")"
);

/// The lease of shard `$1`, for a commit's fencing check. `FOR KEY SHARE`
/// conflicts with the takeover's `FOR UPDATE` (so a takeover and a commit
/// serialise) but not with the holder's own renewal, which updates non-key
/// columns only (`FOR NO KEY UPDATE`): a renewal never waits behind a commit.
pub(crate) const LEASE_FOR_COMMIT: &str =
    "SELECT node_id, address, epoch, expires_at_ms, tenure FROM leases WHERE shard = $1 FOR KEY SHARE";

/// The lease of shard `$1`, locked for a takeover (`AcquireLease`, `Open`).
pub(crate) const LEASE_FOR_TAKEOVER: &str =
    "SELECT node_id, address, epoch, expires_at_ms, tenure FROM leases WHERE shard = $1 FOR UPDATE";

/// The lease of shard `$1`, locked for its holder's renewal.
pub(crate) const LEASE_FOR_RENEWAL: &str =
    "SELECT node_id, address, epoch, expires_at_ms, tenure FROM leases WHERE shard = $1 FOR NO KEY UPDATE";

/// Makes sure shard `$1` has a lease row to lock (epoch 0: never granted).
pub(crate) const LEASE_PLACEHOLDER: &str = "INSERT INTO leases (shard, node_id, address, epoch, expires_at_ms) \
     VALUES ($1, '', '', 0, -9223372036854775808) ON CONFLICT (shard) DO NOTHING";

/// Writes a grant: `$1` shard, `$2` holder, `$3` address, `$4` epoch, `$5` expiry, `$6` tenure.
pub(crate) const WRITE_LEASE: &str = "UPDATE leases SET node_id = $2, address = $3, epoch = $4, \
     expires_at_ms = $5, tenure = $6 WHERE shard = $1";

/// Extends a lease: `$1` shard, `$2` expiry.
pub(crate) const EXTEND_LEASE: &str = "UPDATE leases SET expires_at_ms = $2 WHERE shard = $1";

/// The columns `UNNEST` expands for new timers, in [`crate::postgres::rows::TimerColumns`] order.
const TIMER_UNNEST: &str = "UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::int8[], $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], \
     $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], \
     $20::int8[], $21::int8[])";

/// New timers (a duplicate id fails the statement, and so the commit).
pub(crate) static INSERT_TIMERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO timers (id, tenant_id, requested_by, name, status, created_at_ms, schedule, misfire, \
         next_due_ms, next_occurrence, last_fired_at_ms, cancelled_at_ms, cancelled_by, cancel_reason, \
         labels, metadata, action_bundle, agent_binding, idempotency_key, request_fingerprint, shard) \
         SELECT id, tenant_id, requested_by, name, status, created_at_ms, schedule::jsonb, misfire, \
         next_due_ms, next_occurrence, last_fired_at_ms, cancelled_at_ms, cancelled_by, cancel_reason, \
         labels::jsonb, metadata::json, action_bundle::json, agent_binding::json, idempotency_key, \
         request_fingerprint, shard \
         FROM {TIMER_UNNEST} AS u(id, tenant_id, requested_by, name, status, created_at_ms, schedule, \
         misfire, next_due_ms, next_occurrence, last_fired_at_ms, cancelled_at_ms, cancelled_by, \
         cancel_reason, labels, metadata, action_bundle, agent_binding, idempotency_key, \
         request_fingerprint, shard)"
    )
});

/// Changed timers: their mutable columns, by id.
pub(crate) const UPDATE_TIMERS: &str = "UPDATE timers AS t SET status = u.status, \
     next_due_ms = u.next_due_ms, next_occurrence = u.next_occurrence, \
     last_fired_at_ms = u.last_fired_at_ms, cancelled_at_ms = u.cancelled_at_ms, \
     cancelled_by = u.cancelled_by, cancel_reason = u.cancel_reason \
     FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::text[], \
     $8::text[]) AS u(id, status, next_due_ms, next_occurrence, last_fired_at_ms, cancelled_at_ms, \
     cancelled_by, cancel_reason) WHERE t.id = u.id";

/// Recorded fires (the primary key refuses a second record of an occurrence).
pub(crate) const INSERT_FIRES: &str = "INSERT INTO timer_fires \
     (timer_id, occurrence, due_ms, fired_at_ms, epoch, node_id) \
     SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::text[])";

/// Outbox rows.
pub(crate) const INSERT_OUTBOX: &str = "INSERT INTO outbox \
     (seq, kind, tenant_id, timer_id, occurrence, created_at_ms, event) \
     SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::uuid[], $5::int8[], $6::int8[], \
     $7::text[])";

/// Timers whose `(tenant, idempotency key)` is among the pairs `($1[i], $2[i])`.
pub(crate) static TIMERS_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM UNNEST($1::text[], $2::text[]) AS k(tenant_id, idempotency_key) \
         JOIN timers AS t ON t.tenant_id = k.tenant_id AND t.idempotency_key = k.idempotency_key",
        timer_select("t")
    )
});

/// Timers whose id is in `$1`.
pub(crate) static TIMERS_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM timers WHERE id = ANY($1::uuid[])", timer_select("")));

/// A page of a tenant's timers: `$1` tenant, `$2` exclusive id cursor (the
/// nil UUID, which no timer has, from the start: a range condition on the
/// `timers_tenant` index either way), `$3` statuses or NULL for all, `$4` required labels as a
/// JSON object or NULL, `$5` limit.
pub(crate) static LIST_TIMERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM timers \
         WHERE tenant_id = $1 AND id > $2 \
         AND ($3::text[] IS NULL OR status = ANY($3::text[])) \
         AND ($4::jsonb IS NULL OR labels @> $4::jsonb) \
         ORDER BY id LIMIT $5",
        timer_select("")
    )
});

/// Unpublished outbox rows after `$1`, at most `$2`.
macro_rules! unpublished {
    () => {
        "FROM outbox WHERE seq > greatest($1, (SELECT through FROM outbox_published WHERE id = 1)) \
         ORDER BY seq LIMIT $2"
    };
}

/// The [`unpublished!`] rows' events.
pub(crate) const OUTBOX_UNPUBLISHED: &str = concat!("SELECT event ", unpublished!());

/// The [`unpublished!`] rows' sequence numbers only.
pub(crate) const OUTBOX_UNPUBLISHED_SEQS: &str = concat!("SELECT seq ", unpublished!());

/// Moves the published watermark up to `$1` (never down).
pub(crate) const MARK_PUBLISHED: &str =
    "UPDATE outbox_published SET through = greatest(through, $1) WHERE id = 1";
