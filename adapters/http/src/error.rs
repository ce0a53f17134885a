//! The REST error shape and status mapping. Every failure a client can see —
//! an engine [`ApiError`], a failed API-key lookup, a missing role, an axum
//! extractor rejection, an unknown route, even a caught panic — leaves the
//! server as one JSON body:
//!
//! ```json
//! {"error": {"code": "invalid_argument", "message": "duration: must be ≥ 1 ms", "field": "duration"}}
//! ```
//!
//! | code | status | when |
//! |---|---|---|
//! | `invalid_argument` | 400 | a field breaks a rule, malformed JSON, unknown field or parameter |
//! | `unauthenticated` | 401 | `x-api-key` missing or not valid, or a bearer token not valid (`field`: `authorization`) |
//! | `permission_denied` | 403 | the key lacks the role, or names another tenant |
//! | `not_found` | 404 | no such timer in the caller's tenant, or no such route |
//! | `method_not_allowed` | 405 | the route exists with other methods |
//! | `conflict` | 409 | idempotency key reused with another request; cancel of a fired timer |
//! | `payload_too_large` | 413 | body over the configured limit |
//! | `unsupported_media_type` | 415 | a body that is not `application/json` |
//! | `too_many_requests` | 429 | too many unknown or revoked API keys from the caller's address lately (`Retry-After`, `retryAfterMs`) |
//! | `quota_exceeded` | 429 | a tenant quota refuses the request; nothing was charged (`limitType`: `daily`, `burst`, `rate`; `Retry-After`, `retryAfterMs`) |
//! | `too_many_streams` | 429 | the tenant already holds its limit of open event streams |
//! | `unavailable` | 503 | not the leader, store failing, shutting down (`Retry-After`, `retryAfterMs`, `leader`) |
//! | `overloaded` | 503 | too many writes queued on this node (`Retry-After`, `retryAfterMs`) |
//! | `internal` | 500 | a bug (a handler panicked); never expected |
//!
//! `overloaded` is a 503, not a 429: it says this *node* is saturated, which
//! is not the caller's fault and which another node may not share. 429 stays
//! reserved for per-tenant quotas and rate limits (the caller's own budget).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minoots_core::auth::Forbidden;
use minoots_core::quota::LimitType;
use minoots_core::{ApiError, TimerId, ValidationError};
use minoots_node::AuthError;
use serde::Serialize;

/// A failed request, ready to be written as our error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// For a person.
    pub message: String,
    /// The offending field (camelCase, `timers[3].duration`, a query parameter or header name).
    pub field: Option<String>,
    /// When to retry (503 only).
    pub retry_after_ms: Option<u64>,
    /// The leader's address, when known (503 `unavailable` only).
    pub leader: Option<String>,
    /// The quota that refused (429 `quota_exceeded` only): `daily`, `burst`, `rate`.
    pub limit_type: Option<LimitType>,
}

/// The JSON body: `{"error": {...}}`.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_type: Option<&'a str>,
}

impl HttpError {
    /// An error with no field and no retry hint.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_ms: None,
            leader: None,
            limit_type: None,
        }
    }

    /// The same error naming `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400 `invalid_argument` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message).with_field(field)
    }

    /// 401 `unauthenticated` (the field is the header).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).with_field("x-api-key")
    }

    /// 403 `permission_denied`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
        .with_field("body")
    }

    /// 503 `unavailable` with a retry hint.
    pub fn unavailable(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 429 `too_many_requests` with a retry hint.
    pub fn too_many_requests(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    /// 429 `too_many_streams`: the tenant holds its limit of open event streams.
    pub fn too_many_streams(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Maps an engine error about timer `id` (fills the id into `NotFound`).
    pub fn for_timer(error: ApiError, id: &TimerId) -> Self {
        match error {
            ApiError::NotFound { .. } => Self::not_found(format!("timer {id} not found")).with_field("id"),
            other => Self::from(other),
        }
    }
}

impl From<ValidationError> for HttpError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Invalid(v) => Self::from(v),
            ApiError::NotFound { timer_id } if timer_id.is_empty() => Self::not_found("timer not found"),
            ApiError::NotFound { timer_id } => Self::not_found(format!("timer {timer_id} not found")),
            ApiError::Conflict { field, message } => {
                Self::new(StatusCode::CONFLICT, "conflict", format!("{field}: {message}")).with_field(field)
            }
            ApiError::Unavailable { reason, retry_after_ms, leader } => {
                // A cluster node's hint names its REST and gRPC URLs: give the REST one.
                let leader = leader.map(|l| minoots_node::leader_endpoint(&l, "rest").to_owned());
                Self { leader, ..Self::unavailable(reason, retry_after_ms) }
            }
            ApiError::Overloaded { reason, retry_after_ms } => Self {
                retry_after_ms: Some(retry_after_ms),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", reason)
            },
            ApiError::QuotaExceeded { limit_type, reason, retry_after_ms } => Self {
                retry_after_ms: Some(retry_after_ms),
                limit_type: Some(limit_type),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", reason)
            },
        }
    }
}

impl From<AuthError> for HttpError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid => Self::unauthenticated(error.to_string()),
            AuthError::InvalidToken(_) => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", error.to_string())
                    .with_field("authorization")
            }
            AuthError::Unavailable(_) => Self::unavailable(error.to_string(), 1_000),
            AuthError::Throttled { retry_after_ms } => {
                Self::too_many_requests(error.to_string(), retry_after_ms)
            }
        }
    }
}

impl From<Forbidden> for HttpError {
    fn from(error: Forbidden) -> Self {
        let field = matches!(error, Forbidden::WrongTenant { .. }).then_some("tenantId");
        let e = Self::forbidden(error.to_string());
        match field {
            Some(f) => e.with_field(f),
            None => e,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up.
fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                retry_after_ms: self.retry_after_ms,
                leader: self.leader.as_deref(),
                limit_type: self.limit_type.map(LimitType::as_str),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(ms)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(0), 0);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1_000), 1);
        assert_eq!(retry_after_secs(1_001), 2);
    }

    #[test]
    fn unavailable_carries_hint_and_leader() {
        let e = HttpError::from(ApiError::Unavailable {
            reason: "not leader".into(),
            retry_after_ms: 1_500,
            leader: Some("http://n2:8080".into()),
        });
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let response = e.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn a_cluster_leader_hint_gives_the_rest_url() {
        let e = HttpError::from(ApiError::Unavailable {
            reason: "not leader".into(),
            retry_after_ms: 250,
            leader: Some("rest=http://127.0.0.1:4001 grpc=http://127.0.0.1:50052".into()),
        });
        assert_eq!(e.leader.as_deref(), Some("http://127.0.0.1:4001"));
    }

    #[test]
    fn overloaded_is_503() {
        let e = HttpError::from(ApiError::Overloaded { reason: "queue".into(), retry_after_ms: 200 });
        assert_eq!(
            (e.status, e.code, e.retry_after_ms),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(200))
        );
    }
}
