//! Row decoding and value conversions both stores share: how a selected
//! timer, fire, due timer or API key becomes a record again, and how the
//! values that are unsigned or structured in Rust are stored.
//!
//! Both databases return the same column types for the same `SELECT`
//! ([`timer_select`], [`FIRE_SELECT`], the shared texts of [`crate::sql`]):
//! ids as UUIDs (SQLite keeps their 16 bytes, which sqlx reads as a UUID),
//! JSON columns as text (`CAST(… AS TEXT)`: a no-op on SQLite's text
//! columns, the text form of PostgreSQL's `jsonb`), integers as `bigint`. So
//! each decoder is written once, generic over the row type.
//!
//! Every conversion is exact: reading a row back gives the record that was
//! written (the conformance suite compares whole records with the model's).
//! Unsigned Rust integers are stored as signed 64-bit integers; a `u64`
//! fingerprint keeps its bits (`as i64` and back).

use std::collections::{BTreeMap, BTreeSet};

use minoots_core::auth::Role;
use minoots_core::event::OutboxEvent;
use minoots_core::quota::QuotaLimits;
use minoots_core::store::{DueTimer, Recurrence};
use minoots_core::timer::{FireRecord, MisfirePolicy, Schedule, TimerRecord, TimerStatus};
use minoots_core::{StoreFailure, TenantId, TimerId};
use minoots_node::keys::ApiKeyRecord;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use sqlx::{ColumnIndex, Decode, Row, Type};

/// The timer columns as selected, in the order [`timer_from_row`] reads them
/// (JSON columns as text), each qualified with `table.` when `table` is not empty.
pub(crate) fn timer_select(table: &str) -> String {
    let dot = if table.is_empty() { "" } else { "." };
    let t = |c: &str| format!("{table}{dot}{c}");
    let text = |c: &str| format!("CAST({table}{dot}{c} AS TEXT)");
    [
        t("id"),
        t("tenant_id"),
        t("requested_by"),
        t("name"),
        t("status"),
        t("created_at_ms"),
        text("schedule"),
        t("misfire"),
        t("next_due_ms"),
        t("next_occurrence"),
        t("last_fired_at_ms"),
        t("cancelled_at_ms"),
        t("cancelled_by"),
        t("cancel_reason"),
        text("labels"),
        text("metadata"),
        text("action_bundle"),
        text("agent_binding"),
        t("idempotency_key"),
        t("request_fingerprint"),
        t("shard"),
    ]
    .join(", ")
}

/// The fire columns, in the order [`fire_from_row`] reads them (and the
/// SQLite store binds them).
pub(crate) const FIRE_SELECT: &str = "timer_id, occurrence, due_ms, fired_at_ms, epoch, node_id";

/// The due-timer columns, in the order [`due_from_row`] reads them.
pub(crate) const DUE_SELECT: &str =
    "id, next_occurrence, next_due_ms, CAST(schedule AS TEXT), misfire, tenant_id";

/// The API key columns, in the order [`key_from_row`] reads them.
pub(crate) const KEY_SELECT: &str = "id, tenant_id, CAST(roles AS TEXT), label, created_at_ms, revoked_at_ms";

/// A store failure for a row that cannot be decoded.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreFailure {
    StoreFailure::Unknown(format!("corrupt {what} in the database: {detail}"))
}

