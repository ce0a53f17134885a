//! JSON views of timers, fires and events: the one camelCase shape that REST,
//! Server-Sent Events and NATS show to clients. Keeping it here (next to the
//! handle every adapter holds) means every interface prints a timer the same
//! way, and MINOOTS clients find the field names they already know.
//!
//! - [`TimerView`]: MINOOTS's timer response fields (`id`, `tenantId`, `name`,
//!   `status`, `durationMs`, `createdAt`, `fireAt`, `requestedBy`, `metadata`,
//!   `labels`, `actionBundle`, `agentBinding`, `firedAt`, `cancelledAt`,
//!   `cancelReason`, `cancelledBy`) plus ours (`schedule`, `misfirePolicy`,
//!   `nextOccurrence`, `firedCount`, `idempotencyKey`). Every top-level field
//!   is always present (`null` when it has no value).
//! - [`FireView`]: one recorded fire.
//! - [`EventEnvelope`]: MINOOTS's envelope shape for one outbox event.
//!
//! Times are RFC 3339 UTC strings with milliseconds
//! ([`minoots_core::time::format_wall_ms`]). Nothing here reads a clock or
//! draws randomness: a view is a pure function of the record.

use std::collections::BTreeMap;

use minoots_core::event::{EventKind, OutboxEvent};
use minoots_core::time::format_wall_ms;
use minoots_core::timer::{FireRecord, Schedule, TimerRecord};
use serde::{Deserialize, Serialize};

/// A timer as the APIs show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerView {
    /// Timer id (UUIDv7).
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Display name.
    pub name: Option<String>,
    /// `scheduled`, `fired` or `cancelled`.
    pub status: String,
    /// One-shot timers: the requested delay, or `fireAt − createdAt` when the
    /// timer was created with `fireAt`. Recurring timers: `null` (see `schedule`).
    pub duration_ms: Option<u64>,
    /// When the timer was accepted.
    pub created_at: String,
    /// Due time of the next occurrence while scheduled; of the last one otherwise.
    pub fire_at: String,
    /// Who asked for it.
    pub requested_by: String,
    /// Client JSON, returned as given.
    pub metadata: Option<serde_json::Value>,
    /// String labels.
    pub labels: BTreeMap<String, String>,
    /// Actions run on fire.
    pub action_bundle: Option<serde_json::Value>,
    /// MINOOTS agent binding, returned as given.
    pub agent_binding: Option<serde_json::Value>,
    /// When the last fire was recorded.
    pub fired_at: Option<String>,
    /// When it was cancelled.
    pub cancelled_at: Option<String>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// When the occurrences are due.
    pub schedule: ScheduleView,
    /// `fire_once`, `fire_all` or `skip`.
    pub misfire_policy: String,
    /// The occurrence number the next fire will carry (1-based).
    pub next_occurrence: u32,
    /// Fires recorded so far.
    pub fired_count: u32,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
}

/// A timer's schedule. Only the fields of its kind are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// `once`, `interval` or `cron`.
    pub kind: String,
    /// Interval period in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Cron expression, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA zone of the cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// First slot (interval) or no slot before (cron).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// No slot after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    /// Stop after this many fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_occurrences: Option<u32>,
}

impl From<&Schedule> for ScheduleView {
    fn from(schedule: &Schedule) -> Self {
        let empty = ScheduleView {
            kind: schedule.kind_name().to_owned(),
            every: None,
            cron: None,
            time_zone: None,
            start_at: None,
            end_at: None,
            max_occurrences: None,
        };
        match schedule {
            Schedule::Once { .. } => empty,
            Schedule::Interval { every_ms, start_at_ms, end_at_ms, max_occurrences } => ScheduleView {
                every: Some(*every_ms),
                start_at: Some(format_wall_ms(*start_at_ms)),
                end_at: end_at_ms.map(format_wall_ms),
                max_occurrences: *max_occurrences,
                ..empty
            },
            Schedule::Cron { expression, time_zone, start_at_ms, end_at_ms, max_occurrences } => {
                ScheduleView {
                    cron: Some(expression.clone()),
                    time_zone: Some(time_zone.clone()),
                    start_at: Some(format_wall_ms(*start_at_ms)),
                    end_at: end_at_ms.map(format_wall_ms),
                    max_occurrences: *max_occurrences,
                    ..empty
                }
            }
        }
    }
}

