//! What a timer is once accepted: its schedule, its state, and its recorded
//! fires. These records are what the store keeps and what the APIs show.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::{TenantId, TimerId};
use crate::time::WallMs;

/// When a timer's occurrences are due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Schedule {
    /// One occurrence at `fire_at_ms`. `duration_ms` is kept when the client
    /// asked for "after a duration" (it is shown back as `durationMs`).
    #[serde(rename_all = "camelCase")]
    Once {
        /// Due time.
        fire_at_ms: WallMs,
        /// The requested delay, if the timer was created with one.
        duration_ms: Option<u64>,
    },
    /// Occurrences at `start_at_ms + k × every_ms` for k = 0, 1, …, up to
    /// `end_at_ms` (inclusive) and at most `max_occurrences` fires.
    #[serde(rename_all = "camelCase")]
    Interval {
        /// Period.
        every_ms: u64,
        /// The first slot.
        start_at_ms: WallMs,
        /// No slot after this.
        end_at_ms: Option<WallMs>,
        /// Stop after this many fires.
        max_occurrences: Option<u32>,
    },
    /// Occurrences at the instants matching a cron expression (with an optional
    /// leading seconds field) in an IANA time zone, at or after `start_at_ms`.
    /// DST rules: see [`crate::schedule`].
    #[serde(rename_all = "camelCase")]
    Cron {
        /// The expression, as given (5 or 6 fields, or a nickname like `@hourly`).
        expression: String,
        /// IANA zone name (`UTC`, `Europe/Paris`).
        time_zone: String,
        /// No slot before this.
        start_at_ms: WallMs,
        /// No slot after this.
        end_at_ms: Option<WallMs>,
        /// Stop after this many fires.
        max_occurrences: Option<u32>,
    },
}

impl Schedule {
    /// Whether the timer has more than one occurrence.
    pub fn is_recurring(&self) -> bool {
        !matches!(self, Schedule::Once { .. })
    }

    /// The schedule's kind as the API names it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Schedule::Once { .. } => "once",
            Schedule::Interval { .. } => "interval",
            Schedule::Cron { .. } => "cron",
        }
    }
}

/// What a recurring timer does with occurrences that came due while nothing
/// could fire them (downtime, failover, backlog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Coalesce every missed slot into one fire now (the default).
    #[default]
    FireOnce,
    /// Fire every missed slot, each as its own occurrence, oldest first, up to
    /// [`MISFIRE_FIRE_ALL_CAP`] in one catch-up; missed slots beyond the cap are skipped.
    FireAll,
    /// Fire nothing for slots later than the misfire grace; continue with the next future slot.
    Skip,
}

/// The most missed occurrences `fire_all` fires in one catch-up.
pub const MISFIRE_FIRE_ALL_CAP: u32 = 100;

/// How late an occurrence may be and still count as on time for `skip`.
pub const MISFIRE_GRACE_MS: i64 = 1_000;

impl MisfirePolicy {
    /// Parses the API spelling (`fire_once`, `fire_all`, `skip`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fire_once" => Some(Self::FireOnce),
            "fire_all" => Some(Self::FireAll),
            "skip" => Some(Self::Skip),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::FireOnce => "fire_once",
            Self::FireAll => "fire_all",
            Self::Skip => "skip",
        }
    }
}

/// A timer's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerStatus {
    /// Waiting for its next occurrence.
    Scheduled,
    /// Fired its last occurrence; nothing more will happen.
    Fired,
    /// Cancelled before its last occurrence.
    Cancelled,
}

impl TimerStatus {
    /// The API spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Fired => "fired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the API spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "scheduled" => Some(Self::Scheduled),
            "fired" => Some(Self::Fired),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Whether no further occurrence can happen.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Scheduled)
    }
}

/// A timer as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerRecord {
    /// Identity.
    pub id: TimerId,
    /// Owner.
    pub tenant_id: TenantId,
    /// Who asked for it (free text from the client).
    pub requested_by: String,
    /// Optional display name.
    pub name: Option<String>,
    /// Lifecycle state.
    pub status: TimerStatus,
    /// When it was accepted (engine wall clock).
    pub created_at_ms: WallMs,
    /// When its occurrences are due.
    pub schedule: Schedule,
    /// What to do with missed occurrences.
    pub misfire: MisfirePolicy,
    /// Due time of the next occurrence while scheduled; of the last one otherwise.
    pub next_due_ms: WallMs,
    /// The occurrence number the next fire will carry (1-based; fires so far + 1).
    pub next_occurrence: u32,
    /// When the last fire was recorded (store clock).
    pub last_fired_at_ms: Option<WallMs>,
    /// When it was cancelled (store clock).
    pub cancelled_at_ms: Option<WallMs>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// Why.
    pub cancel_reason: Option<String>,
    /// String labels, for filtering.
    pub labels: BTreeMap<String, String>,
    /// Free JSON given by the client, returned as is.
    pub metadata: Option<serde_json::Value>,
    /// Actions to run on fire (executed by the action runner).
    pub action_bundle: Option<serde_json::Value>,
    /// MINOOTS agent binding, kept and returned as is.
    pub agent_binding: Option<serde_json::Value>,
    /// The client's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request that created it (for idempotency checks).
    pub request_fingerprint: u64,
    /// Virtual shard (hash of id).
    pub shard: u32,
}

impl TimerRecord {
    /// Number of fires recorded so far.
    pub fn fired_count(&self) -> u32 {
        self.next_occurrence.saturating_sub(1)
    }
}

/// One recorded fire: the durable proof that an occurrence happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FireRecord {
    /// Which timer.
    pub timer_id: TimerId,
    /// Which occurrence (1-based).
    pub occurrence: u32,
    /// When it was due.
    pub due_ms: WallMs,
    /// When the store recorded it (store clock; never before `due_ms`).
    pub fired_at_ms: WallMs,
    /// The fencing epoch of the leader that fired it.
    pub epoch: u64,
    /// The node that fired it.
    pub node_id: String,
}
