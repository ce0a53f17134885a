//! [`NodeHandle`]: the one entry point API adapters use. It sends commands to
//! the driver and awaits the engine's reply, hands out event subscriptions,
//! authenticates API keys and reports the node's status.

use std::net::IpAddr;
use std::sync::Arc;

use minoots_core::auth::Principal;
use minoots_core::event::OutboxEvent;
use minoots_core::{ApiError, Command, Response, TenantId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::auth_throttle::AuthThrottle;
use crate::keys::{KeyStore, hash_api_key};
use crate::metrics::Metrics;
use crate::quotas::Quotas;
use crate::subscription::{OpenStreams, StreamLimits};

/// How often an open event stream re-checks its API key: a revoked key's
/// streams end within this long.
pub const STREAM_KEY_RECHECK_MS: u64 = 2_000;

/// A command on its way to the driver, with where to send the reply.
pub(crate) type Call = (Command, oneshot::Sender<Result<Response, ApiError>>);

/// The node's state, for `/health` and gRPC health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub node_id: String,
    /// `opening`, `leader`, `follower`, `deposed`, or `stopped`.
    pub role: &'static str,
    /// Current fencing epoch, once known.
    pub epoch: Option<u64>,
    /// The leader's address, when this node follows one.
    pub leader: Option<String>,
    /// Whether the last store operation succeeded.
    pub store_ok: bool,
    /// Occurrences in memory.
    pub due_index: usize,
    /// Writes waiting for a commit.
    pub queued_writes: usize,
}

/// The endpoint of `api` (`"rest"` or `"grpc"`) in a leader hint.
///
/// A node in a cluster advertises itself (the lease's `address`, given to
/// callers of followers as the leader hint) as `rest=URL grpc=URL`; each API
/// adapter hands out the URL of its own protocol. A hint in any other form
/// is returned whole.
pub fn leader_endpoint<'a>(hint: &'a str, api: &str) -> &'a str {
    hint.split_whitespace()
        .find_map(|part| part.strip_prefix(api).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or(hint)
}

/// Why a request could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key was sent (HTTP 401, gRPC UNAUTHENTICATED).
    #[error("an API key is required (header x-api-key)")]
    Missing,
    /// The key is unknown or revoked (HTTP 401, gRPC UNAUTHENTICATED).
    #[error("the API key is not valid")]
    Invalid,
    /// The key store could not be read (HTTP 503, gRPC UNAVAILABLE).
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    /// Too many failed authentications from this address lately (HTTP 429,
    /// gRPC RESOURCE_EXHAUSTED); see [`crate::auth_throttle`].
    #[error("too many failed authentications from this address; retry in {retry_after_ms} ms")]
    Throttled {
        /// When the source may try again.
        retry_after_ms: u64,
    },
}

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) calls: mpsc::Sender<Call>,
    pub(crate) events: broadcast::Sender<Arc<OutboxEvent>>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    pub(crate) keys: Arc<dyn KeyStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: Arc<watch::Sender<bool>>,
    pub(crate) throttle: Arc<AuthThrottle>,
    pub(crate) stream_limits: StreamLimits,
    pub(crate) open_streams: Arc<OpenStreams>,
    pub(crate) quotas: Arc<Quotas>,
}

/// The role a node reports once it has stopped.
pub(crate) const STOPPED: &str = "stopped";

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").field("status", &*self.status.borrow()).finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Sends a command to the engine and waits for its reply.
    pub async fn call(&self, command: Command) -> Result<Response, ApiError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || ApiError::Unavailable {
            reason: "the node is shutting down".into(),
            retry_after_ms: minoots_core::engine::RETRY_AFTER_MS,
            leader: None,
        };
        self.calls.send((command, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Subscribes to committed events (every tenant; filter on the receiving
    /// side) without a bound of its own: for in-process consumers that keep
    /// up. Client streams use [`NodeHandle::open_event_stream`].
    /// A subscriber that falls more than the channel capacity behind receives `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OutboxEvent>> {
        self.events.subscribe()
    }

    /// Looks up an API key and returns the caller it identifies.
    /// A missing or unknown key is counted (`minoots_auth_failures_total`);
    /// an unknown one (a guess) is also logged with the first characters of
    /// its hash (never the key) and its `source` address, whose wrong keys
    /// are throttled ([`crate::auth_throttle`]).
    pub async fn authenticate(
        &self,
        api_key: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        if let Some(source) = source {
            self.throttle.check(source).map_err(|retry_after_ms| AuthError::Throttled { retry_after_ms })?;
        }
        let Some(key) = api_key.filter(|k| !k.is_empty()) else {
            // Not a guess (a client without its key): counted, not throttled.
            self.metrics.auth_failures.inc();
            return Err(AuthError::Missing);
        };
        let hash = hash_api_key(key);
        let found = self.keys.find_key(&hash).await.map_err(|e| AuthError::Unavailable(e.0))?;
        let Some(record) = found else {
            self.metrics.auth_failures.inc();
            if let Some(source) = source {
                self.throttle.failed(source);
            }
            tracing::warn!(key_hash = &hash[..12], source = ?source, "authentication failed: unknown or revoked API key");
            return Err(AuthError::Invalid);
        };
        Ok(Principal { tenant_id: record.tenant_id, roles: record.roles, key_id: record.id })
    }

    /// Resolves once `api_key` no longer authenticates (revoked or removed),
    /// checking every [`STREAM_KEY_RECHECK_MS`]; an unreadable key store is
    /// not a revocation. Streams select on it to end a revoked key's stream.
    pub async fn key_revoked(&self, api_key: &str) {
        let hash = hash_api_key(api_key);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(STREAM_KEY_RECHECK_MS)).await;
            if let Ok(None) = self.keys.find_key(&hash).await {
                return;
            }
        }
    }

    /// Asks the node to stop: it refuses new calls, lets queued writes
    /// commit, then its task ends.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the node reports `role` (e.g. `leader`), or the node stops.
    pub async fn wait_for_role(&self, role: &str) -> bool {
        let mut status = self.status.clone();
        status.wait_for(|s| s.role == role || s.role == STOPPED).await.is_ok_and(|s| s.role == role)
    }

    /// The node's current status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node's metrics, shared (for components that count into the same registry).
    pub fn metrics_arc(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The key store (for key management commands).
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// Whether an event is visible to a subscriber scoped to `tenant` (`None` = every tenant).
    pub fn event_visible(event: &OutboxEvent, tenant: Option<&TenantId>) -> bool {
        tenant.is_none_or(|t| &event.tenant_id == t)
    }
}
