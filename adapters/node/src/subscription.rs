//! Event-stream subscribers (REST SSE and gRPC `StreamTimerEvents`): how many
//! a tenant may hold open, how much one may buffer, and how one ends.
//!
//! Each subscriber gets a small task that moves committed events from the
//! node's shared broadcast ring into the subscriber's own queue, filtered,
//! bounded at [`StreamLimits::buffer_events`]. A client that stops reading
//! fills only its own queue and is then dropped with [`StreamEnd::TooSlow`]:
//! it never pins the shared ring, so neither memory nor other subscribers
//! pay for it. A stream never skips an event silently: after the last event
//! it delivered it ends with a [`StreamEnd`] that says why — except when its
//! credential is revoked or expires: then events still queued are dropped
//! and the end comes next.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use minoots_core::event::{EventKind, OutboxEvent};
use minoots_core::{ApiError, TenantId};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::status::NodeRole;

/// Bounds on event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Events one subscriber may have waiting to be sent before it is dropped.
    pub buffer_events: usize,
    /// Open streams one tenant may hold (streams of every tenant count
    /// together under the operator's own bucket).
    pub per_tenant: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self { buffer_events: 8_192, per_tenant: 64 }
    }
}

/// Why a stream ended. Each is sent after the last event the stream delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The subscriber's task fell behind the node's shared ring by `missed` events.
    Lagged {
        /// Events the ring overwrote before they reached this subscriber.
        missed: u64,
    },
    /// The client stopped reading and its own queue of `buffered` events filled.
    TooSlow {
        /// The queue's bound.
        buffered: usize,
    },
    /// The subscriber's API key was revoked, or its bearer token expired.
    Revoked,
    /// The node is shutting down.
    Stopping,
}

impl StreamEnd {
    /// A stable code for the wire (`lagged`, `too_slow`, `unauthenticated`, `unavailable`).
    pub fn code(&self) -> &'static str {
        match self {
            StreamEnd::Lagged { .. } => "lagged",
            StreamEnd::TooSlow { .. } => "too_slow",
            StreamEnd::Revoked => "unauthenticated",
            StreamEnd::Stopping => "unavailable",
        }
    }

    /// What the client should know and do.
    pub fn message(&self) -> String {
        match self {
            StreamEnd::Lagged { missed } => format!(
                "this stream fell {missed} events behind and was closed so that no event is silently \
                 skipped; re-read state and resubscribe"
            ),
            StreamEnd::TooSlow { buffered } => format!(
                "this stream was closed because its client stopped reading while {buffered} events \
                 waited for it; read faster (or filter by topics), re-read state and resubscribe"
            ),
            StreamEnd::Revoked => {
                "the API key was revoked or the token expired; this stream is closed".into()
            }
            StreamEnd::Stopping => "the node is shutting down; resubscribe".into(),
        }
    }
}

/// Which events one stream carries.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    /// `None`: every tenant (role `operator`).
    pub tenant: Option<TenantId>,
    /// `None`: every kind.
    pub kinds: Option<BTreeSet<EventKind>>,
}

impl StreamFilter {
    fn admits(&self, event: &OutboxEvent) -> bool {
        event_visible(event, self.tenant.as_ref())
            && self.kinds.as_ref().is_none_or(|kinds| kinds.contains(&event.kind))
    }
}

/// Whether an event is visible to a subscriber scoped to `tenant` (`None` = every tenant).
pub fn event_visible(event: &OutboxEvent, tenant: Option<&TenantId>) -> bool {
    tenant.is_none_or(|t| &event.tenant_id == t)
}

/// A tenant already holds its limit of open streams.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this tenant already holds {limit} open event streams; close one first")]
pub struct TooManyStreams {
    /// The per-tenant bound.
    pub limit: usize,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The tenant holds its limit of open streams (REST 429 `too_many_streams`, gRPC RESOURCE_EXHAUSTED).
    #[error(transparent)]
    TooMany(#[from] TooManyStreams),
    /// The caller's request-rate quota refused the open (nothing was charged).
    #[error(transparent)]
    Quota(ApiError),
}

/// Open streams per tenant (`None`: the all-tenants operator streams).
#[derive(Debug, Default)]
pub(crate) struct OpenStreams {
    by_tenant: Mutex<BTreeMap<Option<TenantId>, usize>>,
}

impl OpenStreams {
    pub(crate) fn take(
        self: &Arc<Self>,
        tenant: Option<TenantId>,
        limit: usize,
    ) -> Result<StreamSlot, TooManyStreams> {
        let mut open = self.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(tenant.clone()).or_default();
        if *count >= limit {
            return Err(TooManyStreams { limit });
        }
        *count += 1;
        Ok(StreamSlot { streams: self.clone(), tenant })
    }
}

/// One open stream's place in its tenant's count, given back on drop.
pub(crate) struct StreamSlot {
    streams: Arc<OpenStreams>,
    tenant: Option<TenantId>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

/// What a subscriber reads: events, then at most one [`StreamEnd`].
pub struct EventFeed {
    queue: mpsc::Receiver<Result<Arc<OutboxEvent>, StreamEnd>>,
    /// Set when the credential ends: what is still queued is not delivered.
    revoked: Arc<AtomicBool>,
}

impl std::fmt::Debug for EventFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFeed").finish_non_exhaustive()
    }
}

