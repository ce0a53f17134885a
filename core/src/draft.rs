//! A timer as a client asks for it, before validation. Adapters (REST, gRPC,
//! CLI) turn their wire formats into a [`TimerDraft`] with the parse helpers
//! below, so every interface gives the same errors for the same mistakes;
//! [`validate`] turns a draft into a [`ValidTimer`] or names the field at fault.
//!
//! Field names in errors are the REST API's camelCase names.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::ValidationError;
use crate::ids::TenantId;
use crate::time::{Now, WallMs};
use crate::timer::{MisfirePolicy, Schedule};

/// The longest single delay or distance into the future accepted: 10 years.
pub const MAX_FUTURE_MS: i64 = 10 * 366 * 24 * 3_600_000;
/// The shortest interval period accepted.
pub const MIN_EVERY_MS: u64 = 10;
/// At most this many labels per timer.
pub const MAX_LABELS: usize = 64;
/// Label keys: 1–63 characters of `[A-Za-z0-9._/-]`.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Label values: at most 256 characters.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// `name`, `requestedBy`, cancel `reason`: at most 256 characters.
pub const MAX_TEXT_LEN: usize = 256;
/// `idempotencyKey`: 1–128 characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// `metadata`, `actionBundle`, `agentBinding`: at most 64 KiB each, as JSON.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// At most this many timers in one batch.
pub const MAX_BATCH: usize = 1_000;
/// How far in the past a `fireAt` may lie by default (a client whose clock is
/// a little behind): 60 s. Such a timer fires at once; its due time stays the
/// requested instant, so the recorded lateness shows the difference.
pub const DEFAULT_PAST_FIRE_TOLERANCE_MS: u64 = 60_000;

/// A timer as a client asked for it. Exactly one of `duration_ms`,
/// `fire_at_ms`, `every_ms`, `cron` must be set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerDraft {
    /// Owner (already authenticated by the adapter).
    pub tenant_id: Option<TenantId>,
    /// Who asks (free text, ≤ 256).
    pub requested_by: Option<String>,
    /// Display name (≤ 256).
    pub name: Option<String>,
    /// Fire once after this delay (`duration`).
    pub duration_ms: Option<u64>,
    /// Fire once at this instant (`fireAt`).
    pub fire_at_ms: Option<WallMs>,
    /// Fire every period (`every`).
    pub every_ms: Option<u64>,
    /// Fire on a cron expression (`cron`).
    pub cron: Option<String>,
    /// IANA zone for `cron` (`timeZone`, default `UTC`).
    pub time_zone: Option<String>,
    /// First slot for `every`/`cron` (`startAt`, default now (+ one period for `every`)).
    pub start_at_ms: Option<WallMs>,
    /// Last possible slot for `every`/`cron` (`endAt`).
    pub end_at_ms: Option<WallMs>,
    /// At most this many fires for `every`/`cron` (`maxOccurrences`).
    pub max_occurrences: Option<u32>,
    /// `misfirePolicy`: `fire_once` (default), `fire_all`, `skip`.
    pub misfire_policy: Option<String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata`.
    pub metadata: Option<serde_json::Value>,
    /// `actionBundle`.
    pub action_bundle: Option<serde_json::Value>,
    /// `agentBinding`.
    pub agent_binding: Option<serde_json::Value>,
    /// `idempotencyKey`.
    pub idempotency_key: Option<String>,
}

/// A draft that passed every rule, with its first due time computed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTimer {
    /// Owner.
    pub tenant_id: TenantId,
    /// Who asked (empty if not given).
    pub requested_by: String,
    /// Display name.
    pub name: Option<String>,
    /// The schedule.
    pub schedule: Schedule,
    /// Misfire policy.
    pub misfire: MisfirePolicy,
    /// Due time of occurrence 1.
    pub first_due_ms: WallMs,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Metadata.
    pub metadata: Option<serde_json::Value>,
    /// Action bundle.
    pub action_bundle: Option<serde_json::Value>,
    /// Agent binding.
    pub agent_binding: Option<serde_json::Value>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// A stable 64-bit fingerprint of the request's content (FNV-1a over a
    /// canonical encoding; excludes nothing the client chose). Two requests
    /// under one idempotency key must have equal fingerprints.
    pub fingerprint: u64,
}

/// Checks every rule of a draft at time `now`.
///
/// Rules (each error names its field):
/// - `tenantId` present.
/// - exactly one of `duration` / `fireAt` / `every` / `cron` (`schedule` if none or several).
/// - `duration`: 1 ms ..= [`MAX_FUTURE_MS`]. `fireAt`: not before `now.wall_ms −
///   past_fire_tolerance_ms` (an instant within the tolerance in the past fires at once;
///   see [`DEFAULT_PAST_FIRE_TOLERANCE_MS`]), at most [`MAX_FUTURE_MS`] ahead.
///   `every`: [`MIN_EVERY_MS`] ..= [`MAX_FUTURE_MS`]. `startAt` may lie anywhere in the
///   past (missed slots are not fired; the first slot is at or after now).
/// - `cron`: parses (5 or 6 fields, nicknames), and has at least one slot after start;
///   `timeZone` is a known IANA name (only with `cron`).
/// - `startAt` / `endAt` / `maxOccurrences` / `misfirePolicy` only with `every` or `cron`;
///   `endAt` ≥ first slot; `maxOccurrences` ≥ 1.
/// - text lengths, label count/key/value rules, JSON sizes, idempotency key length.
/// - `actionBundle`: see [`crate::action::parse_bundle`] (checked against the operator's `actions` policy).
pub fn validate(
    draft: &TimerDraft,
    now: Now,
    actions: &crate::action::ActionPolicy,
    past_fire_tolerance_ms: u64,
) -> Result<ValidTimer, ValidationError> {
    crate::validate::validate(draft, now, actions, past_fire_tolerance_ms)
}

/// Validates one request's drafts, all or nothing: 1 to [`MAX_BATCH`] of
/// them, each by [`validate`]; in a batch (more than one) an error names its
/// item (`timers[3].duration`).
pub fn validate_all(
    drafts: &[TimerDraft],
    now: Now,
    actions: &crate::action::ActionPolicy,
    past_fire_tolerance_ms: u64,
) -> Result<Vec<ValidTimer>, ValidationError> {
    crate::validate::validate_all(drafts, now, actions, past_fire_tolerance_ms)
}

/// A JSON number that is a whole non-negative number: `1500` or `1500.0`
/// (JSON Schema's integers include both), up to 2^53 so the float is exact.
pub fn whole_number(value: &serde_json::Value) -> Option<u64> {
    let number = value.as_number()?;
    number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(f))
            .map(|f| f as u64)
    })
}

/// Parses a duration: a JSON number of milliseconds, or a string
/// `"<n>ms|s|m|h|d"` (also humantime forms such as `"1h 30m"`). Names `field`.
pub fn parse_duration_text(field: &str, text: &str) -> Result<u64, ValidationError> {
    crate::validate::parse_duration_text(field, text)
}

/// Parses an ISO-8601 / RFC 3339 instant (`2026-01-02T03:04:05Z`, offsets allowed) to wall ms.
pub fn parse_instant(field: &str, text: &str) -> Result<WallMs, ValidationError> {
    crate::validate::parse_instant(field, text)
}