impl From<&TimerRecord> for TimerView {
    fn from(t: &TimerRecord) -> Self {
        let duration_ms = match &t.schedule {
            Schedule::Once { duration_ms: Some(d), .. } => Some(*d),
            Schedule::Once { fire_at_ms, duration_ms: None } => {
                Some(u64::try_from(fire_at_ms.saturating_sub(t.created_at_ms)).unwrap_or(0))
            }
            Schedule::Interval { .. } | Schedule::Cron { .. } => None,
        };
        TimerView {
            id: t.id.to_string(),
            tenant_id: t.tenant_id.to_string(),
            name: t.name.clone(),
            status: t.status.as_str().to_owned(),
            duration_ms,
            created_at: format_wall_ms(t.created_at_ms),
            fire_at: format_wall_ms(t.next_due_ms),
            requested_by: t.requested_by.clone(),
            metadata: t.metadata.clone(),
            labels: t.labels.clone(),
            action_bundle: t.action_bundle.as_ref().map(minoots_core::action::redacted_bundle),
            agent_binding: t.agent_binding.clone(),
            fired_at: t.last_fired_at_ms.map(format_wall_ms),
            cancelled_at: t.cancelled_at_ms.map(format_wall_ms),
            cancel_reason: t.cancel_reason.clone(),
            cancelled_by: t.cancelled_by.clone(),
            schedule: ScheduleView::from(&t.schedule),
            misfire_policy: t.misfire.as_str().to_owned(),
            next_occurrence: t.next_occurrence,
            fired_count: t.fired_count(),
            idempotency_key: t.idempotency_key.clone(),
        }
    }
}

/// One recorded fire as the APIs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FireView {
    /// Which timer.
    pub timer_id: String,
    /// Which occurrence (1-based).
    pub occurrence: u32,
    /// Fencing epoch of the leader that fired it.
    pub epoch: u64,
    /// The node that fired it.
    pub node_id: String,
    /// When it was due.
    pub due_at: String,
    /// When the store recorded it (never before `dueAt`).
    pub fired_at: String,
    /// `firedAt − dueAt` in milliseconds.
    pub lateness_ms: u64,
}

impl From<&FireRecord> for FireView {
    fn from(f: &FireRecord) -> Self {
        FireView {
            timer_id: f.timer_id.to_string(),
            occurrence: f.occurrence,
            epoch: f.epoch,
            node_id: f.node_id.clone(),
            due_at: format_wall_ms(f.due_ms),
            fired_at: format_wall_ms(f.fired_at_ms),
            lateness_ms: u64::try_from(f.fired_at_ms.saturating_sub(f.due_ms)).unwrap_or(0),
        }
    }
}

/// The wire name of an event kind: `timer.scheduled`, `timer.fired`, `timer.cancelled`.
pub fn event_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Scheduled => "timer.scheduled",
        EventKind::Fired => "timer.fired",
        EventKind::Cancelled => "timer.cancelled",
    }
}

/// Every event kind, in order.
pub const EVENT_KINDS: [EventKind; 3] = [EventKind::Scheduled, EventKind::Fired, EventKind::Cancelled];

/// Every event type, in the order of [`EVENT_KINDS`].
pub const EVENT_TYPES: [&str; 3] = ["timer.scheduled", "timer.fired", "timer.cancelled"];

/// One outbox event in MINOOTS's envelope shape (camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    /// `evt-{dedupeKey}`: deterministic, so every relay and every retry of the
    /// same event carries the same id, whichever node or store publishes it.
    pub envelope_id: String,
    /// Owner.
    pub tenant_id: String,
    /// When it happened (store clock).
    pub occurred_at: String,
    /// `{timerId}:{occurrence}:{kind}`: the key consumers deduplicate by.
    pub dedupe_key: String,
    /// The store's outbox sequence number (strictly increasing).
    pub seq: u64,
    /// What happened.
    pub event: EventBody,
}

/// The `event` member of an [`EventEnvelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    /// `timer.scheduled`, `timer.fired` or `timer.cancelled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The timer after the change.
    pub timer: TimerView,
    /// The recorded fire (`timer.fired` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire: Option<FireView>,
}

impl EventEnvelope {
    /// The envelope with the timer's action bundle as stored, webhook header
    /// values included: only for the path that runs the actions (the
    /// JetStream event stream, the in-process intake). Everything a tenant or
    /// subscriber sees is [`EventEnvelope::from`], values redacted.
    pub fn with_secrets(e: &OutboxEvent) -> Self {
        let mut envelope = Self::from(e);
        envelope.event.timer.action_bundle.clone_from(&e.timer.action_bundle);
        envelope
    }

    /// Splits an envelope made [`EventEnvelope::with_secrets`] into the
    /// envelope as tenants see it (webhook header values redacted) and the
    /// action bundle as stored.
    pub fn into_shown(mut self) -> (Self, Option<serde_json::Value>) {
        let bundle = self.event.timer.action_bundle.take();
        self.event.timer.action_bundle = bundle.as_ref().map(minoots_core::action::redacted_bundle);
        (self, bundle)
    }
}