impl EventFeed {
    /// The next event, or why the stream ended (then `None` after it).
    pub async fn next(&mut self) -> Option<Result<Arc<OutboxEvent>, StreamEnd>> {
        if self.revoked.load(Ordering::Acquire) {
            // Skip what is queued: the end is the next item (bounded by the queue).
            while let Some(item) = self.queue.recv().await {
                if let Err(end) = item {
                    return Some(Err(end));
                }
            }
            return None;
        }
        self.queue.recv().await
    }
}

/// What a stream's task watches of its node: its status (it ends when the
/// node stops) and the metrics it counts its end in.
pub(crate) struct NodeWatch {
    pub(crate) status: tokio::sync::watch::Receiver<crate::status::NodeStatus>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Starts a subscriber's stream: a task moving admitted `events` into the
/// feed it returns, bounded by `limits`, holding `slot` until it ends.
/// `revoked` resolves when the subscriber's credentials stop being valid.
pub(crate) fn spawn_feed(
    events: tokio::sync::broadcast::Receiver<Arc<OutboxEvent>>,
    filter: StreamFilter,
    revoked: BoxFuture<'static, ()>,
    node: NodeWatch,
    limits: StreamLimits,
    slot: StreamSlot,
) -> EventFeed {
    // One slot more than the bound: the terminal StreamEnd always fits.
    let (queue_tx, queue) = mpsc::channel(limits.buffer_events.max(1) + 1);
    let cut = Arc::new(AtomicBool::new(false));
    let ends = Ends { revoked, cut: cut.clone() };
    tokio::spawn(forward(events, queue_tx, filter, ends, node, limits.buffer_events.max(1), slot));
    EventFeed { queue, revoked: cut }
}

/// How a stream learns its credential ended, and how it tells its reader.
struct Ends {
    revoked: BoxFuture<'static, ()>,
    cut: Arc<AtomicBool>,
}

/// Moves admitted events from the ring into one subscriber's queue until the
/// stream ends or the subscriber goes away.
async fn forward(
    mut events: tokio::sync::broadcast::Receiver<Arc<OutboxEvent>>,
    queue: mpsc::Sender<Result<Arc<OutboxEvent>, StreamEnd>>,
    filter: StreamFilter,
    ends: Ends,
    node: NodeWatch,
    buffer_events: usize,
    _slot: StreamSlot,
) {
    let Ends { mut revoked, cut } = ends;
    let mut status = node.status;
    let stopped = status.wait_for(|s| s.role == NodeRole::Stopped);
    tokio::pin!(stopped);
    let end = loop {
        let received = tokio::select! {
            biased;
            () = queue.closed() => return,
            () = &mut revoked => break StreamEnd::Revoked,
            received = events.recv() => received,
            _ = &mut stopped => break StreamEnd::Stopping,
        };
        match received {
            Ok(event) if filter.admits(&event) => {
                // Only this task sends, so capacity can only grow between
                // this check and the send: the last slot stays free for the end.
                if queue.capacity() <= 1 {
                    break StreamEnd::TooSlow { buffered: buffer_events };
                }
                if queue.try_send(Ok(event)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => break StreamEnd::Lagged { missed },
            Err(RecvError::Closed) => break StreamEnd::Stopping,
        }
    };
    tracing::warn!(code = end.code(), tenant = ?filter.tenant, "event stream closed: {}", end.message());
    node.metrics.event_streams_closed.get_or_create(&[("reason", end.code())]).inc();
    if end == StreamEnd::Revoked {
        cut.store(true, Ordering::Release);
    }
    let _ = queue.try_send(Err(end));
}
