//! Every SQL text the SQLite store runs, built once when the store opens.
//!
//! Texts that depend on column lists or on the multi-row chunk sizes are
//! built here from [`crate::rows`]; each is then prepared once per connection
//! and reused (sqlx caches prepared statements by text).

use std::sync::Arc;

use crate::rows::{
    BulkInsert, FIRE_COLUMN_COUNT, FIRE_COLUMNS, OUTBOX_COLUMN_COUNT, OUTBOX_COLUMNS, TIMER_COLUMNS,
    timer_columns,
};

/// The store's SQL.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    /// Timers whose `(tenant, idempotency key)` is in the JSON array `?1` of `[tenant, key]` pairs.
    pub timers_by_key: Arc<str>,
    /// Timers whose id is in the JSON array `?1` of hex ids.
    pub timers_by_id: Arc<str>,
    /// New timers (a duplicate id fails the statement, and so the commit).
    pub insert_timers: BulkInsert,
    /// Changed timers: existing rows get their mutable columns overwritten.
    pub update_timers: BulkInsert,
    /// Recorded fires.
    pub insert_fires: BulkInsert,
    /// Outbox rows.
    pub insert_outbox: BulkInsert,
    /// One timer of a tenant: `?1` id, `?2` tenant.
    pub get_timer: Arc<str>,
    /// A page of a tenant's timers.
    pub list_timers: Arc<str>,
}

impl Sql {
    pub(crate) fn new() -> Self {
        let columns = timer_columns("");
        let qualified = timer_columns("t");
        let insert_timers = format!("INSERT INTO timers ({columns}) VALUES");
        Self {
            timers_by_key: Arc::from(format!(
                "SELECT {qualified} FROM json_each(?1) AS k \
                 JOIN timers AS t ON t.tenant_id = k.value ->> 0 AND t.idempotency_key = k.value ->> 1"
            )),
            timers_by_id: Arc::from(format!(
                "SELECT {qualified} FROM json_each(?1) AS j JOIN timers AS t ON t.id = unhex(j.value)"
            )),
            insert_timers: BulkInsert::new(&insert_timers, TIMER_COLUMNS.len(), ""),
            update_timers: BulkInsert::new(
                &insert_timers,
                TIMER_COLUMNS.len(),
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
                 next_due_ms = excluded.next_due_ms, next_occurrence = excluded.next_occurrence, \
                 last_fired_at_ms = excluded.last_fired_at_ms, cancelled_at_ms = excluded.cancelled_at_ms, \
                 cancelled_by = excluded.cancelled_by, cancel_reason = excluded.cancel_reason",
            ),
            insert_fires: BulkInsert::new(
                &format!("INSERT INTO timer_fires ({FIRE_COLUMNS}) VALUES"),
                FIRE_COLUMN_COUNT,
                "",
            ),
            insert_outbox: BulkInsert::new(
                &format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES"),
                OUTBOX_COLUMN_COUNT,
                "",
            ),
            get_timer: Arc::from(format!("SELECT {columns} FROM timers WHERE id = ?1 AND tenant_id = ?2")),
            // ?1 tenant, ?2 exclusive id cursor (an empty blob = from the start), ?3 JSON array of
            // statuses or NULL for all, ?4 JSON object of required labels or NULL, ?5 limit.
            list_timers: Arc::from(format!(
                "SELECT {columns} FROM timers \
                 WHERE tenant_id = ?1 AND id > ?2 \
                 AND (?3 IS NULL OR status IN (SELECT value FROM json_each(?3))) \
                 AND (?4 IS NULL OR NOT EXISTS ( \
                     SELECT 1 FROM json_each(?4) AS f WHERE NOT EXISTS ( \
                         SELECT 1 FROM json_each(timers.labels) AS l \
                         WHERE l.key = f.key AND l.value = f.value))) \
                 ORDER BY id LIMIT ?5"
            )),
        }
    }
}

/// The outbox sequence counter a commit reads.
pub(crate) const READ_META: &str = "SELECT outbox_last_seq FROM meta WHERE id = 1";

/// A commit's counter changes: `?1` last outbox seq, `?2` change in pending timers.
pub(crate) const WRITE_META: &str =
    "UPDATE meta SET outbox_last_seq = ?1, pending_count = pending_count + ?2 WHERE id = 1";

/// Pending timers due by `?1`, after `(?2, ?3)` in (due, id) order, at most `?4`.
pub(crate) const LOAD_DUE: &str = "SELECT id, next_occurrence, next_due_ms, schedule, misfire, tenant_id \
     FROM timers WHERE status = 'scheduled' AND next_due_ms <= ?1 AND (next_due_ms, id) > (?2, ?3) \
     ORDER BY next_due_ms, id LIMIT ?4";

/// Whether timer `?1` exists in tenant `?2`.
pub(crate) const TIMER_EXISTS: &str = "SELECT 1 FROM timers WHERE id = ?1 AND tenant_id = ?2";

/// Fires of timer `?1` after occurrence `?2`, at most `?3`.
pub(crate) const LIST_FIRES: &str = "SELECT timer_id, occurrence, due_ms, fired_at_ms, epoch, node_id \
     FROM timer_fires WHERE timer_id = ?1 AND occurrence > ?2 ORDER BY occurrence LIMIT ?3";

/// Unpublished outbox rows after `?1`, at most `?2`.
macro_rules! unpublished {
    () => {
        "FROM outbox WHERE seq > max(?1, (SELECT outbox_published_through FROM meta WHERE id = 1)) \
         ORDER BY seq LIMIT ?2"
    };
}

/// The [`unpublished!`] rows' events.
pub(crate) const OUTBOX_UNPUBLISHED: &str = concat!("SELECT event ", unpublished!());

/// The [`unpublished!`] rows' sequence numbers only.
pub(crate) const OUTBOX_UNPUBLISHED_SEQS: &str = concat!("SELECT seq ", unpublished!());

/// Moves the published watermark up to `?1` (never down).
pub(crate) const MARK_PUBLISHED: &str =
    "UPDATE meta SET outbox_published_through = max(outbox_published_through, ?1) WHERE id = 1";

/// The published watermark.
pub(crate) const PUBLISHED_THROUGH: &str = "SELECT outbox_published_through FROM meta WHERE id = 1";

/// The oldest outbox row.
pub(crate) const OUTBOX_FIRST_SEQ: &str = "SELECT min(seq) FROM outbox";

/// The first outbox row written at or after `?1` (rows are written in seq order).
pub(crate) const OUTBOX_FIRST_RECENT: &str =
    "SELECT seq FROM outbox WHERE created_at_ms >= ?1 ORDER BY seq LIMIT 1";

/// Deletes outbox rows up to `?1`.
pub(crate) const OUTBOX_PRUNE: &str = "DELETE FROM outbox WHERE seq <= ?1";

/// Number of scheduled timers.
pub(crate) const COUNT_PENDING: &str = "SELECT pending_count FROM meta WHERE id = 1";

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
/// quota usage). One text for SQLite and PostgreSQL; it reads the tenant's
/// rows through `timers_tenant`, and runs only when a quota needs a count.
pub(crate) const TENANT_USAGE: &str = "SELECT count(*) FILTER (WHERE status = 'scheduled'), \
     count(*) FILTER (WHERE created_at_ms >= $2) FROM timers WHERE tenant_id = $1";
