//! `GET /api/timers/stream`: committed timer events as Server-Sent Events.
//!
//! Each event is `id: <outbox seq>`, `event: timer.scheduled|timer.fired|timer.cancelled`,
//! `data: <EventEnvelope JSON>`. The stream is scoped to the key's tenant;
//! `tenantId=__all__` streams every tenant and needs role `operator`.
//! `topics=timer.fired,timer.cancelled` (comma-separated or repeated) keeps
//! only those types. Comments are sent as keep-alives.
//!
//! Never a silent gap: events come from the node's broadcast of committed
//! outbox rows through the subscriber's own bounded queue
//! ([`minoots_node::subscription`]); a subscriber that falls too far behind
//! or stops reading receives `event: error` with a `lagged` or `too_slow`
//! error body and the stream ends, so the client knows to re-read state
//! (`GET /api/timers`) and reconnect. A tenant may hold a bounded number of
//! open streams; one more is answered 429 `too_many_streams`.

use std::collections::BTreeSet;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use minoots_core::auth::Role;
use minoots_core::event::OutboxEvent;
use minoots_node::Credential;
use minoots_node::subscription::{EventFeed, StreamEnd, StreamFilter, StreamRefused};
use minoots_node::views::{EVENT_KINDS, EVENT_TYPES, EventEnvelope, event_type};

use crate::AppState;
use crate::error::HttpError;
use crate::extract::{API_KEY_HEADER, Caller, QueryPairs, ReadRole};

/// The `tenantId` value that streams every tenant (role `operator` only).
pub const ALL_TENANTS: &str = "__all__";

/// `GET /api/timers/stream?topics=&tenantId=`.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    headers: HeaderMap,
    QueryPairs(params): QueryPairs,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, HttpError> {
    let mut kinds = BTreeSet::new();
    let mut tenant_param = None;
    for (name, value) in &params {
        match name.as_str() {
            "topics" | "topic" => {
                // An empty value (`topics=`, `topics=timer.fired,`) is no topic: refused like any other.
                for part in value.split(',').map(str::trim) {
                    let kind = EVENT_KINDS.into_iter().find(|k| event_type(*k) == part).ok_or_else(|| {
                        HttpError::invalid(
                            "topics",
                            format!("unknown topic {part:?}; use {}", EVENT_TYPES.join(", ")),
                        )
                    })?;
                    kinds.insert(kind);
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
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // (The caller authenticated with it, so it parses.)
    let credential =
        Credential::from_headers(header(API_KEY_HEADER), header(AUTHORIZATION.as_str())).ok().flatten();
    let revoked = state.handle.credential_ends(credential, &caller.principal);
    // Subscribed before answering: every event committed after the response
    // headers reach the client is on this stream.
    let kinds = if kinds.is_empty() { None } else { Some(kinds) };
    let feed = state
        .handle
        .open_event_stream(&caller.principal.tenant_id, StreamFilter { tenant, kinds }, revoked)
        .await
        .map_err(|refused| match refused {
            StreamRefused::TooMany(e) => HttpError::too_many_streams(e.to_string()),
            StreamRefused::Quota(e) => HttpError::from(e),
        })?;
    let events = events(feed);
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

/// The terminal `event: error` that says why the stream ended.
fn end_event(end: &StreamEnd) -> Event {
    let body = serde_json::json!({"error": {"code": end.code(), "message": end.message()}});
    Event::default().event("error").data(body.to_string())
}

/// The client's feed as SSE events, the last one an `event: error` saying
/// why the stream ended.
fn events(feed: EventFeed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(feed, |mut feed| async move {
        let event = match feed.next().await? {
            Ok(event) => sse_event(&event),
            Err(end) => end_event(&end),
        };
        Some((Ok(event), feed))
    })
}
