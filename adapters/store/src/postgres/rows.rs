//! Row encoding for PostgreSQL: how timers, fires and outbox events map to
//! columns and back, and the column arrays that `UNNEST` turns into rows (one
//! statement writes every row of a kind in a commit, whatever the batch size).
//!
//! Every conversion is exact: reading a row back gives the record that was
//! written (the conformance suite compares whole records with the model's).
//! Unsigned Rust integers are stored as `bigint`; a `u64` fingerprint keeps
//! its bits (`as i64` and back). JSON columns are bound as text and cast in
//! SQL (`::jsonb`, `::json`), and read back as text (`::text`).

use std::collections::BTreeMap;

use minoots_core::event::OutboxEvent;
use minoots_core::timer::{FireRecord, MisfirePolicy, Schedule, TimerRecord, TimerStatus};
use minoots_core::{StoreFailure, TimerId};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::rows::{corrupt, epoch_from_sql, epoch_to_sql, seq_to_sql, tenant_from_text};

/// The timer columns as selected, in the order [`timer_from_row`] reads them
/// (JSON columns as text), each qualified with `table.` when `table` is not empty.
pub(crate) fn timer_select(table: &str) -> String {
    let dot = if table.is_empty() { "" } else { "." };
    let t = |c: &str| format!("{table}{dot}{c}");
    [
        t("id"),
        t("tenant_id"),
        t("requested_by"),
        t("name"),
        t("status"),
        t("created_at_ms"),
        format!("{}::text", t("schedule")),
        t("misfire"),
        t("next_due_ms"),
        t("next_occurrence"),
        t("last_fired_at_ms"),
        t("cancelled_at_ms"),
        t("cancelled_by"),
        t("cancel_reason"),
        format!("{}::text", t("labels")),
        format!("{}::text", t("metadata")),
        format!("{}::text", t("action_bundle")),
        format!("{}::text", t("agent_binding")),
        t("idempotency_key"),
        t("request_fingerprint"),
        t("shard"),
    ]
    .join(", ")
}

/// A store failure for a database error, naming what was being done.
pub(crate) fn pg_failure(doing: &str, error: sqlx::Error) -> StoreFailure {
    StoreFailure::Unknown(format!("postgres {doing}: {error}"))
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

fn get<'r, T>(row: &'r PgRow, index: usize, what: &str) -> Result<T, StoreFailure>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index).map_err(|e| corrupt(what, e))
}

/// A `u32` read back from a `bigint` column.
pub(crate) fn u32_from(value: i64, what: &str) -> Result<u32, StoreFailure> {
    u32::try_from(value).map_err(|e| corrupt(what, e))
}

