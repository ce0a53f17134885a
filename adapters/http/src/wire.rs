//! Request bodies as the REST API spells them (camelCase, MINOOTS's names,
//! unknown fields rejected) and their conversion into core types. This module
//! only converts formats — `"90s"` → ms, ISO-8601 → wall ms, the caller's
//! tenant into the draft; every rule about values is the engine's
//! (`minoots_core::validate::validate`), so REST, gRPC and the CLI give the same
//! error for the same mistake.

use std::collections::BTreeMap;

use minoots_core::auth::Principal;
use minoots_core::draft::{TimerDraft, whole_number};
use minoots_core::validate::{parse_duration_text, parse_instant};
use minoots_core::{TenantId, ValidationError};
use serde::Deserialize;

/// `POST /api/timers` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTimerBody {
    /// Must be the key's tenant when given.
    pub tenant_id: Option<String>,
    /// Who asks (default: the API key's id).
    pub requested_by: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Fire once after this delay: ms as a number, or text like `"90s"`.
    pub duration: Option<serde_json::Value>,
    /// Fire once at this ISO-8601 instant.
    pub fire_at: Option<String>,
    /// Fire every period: ms as a number, or text like `"5m"`.
    pub every: Option<serde_json::Value>,
    /// Fire on a cron expression.
    pub cron: Option<String>,
    /// IANA zone for `cron`.
    pub time_zone: Option<String>,
    /// First slot for `every` / `cron` (ISO-8601).
    pub start_at: Option<String>,
    /// Last slot for `every` / `cron` (ISO-8601).
    pub end_at: Option<String>,
    /// At most this many fires.
    pub max_occurrences: Option<serde_json::Value>,
    /// `fire_once`, `fire_all`, `skip`.
    pub misfire_policy: Option<String>,
    /// String labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Free JSON.
    pub metadata: Option<serde_json::Value>,
    /// Actions to run on fire.
    pub action_bundle: Option<serde_json::Value>,
    /// MINOOTS agent binding.
    pub agent_binding: Option<serde_json::Value>,
    /// Idempotency key (also accepted as the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
}

/// `POST /api/timers/batch` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchBody {
    /// 1 to 1,000 timers, each shaped like a create body.
    pub timers: Vec<CreateTimerBody>,
}

/// `POST /api/timers/{id}/cancel` body (optional as a whole).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CancelBody {
    /// Must be the key's tenant when given.
    pub tenant_id: Option<String>,
    /// Who cancels (default: the API key's id).
    pub requested_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// A validation error for `field` under `prefix` (`timers[3].`).
fn invalid(prefix: &str, field: &str, message: &str) -> ValidationError {
    ValidationError::new(format!("{prefix}{field}"), message)
}

/// A duration given as a JSON number of milliseconds or as text (`"90s"`).
fn duration_ms(prefix: &str, field: &str, value: &serde_json::Value) -> Result<u64, ValidationError> {
    match value {
        serde_json::Value::Number(n) => match (whole_number(value), n.as_f64()) {
            (Some(ms), _) => Ok(ms),
            (None, Some(f)) if f < 0.0 => {
                Err(invalid(prefix, field, "must be a positive number of milliseconds"))
            }
            (None, _) => Err(invalid(prefix, field, "must be a whole number of milliseconds, below 2^53")),
        },
        serde_json::Value::String(text) => parse_duration_text(field, text).map_err(|e| e.prefixed(prefix)),
        _ => Err(invalid(
            prefix,
            field,
            "must be a number of milliseconds or a string such as \"90s\", \"5m\", \"1h\"",
        )),
    }
}

/// An ISO-8601 instant, if given.
fn instant(prefix: &str, field: &str, text: Option<&str>) -> Result<Option<i64>, ValidationError> {
    text.map(|t| parse_instant(field, t).map_err(|e| e.prefixed(prefix))).transpose()
}

impl CreateTimerBody {
    /// Converts the body into a draft owned by the caller's tenant.
    /// `header_key` is the `Idempotency-Key` header; `prefix` names the item in a batch.
    pub fn into_draft(
        self,
        caller: &Principal,
        header_key: Option<&str>,
        prefix: &str,
    ) -> Result<TimerDraft, CreateError> {
        let tenant = caller.scope(self.tenant_id.as_deref()).map_err(CreateError::Forbidden)?;
        let idempotency_key = match (self.idempotency_key, header_key) {
            (Some(body), Some(header)) if body != header => {
                return Err(CreateError::Invalid(invalid(
                    prefix,
                    "idempotencyKey",
                    "differs from the Idempotency-Key header",
                )));
            }
            (Some(body), _) => Some(body),
            (None, header) => header.map(str::to_owned),
        };
        let convert = || -> Result<TimerDraft, ValidationError> {
            Ok(TimerDraft {
                tenant_id: Some(tenant),
                requested_by: Some(self.requested_by.unwrap_or_else(|| caller.key_id.clone())),
                name: self.name,
                duration_ms: self
                    .duration
                    .as_ref()
                    .map(|v| duration_ms(prefix, "duration", v))
                    .transpose()?,
                fire_at_ms: instant(prefix, "fireAt", self.fire_at.as_deref())?,
                every_ms: self.every.as_ref().map(|v| duration_ms(prefix, "every", v)).transpose()?,
                cron: self.cron,
                time_zone: self.time_zone,
                start_at_ms: instant(prefix, "startAt", self.start_at.as_deref())?,
                end_at_ms: instant(prefix, "endAt", self.end_at.as_deref())?,
                max_occurrences: self
                    .max_occurrences
                    .as_ref()
                    .map(|v| {
                        whole_number(v).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                            invalid(prefix, "maxOccurrences", "must be a whole number from 1 to 4294967295")
                        })
                    })
                    .transpose()?,
                misfire_policy: self.misfire_policy,
                labels: self.labels.unwrap_or_default(),
                metadata: self.metadata,
                action_bundle: self.action_bundle,
                agent_binding: self.agent_binding,
                idempotency_key,
            })
        };
        convert().map_err(CreateError::Invalid)
    }
}

/// Why a create body could not become a draft.
#[derive(Debug)]
pub enum CreateError {
    /// A value could not be converted (400).
    Invalid(ValidationError),
    /// `tenantId` names another tenant (403).
    Forbidden(minoots_core::auth::Forbidden),
}

impl CancelBody {
    /// The tenant, canceller and reason (their text limits are the engine's
    /// cancel rules, applied to every transport alike).
    pub fn resolve(self, caller: &Principal) -> Result<(TenantId, String, Option<String>), CreateError> {
        let tenant = caller.scope(self.tenant_id.as_deref()).map_err(CreateError::Forbidden)?;
        let requested_by = self.requested_by.unwrap_or_else(|| caller.key_id.clone());
        Ok((tenant, requested_by, self.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_durations() {
        assert_eq!(duration_ms("", "duration", &json!(1500)).ok(), Some(1500));
        assert_eq!(duration_ms("", "duration", &json!(0)).ok(), Some(0), "range is the engine's rule");
        assert_eq!(duration_ms("", "duration", &json!(1500.0)).ok(), Some(1500));
        assert_eq!(duration_ms("", "duration", &json!("90s")).ok(), Some(90_000));
        let e = duration_ms("timers[2].", "duration", &json!(-5)).expect_err("negative");
        assert_eq!(e.field, "timers[2].duration");
        assert!(duration_ms("", "duration", &json!(1.5)).is_err());
        assert!(duration_ms("", "duration", &json!(1e30)).is_err());
        assert_eq!(duration_ms("", "every", &json!(true)).expect_err("bool").field, "every");
    }
}
