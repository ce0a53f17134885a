//! `GET /api/timers/stream`: committed timer events as Server-Sent Events.
//!
//! Each event is `id: <outbox seq>`, `event: timer.scheduled|timer.fired|timer.cancelled`,
//! `data: <EventEnvelope JSON>`. The stream is scoped to the key's tenant;
//! `tenantId=__all__` streams every tenant and needs role `operator`.
//! `topics=timer.fired,timer.cancelled` (comma-separated or repeated) keeps
//! only those types. Comments are sent as keep-alives.
//!
//! Never a silent gap: events come from the node's broadcast of committed
//! outbox rows; a subscriber that falls too far behind receives
//! `event: error` with a `lagged` error body and the stream ends, so the
//! client knows to re-read state (`GET /api/timers`) and reconnect.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::future::BoxFuture;
use minoots_core::TenantId;
use minoots_core::auth::Role;
use minoots_core::event::OutboxEvent;
use minoots_node::NodeHandle;
use minoots_node::views::{EVENT_TYPES, EventEnvelope, event_type};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::error::HttpError;
use crate::extract::{API_KEY_HEADER, Caller, QueryPairs, ReadRole};

/// The `tenantId` value that streams every tenant (role `operator` only).
pub const ALL_TENANTS: &str = "__all__";

/// Who sees what on one stream.
#[derive(Debug, Clone)]
struct Filter {
    /// `None`: every tenant.
    tenant: Option<TenantId>,
    /// Empty: every type.
    topics: Vec<&'static str>,
}

impl Filter {
    fn admits(&self, event: &OutboxEvent) -> bool {
        NodeHandle::event_visible(event, self.tenant.as_ref())
            && (self.topics.is_empty() || self.topics.contains(&event_type(event.kind)))
    }
}

/// `GET /api/timers/stream?topics=&tenantId=`.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    headers: HeaderMap,
    QueryPairs(params): QueryPairs,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let mut topics: Vec<&'static str> = Vec::new();
    let mut tenant_param = None;
    for (name, value) in &params {
        match name.as_str() {
            "topics" | "topic" => {
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let topic = EVENT_TYPES.iter().find(|t| **t == part).ok_or_else(|| {
                        HttpError::invalid(
                            "topics",
                            format!("unknown topic {part:?}; use {}", EVENT_TYPES.join(", ")),
                        )
                    })?;
                    if !topics.contains(topic) {
                        topics.push(topic);
                    }
                }
            }
            "tenantId" => tenant_param = Some(value.as_str()),
            other => return Err(HttpError::invalid(other, "is not a parameter of this route")),
        }
    }
    let tenant = if tenant_param == Some(ALL_TENANTS) {
        caller.principal.require(Role::Operator)?;
        None
    } else {
        Some(caller.principal.scope(tenant_param)?)
    };
    // Subscribe before answering: every event committed after the response
    // headers reach the client is on this stream.
    let receiver = state.handle.subscribe();
    let api_key = headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let node = state.handle.clone();
    let revoked = Box::pin(async move { node.key_revoked(&api_key).await });
    let events = events(receiver, revoked, Filter { tenant, topics });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(state.config.sse_keep_alive)))
}

/// The SSE event for one outbox event.
fn sse_event(event: &OutboxEvent) -> Event {
    let envelope = EventEnvelope::from(event);
    let data = serde_json::to_string(&envelope).unwrap_or_else(|e| {
        // Serializing plain data cannot fail; say so loudly if it ever does.
        tracing::error!(error = %e, seq = event.seq, "event envelope did not serialize");
        String::from("{}")
    });
    Event::default().id(event.seq.to_string()).event(event_type(event.kind)).data(data)
}

/// The terminal `event: error` of a lagging subscriber.
fn lagged_event(missed: u64) -> Event {
    let body = serde_json::json!({
        "error": {
            "code": "lagged",
            "message": format!(
                "this stream fell {missed} events behind and was closed so that no event is silently \
                 skipped; re-read state with GET /api/timers and reconnect"
            ),
        }
    });
    Event::default().event("error").data(body.to_string())
}

/// The terminal `event: error` when the node stops.
fn closed_event() -> Event {
    let body = serde_json::json!({
        "error": {"code": "unavailable", "message": "the node is shutting down; reconnect"}
    });
    Event::default().event("error").data(body.to_string())
}

/// The terminal `event: error` when the subscriber's key is revoked.
fn revoked_event() -> Event {
    let body = serde_json::json!({
        "error": {"code": "unauthenticated", "message": "the API key was revoked; this stream is closed"}
    });
    Event::default().event("error").data(body.to_string())
}

/// Turns the node's broadcast into a filtered SSE stream that ends after an
/// error event (lagged, revoked key, node stopping).
fn events(
    receiver: broadcast::Receiver<Arc<OutboxEvent>>,
    revoked: BoxFuture<'static, ()>,
    filter: Filter,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Some((receiver, revoked, filter)), |state| async move {
        let (mut receiver, mut revoked, filter) = state?;
        loop {
            let received = tokio::select! {
                biased;
                _ = &mut revoked => return Some((Ok(revoked_event()), None)),
                received = receiver.recv() => received,
            };
            match received {
                Ok(event) if filter.admits(&event) => {
                    return Some((Ok(sse_event(&event)), Some((receiver, revoked, filter))));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => return Some((Ok(lagged_event(missed)), None)),
                Err(RecvError::Closed) => return Some((Ok(closed_event()), None)),
            }
        }
    })
}
