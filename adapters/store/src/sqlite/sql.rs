//! The SQL texts only the SQLite store runs; the rest are shared with
//! PostgreSQL ([`crate::sql`]). These differ because SQLite must:
//!
//! - **the write path**: rows are written with multi-row `VALUES` lists in a
//!   few chunk sizes (SQLite has no arrays to `UNNEST`), built once when the
//!   store opens from [`super::rows`];
//! - **batches of keys and filters** arrive as one JSON array or object read
//!   with `json_each` (PostgreSQL binds arrays and uses `@>`);
//! - **the commit's counter read** is a plain read: SQLite has one writer, so
//!   nothing needs locking (PostgreSQL locks the meta row);
//! - **the outbox watermark** is a column of `meta` (PostgreSQL gives it a
//!   row of its own so that marking never waits behind a commit).
//!
//! Each text is prepared once per connection and reused (sqlx caches
//! prepared statements by text).

use std::sync::Arc;

use super::rows::{BulkInsert, FIRE_COLUMN_COUNT, OUTBOX_COLUMN_COUNT, OUTBOX_COLUMNS, TIMER_COLUMNS};
use crate::rows::{FIRE_SELECT, timer_select};

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
    /// A page of a tenant's timers.
    pub list_timers: Arc<str>,
}

impl Sql {
    pub(crate) fn new() -> Self {
        let qualified = timer_select("t");
        let insert_timers = format!("INSERT INTO timers ({}) VALUES", TIMER_COLUMNS.join(", "));
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
                &format!("INSERT INTO timer_fires ({FIRE_SELECT}) VALUES"),
                FIRE_COLUMN_COUNT,
                "",
            ),
            insert_outbox: BulkInsert::new(
                &format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES"),
                OUTBOX_COLUMN_COUNT,
                "",
            ),
            // ?1 tenant, ?2 exclusive id cursor (the nil UUID, which no timer has, from the start), ?3 JSON array of
            // statuses or NULL for all, ?4 JSON object of required labels or NULL, ?5 limit.
            list_timers: Arc::from(format!(
                "SELECT {} FROM timers \
                 WHERE tenant_id = ?1 AND id > ?2 \
                 AND (?3 IS NULL OR status IN (SELECT value FROM json_each(?3))) \
                 AND (?4 IS NULL OR NOT EXISTS ( \
                     SELECT 1 FROM json_each(?4) AS f WHERE NOT EXISTS ( \
                         SELECT 1 FROM json_each(timers.labels) AS l \
                         WHERE l.key = f.key AND l.value = f.value))) \
                 ORDER BY id LIMIT ?5",
                timer_select("")
            )),
        }
    }
}

/// The outbox sequence counter a commit reads.
pub(crate) const READ_META: &str = "SELECT outbox_last_seq FROM meta WHERE id = 1";

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
