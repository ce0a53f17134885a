//! Validation rules for drafts ([`validate`]): every rule a
//! client request must pass, the defaults a draft gets (time zone `UTC`,
//! misfire `fire_once`, interval start one period from now, cron start now),
//! the first due time, the request fingerprint, and the text parsers adapters
//! share for durations and instants.
//!
//! First due time of a recurring timer: the first slot at or after both its
//! start and now. A `startAt` in the past is accepted for `every` and `cron`;
//! the slots keep their anchor (`startAt + k × every` for intervals) and the
//! missed ones are not fired.
//!
//! A `fireAt` up to the past-fire tolerance before now (a client whose clock
//! is a little behind) is accepted and fires at once; its due time stays the
//! requested instant, so the recorded lateness shows the difference. An older
//! one is refused, the message naming the tolerance. `startAt` needs no such
//! rule: it never makes a slot fire in the past.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io;

use crate::action::{ActionPolicy, parse_bundle};
use crate::draft::{TimerDraft, ValidTimer};
use crate::error::ValidationError;
use crate::limits::{
    BATCH_MAX, EVERY_MIN_MS, FUTURE_MAX_MS, IDEMPOTENCY_KEY_LEN_MAX, JSON_BYTES_MAX, LABEL_KEY_LEN_MAX,
    LABEL_VALUE_LEN_MAX, LABELS_MAX, TEXT_LEN_MAX,
};
use crate::schedule::{parse_cron, slot_after};
use crate::time::{Now, WallMs, format_wall_ms};
use crate::timer::{MisfirePolicy, Schedule};

/// The largest accepted delay, as the unsigned type durations come in.
const FUTURE_MAX_MS_U64: u64 = FUTURE_MAX_MS as u64;

const ONLY_RECURRING: &str = "is only allowed with every or cron";
const TOO_FAR_AHEAD: &str = "must be at most 10 years in the future";
/// The rule for text no store may keep.
pub(crate) const NO_NUL: &str = "must not contain the NUL character (\\u0000)";

/// Validates one request's drafts, all or nothing: 1 to [`BATCH_MAX`] of
/// them, each by [`validate`]; in a batch (more than one) an error names its
/// item (`timers[3].duration`).
pub fn validate_all(
    drafts: &[TimerDraft],
    now: Now,
    actions: &ActionPolicy,
    past_fire_tolerance_ms: u64,
) -> Result<Vec<ValidTimer>, ValidationError> {
    if drafts.is_empty() || drafts.len() > BATCH_MAX {
        return Err(ValidationError::new("timers", format!("must hold 1 to {BATCH_MAX} timers")));
    }
    let batch = drafts.len() > 1;
    let mut valid = Vec::with_capacity(drafts.len());
    for (i, draft) in drafts.iter().enumerate() {
        match validate(draft, now, actions, past_fire_tolerance_ms) {
            Ok(v) => valid.push(v),
            Err(e) if batch => return Err(e.prefixed(&format!("timers[{i}]."))),
            Err(e) => return Err(e),
        }
    }
    Ok(valid)
}

/// Checks every rule of a draft at time `now`.
///
/// Rules (each error names its field):
/// - `tenantId` present.
/// - exactly one of `duration` / `fireAt` / `every` / `cron` (`schedule` if none or several).
/// - `duration`: 1 ms ..= [`FUTURE_MAX_MS`]. `fireAt`: not before `now.wall_ms −
///   past_fire_tolerance_ms` (an instant within the tolerance in the past fires at once;
///   see [`crate::limits::PAST_FIRE_TOLERANCE_DEFAULT_MS`]), at most [`FUTURE_MAX_MS`] ahead.
///   `every`: [`EVERY_MIN_MS`] ..= [`FUTURE_MAX_MS`]. `startAt` may lie anywhere in the
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
    actions: &ActionPolicy,
    past_fire_tolerance_ms: u64,
) -> Result<ValidTimer, ValidationError> {
    let tenant_id = draft.tenant_id.clone().ok_or_else(|| ValidationError::new("tenantId", "is required"))?;
    let (schedule, first_due_ms) = check_schedule(draft, now, past_fire_tolerance_ms)?;
    let misfire = match draft.misfire_policy.as_deref() {
        None => MisfirePolicy::default(),
        Some(text) => MisfirePolicy::parse(text).ok_or_else(|| {
            ValidationError::new("misfirePolicy", "must be one of fire_once, fire_all, skip")
        })?,
    };
    check_text("name", draft.name.as_deref())?;
    check_text("requestedBy", draft.requested_by.as_deref())?;
    check_labels(&draft.labels)?;
    check_no_nul(draft)?;
    check_json_size("metadata", draft.metadata.as_ref())?;
    check_json_size("actionBundle", draft.action_bundle.as_ref())?;
    if let Some(bundle) = draft.action_bundle.as_ref().filter(|b| !b.is_null()) {
        parse_bundle(bundle, actions)?;
    }
    check_json_size("agentBinding", draft.agent_binding.as_ref())?;
    if let Some(key) = &draft.idempotency_key {
        let chars = key.chars().count();
        if chars == 0 || chars > IDEMPOTENCY_KEY_LEN_MAX {
            return Err(ValidationError::new("idempotencyKey", "must be 1-128 characters"));
        }
    }

    Ok(ValidTimer {
        tenant_id,
        requested_by: draft.requested_by.clone().unwrap_or_default(),
        name: draft.name.clone(),
        schedule,
        misfire,
        first_due_ms,
        labels: draft.labels.clone(),
        metadata: draft.metadata.clone(),
        action_bundle: draft.action_bundle.clone(),
        agent_binding: draft.agent_binding.clone(),
        idempotency_key: draft.idempotency_key.clone(),
        fingerprint: fingerprint(draft),
    })
}

