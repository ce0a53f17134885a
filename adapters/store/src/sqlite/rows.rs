//! Row encoding for SQLite's write path: how timers, fires and outbox events
//! are bound as columns, and the chunked multi-row `INSERT` that writes a
//! commit's rows in a few statements instead of one round trip per row.
//! (Reading rows back is shared with PostgreSQL: [`crate::rows`].)
//!
//! Ids are bound as UUIDs, which sqlx stores as their 16 bytes: the column's
//! (memcmp) order is the id order, and index entries stay small.

use std::sync::Arc;

use minoots_core::event::OutboxEvent;
use minoots_core::timer::{FireRecord, TimerRecord};
use minoots_core::{StoreFailure, TimerId};
use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{AssertSqlSafe, Sqlite};

use crate::rows::{epoch_to_sql, optional_json, seq_to_sql, to_json};

/// A query with owned SQL and owned arguments.
pub(crate) type SqlQuery = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// The timer columns, in the order [`bind_timer`] binds them (and [`crate::rows::timer_select`] selects them).
pub(crate) const TIMER_COLUMNS: [&str; 21] = [
    "id",
    "tenant_id",
    "requested_by",
    "name",
    "status",
    "created_at_ms",
    "schedule",
    "misfire",
    "next_due_ms",
    "next_occurrence",
    "last_fired_at_ms",
    "cancelled_at_ms",
    "cancelled_by",
    "cancel_reason",
    "labels",
    "metadata",
    "action_bundle",
    "agent_binding",
    "idempotency_key",
    "request_fingerprint",
    "shard",
];

/// Number of columns in [`crate::rows::FIRE_SELECT`], the order [`bind_fire`] binds them.
pub(crate) const FIRE_COLUMN_COUNT: usize = 6;

/// The outbox columns, in the order [`bind_event`] binds them.
pub(crate) const OUTBOX_COLUMNS: &str = "seq, kind, tenant_id, timer_id, occurrence, created_at_ms, event";
/// Number of columns in [`OUTBOX_COLUMNS`].
pub(crate) const OUTBOX_COLUMN_COUNT: usize = 7;

/// A store failure for a database error, naming what was being done.
pub(crate) fn db_failure(doing: &str, error: sqlx::Error) -> StoreFailure {
    StoreFailure::Unknown(format!("sqlite {doing}: {error}"))
}

/// A timer id as text (JSON parameters: `unhex` turns it back into bytes).
pub(crate) fn id_hex(id: &TimerId) -> String {
    id.0.simple().to_string()
}

/// Binds one timer's columns, in [`TIMER_COLUMNS`] order.
pub(crate) fn bind_timer(query: SqlQuery, t: &TimerRecord) -> Result<SqlQuery, StoreFailure> {
    Ok(query
        .bind(t.id.0)
        .bind(t.tenant_id.as_str().to_owned())
        .bind(t.requested_by.clone())
        .bind(t.name.clone())
        .bind(t.status.as_str())
        .bind(t.created_at_ms)
        .bind(to_json("schedule", &t.schedule)?)
        .bind(t.misfire.as_str())
        .bind(t.next_due_ms)
        .bind(i64::from(t.next_occurrence))
        .bind(t.last_fired_at_ms)
        .bind(t.cancelled_at_ms)
        .bind(t.cancelled_by.clone())
        .bind(t.cancel_reason.clone())
        .bind(to_json("labels", &t.labels)?)
        .bind(optional_json("metadata", &t.metadata)?)
        .bind(optional_json("action bundle", &t.action_bundle)?)
        .bind(optional_json("agent binding", &t.agent_binding)?)
        .bind(t.idempotency_key.clone())
        .bind(t.request_fingerprint as i64)
        .bind(i64::from(t.shard)))
}

/// Binds one fire's columns, in [`crate::rows::FIRE_SELECT`] order.
pub(crate) fn bind_fire(query: SqlQuery, f: &FireRecord) -> Result<SqlQuery, StoreFailure> {
    Ok(query
        .bind(f.timer_id.0)
        .bind(i64::from(f.occurrence))
        .bind(f.due_ms)
        .bind(f.fired_at_ms)
        .bind(epoch_to_sql(f.epoch)?)
        .bind(f.node_id.clone()))
}

/// Binds one outbox row's columns, in [`OUTBOX_COLUMNS`] order; `json` is the
/// event already encoded.
pub(crate) fn bind_event(
    query: SqlQuery,
    (e, json): (&OutboxEvent, String),
) -> Result<SqlQuery, StoreFailure> {
    Ok(query
        .bind(seq_to_sql(e.seq)?)
        .bind(e.kind.as_str())
        .bind(e.tenant_id.as_str().to_owned())
        .bind(e.timer_id.to_string())
        .bind(i64::from(e.occurrence))
        .bind(e.occurred_at_ms)
        .bind(json))
}

/// Rows per statement, largest first: a batch of n rows is written as
/// `n / 128` statements of 128 rows, then 16-row statements, then single
/// rows. Only these three statement texts exist per table, so each is
/// prepared once per connection and reused (sqlx caches prepared statements).
const CHUNK_SIZES: [usize; 3] = [128, 16, 1];

/// The multi-row `INSERT` texts of one table, one per chunk size.
#[derive(Debug, Clone)]
pub(crate) struct BulkInsert {
    texts: [Arc<str>; CHUNK_SIZES.len()],
}

impl BulkInsert {
    /// `head` is `INSERT INTO t (cols) VALUES`; `tail` follows the value
    /// tuples (an `ON CONFLICT` clause, or empty).
    pub(crate) fn new(head: &str, columns: usize, tail: &str) -> Self {
        let tuple = format!("({})", vec!["?"; columns].join(","));
        let text = |rows: usize| -> Arc<str> {
            let values = vec![tuple.as_str(); rows].join(",");
            Arc::from(format!("{head} {values} {tail}"))
        };
        Self { texts: CHUNK_SIZES.map(text) }
    }

    /// Writes `rows`, binding each with `bind`.
    pub(crate) async fn run<T>(
        &self,
        conn: &mut SqliteConnection,
        doing: &str,
        rows: Vec<T>,
        bind: impl Fn(SqlQuery, T) -> Result<SqlQuery, StoreFailure>,
    ) -> Result<(), StoreFailure> {
        let mut remaining = rows.len();
        let mut rows = rows.into_iter();
        while remaining > 0 {
            let slot =
                CHUNK_SIZES.iter().position(|size| *size <= remaining).unwrap_or(CHUNK_SIZES.len() - 1);
            let size = CHUNK_SIZES[slot].min(remaining);
            let mut query: SqlQuery = sqlx::query(AssertSqlSafe(self.texts[slot].clone()));
            for row in rows.by_ref().take(size) {
                query = bind(query, row)?;
            }
            query.execute(&mut *conn).await.map_err(|e| db_failure(doing, e))?;
            remaining -= size;
        }
        Ok(())
    }
}