impl From<&OutboxEvent> for EventEnvelope {
    fn from(e: &OutboxEvent) -> Self {
        let dedupe_key = e.dedupe_key();
        EventEnvelope {
            envelope_id: format!("evt-{dedupe_key}"),
            tenant_id: e.tenant_id.to_string(),
            occurred_at: format_wall_ms(e.occurred_at_ms),
            dedupe_key,
            seq: e.seq,
            event: EventBody {
                kind: event_type(e.kind).to_owned(),
                timer: TimerView::from(&e.timer),
                fire: e.fire.as_ref().map(FireView::from),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minoots_core::timer::{MisfirePolicy, TimerStatus};
    use minoots_core::{TenantId, TimerId};

    fn record(schedule: Schedule) -> TimerRecord {
        let id = TimerId(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
        TimerRecord {
            id,
            tenant_id: TenantId::parse("tenantId", "acme").expect("valid tenant"),
            requested_by: "alice".into(),
            name: Some("tea".into()),
            status: TimerStatus::Fired,
            created_at_ms: 1_700_000_000_000,
            schedule,
            misfire: MisfirePolicy::FireOnce,
            next_due_ms: 1_700_000_090_000,
            next_occurrence: 2,
            last_fired_at_ms: Some(1_700_000_090_004),
            cancelled_at_ms: None,
            cancelled_by: None,
            cancel_reason: None,
            labels: BTreeMap::from([("team".into(), "ops".into())]),
            metadata: Some(serde_json::json!({"a": 1})),
            action_bundle: None,
            agent_binding: None,
            idempotency_key: Some("k1".into()),
            request_fingerprint: 7,
            shard: id.shard(),
        }
    }

    #[test]
    fn timer_view_has_minoots_fields_in_camel_case() {
        let t = record(Schedule::Once { fire_at_ms: 1_700_000_090_000, duration_ms: Some(90_000) });
        let json = serde_json::to_value(TimerView::from(&t)).expect("serializes");
        assert_eq!(json["id"], "01900000-0000-7000-8000-000000000001");
        assert_eq!(json["tenantId"], "acme");
        assert_eq!(json["status"], "fired");
        assert_eq!(json["durationMs"], 90_000);
        assert_eq!(json["createdAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["fireAt"], "2023-11-14T22:14:50.000Z");
        assert_eq!(json["firedAt"], "2023-11-14T22:14:50.004Z");
        assert_eq!(json["cancelledAt"], serde_json::Value::Null);
        assert_eq!(json["labels"]["team"], "ops");
        assert_eq!(json["schedule"], serde_json::json!({"kind": "once"}));
        assert_eq!(json["misfirePolicy"], "fire_once");
        assert_eq!(json["firedCount"], 1);
        assert_eq!(json["nextOccurrence"], 2);
        assert_eq!(json["idempotencyKey"], "k1");
        for key in ["actionBundle", "agentBinding", "cancelReason", "cancelledBy", "requestedBy", "name"] {
            assert!(json.get(key).is_some(), "{key} is always present");
        }
    }

    #[test]
    fn once_at_an_instant_reports_its_distance_and_recurring_reports_none() {
        let at = record(Schedule::Once { fire_at_ms: 1_700_000_005_000, duration_ms: None });
        assert_eq!(TimerView::from(&at).duration_ms, Some(5_000));
        let every = record(Schedule::Interval {
            every_ms: 60_000,
            start_at_ms: 1_700_000_060_000,
            end_at_ms: None,
            max_occurrences: Some(3),
        });
        let view = TimerView::from(&every);
        assert_eq!(view.duration_ms, None);
        let schedule = serde_json::to_value(&view.schedule).expect("serializes");
        assert_eq!(
            schedule,
            serde_json::json!({"kind": "interval", "every": 60_000, "startAt": "2023-11-14T22:14:20.000Z", "maxOccurrences": 3})
        );
    }

    #[test]
    fn envelope_is_deterministic_and_carries_the_fire() {
        let t = record(Schedule::Once { fire_at_ms: 1_700_000_090_000, duration_ms: Some(90_000) });
        let fire = FireRecord {
            timer_id: t.id,
            occurrence: 1,
            due_ms: 1_700_000_090_000,
            fired_at_ms: 1_700_000_090_004,
            epoch: 3,
            node_id: "n1".into(),
        };
        let event = OutboxEvent {
            seq: 42,
            kind: EventKind::Fired,
            tenant_id: t.tenant_id.clone(),
            timer_id: t.id,
            occurrence: 1,
            occurred_at_ms: 1_700_000_090_004,
            timer: t.clone(),
            fire: Some(fire),
        };
        let a = serde_json::to_value(EventEnvelope::from(&event)).expect("serializes");
        let b = serde_json::to_value(EventEnvelope::from(&event)).expect("serializes");
        assert_eq!(a, b);
        assert_eq!(a["envelopeId"], format!("evt-{}:1:fired", t.id));
        assert_eq!(a["dedupeKey"], format!("{}:1:fired", t.id));
        assert_eq!(a["seq"], 42);
        assert_eq!(a["event"]["type"], "timer.fired");
        assert_eq!(a["event"]["fire"]["latenessMs"], 4);
        assert_eq!(a["event"]["fire"]["nodeId"], "n1");
        assert_eq!(a["event"]["timer"]["id"], t.id.to_string());
        let parsed: EventEnvelope = serde_json::from_value(a).expect("round-trips");
        assert_eq!(parsed, EventEnvelope::from(&event));
    }
}
