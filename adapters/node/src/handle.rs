//! [`NodeHandle`]: the one entry point API adapters use. It sends commands to
//! the driver and awaits the engine's reply, hands out event subscriptions,
//! authenticates API keys and reports the node's status.

use std::net::IpAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use minoots_core::auth::Principal;
use minoots_core::event::OutboxEvent;
use minoots_core::{ApiError, Command, Response, TenantId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::auth_throttle::AuthThrottle;
use crate::keys::{KeyStore, hash_api_key};
use crate::metrics::Metrics;
use crate::quotas::Quotas;
pub use crate::status::{NodeRole, NodeStatus};
use crate::subscription::{
    EventFeed, NodeWatch, OpenStreams, StreamFilter, StreamLimits, StreamRefused, spawn_feed,
};

/// How often an open event stream re-checks its API key: a revoked key's
/// streams end within this long.
pub const STREAM_KEY_RECHECK_MS: u64 = 2_000;

/// A command on its way to the driver, with where to send the reply.
pub(crate) type Call = (Command, oneshot::Sender<Result<Response, ApiError>>);

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

/// How a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// An API key (`x-api-key`).
    ApiKey(&'a str),
    /// A bearer token (`Authorization: Bearer …`), when a [`TokenVerifier`] is configured.
    Bearer(&'a str),
}

impl<'a> Credential<'a> {
    /// The credential a request carries in its `x-api-key` and `Authorization`
    /// headers (REST headers or gRPC metadata, the same rule for both): none,
    /// one, or an error when both are sent or `Authorization` is not `Bearer`.
    pub fn from_headers(
        api_key: Option<&'a str>,
        authorization: Option<&'a str>,
    ) -> Result<Option<Credential<'a>>, AuthError> {
        let bearer = match authorization.map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(value) => match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    Some(token.trim())
                }
                _ => return Err(AuthError::InvalidToken("Authorization must be `Bearer <token>`".into())),
            },
        };
        match (api_key.filter(|k| !k.is_empty()), bearer) {
            (Some(_), Some(_)) => Err(AuthError::InvalidToken(
                "send either x-api-key or Authorization: Bearer, not both".into(),
            )),
            (Some(key), None) => Ok(Some(Credential::ApiKey(key))),
            (None, Some(token)) => Ok(Some(Credential::Bearer(token))),
            (None, None) => Ok(None),
        }
    }
}

