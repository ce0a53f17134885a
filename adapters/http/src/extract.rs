//! Extractors that turn every way a request can be wrong into an
//! [`HttpError`] in our shape, instead of axum's plain-text rejections:
//!
//! - [`Caller`]: the `x-api-key` header (or `Authorization: Bearer <JWT>`
//!   when the server verifies tokens) → an authenticated [`Principal`]
//!   holding the role the route needs (401 / 403 / 503). It runs before the
//!   body is read, so a caller without the right key learns nothing about
//!   the body rules.
//! - [`JsonBody`] / [`OptionalJsonBody`]: wrap axum's [`Json`] (and its body
//!   limit): wrong content type → 415, body over the limit → 413, malformed
//!   or mistyped JSON → 400 naming the field serde points at
//!   (`labels.team`, `timers[2].duration`, an unknown field's own name).
//! - [`QueryPairs`]: the query string as ordered pairs, so parameters may
//!   repeat (`status=fired&status=cancelled`).
//! - [`TimerPath`]: the `{id}` path segment as a [`TimerId`] (400 naming `id`).

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, JsonRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use minoots_core::TimerId;
use minoots_core::auth::{Principal, Role};
use minoots_node::Credential;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::HttpError;

/// The header carrying the API key.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The role a route needs, as a type (see [`Caller`]).
pub trait NeedsRole {
    /// The role.
    const ROLE: Role;
}

/// Routes that read (`timer.read`).
#[derive(Debug)]
pub struct ReadRole;
impl NeedsRole for ReadRole {
    const ROLE: Role = Role::TimerRead;
}

/// Routes that create (`timer.write`).
#[derive(Debug)]
pub struct WriteRole;
impl NeedsRole for WriteRole {
    const ROLE: Role = Role::TimerWrite;
}

/// Routes that cancel (`timer.cancel`).
#[derive(Debug)]
pub struct CancelRole;
impl NeedsRole for CancelRole {
    const ROLE: Role = Role::TimerCancel;
}

/// Routes that administer a tenant (`tenant.admin`).
#[derive(Debug)]
pub struct AdminRole;
impl NeedsRole for AdminRole {
    const ROLE: Role = Role::TenantAdmin;
}

/// An authenticated caller holding role `R`.
#[derive(Debug)]
pub struct Caller<R> {
    /// Who calls; every request is scoped to `principal.tenant_id`.
    pub principal: Principal,
    role: PhantomData<fn() -> R>,
}

impl<R: NeedsRole> FromRequestParts<AppState> for Caller<R> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let header = |name| match parts.headers.get(name) {
            None => Ok(None),
            // Not visible ASCII: it cannot be any credential we accept.
            Some(value) => value
                .to_str()
                .map(Some)
                .map_err(|_| HttpError::unauthenticated("the credential is not valid")),
        };
        let credential =
            Credential::from_headers(header(API_KEY_HEADER)?, header(header::AUTHORIZATION.as_str())?)?;
        // The address the connection came from (set by the server's listener; absent in tests).
        let source = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        let principal = state.handle.authenticate(credential, source).await?;
        principal.require(R::ROLE)?;
        Ok(Caller { principal, role: PhantomData })
    }
}

/// A JSON request body of type `T` (required).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, HttpError> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON request body of type `T`, or `T::default()` when the body is empty
/// (then no content type is needed).
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, HttpError> {
        let json = is_json(req.headers());
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(unsupported_media_type());
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// The query string as `(name, value)` pairs in order, decoded.
#[derive(Debug, Default)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, HttpError> {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|Query(pairs)| QueryPairs(pairs))
            .map_err(|e| HttpError::invalid("query", e.body_text()))
    }
}

/// The `{id}` path parameter as a timer id.
#[derive(Debug, Clone, Copy)]
pub struct TimerPath(pub TimerId);

impl<S: Send + Sync> FromRequestParts<S> for TimerPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::invalid("id", e.body_text()))?;
        Ok(TimerPath(TimerId::parse("id", &text)?))
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn unsupported_media_type() -> HttpError {
    HttpError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the request body must be JSON (Content-Type: application/json)",
    )
    .with_field("content-type")
}

