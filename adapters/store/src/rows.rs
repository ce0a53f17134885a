//! Row encoding: how timers, fires and outbox events map to SQLite columns
//! and back, and the chunked multi-row `INSERT` used to write a commit's rows
//! in a few statements instead of one round trip per row.
//!
//! Every conversion is exact: reading a row back gives the record that was
//! written (the conformance suite compares whole records with the model's).
//! Integers that are unsigned in Rust (`request_fingerprint`, occurrences,
//! shards) are stored as SQLite's signed 64-bit integers; `u64` values keep
//! their bits (`as i64` and back).

use std::collections::BTreeMap;
use std::sync::Arc;

use minoots_core::event::OutboxEvent;
use minoots_core::quota::QuotaLimits;
use minoots_core::timer::{FireRecord, MisfirePolicy, Schedule, TimerRecord, TimerStatus};
use minoots_core::{StoreFailure, TenantId, TimerId};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row, Sqlite};

/// A query with owned SQL and owned arguments.
pub(crate) type SqlQuery = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

/// The timer columns, in the order [`bind_timer`] binds and [`timer_from_row`] reads them.
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

/// The timer column list for SQL, each qualified with `table.` when `table` is not empty.
pub(crate) fn timer_columns(table: &str) -> String {
    let dot = if table.is_empty() { "" } else { "." };
    TIMER_COLUMNS.iter().map(|c| format!("{table}{dot}{c}")).collect::<Vec<_>>().join(", ")
}

/// The fire columns, in the order [`bind_fire`] binds and [`fire_from_row`] reads them.
pub(crate) const FIRE_COLUMNS: &str = "timer_id, occurrence, due_ms, fired_at_ms, epoch, node_id";
/// Number of columns in [`FIRE_COLUMNS`].
pub(crate) const FIRE_COLUMN_COUNT: usize = 6;

/// The outbox columns, in the order [`bind_event`] binds them.
pub(crate) const OUTBOX_COLUMNS: &str = "seq, kind, tenant_id, timer_id, occurrence, created_at_ms, event";
/// Number of columns in [`OUTBOX_COLUMNS`].
pub(crate) const OUTBOX_COLUMN_COUNT: usize = 7;

/// A store failure for a row that cannot be decoded.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreFailure {
    StoreFailure::Unknown(format!("corrupt {what} in the database: {detail}"))
}

/// A store failure for a database error, naming what was being done.
pub(crate) fn db_failure(doing: &str, error: sqlx::Error) -> StoreFailure {
    StoreFailure::Unknown(format!("sqlite {doing}: {error}"))
}

