//! Errors, typed by who is at fault.
//!
//! - [`ValidationError`]: the caller sent something that breaks a rule; it names
//!   the field (in the API's camelCase spelling) and the rule.
//! - [`ApiError`]: what a request's reply can be when it does not succeed.
//!   `Invalid`, `NotFound` and `Conflict` are the caller's; `QuotaExceeded`
//!   is the caller's budget; `Unavailable` and `Overloaded` are the service's.
//!   The last three say when to retry.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A rejected input: which field, and which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as the API spells it (`duration`, `labels.team`, `timers[3].fireAt`).
    pub field: String,
    /// The rule, phrased for a person (`must be ≥ 1 ms and ≤ 10 years`).
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field` breaking the rule `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The same error with `prefix` put before the field (`timers[3].` + `duration`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}{}", self.field);
        self
    }
}

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The request broke a rule (HTTP 400, gRPC INVALID_ARGUMENT).
    #[error("invalid request: {0}")]
    Invalid(ValidationError),
    /// No such timer in the caller's tenant (HTTP 404, gRPC NOT_FOUND).
    #[error("timer {timer_id} not found")]
    NotFound {
        /// The id that was asked for.
        timer_id: String,
    },
    /// The request conflicts with the timer's state or with an earlier
    /// request under the same idempotency key (HTTP 409, gRPC FAILED_PRECONDITION / ALREADY_EXISTS).
    #[error("conflict on {field}: {message}")]
    Conflict {
        /// The field whose value conflicts (`status`, `idempotencyKey`).
        field: String,
        /// What conflicts.
        message: String,
    },
    /// The service cannot take the request now; retry after the hint
    /// (HTTP 503 + Retry-After, gRPC UNAVAILABLE or FAILED_PRECONDITION when not leader).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
        /// When to retry.
        retry_after_ms: u64,
        /// The leader's address, when this node knows it and is not it.
        leader: Option<String>,
    },
    /// One of the tenant's quotas refuses the request; nothing was charged
    /// (HTTP 429 with `Retry-After` and `limitType`, gRPC RESOURCE_EXHAUSTED).
    #[error("quota exceeded ({}): {reason}", limit_type.as_str())]
    QuotaExceeded {
        /// Which limit.
        limit_type: crate::quota::LimitType,
        /// The limit and the usage, for a person.
        reason: String,
        /// When the request may succeed.
        retry_after_ms: u64,
    },
    /// Too many requests are queued; retry later (HTTP 429 / 503, gRPC RESOURCE_EXHAUSTED).
    #[error("overloaded: {reason}")]
    Overloaded {
        /// Which bound was hit.
        reason: String,
        /// When to retry.
        retry_after_ms: u64,
    },
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::Invalid(e)
    }
}

/// Why the store refused one item of a commit. These are expected outcomes
/// of racing writers, not failures of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreReject {
    /// The writer's epoch is not the current one (fencing).
    StaleEpoch {
        /// The epoch the store holds now.
        current_epoch: u64,
    },
    /// The occurrence is not yet due by the store's clock.
    TooEarly {
        /// The store's clock when it refused.
        store_now_ms: i64,
    },
    /// The timer's state moved on (already fired, cancelled, or at another occurrence).
    StateChanged,
    /// No such timer (in that tenant).
    NotFound,
    /// The idempotency key was used before with a different request.
    IdempotencyMismatch,
    /// The item holds what no store may keep (the field and the rule); the
    /// validation refuses it first, so only a caller that skips it meets this.
    Invalid(ValidationError),
}

impl fmt::Display for StoreReject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Why a store operation did not complete, typed by what it means for its
/// outcome: only [`StoreFailure::Unknown`] leaves the caller unsure whether
/// it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreFailure {
    /// The driver never sent it (a commit of an epoch or lease that had
    /// already ended locally): nothing applied.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The store refused it as a whole (a batch the engine could never
    /// legitimately send, `crate::commit::CommitFault`): nothing applied.
    #[error("refused by the store: {0}")]
    Refused(String),
    /// The store could not run it (I/O, connection, timeout, corruption): it
    /// may or may not have applied.
    #[error("store unavailable, outcome unknown: {0}")]
    Unknown(String),
}

impl StoreFailure {
    /// What happened, for a person.
    pub fn detail(&self) -> &str {
        match self {
            Self::NotSent(detail) | Self::Refused(detail) | Self::Unknown(detail) => detail,
        }
    }

    /// Whether the operation certainly applied nothing.
    pub fn applied_nothing(&self) -> bool {
        !matches!(self, Self::Unknown(_))
    }
}
