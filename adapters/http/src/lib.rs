//! # minoots-http
//!
//! The REST face of a node: the timer API under `/api` (JSON, camelCase,
//! MINOOTS's field names), Server-Sent Events, health probes, an OpenAPI
//! document, and the Prometheus `/metrics` endpoint served on its own
//! address. It owns no timer logic: every request becomes one
//! [`minoots_core::Command`] sent through a [`NodeHandle`], and every answer
//! is rendered with the shared views of `minoots_node::views`.
//!
//! Real tokio only (axum, hyper): never part of the simulator's build.
//!
//! | route | module |
//! |---|---|
//! | `POST /api/timers`, `POST /api/timers/batch`, `GET /api/timers`, `GET /api/timers/{id}`, `GET /api/timers/{id}/fires`, `POST /api/timers/{id}/cancel` | [`timers`] |
//! | `GET /api/timers/stream` | [`stream`] |
//! | `GET /api/timers/{id}/deliveries`, `GET /api/dlq`, `GET /api/dlq/{id}`, `POST /api/dlq/{id}/replay`, `POST /api/dlq/replay` | [`deliveries`] |
//! | `GET /api/signing-keys`, `POST /api/signing-keys/rotate`, `POST /api/signing-keys/promote` | [`signing_keys`] |
//! | `GET /healthz`, `GET /health`, `GET /metrics` | [`health`] |
//! | `GET /api/openapi.json` | [`openapi`] |
//!
//! Errors: [`error`]. Extractors (auth, JSON, query, path): [`extract`].
#![cfg(not(madsim))]
#![forbid(unsafe_code)]

pub mod deliveries;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod signing_keys;
pub mod stream;
pub mod timers;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use minoots_node::NodeHandle;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::HttpError;

/// REST settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted (413 above). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Interval of keep-alive comments on event streams. Default 15 s.
    pub sse_keep_alive: Duration,
    /// Delivery history and the DLQ (`None`: those routes answer 404).
    pub actions: Option<minoots_actions::ActionStore>,
    /// Tenants' webhook signing keys (`None`: those routes answer 404).
    pub signing_keys: Option<Arc<minoots_actions::TenantKeys>>,
    /// The action kinds the operator's policy accepts: the served API
    /// document lists only these ([`minoots_core::action::ActionPolicy::accepted_kinds`]).
    pub action_kinds: Vec<&'static str>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            sse_keep_alive: Duration::from_secs(15),
            actions: None,
            signing_keys: None,
            action_kinds: minoots_core::action::ActionPolicy::default().accepted_kinds(),
        }
    }
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The node.
    pub handle: NodeHandle,
    /// Settings.
    pub config: Arc<HttpConfig>,
    /// The API document as this server serves it (shaped by its action
    /// policy), built once: each request shares these bytes.
    pub document: axum::body::Bytes,
}

/// Every route of [`api_router`]: the router is built from this list, and the
/// OpenAPI test checks the document against it.
fn api_routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::POST, "/api/timers", post(timers::create)),
        (Method::GET, "/api/timers", get(timers::list)),
        (Method::POST, "/api/timers/batch", post(timers::create_batch)),
        (Method::GET, "/api/timers/stream", get(stream::stream)),
        (Method::GET, "/api/timers/{id}", get(timers::get)),
        (Method::GET, "/api/timers/{id}/fires", get(timers::fires)),
        (Method::POST, "/api/timers/{id}/cancel", post(timers::cancel)),
        (Method::GET, "/api/timers/{id}/deliveries", get(deliveries::history)),
        (Method::GET, "/api/dlq", get(deliveries::list)),
        (Method::POST, "/api/dlq/replay", post(deliveries::replay_all)),
        (Method::GET, "/api/dlq/{id}", get(deliveries::show)),
        (Method::POST, "/api/dlq/{id}/replay", post(deliveries::replay)),
        (Method::GET, "/api/signing-keys", get(signing_keys::show)),
        (Method::POST, "/api/signing-keys/rotate", post(signing_keys::rotate)),
        (Method::POST, "/api/signing-keys/promote", post(signing_keys::promote)),
        (Method::GET, "/api/openapi.json", get(openapi::document)),
        (Method::GET, "/healthz", get(health::healthz)),
        (Method::GET, "/health", get(health::health)),
    ]
}

/// `(method, path)` of every route [`api_router`] serves, paths in axum's
/// `{param}` syntax (which is also OpenAPI's).
pub fn route_table() -> Vec<(Method, &'static str)> {
    api_routes().into_iter().map(|(method, path, _)| (method, path)).collect()
}

/// The API: timers, events, health probes and the OpenAPI document.
pub fn api_router(handle: NodeHandle, config: HttpConfig) -> Router {
    let body_limit = config.max_body_bytes;
    let document = openapi::document_for(&config.action_kinds).into();
    let state = AppState { handle, config: Arc::new(config), document };
    let mut router = Router::new();
    for (_, path, route) in api_routes() {
        router = router.route(path, route);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// `GET /metrics`, for the separate metrics address.
pub fn metrics_router(handle: NodeHandle) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(handle)
}

async fn not_found() -> HttpError {
    HttpError::not_found("no such route")
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// A handler panicked: answer 500 in our shape (the panic is a bug; it is logged).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "request handler panicked");
    HttpError::internal("internal error").into_response()
}
