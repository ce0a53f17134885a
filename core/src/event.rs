//! Timer events: what happened to a timer, written to the outbox in the same
//! transaction as the change, then relayed to subscribers (SSE, gRPC streams,
//! the action runner, NATS). The JSON envelope is MINOOTS's shape, camelCase:
//! `{envelopeId, tenantId, occurredAt, dedupeKey, event: {type, timer, ...}}`.

use serde::{Deserialize, Serialize};

use crate::ids::{TenantId, TimerId};
use crate::time::WallMs;
use crate::timer::{FireRecord, TimerRecord};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A timer was created.
    Scheduled,
    /// An occurrence fired.
    Fired,
    /// A timer was cancelled.
    Cancelled,
}

impl EventKind {
    /// The wire name (`timer.scheduled`, …) minus the prefix.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Fired => "fired",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEvent {
    /// Store-assigned, strictly increasing sequence number.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// Owner.
    pub tenant_id: TenantId,
    /// Which timer.
    pub timer_id: TimerId,
    /// Occurrence (fires: the fired one; others: the timer's next occurrence).
    pub occurrence: u32,
    /// When it happened (store clock).
    pub occurred_at_ms: WallMs,
    /// The timer after the change.
    pub timer: TimerRecord,
    /// The fire record, for `Fired`.
    pub fire: Option<FireRecord>,
}

impl OutboxEvent {
    /// `{timer_id}:{occurrence}:{kind}`: the key consumers deduplicate by.
    pub fn dedupe_key(&self) -> String {
        format!("{}:{}:{}", self.timer_id, self.occurrence, self.kind.as_str())
    }
}
