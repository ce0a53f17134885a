//! A timer as a client asks for it, before validation. Adapters (REST, gRPC,
//! CLI) turn their wire formats into a [`TimerDraft`] with the parse helpers
//! in [`crate::validate`], so every interface gives the same errors for the
//! same mistakes; [`crate::validate::validate`] turns a draft into a
//! [`ValidTimer`] or names the field at fault.
//!
//! Field names in errors are the REST API's camelCase names.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::TenantId;
use crate::time::WallMs;
use crate::timer::{MisfirePolicy, Schedule};

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