/// The schedule and the due time of occurrence 1.
fn check_schedule(
    draft: &TimerDraft,
    now: Now,
    past_fire_tolerance_ms: u64,
) -> Result<(Schedule, WallMs), ValidationError> {
    let chosen = [
        draft.duration_ms.is_some(),
        draft.fire_at_ms.is_some(),
        draft.every_ms.is_some(),
        draft.cron.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    match chosen {
        0 => {
            return Err(ValidationError::new(
                "schedule",
                "is required: set one of duration, fireAt, every or cron",
            ));
        }
        1 => {}
        _ => {
            return Err(ValidationError::new(
                "schedule",
                "must be only one of duration, fireAt, every or cron",
            ));
        }
    }
    if draft.cron.is_none() && draft.time_zone.is_some() {
        return Err(ValidationError::new("timeZone", "is only allowed with cron"));
    }
    let recurring = draft.every_ms.is_some() || draft.cron.is_some();
    if !recurring {
        let recurring_only = [
            ("startAt", draft.start_at_ms.is_some()),
            ("endAt", draft.end_at_ms.is_some()),
            ("maxOccurrences", draft.max_occurrences.is_some()),
            ("misfirePolicy", draft.misfire_policy.is_some()),
        ];
        if let Some((field, _)) = recurring_only.into_iter().find(|(_, set)| *set) {
            return Err(ValidationError::new(field, ONLY_RECURRING));
        }
    }
    let latest_ms = now.wall_ms.saturating_add(FUTURE_MAX_MS);

    if let Some(duration_ms) = draft.duration_ms {
        let fire_at_ms = WallMs::try_from(duration_ms)
            .ok()
            .filter(|_| (1..=FUTURE_MAX_MS_U64).contains(&duration_ms))
            .and_then(|duration_ms| now.wall_ms.checked_add(duration_ms))
            .ok_or_else(|| ValidationError::new("duration", "must be ≥ 1 ms and ≤ 10 years"))?;
        return Ok((Schedule::Once { fire_at_ms, duration_ms: Some(duration_ms) }, fire_at_ms));
    }
    if let Some(fire_at_ms) = draft.fire_at_ms {
        let tolerance_ms = WallMs::try_from(past_fire_tolerance_ms).unwrap_or(WallMs::MAX);
        if fire_at_ms < now.wall_ms.saturating_sub(tolerance_ms) {
            return Err(ValidationError::new("fireAt", too_far_in_the_past(past_fire_tolerance_ms)));
        }
        if fire_at_ms > latest_ms {
            return Err(ValidationError::new("fireAt", TOO_FAR_AHEAD));
        }
        return Ok((Schedule::Once { fire_at_ms, duration_ms: None }, fire_at_ms));
    }

    // Recurring: `every` or `cron`.
    if draft.max_occurrences == Some(0) {
        return Err(ValidationError::new("maxOccurrences", "must be ≥ 1"));
    }
    if draft.start_at_ms.is_some_and(|start_at_ms| start_at_ms > latest_ms) {
        return Err(ValidationError::new("startAt", TOO_FAR_AHEAD));
    }
    // Slots at or after max(start, now), computed without the end bound so a
    // too-early `endAt` is reported as such.
    let (unbounded, no_slot_field) = if let Some(every_ms) = draft.every_ms {
        if !(EVERY_MIN_MS..=FUTURE_MAX_MS_U64).contains(&every_ms) {
            return Err(ValidationError::new("every", "must be ≥ 10 ms and ≤ 10 years"));
        }
        // `every_ms` ≤ FUTURE_MAX_MS, so the conversion cannot fail.
        let every_as_wall_ms = WallMs::try_from(every_ms).unwrap_or(FUTURE_MAX_MS);
        let start_at_ms = draft.start_at_ms.unwrap_or_else(|| now.wall_ms.saturating_add(every_as_wall_ms));
        (
            Schedule::Interval {
                every_ms,
                start_at_ms,
                end_at_ms: None,
                max_occurrences: draft.max_occurrences,
            },
            "every",
        )
    } else {
        let expression = draft.cron.clone().unwrap_or_default();
        let time_zone = draft.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
        parse_cron(&expression, &time_zone)?;
        let start_at_ms = draft.start_at_ms.unwrap_or(now.wall_ms);
        (
            Schedule::Cron {
                expression,
                time_zone,
                start_at_ms,
                end_at_ms: None,
                max_occurrences: draft.max_occurrences,
            },
            "cron",
        )
    };
    let first_due_ms = slot_after(&unbounded, now.wall_ms.saturating_sub(1))
        .ok_or_else(|| ValidationError::new(no_slot_field, "has no slot at or after its start"))?;
    if first_due_ms > latest_ms {
        return Err(ValidationError::new(
            no_slot_field,
            "must have its first slot at most 10 years in the future",
        ));
    }
    if let Some(end_at_ms) = draft.end_at_ms
        && end_at_ms < first_due_ms
    {
        return Err(ValidationError::new(
            "endAt",
            format!("must not be before the first slot ({})", format_wall_ms(first_due_ms)),
        ));
    }
    let schedule = match unbounded {
        Schedule::Interval { every_ms, start_at_ms, max_occurrences, .. } => {
            Schedule::Interval { every_ms, start_at_ms, end_at_ms: draft.end_at_ms, max_occurrences }
        }
        Schedule::Cron { expression, time_zone, start_at_ms, max_occurrences, .. } => {
            Schedule::Cron { expression, time_zone, start_at_ms, end_at_ms: draft.end_at_ms, max_occurrences }
        }
        once @ Schedule::Once { .. } => once,
    };
    Ok((schedule, first_due_ms))
}

/// The `fireAt` error for an instant older than the tolerance; names the tolerance.
fn too_far_in_the_past(tolerance_ms: u64) -> String {
    if tolerance_ms == 0 {
        return "must not be in the past (the past-fire tolerance is 0)".to_owned();
    }
    let tolerance = if tolerance_ms.is_multiple_of(1_000) {
        format!("{} s", tolerance_ms / 1_000)
    } else {
        format!("{tolerance_ms} ms")
    };
    format!("must not be more than {tolerance} in the past (the past-fire tolerance)")
}

/// The rule for free text: at most [`TEXT_LEN_MAX`] characters, no NUL.
fn check_text(field: &str, text: Option<&str>) -> Result<(), ValidationError> {
    match text {
        Some(text) if text.chars().count() > TEXT_LEN_MAX => {
            Err(ValidationError::new(field, format!("must be at most {TEXT_LEN_MAX} characters")))
        }
        Some(text) if text.contains('\0') => Err(ValidationError::new(field, NO_NUL)),
        _ => Ok(()),
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if labels.len() > LABELS_MAX {
        return Err(ValidationError::new("labels", "must have at most 64 labels"));
    }
    for (key, value) in labels {
        let key_ok = (1..=LABEL_KEY_LEN_MAX).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
        if !key_ok {
            return Err(ValidationError::new(
                label_field(key),
                "key must be 1-63 characters of letters, digits, '.', '_', '/' or '-'",
            ));
        }
        if value.chars().count() > LABEL_VALUE_LEN_MAX {
            return Err(ValidationError::new(label_field(key), "value must be at most 256 characters"));
        }
    }
    Ok(())
}

/// `labels.<key>`, with an overlong key shortened to keep the error small.
fn label_field(key: &str) -> String {
    if key.chars().count() > LABEL_KEY_LEN_MAX {
        let prefix: String = key.chars().take(LABEL_KEY_LEN_MAX).collect();
        format!("labels.{prefix}…")
    } else {
        format!("labels.{key}")
    }
}

/// Rejects JSON larger than [`JSON_BYTES_MAX`] once serialized; stops
/// serializing as soon as the budget is spent.
/// No text a client sends may hold NUL (free text: [`check_text`]):
/// PostgreSQL cannot store it in text, and every store must answer the same.
fn check_no_nul(draft: &TimerDraft) -> Result<(), ValidationError> {
    if draft.idempotency_key.as_deref().is_some_and(|t| t.contains('\0')) {
        return Err(ValidationError::new("idempotencyKey", NO_NUL));
    }
    if let Some((key, _)) = draft.labels.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
        return Err(ValidationError::new(label_field(&key.replace('\0', "\\u0000")), NO_NUL));
    }
    let documents = [
        ("metadata", draft.metadata.as_ref()),
        ("actionBundle", draft.action_bundle.as_ref()),
        ("agentBinding", draft.agent_binding.as_ref()),
    ];
    for (field, value) in documents {
        if let Some(path) = value.and_then(nul_path) {
            return Err(ValidationError::new(format!("{field}{path}"), NO_NUL));
        }
    }
    Ok(())
}

/// Where in `value` the first string or key holding NUL is, as a path
/// suffix (`.notes[2]`); built only when one is found, so a clean document
/// costs a walk and no allocation.
fn nul_path(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(String::new),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_path(item).map(|rest| format!("[{i}]{rest}")))
        }
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(format!(".{}", key.replace('\0', "\\u0000")))
            } else {
                nul_path(item).map(|rest| format!(".{key}{rest}"))
            }
        }),
        _ => None,
    }
}