/// Reads a timer from a row selected with [`timer_select`].
pub(crate) fn timer_from_row(row: &PgRow) -> Result<TimerRecord, StoreFailure> {
    let status: String = get(row, 4, "timer status")?;
    let misfire: String = get(row, 7, "misfire policy")?;
    let schedule: String = get(row, 6, "schedule")?;
    let labels: String = get(row, 14, "labels")?;
    let optional = |index: usize, what: &str| -> Result<Option<serde_json::Value>, StoreFailure> {
        let text: Option<String> = get(row, index, what)?;
        text.map(|t| from_json(what, &t)).transpose()
    };
    Ok(TimerRecord {
        id: TimerId(get::<uuid::Uuid>(row, 0, "timer id")?),
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

/// The fire columns, in the order [`fire_from_row`] reads them.
pub(crate) const FIRE_SELECT: &str = "timer_id, occurrence, due_ms, fired_at_ms, epoch, node_id";

/// Reads a fire from a row selected with [`FIRE_SELECT`].
pub(crate) fn fire_from_row(row: &PgRow) -> Result<FireRecord, StoreFailure> {
    Ok(FireRecord {
        timer_id: TimerId(get::<uuid::Uuid>(row, 0, "fire timer id")?),
        occurrence: u32_from(get(row, 1, "fire occurrence")?, "fire occurrence")?,
        due_ms: get(row, 2, "fire due_ms")?,
        fired_at_ms: get(row, 3, "fire fired_at_ms")?,
        epoch: epoch_from_sql(get(row, 4, "fire epoch")?)?,
        node_id: get(row, 5, "fire node id")?,
    })
}

/// New timers as column arrays, for `INSERT … SELECT … FROM UNNEST(…)`.
#[derive(Debug, Default)]
pub(crate) struct TimerColumns {
    pub id: Vec<uuid::Uuid>,
    pub tenant_id: Vec<String>,
    pub requested_by: Vec<String>,
    pub name: Vec<Option<String>>,
    pub status: Vec<&'static str>,
    pub created_at_ms: Vec<i64>,
    pub schedule: Vec<String>,
    pub misfire: Vec<&'static str>,
    pub next_due_ms: Vec<i64>,
    pub next_occurrence: Vec<i64>,
    pub last_fired_at_ms: Vec<Option<i64>>,
    pub cancelled_at_ms: Vec<Option<i64>>,
    pub cancelled_by: Vec<Option<String>>,
    pub cancel_reason: Vec<Option<String>>,
    pub labels: Vec<String>,
    pub metadata: Vec<Option<String>>,
    pub action_bundle: Vec<Option<String>>,
    pub agent_binding: Vec<Option<String>>,
    pub idempotency_key: Vec<Option<String>>,
    pub request_fingerprint: Vec<i64>,
    pub shard: Vec<i64>,
}

impl TimerColumns {
    /// Appends one timer.
    pub(crate) fn push(&mut self, t: &TimerRecord) -> Result<(), StoreFailure> {
        self.id.push(t.id.0);
        self.tenant_id.push(t.tenant_id.as_str().to_owned());
        self.requested_by.push(t.requested_by.clone());
        self.name.push(t.name.clone());
        self.status.push(t.status.as_str());
        self.created_at_ms.push(t.created_at_ms);
        self.schedule.push(to_json("schedule", &t.schedule)?);
        self.misfire.push(t.misfire.as_str());
        self.next_due_ms.push(t.next_due_ms);
        self.next_occurrence.push(i64::from(t.next_occurrence));
        self.last_fired_at_ms.push(t.last_fired_at_ms);
        self.cancelled_at_ms.push(t.cancelled_at_ms);
        self.cancelled_by.push(t.cancelled_by.clone());
        self.cancel_reason.push(t.cancel_reason.clone());
        self.labels.push(to_json("labels", &t.labels)?);
        self.metadata.push(optional_json("metadata", &t.metadata)?);
        self.action_bundle.push(optional_json("action bundle", &t.action_bundle)?);
        self.agent_binding.push(optional_json("agent binding", &t.agent_binding)?);
        self.idempotency_key.push(t.idempotency_key.clone());
        self.request_fingerprint.push(t.request_fingerprint as i64);
        self.shard.push(i64::from(t.shard));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// The mutable columns of changed timers, for `UPDATE … FROM UNNEST(…)`.
#[derive(Debug, Default)]
pub(crate) struct TimerChanges {
    pub id: Vec<uuid::Uuid>,
    pub status: Vec<&'static str>,
    pub next_due_ms: Vec<i64>,
    pub next_occurrence: Vec<i64>,
    pub last_fired_at_ms: Vec<Option<i64>>,
    pub cancelled_at_ms: Vec<Option<i64>>,
    pub cancelled_by: Vec<Option<String>>,
    pub cancel_reason: Vec<Option<String>>,
}

impl TimerChanges {
    /// Appends one changed timer.
    pub(crate) fn push(&mut self, t: &TimerRecord) {
        self.id.push(t.id.0);
        self.status.push(t.status.as_str());
        self.next_due_ms.push(t.next_due_ms);
        self.next_occurrence.push(i64::from(t.next_occurrence));
        self.last_fired_at_ms.push(t.last_fired_at_ms);
        self.cancelled_at_ms.push(t.cancelled_at_ms);
        self.cancelled_by.push(t.cancelled_by.clone());
        self.cancel_reason.push(t.cancel_reason.clone());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// Recorded fires as column arrays.
#[derive(Debug, Default)]
pub(crate) struct FireColumns {
    pub timer_id: Vec<uuid::Uuid>,
    pub occurrence: Vec<i64>,
    pub due_ms: Vec<i64>,
    pub fired_at_ms: Vec<i64>,
    pub epoch: Vec<i64>,
    pub node_id: Vec<String>,
}

impl FireColumns {
    /// Appends one fire.
    pub(crate) fn push(&mut self, f: &FireRecord) -> Result<(), StoreFailure> {
        self.timer_id.push(f.timer_id.0);
        self.occurrence.push(i64::from(f.occurrence));
        self.due_ms.push(f.due_ms);
        self.fired_at_ms.push(f.fired_at_ms);
        self.epoch.push(epoch_to_sql(f.epoch)?);
        self.node_id.push(f.node_id.clone());
        Ok(())
    }
}

/// Outbox rows as column arrays.
#[derive(Debug, Default)]
pub(crate) struct OutboxColumns {
    pub seq: Vec<i64>,
    pub kind: Vec<&'static str>,
    pub tenant_id: Vec<String>,
    pub timer_id: Vec<uuid::Uuid>,
    pub occurrence: Vec<i64>,
    pub created_at_ms: Vec<i64>,
    pub event: Vec<String>,
}

impl OutboxColumns {
    /// Appends one event.
    pub(crate) fn push(&mut self, e: &OutboxEvent) -> Result<(), StoreFailure> {
        self.seq.push(seq_to_sql(e.seq)?);
        self.kind.push(e.kind.as_str());
        self.tenant_id.push(e.tenant_id.as_str().to_owned());
        self.timer_id.push(e.timer_id.0);
        self.occurrence.push(i64::from(e.occurrence));
        self.created_at_ms.push(e.occurred_at_ms);
        self.event.push(to_json("outbox event", e)?);
        Ok(())
    }
}