/// A value encoded as JSON text for its column.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> Result<String, StoreFailure> {
    serde_json::to_string(value).map_err(|e| StoreFailure::Unknown(format!("encoding {what} as JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreFailure> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// Optional client JSON encoded for its (nullable) column.
pub(crate) fn optional_json(
    what: &str,
    value: &Option<serde_json::Value>,
) -> Result<Option<String>, StoreFailure> {
    value.as_ref().map(|v| to_json(what, v)).transpose()
}

/// Rebuilds a tenant id exactly as it was stored (the store does not re-validate).
pub(crate) fn tenant_from_text(text: String) -> Result<TenantId, StoreFailure> {
    TenantId::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(text))
        .map_err(|e| corrupt("tenant id", e))
}

/// A selected row of either database, read by column index: the column
/// types the decoders need, with the database's bounds stated once.
pub(crate) trait StoreRow {
    /// A text column.
    fn text(&self, index: usize, what: &str) -> Result<String, StoreFailure>;
    /// A nullable text column.
    fn text_or_null(&self, index: usize, what: &str) -> Result<Option<String>, StoreFailure>;
    /// An integer column.
    fn int(&self, index: usize, what: &str) -> Result<i64, StoreFailure>;
    /// A nullable integer column.
    fn int_or_null(&self, index: usize, what: &str) -> Result<Option<i64>, StoreFailure>;
    /// A timer id column.
    fn uuid(&self, index: usize, what: &str) -> Result<uuid::Uuid, StoreFailure>;
}

impl<R> StoreRow for R
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> uuid::Uuid: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, index: usize, what: &str) -> Result<String, StoreFailure> {
        self.try_get(index).map_err(|e| corrupt(what, e))
    }
    fn text_or_null(&self, index: usize, what: &str) -> Result<Option<String>, StoreFailure> {
        self.try_get(index).map_err(|e| corrupt(what, e))
    }
    fn int(&self, index: usize, what: &str) -> Result<i64, StoreFailure> {
        self.try_get(index).map_err(|e| corrupt(what, e))
    }
    fn int_or_null(&self, index: usize, what: &str) -> Result<Option<i64>, StoreFailure> {
        self.try_get(index).map_err(|e| corrupt(what, e))
    }
    fn uuid(&self, index: usize, what: &str) -> Result<uuid::Uuid, StoreFailure> {
        self.try_get(index).map_err(|e| corrupt(what, e))
    }
}

/// A `u32` read back from a `bigint` column.
pub(crate) fn u32_from(value: i64, what: &str) -> Result<u32, StoreFailure> {
    u32::try_from(value).map_err(|e| corrupt(what, e))
}

/// Reads a timer from a row selected with [`timer_select`].
pub(crate) fn timer_from_row(row: &impl StoreRow) -> Result<TimerRecord, StoreFailure> {
    let status = row.text(4, "timer status")?;
    let misfire = row.text(7, "misfire policy")?;
    let schedule = row.text(6, "schedule")?;
    let labels = row.text(14, "labels")?;
    let optional = |index: usize, what: &str| -> Result<Option<serde_json::Value>, StoreFailure> {
        let text = row.text_or_null(index, what)?;
        text.map(|t| from_json(what, &t)).transpose()
    };
    Ok(TimerRecord {
        id: TimerId(row.uuid(0, "timer id")?),
        tenant_id: tenant_from_text(row.text(1, "tenant id")?)?,
        requested_by: row.text(2, "requested_by")?,
        name: row.text_or_null(3, "name")?,
        status: TimerStatus::parse(&status).ok_or_else(|| corrupt("timer status", &status))?,
        created_at_ms: row.int(5, "created_at_ms")?,
        schedule: schedule_from_text(&schedule)?,
        misfire: misfire_from_text(&misfire)?,
        next_due_ms: row.int(8, "next_due_ms")?,
        next_occurrence: u32_from(row.int(9, "next_occurrence")?, "next_occurrence")?,
        last_fired_at_ms: row.int_or_null(10, "last_fired_at_ms")?,
        cancelled_at_ms: row.int_or_null(11, "cancelled_at_ms")?,
        cancelled_by: row.text_or_null(12, "cancelled_by")?,
        cancel_reason: row.text_or_null(13, "cancel_reason")?,
        labels: from_json::<BTreeMap<String, String>>("labels", &labels)?,
        metadata: optional(15, "metadata")?,
        action_bundle: optional(16, "action bundle")?,
        agent_binding: optional(17, "agent binding")?,
        idempotency_key: row.text_or_null(18, "idempotency key")?,
        request_fingerprint: row.int(19, "request fingerprint")? as u64,
        shard: u32_from(row.int(20, "shard")?, "shard")?,
    })
}

