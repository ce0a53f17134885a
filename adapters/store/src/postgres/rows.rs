//! Row encoding for PostgreSQL's write path: the column arrays that `UNNEST`
//! turns into rows (one statement writes every row of a kind in a commit,
//! whatever the batch size). JSON columns are bound as text and cast in SQL
//! (`::jsonb`, `::json`). Reading rows back is shared with SQLite:
//! [`crate::rows`].

use minoots_core::StoreFailure;
use minoots_core::event::OutboxEvent;
use minoots_core::timer::{FireRecord, TimerRecord};

use crate::rows::{epoch_to_sql, optional_json, seq_to_sql, to_json};

/// A store failure for a database error, naming what was being done.
pub(crate) fn pg_failure(doing: &str, error: sqlx::Error) -> StoreFailure {
    StoreFailure::Unknown(format!("postgres {doing}: {error}"))
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