/// Checks bearer tokens (JWTs, in the server): the principal a token names,
/// with its expiry, or why it is not valid.
pub trait TokenVerifier: Send + Sync + std::fmt::Debug + 'static {
    /// Verifies `token`.
    fn verify(&self, token: &str) -> Result<Principal, String>;
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
    /// The bearer token is not valid, or not accepted here (HTTP 401, gRPC UNAUTHENTICATED).
    #[error("the bearer token is not valid: {0}")]
    InvalidToken(String),
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
    pub(crate) tokens: Option<Arc<dyn TokenVerifier>>,
    pub(crate) clock: Arc<dyn crate::clock::Clock>,
    pub(crate) consensus: Option<watch::Receiver<crate::status::ConsensusStatus>>,
}

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

    /// Returns the caller a credential identifies: an API key looked up in
    /// the key store, or a bearer token checked by the configured
    /// [`TokenVerifier`]. A missing, unknown or invalid credential is counted
    /// (`minoots_auth_failures_total`); an unknown key or invalid token (a
    /// guess) is also logged — by the first characters of its hash, never
    /// the secret — with its `source` address, whose failures are throttled
    /// ([`crate::auth_throttle`]).
    pub async fn authenticate(
        &self,
        credential: Option<Credential<'_>>,
        source: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        if let Some(source) = source {
            self.throttle.check(source).map_err(|retry_after_ms| AuthError::Throttled { retry_after_ms })?;
        }
        let key = match credential {
            Some(Credential::ApiKey(key)) => key,
            Some(Credential::Bearer(token)) => return self.verify_token(token, source),
            None => {
                // Not a guess (a client without its credential): counted, not throttled.
                self.metrics.auth_failures.inc();
                return Err(AuthError::Missing);
            }
        };
        let hash = hash_api_key(key);
        let found =
            self.keys.find_key(&hash).await.map_err(|e| AuthError::Unavailable(e.detail().to_owned()))?;
        let Some(record) = found else {
            self.metrics.auth_failures.inc();
            if let Some(source) = source {
                self.throttle.failed(source);
            }
            tracing::warn!(key_hash = &hash[..12], source = ?source, "authentication failed: unknown or revoked API key");
            return Err(AuthError::Invalid);
        };
        Ok(Principal {
            tenant_id: record.tenant_id,
            roles: record.roles,
            key_id: record.id,
            expires_at_ms: None,
        })
    }

    fn verify_token(&self, token: &str, source: Option<IpAddr>) -> Result<Principal, AuthError> {
        let Some(verifier) = &self.tokens else {
            self.metrics.auth_failures.inc();
            return Err(AuthError::InvalidToken(
                "this server accepts API keys only (no JWT_PUBLIC_KEY)".into(),
            ));
        };
        verifier.verify(token).map_err(|reason| {
            self.metrics.auth_failures.inc();
            if let Some(source) = source {
                self.throttle.failed(source);
            }
            let token_hash = hash_api_key(token);
            tracing::warn!(token_hash = &token_hash[..12], source = ?source, %reason, "authentication failed: bearer token refused");
            AuthError::InvalidToken(reason)
        })
    }

    /// Resolves when the credential a stream was opened with stops being
    /// valid: an API key when revoked ([`NodeHandle::key_revoked`]), a bearer
    /// token at its expiry.
    pub fn credential_ends(
        &self,
        credential: Option<Credential<'_>>,
        principal: &Principal,
    ) -> futures::future::BoxFuture<'static, ()> {
        let node = self.clone();
        match (credential, principal.expires_at_ms) {
            (_, Some(expires_at_ms)) => {
                let now_ms = self.clock.now().wall_ms;
                let left = u64::try_from(expires_at_ms.saturating_sub(now_ms)).unwrap_or(0);
                Box::pin(tokio::time::sleep(std::time::Duration::from_millis(left)))
            }
            (Some(Credential::ApiKey(key)), None) => {
                let key = key.to_owned();
                Box::pin(async move { node.key_revoked(&key).await })
            }
            (_, None) => Box::pin(std::future::pending()),
        }
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
    pub async fn wait_for_role(&self, role: NodeRole) -> bool {
        let mut status = self.status.clone();
        status.wait_for(|s| s.role == role || s.role == NodeRole::Stopped).await.is_ok_and(|s| s.role == role)
    }

    /// The node's current status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Raft mode: the node's consensus state; `None` in the other modes.
    pub fn consensus(&self) -> Option<crate::status::ConsensusStatus> {
        self.consensus.as_ref().map(|c| c.borrow().clone())
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

    /// Opens an event stream for a caller of tenant `caller`, charged to its
    /// request rate. It is subscribed before this returns: every event
    /// committed afterwards is on it (or the stream ends saying why).
    /// `revoked` resolves when the subscriber's credentials stop being valid.
    pub async fn open_event_stream(
        &self,
        caller: &TenantId,
        filter: StreamFilter,
        revoked: BoxFuture<'static, ()>,
    ) -> Result<EventFeed, StreamRefused> {
        let limits = self.stream_limits;
        let slot = self.open_streams.take(filter.tenant.clone(), limits.per_tenant)?;
        self.charge_request(caller).await.map_err(StreamRefused::Quota)?;
        let events = self.events.subscribe();
        let node = NodeWatch { status: self.status.clone(), metrics: self.metrics.clone() };
        Ok(spawn_feed(events, filter, revoked, node, limits, slot))
    }

    /// Whether an event is visible to a subscriber scoped to `tenant` (`None` = every tenant).
    pub fn event_visible(event: &OutboxEvent, tenant: Option<&TenantId>) -> bool {
        crate::subscription::event_visible(event, tenant)
    }
}