/// Reads a fire from a row selected with [`FIRE_SELECT`].
pub(crate) fn fire_from_row(row: &impl StoreRow) -> Result<FireRecord, StoreFailure> {
    Ok(FireRecord {
        timer_id: TimerId(row.uuid(0, "fire timer id")?),
        occurrence: u32_from(row.int(1, "fire occurrence")?, "fire occurrence")?,
        due_ms: row.int(2, "fire due_ms")?,
        fired_at_ms: row.int(3, "fire fired_at_ms")?,
        epoch: epoch_from_sql(row.int(4, "fire epoch")?)?,
        node_id: row.text(5, "fire node id")?,
    })
}

/// Reads a due timer from a row selected with [`DUE_SELECT`].
pub(crate) fn due_from_row(row: &impl StoreRow) -> Result<DueTimer, StoreFailure> {
    let schedule = schedule_from_text(&row.text(3, "schedule")?)?;
    let recurrence = if schedule.is_recurring() {
        Some(Recurrence { schedule, misfire: misfire_from_text(&row.text(4, "misfire policy")?)? })
    } else {
        None
    };
    Ok(DueTimer {
        timer_id: TimerId(row.uuid(0, "timer id")?),
        tenant_id: tenant_from_text(row.text(5, "tenant id")?)?,
        occurrence: u32_from(row.int(1, "next_occurrence")?, "next_occurrence")?,
        due_ms: row.int(2, "next_due_ms")?,
        recurrence,
    })
}

/// Reads an API key from a row selected with [`KEY_SELECT`].
pub(crate) fn key_from_row(row: &impl StoreRow) -> Result<ApiKeyRecord, StoreFailure> {
    let roles = row.text(2, "API key roles")?;
    Ok(ApiKeyRecord {
        id: row.text(0, "API key id")?,
        tenant_id: tenant_from_text(row.text(1, "API key tenant")?)?,
        roles: from_json::<BTreeSet<Role>>("API key roles", &roles)?,
        label: row.text(3, "API key label")?,
        created_at_ms: row.int(4, "API key created_at_ms")?,
        revoked_at_ms: row.int_or_null(5, "API key revoked_at_ms")?,
    })
}

/// Reads a schedule column.
pub(crate) fn schedule_from_text(text: &str) -> Result<Schedule, StoreFailure> {
    from_json("schedule", text)
}

/// Parses a misfire column.
pub(crate) fn misfire_from_text(text: &str) -> Result<MisfirePolicy, StoreFailure> {
    MisfirePolicy::parse(text).ok_or_else(|| corrupt("misfire policy", text))
}

/// Encodes an outbox event for its row.
pub(crate) fn event_json(event: &OutboxEvent) -> Result<String, StoreFailure> {
    to_json("outbox event", event)
}

/// Decodes an outbox row's event column.
pub(crate) fn event_from_text(text: &str) -> Result<OutboxEvent, StoreFailure> {
    from_json("outbox event", text)
}

/// An epoch as stored.
pub(crate) fn epoch_to_sql(epoch: u64) -> Result<i64, StoreFailure> {
    i64::try_from(epoch).map_err(|_| StoreFailure::Unknown(format!("epoch {epoch} out of range")))
}

/// An epoch read back.
pub(crate) fn epoch_from_sql(value: i64) -> Result<u64, StoreFailure> {
    u64::try_from(value).map_err(|e| corrupt("epoch", e))
}

/// A sequence number (or count) as stored.
pub(crate) fn seq_to_sql(seq: u64) -> Result<i64, StoreFailure> {
    i64::try_from(seq).map_err(|_| StoreFailure::Unknown(format!("outbox sequence {seq} out of range")))
}

/// A sequence number (or count) read back.
pub(crate) fn seq_from_sql(value: i64) -> Result<u64, StoreFailure> {
    u64::try_from(value).map_err(|e| corrupt("outbox sequence", e))
}

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