fn to_json<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> Result<String, StoreFailure> {
    serde_json::to_string(value).map_err(|e| StoreFailure::Unknown(format!("encoding {what} as JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreFailure> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

fn optional_json(what: &str, value: &Option<serde_json::Value>) -> Result<Option<String>, StoreFailure> {
    value.as_ref().map(|v| to_json(what, v)).transpose()
}

/// A timer id as stored: its 16 bytes, so that the column's (memcmp) order is
/// the id order, and index entries stay small.
pub(crate) fn id_bytes(id: &TimerId) -> Vec<u8> {
    id.0.as_bytes().to_vec()
}

/// A timer id as text (outbox rows, JSON parameters: `unhex` turns it back into bytes).
pub(crate) fn id_hex(id: &TimerId) -> String {
    id.0.simple().to_string()
}

/// Reads a timer id column.
pub(crate) fn id_from_bytes(bytes: &[u8]) -> Result<TimerId, StoreFailure> {
    uuid::Uuid::from_slice(bytes).map(TimerId).map_err(|e| corrupt("timer id", e))
}

/// Rebuilds a tenant id exactly as it was stored (the store does not re-validate).
pub(crate) fn tenant_from_text(text: String) -> Result<TenantId, StoreFailure> {
    TenantId::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(text))
        .map_err(|e| corrupt("tenant id", e))
}

fn get<'r, T>(row: &'r SqliteRow, index: usize, what: &str) -> Result<T, StoreFailure>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(index).map_err(|e| corrupt(what, e))
}

fn u32_from(value: i64, what: &str) -> Result<u32, StoreFailure> {
    u32::try_from(value).map_err(|e| corrupt(what, e))
}

/// Binds one timer's columns, in [`TIMER_COLUMNS`] order.
pub(crate) fn bind_timer(query: SqlQuery, t: &TimerRecord) -> Result<SqlQuery, StoreFailure> {
    Ok(query
        .bind(id_bytes(&t.id))
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

/// Reads a timer from a row selected with [`timer_columns`].
pub(crate) fn timer_from_row(row: &SqliteRow) -> Result<TimerRecord, StoreFailure> {
    let status: String = get(row, 4, "timer status")?;
    let misfire: String = get(row, 7, "misfire policy")?;
    let schedule: String = get(row, 6, "schedule")?;
    let labels: String = get(row, 14, "labels")?;
    let optional = |index: usize, what: &str| -> Result<Option<serde_json::Value>, StoreFailure> {
        let text: Option<String> = get(row, index, what)?;
        text.map(|t| from_json(what, &t)).transpose()
    };
    Ok(TimerRecord {
        id: id_from_bytes(&get::<Vec<u8>>(row, 0, "timer id")?)?,
        tenant_id: tenant_from_text(get(row, 1, "tenant id")?)?,
        requested_by: get(row, 2, "requested_by")?,
        name: get(row, 3, "name")?,
        status: TimerStatus::parse(&status).ok_or_else(|| corrupt("timer status", &status))?,
        created_at_ms: get(row, 5, "created_at_ms")?,
        schedule: from_json::<Schedule>("schedule", &schedule)?,
        misfire: MisfirePolicy::parse(&misfire).ok_or_else(|| corrupt("misfire policy", &misfire))?,
        next_due_ms: get(row, 8, "next_due_ms")?,
        next_occurrence: u32_from(get(row, 9, "next_occurrence")?, "next_occurrence")?,
        last_fired_at_ms: get(row, 10, "last_fired_at_ms")?,
        cancelled_at_ms: get(row, 11, "cancelled_at_ms")?,
        cancelled_by: get(row, 12, "cancelled_by")?,
        cancel_reason: get(row, 13, "cancel_reason")?,
        labels: from_json::<BTreeMap<String, String>>("labels", &labels)?,
        metadata: optional(15, "metadata")?,
        action_bundle: optional(16, "action bundle")?,
        agent_binding: optional(17, "agent binding")?,
        idempotency_key: get(row, 18, "idempotency key")?,
        request_fingerprint: get::<i64>(row, 19, "request fingerprint")? as u64,
        shard: u32_from(get(row, 20, "shard")?, "shard")?,
    })
}

/// Reads a schedule column (for the due index, which needs no full record).
pub(crate) fn schedule_from_text(text: &str) -> Result<Schedule, StoreFailure> {
    from_json("schedule", text)
}

/// Parses a misfire column.
pub(crate) fn misfire_from_text(text: &str) -> Result<MisfirePolicy, StoreFailure> {
    MisfirePolicy::parse(text).ok_or_else(|| corrupt("misfire policy", text))
}

/// Reads an occurrence column.
pub(crate) fn occurrence_from(value: i64) -> Result<u32, StoreFailure> {
    u32_from(value, "occurrence")
}

/// Binds one fire's columns, in [`FIRE_COLUMNS`] order.
pub(crate) fn bind_fire(query: SqlQuery, f: &FireRecord) -> Result<SqlQuery, StoreFailure> {
    Ok(query
        .bind(id_bytes(&f.timer_id))
        .bind(i64::from(f.occurrence))
        .bind(f.due_ms)
        .bind(f.fired_at_ms)
        .bind(epoch_to_sql(f.epoch)?)
        .bind(f.node_id.clone()))
}

/// Reads a fire from a row selected with [`FIRE_COLUMNS`].
pub(crate) fn fire_from_row(row: &SqliteRow) -> Result<FireRecord, StoreFailure> {
    Ok(FireRecord {
        timer_id: id_from_bytes(&get::<Vec<u8>>(row, 0, "fire timer id")?)?,
        occurrence: u32_from(get(row, 1, "fire occurrence")?, "fire occurrence")?,
        due_ms: get(row, 2, "fire due_ms")?,
        fired_at_ms: get(row, 3, "fire fired_at_ms")?,
        epoch: epoch_from_sql(get(row, 4, "fire epoch")?)?,
        node_id: get(row, 5, "fire node id")?,
    })
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

/// Encodes an outbox event for its row.
pub(crate) fn event_json(event: &OutboxEvent) -> Result<String, StoreFailure> {
    to_json("outbox event", event)
}

/// Decodes an outbox row's event column.
pub(crate) fn event_from_text(text: &str) -> Result<OutboxEvent, StoreFailure> {
    from_json("outbox event", text)
}

/// An epoch as SQLite stores it.
pub(crate) fn epoch_to_sql(epoch: u64) -> Result<i64, StoreFailure> {
    i64::try_from(epoch).map_err(|_| StoreFailure::Unknown(format!("epoch {epoch} out of range")))
}

/// An epoch read back.
pub(crate) fn epoch_from_sql(value: i64) -> Result<u64, StoreFailure> {
    u64::try_from(value).map_err(|e| corrupt("epoch", e))
}

/// A sequence number as SQLite stores it.
pub(crate) fn seq_to_sql(seq: u64) -> Result<i64, StoreFailure> {
    i64::try_from(seq).map_err(|_| StoreFailure::Unknown(format!("outbox sequence {seq} out of range")))
}

/// A sequence number read back.
/// The `tenants` quota columns (pending timers, daily creates, requests per second).
pub(crate) type QuotaColumns = (Option<i64>, Option<i64>, Option<i64>);

/// A tenant's quota limits from its columns.
pub(crate) fn quota_from_columns(columns: QuotaColumns) -> Result<QuotaLimits, StoreFailure> {
    let (pending, daily, rate) = columns;
    Ok(QuotaLimits {
        pending_timers: pending.map(u64::try_from).transpose().map_err(|e| corrupt("quota", e))?,
        daily_creates: daily.map(u64::try_from).transpose().map_err(|e| corrupt("quota", e))?,
        requests_per_second: rate.map(u32::try_from).transpose().map_err(|e| corrupt("quota", e))?,
    })
}

/// A tenant's quota limits as its columns (values past `i64::MAX` are stored as it: unlimited in practice).
pub(crate) fn quota_to_columns(limits: QuotaLimits) -> QuotaColumns {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (
        limits.pending_timers.map(clamp),
        limits.daily_creates.map(clamp),
        limits.requests_per_second.map(i64::from),
    )
}

pub(crate) fn seq_from_sql(value: i64) -> Result<u64, StoreFailure> {
    u64::try_from(value).map_err(|e| corrupt("outbox sequence", e))
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