fn check_json_size(field: &str, value: Option<&Value>) -> Result<(), ValidationError> {
    struct ByteBudget {
        remaining: usize,
    }
    impl io::Write for ByteBudget {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.remaining =
                self.remaining.checked_sub(bytes.len()).ok_or_else(|| io::Error::other("too large"))?;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let Some(value) = value else { return Ok(()) };
    serde_json::to_writer(ByteBudget { remaining: JSON_BYTES_MAX }, value)
        .map_err(|_| ValidationError::new(field, "must be at most 65536 bytes as JSON"))
}

/// FNV-1a (64-bit) over the canonical JSON of every field the client set:
/// an object with the API's camelCase keys, absent fields omitted, every
/// object's keys sorted at every depth (whatever map type serde_json uses),
/// no whitespace. Raw inputs are hashed (`duration`, not the due time it
/// gives), so a retry later hashes the same.
fn fingerprint(draft: &TimerDraft) -> u64 {
    let fields: [(&str, Option<Canonical<'_>>); 17] = [
        ("tenantId", draft.tenant_id.as_ref().map(|tenant| Canonical::Text(tenant.as_str()))),
        ("requestedBy", draft.requested_by.as_deref().map(Canonical::Text)),
        ("name", draft.name.as_deref().map(Canonical::Text)),
        ("duration", draft.duration_ms.map(Canonical::Unsigned)),
        ("fireAt", draft.fire_at_ms.map(Canonical::Signed)),
        ("every", draft.every_ms.map(Canonical::Unsigned)),
        ("cron", draft.cron.as_deref().map(Canonical::Text)),
        ("timeZone", draft.time_zone.as_deref().map(Canonical::Text)),
        ("startAt", draft.start_at_ms.map(Canonical::Signed)),
        ("endAt", draft.end_at_ms.map(Canonical::Signed)),
        ("maxOccurrences", draft.max_occurrences.map(|n| Canonical::Unsigned(u64::from(n)))),
        ("misfirePolicy", draft.misfire_policy.as_deref().map(Canonical::Text)),
        ("labels", Some(Canonical::Labels(&draft.labels))),
        ("metadata", draft.metadata.as_ref().map(Canonical::Json)),
        ("actionBundle", draft.action_bundle.as_ref().map(Canonical::Json)),
        ("agentBinding", draft.agent_binding.as_ref().map(Canonical::Json)),
        ("idempotencyKey", draft.idempotency_key.as_deref().map(Canonical::Text)),
    ];
    let mut present: Vec<(&str, Canonical<'_>)> =
        fields.into_iter().filter_map(|(key, value)| value.map(|value| (key, value))).collect();
    present.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Fnv1a::default();
    write_object(&mut hash, present, |value, out| match value {
        Canonical::Text(text) => write_json_text(text, out),
        Canonical::Unsigned(n) => write_json(&n, out),
        Canonical::Signed(n) => write_json(&n, out),
        // A BTreeMap iterates in key order: already canonical.
        Canonical::Labels(labels) => write_object(out, labels, |value, out| write_json_text(value, out)),
        Canonical::Json(value) => write_canonical(value, out),
    });
    hash.0
}

/// A field of the fingerprinted request, borrowed (nothing is cloned to hash it).
enum Canonical<'a> {
    Text(&'a str),
    Unsigned(u64),
    Signed(i64),
    Labels(&'a BTreeMap<String, String>),
    Json(&'a Value),
}

/// Compact JSON with object keys sorted at every depth, fed to `out`.
fn write_canonical(value: &Value, out: &mut impl io::Write) {
    match value {
        Value::Array(items) => {
            put(out, b"[");
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    put(out, b",");
                }
                write_canonical(item, out);
            }
            put(out, b"]");
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_object(out, entries, |item, out| write_canonical(item, out));
        }
        scalar => write_json(scalar, out),
    }
}

/// A JSON object of `entries` (already in key order), each value written by `write_value`.
fn write_object<W: io::Write, K: AsRef<str>, V>(
    out: &mut W,
    entries: impl IntoIterator<Item = (K, V)>,
    mut write_value: impl FnMut(V, &mut W),
) {
    put(out, b"{");
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            put(out, b",");
        }
        write_json_text(key.as_ref(), out);
        put(out, b":");
        write_value(value, out);
    }
    put(out, b"}");
}

/// `text` as a JSON string (serde_json's escaping).
fn write_json_text(text: &str, out: &mut impl io::Write) {
    write_json(&text, out);
}

/// `value` as compact JSON (serde_json's text).
fn write_json<T: serde::Serialize + ?Sized>(value: &T, out: &mut impl io::Write) {
    // Writing into a hash or a buffer cannot fail, and every value here serializes.
    let _ = serde_json::to_writer(out, value);
}

/// Writes `bytes` to an infallible sink (a hash or a buffer).
fn put(out: &mut impl io::Write, bytes: &[u8]) {
    let _ = out.write_all(bytes);
}

/// FNV-1a (64-bit), fed bytes as they are written.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.bytes(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::default();
    hash.bytes(bytes);
    hash.0
}

/// Why a duration text is not one ([`duration_text_ms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationTextError {
    /// It starts with `-`.
    Negative,
    /// More milliseconds than a `u64` holds.
    TooLarge,
    /// Neither a bare number nor a humantime duration.
    Malformed,
}