/// Reads the whole body within the configured limit (`DefaultBodyLimit`).
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, HttpError> {
    Bytes::from_request(req, state).await.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            HttpError::payload_too_large(state.config.max_body_bytes)
        }
        other => HttpError::invalid("body", other.body_text()),
    })
}

/// Decodes JSON through axum's [`Json`], mapping its rejections.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    Json::<T>::from_bytes(bytes).map(|Json(value)| value).map_err(json_rejection)
}

/// Maps an axum JSON rejection to our shape, naming the field when serde knows it.
pub(crate) fn json_rejection(rejection: JsonRejection) -> HttpError {
    match rejection {
        JsonRejection::JsonDataError(e) => serde_error(&e),
        JsonRejection::JsonSyntaxError(e) => serde_error(&e),
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        JsonRejection::BytesRejection(e) => HttpError::invalid("body", e.body_text()),
        other => HttpError::invalid("body", other.body_text()),
    }
}

/// Finds serde's error (with its path, if tracked) in a rejection's source chain.
fn serde_error(rejection: &(dyn std::error::Error + 'static)) -> HttpError {
    let mut source = rejection.source();
    while let Some(err) = source {
        if let Some(tracked) = err.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let path = tracked.path().to_string();
            let base = if path == "." { "" } else { path.as_str() };
            return json_error(base, tracked.inner());
        }
        if let Some(plain) = err.downcast_ref::<serde_json::Error>() {
            return json_error("", plain);
        }
        source = err.source();
    }
    HttpError::invalid("body", rejection.to_string())
}

/// Names the field of a serde error: an unknown or missing field's own name
/// under `base`, else `base`, else `body`.
fn json_error(base: &str, inner: &serde_json::Error) -> HttpError {
    let message = inner.to_string();
    let named = ["unknown field `", "missing field `"].iter().find_map(|prefix| {
        let rest = message.strip_prefix(prefix)?;
        rest.split('`').next().map(str::to_owned)
    });
    let field = match (base, named) {
        ("", Some(name)) => name,
        // serde_path_to_error already includes an unknown key in the path.
        (base, Some(name)) if base == name || base.ends_with(&format!(".{name}")) => base.to_owned(),
        (base, Some(name)) => format!("{base}.{name}"),
        ("", None) => "body".to_owned(),
        (base, None) => base.to_owned(),
    };
    HttpError::invalid(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Inner {
        labels: Option<BTreeMap<String, String>>,
        max_occurrences: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        timers: Vec<Inner>,
    }

    fn field_of<T: DeserializeOwned + std::fmt::Debug>(json: &str) -> Option<String> {
        parse_json::<T>(json.as_bytes()).expect_err("must fail").field
    }

    #[test]
    fn names_the_field_serde_points_at() {
        assert_eq!(field_of::<Inner>(r#"{"labels": {"team": 5}}"#).as_deref(), Some("labels.team"));
        assert_eq!(field_of::<Inner>(r#"{"labels": 5}"#).as_deref(), Some("labels"));
        assert_eq!(field_of::<Inner>(r#"{"maxOccurrences": -1}"#).as_deref(), Some("maxOccurrences"));
        assert_eq!(field_of::<Inner>(r#"{"bogus": 1}"#).as_deref(), Some("bogus"));
        assert_eq!(
            field_of::<Outer>(r#"{"timers": [{}, {"bogus": 1}]}"#).as_deref(),
            Some("timers[1].bogus")
        );
        assert_eq!(field_of::<Outer>(r#"{}"#).as_deref(), Some("timers"));
        assert_eq!(field_of::<Inner>(r#"{"labels": "#).as_deref(), Some("labels"));
        assert_eq!(field_of::<Inner>(r#"not json"#).as_deref(), Some("body"));
        assert_eq!(field_of::<Inner>(r#"{} trailing"#).as_deref(), Some("body"));
    }

    #[test]
    fn json_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        headers.insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().expect("valid"));
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, "application/merge-patch+json".parse().expect("valid"));
        assert!(is_json(&headers));
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().expect("valid"));
        assert!(!is_json(&headers));
    }
}
