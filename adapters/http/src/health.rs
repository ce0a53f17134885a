//! Probes and metrics, all without authentication:
//!
//! - `GET /healthz`: liveness — the process answers HTTP
//!   (`{"status":"ok","service":"minoots"}`, MINOOTS's shape).
//! - `GET /health`: readiness — the node's role, the leader (cluster
//!   followers), epoch, due-index size, queued writes and whether its store
//!   (the database, in a cluster) works; 503 while the store fails. In Raft
//!   mode also a `raft` block (state, term, commit and applied index,
//!   quorum), and 503 with `status: "no_quorum"` while this node is not
//!   part of a working majority.
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
    /// `ok`; `unavailable` while the store fails; `no_quorum` (Raft mode)
    /// while this node is not part of a working majority.
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
    /// Raft mode only: the consensus state (MINOOTS's seed shape, snake_case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftHealth>,
}

/// The `raft` member of `/health` (Raft mode).
#[derive(Debug, Serialize)]
pub struct RaftHealth {
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: &'static str,
    /// Whether this node is the Raft leader.
    pub is_leader: bool,
    /// The Raft leader's transport address, when known.
    pub leader_address: Option<String>,
    /// This node's Raft id.
    pub node_id: String,
    /// The current term (the fencing epoch of the leader's fires).
    pub term: u64,
    /// The last log index known committed.
    pub commit_index: u64,
    /// The last log index applied to this node's state.
    pub applied_index: u64,
    /// Whether this node is part of a working majority.
    pub quorum: bool,
    /// Whether this node has caught up with the cluster since it started
    /// (before, it refuses reads as retryable).
    pub caught_up: bool,
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
    let raft = state.handle.consensus().map(|c| RaftHealth {
        state: c.state,
        is_leader: c.is_leader,
        leader_address: c.leader_address,
        node_id: c.node_id.to_string(),
        term: c.term,
        commit_index: c.commit_index,
        applied_index: c.applied_index,
        quorum: c.quorum,
        caught_up: c.caught_up,
    });
    let (status, word) = match (&raft, s.store_ok) {
        (_, false) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (Some(r), true) if !r.quorum => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"),
        _ => (StatusCode::OK, "ok"),
    };
    let view = HealthView {
        status: word,
        raft,
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
