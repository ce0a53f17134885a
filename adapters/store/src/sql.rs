//! The SQL texts both stores run word for word: reads, counters, outbox
//! pruning, tenants and API keys. Parameters are numbered (`$1`), which
//! PostgreSQL requires and SQLite accepts; values a dialect types differently
//! are selected in a form both return alike (`CAST(… AS TEXT)`, see
//! [`crate::rows`]), and ids are bound as UUIDs on both.
//!
//! A statement has a per-dialect twin only where the databases must differ,
//! each twin saying why at its top: the write path (SQLite's multi-row
//! `VALUES` against PostgreSQL's `UNNEST` arrays), locking (PostgreSQL's row
//! locks serialise commits and takeovers; SQLite has one writer), the JSON a
//! filter or a batch of keys is passed as (`json_each` against arrays and
//! `@>`), and where the outbox watermark lives (a row of its own on
//! PostgreSQL, so that marking never waits behind a commit).

use std::sync::LazyLock;

use crate::rows::{DUE_SELECT, FIRE_SELECT, KEY_SELECT, timer_select};

/// One timer of a tenant: `$1` id, `$2` tenant.
pub(crate) static GET_TIMER: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM timers WHERE id = $1 AND tenant_id = $2", timer_select("")));

/// Whether timer `$1` exists in tenant `$2`.
pub(crate) const TIMER_EXISTS: &str = "SELECT 1 FROM timers WHERE id = $1 AND tenant_id = $2";

/// Fires of timer `$1` after occurrence `$2`, at most `$3`.
pub(crate) static LIST_FIRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {FIRE_SELECT} FROM timer_fires WHERE timer_id = $1 AND occurrence > $2 \
         ORDER BY occurrence LIMIT $3"
    )
});

/// Pending timers due by `$1`, after `($2, $3)` in (due, id) order, at most
/// `$4`: a range scan of the partial index `timers_due` on both databases
/// (the predicate repeats the index's word for word).
pub(crate) static LOAD_DUE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {DUE_SELECT} FROM timers \
         WHERE status = 'scheduled' AND next_due_ms <= $1 AND (next_due_ms, id) > ($2, $3) \
         ORDER BY next_due_ms, id LIMIT $4"
    )
});

/// Number of scheduled timers (the counter every commit maintains).
pub(crate) const COUNT_PENDING: &str = "SELECT pending_count FROM meta WHERE id = 1";

/// A commit's counter changes: `$1` last outbox seq, `$2` change in pending timers.
pub(crate) const WRITE_META: &str =
    "UPDATE meta SET outbox_last_seq = $1, pending_count = pending_count + $2 WHERE id = 1";

/// What pruning reads of the outbox, in one round trip: the published
/// watermark (`$watermark`: where the dialect keeps it), the oldest row, and
/// the first row written at or after `$1` ms of the store clock (rows are
/// written in seq order) — an [`crate::outbox_retention::OutboxExtent`].
macro_rules! outbox_extent {
    ($watermark:literal) => {
        concat!(
            "SELECT (",
            $watermark,
            "), (SELECT min(seq) FROM outbox), \
             (SELECT seq FROM outbox WHERE created_at_ms >= $1 ORDER BY seq LIMIT 1)"
        )
    };
}

/// [`outbox_extent!`] for SQLite, whose watermark is a column of `meta`.
pub(crate) const OUTBOX_EXTENT_SQLITE: &str =
    outbox_extent!("SELECT outbox_published_through FROM meta WHERE id = 1");

/// [`outbox_extent!`] for PostgreSQL, whose watermark has a row of its own.
pub(crate) const OUTBOX_EXTENT_POSTGRES: &str =
    outbox_extent!("SELECT through FROM outbox_published WHERE id = 1");

/// Deletes outbox rows up to `$1`.
pub(crate) const OUTBOX_PRUNE: &str = "DELETE FROM outbox WHERE seq <= $1";

/// A tenant's own quota limits (no row or NULL: the operator's default).
pub(crate) const TENANT_QUOTA: &str =
    "SELECT quota_pending_timers, quota_daily_creates, quota_requests_per_second FROM tenants WHERE id = $1";

/// Replaces a tenant's own quota limits, creating the tenant if needed.
pub(crate) const SET_TENANT_QUOTA: &str = "INSERT INTO tenants \
     (id, created_at_ms, quota_pending_timers, quota_daily_creates, quota_requests_per_second) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
     quota_pending_timers = excluded.quota_pending_timers, quota_daily_creates = excluded.quota_daily_creates, \
     quota_requests_per_second = excluded.quota_requests_per_second";

/// One tenant's pending timers and timers created at or after `$2` (its
/// quota usage). It reads the tenant's rows through `timers_tenant`, and
/// runs only when a quota needs a count.
pub(crate) const TENANT_USAGE: &str = "SELECT count(*) FILTER (WHERE status = 'scheduled'), \
     count(*) FILTER (WHERE created_at_ms >= $2) FROM timers WHERE tenant_id = $1";

/// The live API key whose hash is `$1`.
pub(crate) static FIND_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {KEY_SELECT} FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL ORDER BY id LIMIT 1"
    )
});

/// Every API key of tenant `$1` (NULL: of every tenant), by id.
pub(crate) static LIST_KEYS: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {KEY_SELECT} FROM api_keys WHERE CAST($1 AS TEXT) IS NULL OR tenant_id = $1 ORDER BY id")
});

/// Records tenant `$1` (created at `$2`) unless it exists.
pub(crate) const INSERT_TENANT: &str =
    "INSERT INTO tenants (id, created_at_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

/// Stores an API key (inserting an existing id replaces that key): `$1` id,
/// `$2` tenant, `$3` hash, `$4` roles (JSON text, as `$roles` reads it), `$5`
/// label, `$6` created, `$7` revoked.
macro_rules! upsert_key {
    ($roles:literal) => {
        concat!(
            "INSERT INTO api_keys (id, tenant_id, key_hash, roles, label, created_at_ms, revoked_at_ms) \
             VALUES ($1, $2, $3, ",
            $roles,
            ", $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, key_hash = excluded.key_hash, \
             roles = excluded.roles, label = excluded.label, created_at_ms = excluded.created_at_ms, \
             revoked_at_ms = excluded.revoked_at_ms"
        )
    };
}

/// [`upsert_key!`] for SQLite, whose `roles` column is text.
pub(crate) const UPSERT_KEY_SQLITE: &str = upsert_key!("$4");

/// [`upsert_key!`] for PostgreSQL, whose `roles` column is `jsonb` (SQLite
/// would read a cast to `jsonb` as one to a number).
pub(crate) const UPSERT_KEY_POSTGRES: &str = upsert_key!("CAST($4 AS jsonb)");

/// Revokes live key `$1` at `$2`.
pub(crate) const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL";

/// Number of API keys.
pub(crate) const COUNT_KEYS: &str = "SELECT count(*) FROM api_keys";