impl DurationTextError {
    /// The rule it broke, as the API words it (after the field name).
    pub fn rule(self) -> &'static str {
        match self {
            Self::Negative => "must not be negative",
            Self::TooLarge => "is too large",
            Self::Malformed => {
                "must be a duration like 250ms, 90s, 5m, 2h, 1d or 1h 30m (a bare number is milliseconds)"
            }
        }
    }
}

/// A duration text in milliseconds: a bare number is milliseconds, anything
/// else a humantime duration (`250ms`, `90s`, `5m`, `1h 30m`, `2d`). Zero is
/// a duration here; whether it is allowed is the caller's rule (the API's is
/// [`parse_duration_text`]'s). The API and the command line both parse
/// durations with this.
pub fn duration_text_ms(text: &str) -> Result<u64, DurationTextError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(DurationTextError::Negative);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map_err(|_| DurationTextError::TooLarge);
    }
    let duration = humantime::parse_duration(text).map_err(|error| match error {
        humantime::DurationError::NumberOverflow => DurationTextError::TooLarge,
        _ => DurationTextError::Malformed,
    })?;
    u64::try_from(duration.as_millis()).map_err(|_| DurationTextError::TooLarge)
}

/// Parses an API duration given as text ([`duration_text_ms`]), at least
/// 1 ms. Names `field`.
pub fn parse_duration_text(field: &str, text: &str) -> Result<u64, ValidationError> {
    match duration_text_ms(text) {
        Ok(0) => Err(ValidationError::new(field, "must be ≥ 1 ms")),
        Ok(millis) => Ok(millis),
        Err(error) => Err(ValidationError::new(field, error.rule())),
    }
}

/// Parses an ISO-8601 / RFC 3339 instant (`2026-01-02T03:04:05Z`, offsets allowed) to wall ms.
pub fn parse_instant(field: &str, text: &str) -> Result<WallMs, ValidationError> {
    let text = text.trim();
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%+"))
        .map(|instant| instant.timestamp_millis())
        .map_err(|_| ValidationError::new(field, "must be an ISO-8601 instant like 2026-01-02T03:04:05Z"))
}

