//! Probes and metrics, all without authentication:
//!
//! - `GET /healthz`: liveness — the process answers HTTP
//!   (`{"status":"ok","service":"minoots"}`, MINOOTS's shape).
//! - `GET /health`: readiness — the node's role, the leader (cluster
//!   followers), epoch, due-index size, queued writes and whether its store
//!   (the database, in a cluster) works; 503 while the store fails.
//! - `GET /metrics` (on the separate metrics address): the Prometheus
//!   registry in the OpenMetrics text format that `prometheus-client` writes.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use minoots_node::NodeHandle;
use serde::Serialize;

use crate::AppState;

/// The content type of `prometheus_client::encoding::text::encode` (OpenMetrics 1.0 text).
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok", "service": "minoots"}))
}

/// The `/health` body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// `ok`, or `unavailable` while the store fails.
    pub status: &'static str,
    /// This node.
    pub node_id: String,
    /// `opening`, `leader`, `follower` (cluster), `deposed` or `stopped`.
    pub role: &'static str,
    /// Whether this node may fire.
    pub is_leader: bool,
    /// Cluster followers: the leader's hint as the store reports it
    /// (`rest=URL grpc=URL`); absent on the leader and in standalone mode.
    pub leader: Option<String>,
    /// Current fencing epoch, once known.
    pub epoch: Option<u64>,
    /// Store status.
    pub store: StoreHealth,
    /// Occurrences in memory.
    pub due_index: usize,
    /// Writes waiting for a commit.
    pub queued_writes: usize,
}

/// The `store` member of `/health`.
#[derive(Debug, Serialize)]
pub struct StoreHealth {
    /// Whether the last store operation succeeded.
    pub ok: bool,
}

/// `GET /health`.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let s = state.handle.status();
    let status = if s.store_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let view = HealthView {
        status: if s.store_ok { "ok" } else { "unavailable" },
        is_leader: s.role == minoots_node::NodeRole::Leader,
        node_id: s.node_id,
        role: s.role.as_str(),
        leader: s.leader,
        epoch: s.epoch,
        store: StoreHealth { ok: s.store_ok },
        due_index: s.due_index,
        queued_writes: s.queued_writes,
    };
    (status, Json(view))
}

/// `GET /metrics`.
pub async fn metrics(State(handle): State<NodeHandle>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], handle.metrics().encode())
}