/// Rules for the free text of a cancel: `requestedBy` and `reason` ([`check_text`]).
pub(crate) fn check_cancel_text(requested_by: &str, reason: Option<&str>) -> Result<(), ValidationError> {
    check_text("requestedBy", Some(requested_by))?;
    check_text("reason", reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;
    use crate::limits::PAST_FIRE_TOLERANCE_DEFAULT_MS;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    /// Validation under the default (closed) action policy and past-fire tolerance.
    fn validate(draft: &TimerDraft, now: Now) -> Result<ValidTimer, ValidationError> {
        super::validate(draft, now, &ActionPolicy::default(), PAST_FIRE_TOLERANCE_DEFAULT_MS)
    }

    fn validate_with_tolerance(
        draft: &TimerDraft,
        now: Now,
        tolerance_ms: u64,
    ) -> Result<ValidTimer, ValidationError> {
        super::validate(draft, now, &ActionPolicy::default(), tolerance_ms)
    }

    fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> WallMs {
        Utc.with_ymd_and_hms(year, month, day, hour, minute, second)
            .single()
            .expect("valid UTC time")
            .timestamp_millis()
    }

    /// 2026-01-01T00:00:00.250Z: not on a whole second, to catch rounding.
    fn now() -> Now {
        Now::new(utc(2026, 1, 1, 0, 0, 0) + 250, 7)
    }

    fn tenant() -> TenantId {
        TenantId::parse("tenantId", "acme").expect("valid tenant")
    }

    fn draft() -> TimerDraft {
        TimerDraft { tenant_id: Some(tenant()), duration_ms: Some(1_500), ..TimerDraft::default() }
    }

    fn recurring(every_ms: u64) -> TimerDraft {
        TimerDraft { duration_ms: None, every_ms: Some(every_ms), ..draft() }
    }

    fn cron(expression: &str) -> TimerDraft {
        TimerDraft { duration_ms: None, cron: Some(expression.into()), ..draft() }
    }

    fn error_of(draft: &TimerDraft) -> ValidationError {
        validate(draft, now()).expect_err("must be rejected")
    }

    #[test]
    fn nul_in_any_text_is_refused_naming_where() {
        let nul = "a\0b".to_owned();
        let cases = [
            (TimerDraft { name: Some(nul.clone()), ..draft() }, "name"),
            (TimerDraft { requested_by: Some(nul.clone()), ..draft() }, "requestedBy"),
            (TimerDraft { idempotency_key: Some(nul.clone()), ..draft() }, "idempotencyKey"),
            (TimerDraft { labels: [("team".to_owned(), nul.clone())].into(), ..draft() }, "labels.team"),
            (TimerDraft { metadata: Some(json!({"a": [1, {"b": nul}]})), ..draft() }, "metadata.a[1].b"),
            (TimerDraft { agent_binding: Some(json!({"k\u{0}": 1})), ..draft() }, "agentBinding.k\\u0000"),
            (
                TimerDraft {
                    action_bundle: Some(
                        json!({"actions": [{"kind": "nats", "parameters": {"subject": "a", "payload": "x\u{0}"}}]}),
                    ),
                    ..draft()
                },
                "actionBundle.actions[0].parameters.payload",
            ),
        ];
        for (draft, field) in cases {
            let error = error_of(&draft);
            assert_eq!(error.field, field);
            assert!(error.message.contains("NUL"), "{}", error.message);
        }
        assert_eq!(check_cancel_text("ops", Some("a\0b")).expect_err("refused").field, "reason");
        assert_eq!(check_cancel_text("o\0ps", None).expect_err("refused").field, "requestedBy");
    }

    #[test]
    fn accepts_a_duration_with_defaults() {
        let valid = validate(&draft(), now()).expect("valid");
        let due_ms = now().wall_ms + 1_500;
        assert_eq!(valid.tenant_id, tenant());
        assert_eq!(valid.schedule, Schedule::Once { fire_at_ms: due_ms, duration_ms: Some(1_500) });
        assert_eq!(valid.first_due_ms, due_ms);
        assert_eq!(valid.misfire, MisfirePolicy::FireOnce);
        assert_eq!(valid.requested_by, "");
        assert_eq!(valid.name, None);
        assert_eq!(valid.idempotency_key, None);
    }

    #[test]
    fn tenant_is_required() {
        let anonymous = TimerDraft { tenant_id: None, ..draft() };
        assert_eq!(error_of(&anonymous), ValidationError::new("tenantId", "is required"));
    }

    #[test]
    fn exactly_one_schedule_kind() {
        let none = TimerDraft { duration_ms: None, ..draft() };
        assert_eq!(error_of(&none).field, "schedule");
        let two = TimerDraft { every_ms: Some(1_000), ..draft() };
        assert_eq!(
            error_of(&two),
            ValidationError::new("schedule", "must be only one of duration, fireAt, every or cron")
        );
        let cron_and_fire_at = TimerDraft { fire_at_ms: Some(now().wall_ms), ..cron("* * * * *") };
        assert_eq!(error_of(&cron_and_fire_at).field, "schedule");
    }

    #[test]
    fn duration_bounds() {
        let rule = ValidationError::new("duration", "must be ≥ 1 ms and ≤ 10 years");
        assert_eq!(error_of(&TimerDraft { duration_ms: Some(0), ..draft() }), rule);
        assert_eq!(error_of(&TimerDraft { duration_ms: Some(FUTURE_MAX_MS_U64 + 1), ..draft() }), rule);
        assert_eq!(error_of(&TimerDraft { duration_ms: Some(u64::MAX), ..draft() }), rule);
        let longest =
            validate(&TimerDraft { duration_ms: Some(FUTURE_MAX_MS_U64), ..draft() }, now()).expect("valid");
        assert_eq!(longest.first_due_ms, now().wall_ms + FUTURE_MAX_MS);
        // A clock at the end of time cannot overflow.
        let error = validate(&draft(), Now::new(WallMs::MAX - 10, 0)).expect_err("overflow");
        assert_eq!(error, rule);
    }

    #[test]
    fn fire_at_bounds() {
        let at = |fire_at_ms| TimerDraft { duration_ms: None, fire_at_ms: Some(fire_at_ms), ..draft() };
        let exactly_now = validate(&at(now().wall_ms), now()).expect("now is not the past");
        assert_eq!(exactly_now.schedule, Schedule::Once { fire_at_ms: now().wall_ms, duration_ms: None });
        assert_eq!(exactly_now.first_due_ms, now().wall_ms);
        assert!(validate(&at(now().wall_ms + FUTURE_MAX_MS), now()).is_ok());
        assert_eq!(
            error_of(&at(now().wall_ms + FUTURE_MAX_MS + 1)),
            ValidationError::new("fireAt", TOO_FAR_AHEAD)
        );
    }

    #[test]
    fn fire_at_up_to_the_default_tolerance_in_the_past_is_accepted_and_keeps_its_instant() {
        assert_eq!(PAST_FIRE_TOLERANCE_DEFAULT_MS, 60_000);
        let at = |fire_at_ms| TimerDraft { duration_ms: None, fire_at_ms: Some(fire_at_ms), ..draft() };
        let edge_ms = now().wall_ms - 60_000;
        for fire_at_ms in [now().wall_ms - 1, now().wall_ms - 5_000, edge_ms] {
            let valid = validate(&at(fire_at_ms), now()).expect("within the tolerance");
            assert_eq!(valid.schedule, Schedule::Once { fire_at_ms, duration_ms: None });
            assert_eq!(valid.first_due_ms, fire_at_ms, "due stays the requested instant: it fires at once");
        }
        let error = error_of(&at(edge_ms - 1));
        assert_eq!(
            error,
            ValidationError::new(
                "fireAt",
                "must not be more than 60 s in the past (the past-fire tolerance)"
            )
        );
    }

    #[test]
    fn fire_at_tolerance_is_configurable_and_named_in_the_error() {
        let at = |fire_at_ms| TimerDraft { duration_ms: None, fire_at_ms: Some(fire_at_ms), ..draft() };
        let wall = now().wall_ms;
        assert!(validate_with_tolerance(&at(wall - 1_500), now(), 1_500).is_ok(), "exactly the tolerance");
        assert_eq!(
            validate_with_tolerance(&at(wall - 1_501), now(), 1_500).expect_err("1 ms beyond"),
            ValidationError::new(
                "fireAt",
                "must not be more than 1500 ms in the past (the past-fire tolerance)"
            )
        );
        // Tolerance 0: the old rule, nothing in the past.
        assert!(validate_with_tolerance(&at(wall), now(), 0).is_ok());
        assert_eq!(
            validate_with_tolerance(&at(wall - 1), now(), 0).expect_err("in the past"),
            ValidationError::new("fireAt", "must not be in the past (the past-fire tolerance is 0)")
        );
        // A tolerance larger than the clock's reading neither overflows nor panics.
        assert!(validate_with_tolerance(&at(WallMs::MIN + 1), Now::new(0, 0), u64::MAX).is_ok());
        assert!(validate_with_tolerance(&at(WallMs::MIN), Now::new(WallMs::MIN, 0), 1).is_ok());
        let early = Now::new(10, 0);
        assert!(validate_with_tolerance(&at(-5), early, 15).is_ok());
        assert!(validate_with_tolerance(&at(-6), early, 15).is_err());
    }

    #[test]
    fn start_at_in_the_past_needs_no_tolerance_its_first_slot_is_not_in_the_past() {
        // Far beyond any tolerance: accepted, and the first slot is at or after now.
        let long_ago = now().wall_ms - 10 * 86_400_000;
        for draft in [
            TimerDraft { start_at_ms: Some(long_ago), ..recurring(60_000) },
            TimerDraft { start_at_ms: Some(long_ago), ..cron("* * * * *") },
        ] {
            let valid = validate_with_tolerance(&draft, now(), 0).expect("a past startAt is accepted");
            assert!(valid.first_due_ms >= now().wall_ms);
        }
    }

    #[test]
    fn every_bounds_and_default_start() {
        let rule = ValidationError::new("every", "must be ≥ 10 ms and ≤ 10 years");
        assert_eq!(error_of(&recurring(EVERY_MIN_MS - 1)), rule);
        assert_eq!(error_of(&recurring(FUTURE_MAX_MS_U64 + 1)), rule);
        let valid = validate(&recurring(EVERY_MIN_MS), now()).expect("valid");
        let start_at_ms = now().wall_ms + 10;
        assert_eq!(
            valid.schedule,
            Schedule::Interval { every_ms: 10, start_at_ms, end_at_ms: None, max_occurrences: None }
        );
        assert_eq!(valid.first_due_ms, start_at_ms);
    }

    #[test]
    fn interval_start_in_the_past_keeps_its_anchor_and_starts_at_now() {
        let start_at_ms = now().wall_ms - 25_000;
        let anchored = TimerDraft { start_at_ms: Some(start_at_ms), ..recurring(10_000) };
        let valid = validate(&anchored, now()).expect("valid");
        assert_eq!(
            valid.schedule,
            Schedule::Interval { every_ms: 10_000, start_at_ms, end_at_ms: None, max_occurrences: None }
        );
        // Slots: now−25 s, now−15 s, now−5 s, now+5 s.
        assert_eq!(valid.first_due_ms, now().wall_ms + 5_000);
        // A slot exactly at now is the first due.
        let on_now = TimerDraft { start_at_ms: Some(now().wall_ms - 20_000), ..recurring(10_000) };
        assert_eq!(validate(&on_now, now()).expect("valid").first_due_ms, now().wall_ms);
    }

    #[test]
    fn interval_start_in_the_future_is_the_first_due() {
        let start_at_ms = now().wall_ms + 3_600_000;
        let later = TimerDraft { start_at_ms: Some(start_at_ms), ..recurring(60_000) };
        assert_eq!(validate(&later, now()).expect("valid").first_due_ms, start_at_ms);
        let too_far =
            TimerDraft { start_at_ms: Some(now().wall_ms + FUTURE_MAX_MS + 1), ..recurring(60_000) };
        assert_eq!(error_of(&too_far), ValidationError::new("startAt", TOO_FAR_AHEAD));
    }

    #[test]
    fn cron_defaults_to_utc_starting_now() {
        let valid = validate(&cron("*/15 * * * *"), now()).expect("valid");
        assert_eq!(
            valid.schedule,
            Schedule::Cron {
                expression: "*/15 * * * *".into(),
                time_zone: "UTC".into(),
                start_at_ms: now().wall_ms,
                end_at_ms: None,
                max_occurrences: None,
            }
        );
        assert_eq!(valid.first_due_ms, utc(2026, 1, 1, 0, 15, 0));
        // Exactly on a slot: that slot is the first due.
        let on_slot = Now::new(utc(2026, 1, 1, 0, 15, 0), 0);
        assert_eq!(validate(&cron("*/15 * * * *"), on_slot).expect("valid").first_due_ms, on_slot.wall_ms);
    }

    #[test]
    fn cron_first_due_in_a_zone_across_spring_forward() {
        // 02:30 Europe/Paris does not exist on 2024-03-31: first due is 03:00 CEST (01:00Z).
        let paris = TimerDraft { time_zone: Some("Europe/Paris".into()), ..cron("30 2 * * *") };
        let at = Now::new(utc(2024, 3, 30, 12, 0, 0), 0);
        assert_eq!(validate(&paris, at).expect("valid").first_due_ms, utc(2024, 3, 31, 1, 0, 0));
    }

    #[test]
    fn cron_start_in_the_past_first_due_is_at_or_after_now() {
        let past = TimerDraft { start_at_ms: Some(utc(2020, 1, 1, 0, 0, 0)), ..cron("0 * * * *") };
        let valid = validate(&past, now()).expect("valid");
        assert_eq!(valid.first_due_ms, utc(2026, 1, 1, 1, 0, 0));
        let future = TimerDraft { start_at_ms: Some(utc(2026, 2, 1, 0, 30, 0)), ..cron("0 * * * *") };
        assert_eq!(validate(&future, now()).expect("valid").first_due_ms, utc(2026, 2, 1, 1, 0, 0));
    }

    #[test]
    fn cron_and_time_zone_errors() {
        assert_eq!(error_of(&cron("* * *")).field, "cron");
        assert_eq!(
            error_of(&cron("0 0 30 2 *")),
            ValidationError::new("cron", "has no slot at or after its start")
        );
        let bad_zone = TimerDraft { time_zone: Some("Mars/Olympus".into()), ..cron("* * * * *") };
        assert_eq!(error_of(&bad_zone).field, "timeZone");
        let zone_without_cron = TimerDraft { time_zone: Some("UTC".into()), ..draft() };
        assert_eq!(
            error_of(&zone_without_cron),
            ValidationError::new("timeZone", "is only allowed with cron")
        );
    }

    #[test]
    fn recurring_only_fields_are_rejected_on_one_shots() {
        let with = |edit: fn(&mut TimerDraft)| {
            let mut draft = draft();
            edit(&mut draft);
            error_of(&draft)
        };
        assert_eq!(with(|d| d.start_at_ms = Some(0)), ValidationError::new("startAt", ONLY_RECURRING));
        assert_eq!(with(|d| d.end_at_ms = Some(0)), ValidationError::new("endAt", ONLY_RECURRING));
        assert_eq!(
            with(|d| d.max_occurrences = Some(3)),
            ValidationError::new("maxOccurrences", ONLY_RECURRING)
        );
        assert_eq!(
            with(|d| d.misfire_policy = Some("skip".into())),
            ValidationError::new("misfirePolicy", ONLY_RECURRING)
        );
    }

    #[test]
    fn max_occurrences_and_misfire_policy() {
        let zero = TimerDraft { max_occurrences: Some(0), ..recurring(1_000) };
        assert_eq!(error_of(&zero), ValidationError::new("maxOccurrences", "must be ≥ 1"));
        let limited = TimerDraft {
            max_occurrences: Some(3),
            misfire_policy: Some("fire_all".into()),
            ..recurring(1_000)
        };
        let valid = validate(&limited, now()).expect("valid");
        assert_eq!(valid.misfire, MisfirePolicy::FireAll);
        assert!(matches!(valid.schedule, Schedule::Interval { max_occurrences: Some(3), .. }));
        let unknown = TimerDraft { misfire_policy: Some("sometimes".into()), ..recurring(1_000) };
        assert_eq!(
            error_of(&unknown),
            ValidationError::new("misfirePolicy", "must be one of fire_once, fire_all, skip")
        );
    }

    #[test]
    fn end_at_must_not_precede_the_first_slot() {
        let first_ms = now().wall_ms + 1_000;
        let on_first = TimerDraft { end_at_ms: Some(first_ms), ..recurring(1_000) };
        let valid = validate(&on_first, now()).expect("valid");
        assert!(matches!(valid.schedule, Schedule::Interval { end_at_ms: Some(end), .. } if end == first_ms));
        let before = TimerDraft { end_at_ms: Some(first_ms - 1), ..recurring(1_000) };
        assert_eq!(
            error_of(&before),
            ValidationError::new("endAt", "must not be before the first slot (2026-01-01T00:00:01.250Z)")
        );
        let cron_before = TimerDraft { end_at_ms: Some(utc(2026, 1, 1, 0, 59, 59)), ..cron("0 * * * *") };
        assert_eq!(error_of(&cron_before).field, "endAt");
    }

    #[test]
    fn text_lengths_count_characters() {
        let long = "é".repeat(TEXT_LEN_MAX);
        let fits = TimerDraft { name: Some(long.clone()), requested_by: Some(long.clone()), ..draft() };
        let valid = validate(&fits, now()).expect("256 characters fit");
        assert_eq!(valid.requested_by, long);
        let rule = "must be at most 256 characters";
        let long_name = TimerDraft { name: Some("x".repeat(TEXT_LEN_MAX + 1)), ..draft() };
        assert_eq!(error_of(&long_name), ValidationError::new("name", rule));
        let long_requester = TimerDraft { requested_by: Some("x".repeat(TEXT_LEN_MAX + 1)), ..draft() };
        assert_eq!(error_of(&long_requester), ValidationError::new("requestedBy", rule));
    }

    #[test]
    fn label_rules() {
        let labelled =
            |pairs: Vec<(String, String)>| TimerDraft { labels: pairs.into_iter().collect(), ..draft() };
        let many = |count: usize| labelled((0..count).map(|i| (format!("k{i}"), "v".to_owned())).collect());
        assert!(validate(&many(LABELS_MAX), now()).is_ok());
        assert_eq!(
            error_of(&many(LABELS_MAX + 1)),
            ValidationError::new("labels", "must have at most 64 labels")
        );

        let key_rule = "key must be 1-63 characters of letters, digits, '.', '_', '/' or '-'";
        let one = |key: &str, value: &str| labelled(vec![(key.to_owned(), value.to_owned())]);
        assert!(validate(&one("app.kubernetes.io/name_x-1", "v"), now()).is_ok());
        assert_eq!(error_of(&one("team name", "v")), ValidationError::new("labels.team name", key_rule));
        assert_eq!(error_of(&one("", "v")), ValidationError::new("labels.", key_rule));
        assert!(validate(&one(&"k".repeat(LABEL_KEY_LEN_MAX), "v"), now()).is_ok());
        let long_key = "k".repeat(LABEL_KEY_LEN_MAX + 1);
        let field = format!("labels.{}…", "k".repeat(LABEL_KEY_LEN_MAX));
        assert_eq!(error_of(&one(&long_key, "v")), ValidationError::new(field, key_rule));

        assert!(validate(&one("team", &"v".repeat(LABEL_VALUE_LEN_MAX)), now()).is_ok());
        assert_eq!(
            error_of(&one("team", &"v".repeat(LABEL_VALUE_LEN_MAX + 1))),
            ValidationError::new("labels.team", "value must be at most 256 characters")
        );
    }

    #[test]
    fn json_size_limits() {
        // `"` + n characters + `"` serializes to n + 2 bytes.
        let of_bytes = |bytes: usize| Some(Value::String("x".repeat(bytes - 2)));
        let rule = "must be at most 65536 bytes as JSON";
        let at_limit = TimerDraft {
            metadata: of_bytes(JSON_BYTES_MAX),
            // A bundle must also parse (see `action`); only its size is checked here.
            agent_binding: of_bytes(JSON_BYTES_MAX),
            ..draft()
        };
        assert!(validate(&at_limit, now()).is_ok());
        let over = of_bytes(JSON_BYTES_MAX + 1);
        assert_eq!(
            error_of(&TimerDraft { metadata: over.clone(), ..draft() }),
            ValidationError::new("metadata", rule)
        );
        assert_eq!(
            error_of(&TimerDraft { action_bundle: over.clone(), ..draft() }),
            ValidationError::new("actionBundle", rule)
        );
        assert_eq!(
            error_of(&TimerDraft { agent_binding: over, ..draft() }),
            ValidationError::new("agentBinding", rule)
        );
    }

    #[test]
    fn idempotency_key_length() {
        let keyed = |key: String| TimerDraft { idempotency_key: Some(key), ..draft() };
        let rule = ValidationError::new("idempotencyKey", "must be 1-128 characters");
        assert_eq!(error_of(&keyed(String::new())), rule);
        assert_eq!(error_of(&keyed("k".repeat(IDEMPOTENCY_KEY_LEN_MAX + 1))), rule);
        let valid = validate(&keyed("k".repeat(IDEMPOTENCY_KEY_LEN_MAX)), now()).expect("valid");
        assert_eq!(valid.idempotency_key, Some("k".repeat(IDEMPOTENCY_KEY_LEN_MAX)));
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn canonical_encoding_sorts_keys_at_every_depth() {
        let mut out = Vec::new();
        write_canonical(&json!({"b": [1, {"z": null, "a": "é\""}], "a": true}), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), r#"{"a":true,"b":[1,{"a":"é\"","z":null}]}"#);
    }

    #[test]
    fn fingerprint_hashes_every_field_in_the_pinned_canonical_form() {
        let every_field = TimerDraft {
            tenant_id: Some(TenantId::parse("t", "acme").expect("valid")),
            requested_by: Some("me".into()),
            name: Some("n\u{e9}\"".into()),
            duration_ms: Some(1_500),
            fire_at_ms: Some(5),
            every_ms: Some(1_000),
            cron: Some("* * * * *".into()),
            time_zone: Some("UTC".into()),
            start_at_ms: Some(-7),
            end_at_ms: Some(9),
            max_occurrences: Some(3),
            misfire_policy: Some("skip".into()),
            labels: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            metadata: Some(json!({"x": [1, {"z": 1.5, "y": null}]})),
            action_bundle: Some(json!({"actions": [], "retryPolicy": {"maxAttempts": 2}})),
            agent_binding: Some(json!(true)),
            idempotency_key: Some("k".into()),
        };
        let canonical = concat!(
            r#"{"actionBundle":{"actions":[],"retryPolicy":{"maxAttempts":2}},"agentBinding":true,"#,
            r#""cron":"* * * * *","duration":1500,"endAt":9,"every":1000,"fireAt":5,"idempotencyKey":"k","#,
            r#""labels":{"a":"1","b":"2"},"maxOccurrences":3,"metadata":{"x":[1,{"y":null,"z":1.5}]},"#,
            r#""misfirePolicy":"skip","name":"né\"","requestedBy":"me","startAt":-7,"tenantId":"acme","#,
            r#""timeZone":"UTC"}"#
        );
        assert_eq!(fingerprint(&every_field), fnv1a_64(canonical.as_bytes()));
    }

    #[test]
    fn fingerprint_is_stable_and_covers_every_client_field() {
        let base = TimerDraft { metadata: Some(json!({"a": 1, "b": 2})), ..draft() };
        let fingerprint_at = |draft: &TimerDraft, at: Now| validate(draft, at).expect("valid").fingerprint;
        let later = Now::new(now().wall_ms + 60_000, 99);
        // A retry a minute later (a different due time) has the same fingerprint.
        assert_eq!(fingerprint_at(&base, now()), fingerprint_at(&base, later));
        // Pinned: stored fingerprints must keep matching across releases.
        assert_eq!(fingerprint(&draft()), fnv1a_64(br#"{"duration":1500,"labels":{},"tenantId":"acme"}"#));
        // Key order inside client JSON does not matter.
        let mut reordered = serde_json::Map::new();
        reordered.insert("b".into(), json!(2));
        reordered.insert("a".into(), json!(1));
        let same = TimerDraft { metadata: Some(Value::Object(reordered)), ..base.clone() };
        assert_eq!(fingerprint(&same), fingerprint(&base));

        let variants = [
            TimerDraft { tenant_id: Some(TenantId::parse("t", "other").expect("valid")), ..base.clone() },
            TimerDraft { requested_by: Some("me".into()), ..base.clone() },
            TimerDraft { name: Some("n".into()), ..base.clone() },
            TimerDraft { duration_ms: Some(1_501), ..base.clone() },
            TimerDraft { duration_ms: None, fire_at_ms: Some(1_500), ..base.clone() },
            TimerDraft { duration_ms: None, every_ms: Some(1_500), ..base.clone() },
            TimerDraft { cron: Some("* * * * *".into()), ..base.clone() },
            TimerDraft { time_zone: Some("UTC".into()), ..base.clone() },
            TimerDraft { start_at_ms: Some(1), ..base.clone() },
            TimerDraft { end_at_ms: Some(1), ..base.clone() },
            TimerDraft { max_occurrences: Some(1), ..base.clone() },
            TimerDraft { misfire_policy: Some("skip".into()), ..base.clone() },
            TimerDraft { labels: [("k".to_owned(), "v".to_owned())].into(), ..base.clone() },
            TimerDraft { metadata: Some(json!({"a": 1, "b": 3})), ..base.clone() },
            TimerDraft { metadata: None, ..base.clone() },
            TimerDraft { metadata: Some(Value::Null), ..base.clone() },
            TimerDraft { action_bundle: Some(json!([])), ..base.clone() },
            TimerDraft { agent_binding: Some(json!({})), ..base.clone() },
            TimerDraft { idempotency_key: Some("k".into()), ..base.clone() },
        ];
        let mut seen = std::collections::BTreeSet::from([fingerprint(&base)]);
        for variant in &variants {
            assert!(seen.insert(fingerprint(variant)), "fingerprint must change: {variant:?}");
        }
    }

    #[test]
    fn parses_duration_texts() {
        let cases = [
            ("1500", 1_500),
            (" 1500 ", 1_500),
            ("250ms", 250),
            ("90s", 90_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1h 30m", 5_400_000),
            ("1h30m", 5_400_000),
            ("2 hours", 7_200_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_duration_text("duration", text), Ok(millis), "{text}");
        }
    }

    #[test]
    fn rejects_bad_duration_texts_naming_the_field() {
        let forms =
            "must be a duration like 250ms, 90s, 5m, 2h, 1d or 1h 30m (a bare number is milliseconds)";
        let cases = [
            ("", forms),
            ("soon", forms),
            ("5 parsecs", forms),
            ("12abc", forms),
            ("0", "must be ≥ 1 ms"),
            ("0s", "must be ≥ 1 ms"),
            ("500us", "must be ≥ 1 ms"),
            ("-5s", "must not be negative"),
            ("-1500", "must not be negative"),
            ("99999999999999999999999", "is too large"),
            ("99999999999999999999999h", "is too large"),
            ("18446744073709551615s", "is too large"),
        ];
        for (text, message) in cases {
            assert_eq!(
                parse_duration_text("every", text),
                Err(ValidationError::new("every", message)),
                "{text}"
            );
        }
    }

    #[test]
    fn parses_instants() {
        let cases = [
            ("2026-01-02T03:04:05Z", utc(2026, 1, 2, 3, 4, 5)),
            ("2026-01-02T03:04:05.678Z", utc(2026, 1, 2, 3, 4, 5) + 678),
            ("2026-01-02T05:04:05+02:00", utc(2026, 1, 2, 3, 4, 5)),
            ("2026-01-01T22:04:05-05:00", utc(2026, 1, 2, 3, 4, 5)),
            ("2026-01-02t03:04:05z", utc(2026, 1, 2, 3, 4, 5)),
            ("2026-01-02 03:04:05Z", utc(2026, 1, 2, 3, 4, 5)),
            ("2026-01-02T05:04:05+0200", utc(2026, 1, 2, 3, 4, 5)),
            ("1969-12-31T23:59:59.999Z", -1),
        ];
        for (text, wall_ms) in cases {
            assert_eq!(parse_instant("fireAt", text), Ok(wall_ms), "{text}");
        }
    }

    #[test]
    fn rejects_bad_instants_naming_the_field() {
        for text in
            ["", "tomorrow", "2026-01-02T03:04:05", "2026-01-02", "2026-13-02T03:04:05Z", "1767225600000"]
        {
            assert_eq!(
                parse_instant("startAt", text),
                Err(ValidationError::new("startAt", "must be an ISO-8601 instant like 2026-01-02T03:04:05Z")),
                "{text}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn validate_never_panics_and_dues_are_not_older_than_the_tolerance(
            duration_ms in proptest::option::of(any::<u64>()),
            fire_at_ms in proptest::option::of(any::<i64>()),
            every_ms in proptest::option::of(prop_oneof![0u64..100_000, any::<u64>()]),
            cron in proptest::option::of(prop_oneof![Just("*/5 * * * * *"), Just("30 2 * * *"), Just("nope")]),
            time_zone in proptest::option::of(prop_oneof![Just("Europe/Paris"), Just("Nowhere")]),
            start_at_ms in proptest::option::of(any::<i64>()),
            end_at_ms in proptest::option::of(any::<i64>()),
            max_occurrences in proptest::option::of(any::<u32>()),
            wall_ms in prop_oneof![any::<i64>(), 0i64..4_000_000_000_000],
            tolerance_ms in prop_oneof![Just(PAST_FIRE_TOLERANCE_DEFAULT_MS), 0u64..1_000_000, any::<u64>()],
        ) {
            let draft = TimerDraft {
                tenant_id: Some(tenant()),
                duration_ms,
                fire_at_ms,
                every_ms,
                cron: cron.map(String::from),
                time_zone: time_zone.map(String::from),
                start_at_ms,
                end_at_ms,
                max_occurrences,
                ..TimerDraft::default()
            };
            if let Ok(valid) = validate_with_tolerance(&draft, Now::new(wall_ms, 0), tolerance_ms) {
                let tolerance = WallMs::try_from(tolerance_ms).unwrap_or(WallMs::MAX);
                prop_assert!(valid.first_due_ms >= wall_ms.saturating_sub(tolerance));
                if fire_at_ms.is_none() || draft.duration_ms.is_some() {
                    prop_assert!(valid.first_due_ms >= wall_ms, "only fireAt may lie in the past");
                }
                prop_assert!(valid.first_due_ms <= wall_ms.saturating_add(FUTURE_MAX_MS));
                if let Some(end_at_ms) = end_at_ms {
                    prop_assert!(valid.first_due_ms <= end_at_ms);
                }
            }
        }

        #[test]
        fn parsers_never_panic(text in ".{0,40}") {
            let _ = parse_duration_text("duration", &text);
            let _ = parse_instant("fireAt", &text);
        }
    }
}
