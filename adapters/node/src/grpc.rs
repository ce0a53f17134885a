//! The `minoots.timer.v1.HorologyKernel` gRPC service: authenticates each
//! call (`x-api-key`), authorizes it (role + tenant scope), turns wire
//! messages into engine [`minoots_core::Command`]s and engine replies back into wire
//! messages, and relays committed events to `StreamTimerEvents` subscribers.
//!
//! It owns only translation and access control: every rule about timers is
//! the engine's (drafts are validated there, so gRPC and REST reject the same
//! mistakes with the same camelCase field names). Nothing a client sends may
//! panic it. It builds on real tonic and on madsim-tonic (`--cfg madsim`), so
//! it only uses what both provide: `Request`/`Response`/`Status`/metadata and a
//! boxed `Stream` for the server stream.
//!
//! Error mapping (`ApiError` → gRPC):
//!
//! | engine | gRPC | metadata |
//! |---|---|---|
//! | `Invalid` | INVALID_ARGUMENT `"field: rule"` | `x-minoots-field` |
//! | `NotFound` | NOT_FOUND | |
//! | `Conflict` | FAILED_PRECONDITION (ALREADY_EXISTS for `idempotencyKey`) | `x-minoots-field` |
//! | `Unavailable` | UNAVAILABLE, or FAILED_PRECONDITION when another node leads | `retry-after-ms`, `x-minoots-leader` (the leader's gRPC URL) |
//! | `Overloaded` | RESOURCE_EXHAUSTED | `retry-after-ms` |
//! | `QuotaExceeded` | RESOURCE_EXHAUSTED | `retry-after-ms`, `x-minoots-limit-type` (`daily`, `burst`, `rate`) |

use std::collections::BTreeSet;
use std::pin::Pin;

use futures::Stream;
use minoots_core::auth::{Forbidden, Principal, Role};
use minoots_core::draft::TimerDraft;
use minoots_core::event::{EventKind, OutboxEvent};
use minoots_core::limits::BATCH_MAX;
use minoots_core::store::{Created, ListQuery};
use minoots_core::time::format_wall_ms;
use minoots_core::timer::{FireRecord, Schedule, TimerRecord, TimerStatus};
use minoots_core::validate::{parse_duration_text, parse_instant};
use minoots_core::{ApiError, TenantId, TimerId, ValidationError};
use minoots_proto::horology_kernel_server::{HorologyKernel, HorologyKernelServer};
use minoots_proto::{
    self as pb, TimerBatchError, TimerBatchResult, TimerBatchScheduleRequest, TimerBatchScheduleResponse,
    TimerCancelRequest, TimerEventStreamRequest, TimerFiresRequest, TimerFiresResponse, TimerGetRequest,
    TimerListRequest, TimerListResponse, TimerScheduleRequest, TimerScheduleResponse, timer_batch_result,
    timer_event, timer_schedule_request,
};

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Status};

use crate::handle::{AuthError, Credential, NodeHandle};
use crate::subscription::{EventFeed, StreamEnd, StreamFilter, StreamRefused};
use crate::views::event_type;

/// Metadata carrying the API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Metadata naming the rejected field (REST camelCase spelling).
pub const FIELD_HEADER: &str = "x-minoots-field";
/// Metadata with the retry hint in milliseconds.
pub const RETRY_AFTER_HEADER: &str = "retry-after-ms";
/// Metadata with the leader's address when this node is not it.
pub const LEADER_HEADER: &str = "x-minoots-leader";
/// Metadata naming the quota that refused a call (`daily`, `burst`, `rate`).
pub const LIMIT_TYPE_HEADER: &str = "x-minoots-limit-type";
/// `StreamTimerEvents` tenant meaning "every tenant" (role `operator` only).
pub const ALL_TENANTS: &str = "__all__";
/// The role a stopped node reports.
/// Largest request message accepted (real transport; the simulator ignores it).
pub const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The boxed server stream of `StreamTimerEvents`.
pub type TimerEventStream = Pin<Box<dyn Stream<Item = Result<pb::TimerEvent, Status>> + Send + 'static>>;

/// [`KernelService`] wrapped for a tonic server (madsim-tonic's generated
/// server carries an interceptor type parameter).
#[cfg(not(madsim))]
pub type KernelServer = HorologyKernelServer<KernelService>;
/// [`KernelService`] wrapped for a tonic server (madsim-tonic's generated
/// server carries an interceptor type parameter).
#[cfg(madsim)]
pub type KernelServer = HorologyKernelServer<KernelService, tonic::codegen::IdentityInterceptor>;

/// The `HorologyKernel` service over a running node.
#[derive(Debug, Clone)]
pub struct KernelService {
    handle: NodeHandle,
}

impl KernelService {
    /// A service answering from `handle`'s node.
    pub fn new(handle: NodeHandle) -> Self {
        Self { handle }
    }

    /// The service wrapped for a tonic server, with the request size limit set.
    pub fn into_server(self) -> KernelServer {
        HorologyKernelServer::new(self).max_decoding_message_size(MESSAGE_BYTES_MAX)
    }

    /// Authenticates the caller from `x-api-key` and checks it holds `role`.
    async fn authorize<T>(&self, request: &Request<T>, role: Role) -> Result<Principal, Status> {
        let credential = credential_of(request.metadata()).map_err(auth_status)?;
        let source = request.remote_addr().map(|addr| addr.ip());
        let principal = self.handle.authenticate(credential, source).await.map_err(auth_status)?;
        principal.require(role).map_err(forbidden)?;
        Ok(principal)
    }
}

#[tonic::async_trait]
impl HorologyKernel for KernelService {
    async fn schedule_timer(
        &self,
        request: Request<TimerScheduleRequest>,
    ) -> Result<tonic::Response<TimerScheduleResponse>, Status> {
        let principal = self.authorize(&request, Role::TimerWrite).await?;
        let req = request.into_inner();
        let tenant = scope(&principal, &req.tenant_id)?;
        let draft = draft_from_wire(req, tenant).map_err(|e| invalid(&e))?;
        let Created { timer, created } =
            self.handle.schedule(&principal.tenant_id, draft).await.map_err(|e| api_status(&e))?;
        Ok(tonic::Response::new(TimerScheduleResponse { timer: Some(timer_to_wire(&timer)), created }))
    }

    async fn cancel_timer(
        &self,
        request: Request<TimerCancelRequest>,
    ) -> Result<tonic::Response<pb::Timer>, Status> {
        let principal = self.authorize(&request, Role::TimerCancel).await?;
        let req = request.into_inner();
        let tenant_id = scope(&principal, &req.tenant_id)?;
        let timer_id = parse_timer_id(&req.timer_id)?;
        let timer = self
            .handle
            .cancel(&principal.tenant_id, tenant_id, timer_id, req.requested_by, non_empty(req.reason))
            .await
            .map_err(|e| api_status(&e))?;
        Ok(tonic::Response::new(timer_to_wire(&timer)))
    }

    async fn get_timer(
        &self,
        request: Request<TimerGetRequest>,
    ) -> Result<tonic::Response<pb::Timer>, Status> {
        let principal = self.authorize(&request, Role::TimerRead).await?;
        let req = request.into_inner();
        let tenant_id = scope(&principal, &req.tenant_id)?;
        let timer_id = parse_timer_id(&req.timer_id)?;
        let timer =
            self.handle.get(&principal.tenant_id, tenant_id, timer_id).await.map_err(|e| api_status(&e))?;
        Ok(tonic::Response::new(timer_to_wire(&timer)))
    }

    async fn list_timers(
        &self,
        request: Request<TimerListRequest>,
    ) -> Result<tonic::Response<TimerListResponse>, Status> {
        let principal = self.authorize(&request, Role::TimerRead).await?;
        let req = request.into_inner();
        let tenant_id = scope(&principal, &req.tenant_id)?;
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(TimerId::parse("pageToken", token).map_err(|e| invalid(&e))?),
        };
        let statuses = match parse_statuses(&req.statuses).map_err(|e| invalid(&e))? {
            StatusFilter::Only(statuses) => statuses,
            // Only statuses this service never reports (`failed`): nothing matches.
            StatusFilter::Nothing => return Ok(tonic::Response::new(TimerListResponse::default())),
        };
        let query =
            ListQuery { tenant_id, statuses, labels: req.labels, after, limit: page_size(req.page_size)? };
        let page = self.handle.list(&principal.tenant_id, query).await.map_err(|e| api_status(&e))?;
        Ok(tonic::Response::new(TimerListResponse {
            timers: page.timers.iter().map(timer_to_wire).collect(),
            next_page_token: page.next_cursor.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    type StreamTimerEventsStream = TimerEventStream;

    async fn stream_timer_events(
        &self,
        request: Request<TimerEventStreamRequest>,
    ) -> Result<tonic::Response<Self::StreamTimerEventsStream>, Status> {
        let principal = self.authorize(&request, Role::TimerRead).await?;
        // (The caller authenticated with it, so it parses.)
        let credential = credential_of(request.metadata()).ok().flatten();
        let revoked = self.handle.credential_ends(credential, &principal);
        let req = request.into_inner();
        let tenant = if req.tenant_id == ALL_TENANTS {
            if !principal.has(Role::Operator) {
                return Err(Status::permission_denied(format!(
                    "streaming every tenant ({ALL_TENANTS}) needs role {}",
                    Role::Operator.as_str()
                )));
            }
            None
        } else {
            Some(scope(&principal, &req.tenant_id)?)
        };
        let kinds = parse_topics(&req.topics).map_err(|e| invalid(&e))?;
        // Subscribed before answering: every event committed after the client
        // sees the response headers reaches it.
        let feed = self
            .handle
            .open_event_stream(&principal.tenant_id, StreamFilter { tenant, kinds }, revoked)
            .await
            .map_err(|refused| match refused {
                StreamRefused::TooMany(e) => Status::resource_exhausted(e.to_string()),
                StreamRefused::Quota(e) => api_status(&e),
            })?;
        Ok(tonic::Response::new(Box::pin(feed_to_stream(feed))))
    }

    async fn schedule_timers(
        &self,
        request: Request<TimerBatchScheduleRequest>,
    ) -> Result<tonic::Response<TimerBatchScheduleResponse>, Status> {
        let principal = self.authorize(&request, Role::TimerWrite).await?;
        let req = request.into_inner();
        if req.timers.is_empty() || req.timers.len() > BATCH_MAX {
            return Err(invalid(&ValidationError::new(
                "timers",
                format!("must hold 1 to {BATCH_MAX} timers"),
            )));
        }
        let mut drafts = Vec::with_capacity(req.timers.len());
        for (i, item) in req.timers.into_iter().enumerate() {
            let tenant = scope(&principal, &item.tenant_id)?;
            let draft =
                draft_from_wire(item, tenant).map_err(|e| invalid(&e.prefixed(&format!("timers[{i}]."))))?;
            drafts.push(draft);
        }
        let results =
            self.handle.schedule_batch(&principal.tenant_id, drafts).await.map_err(|e| api_status(&e))?;
        Ok(tonic::Response::new(TimerBatchScheduleResponse {
            results: results.iter().map(batch_result_to_wire).collect(),
        }))
    }

    async fn list_timer_fires(
        &self,
        request: Request<TimerFiresRequest>,
    ) -> Result<tonic::Response<TimerFiresResponse>, Status> {
        let principal = self.authorize(&request, Role::TimerRead).await?;
        let req = request.into_inner();
        let tenant_id = scope(&principal, &req.tenant_id)?;
        let timer_id = parse_timer_id(&req.timer_id)?;
        let limit = page_size(req.page_size)?;
        let fires = self
            .handle
            .list_fires(&principal.tenant_id, tenant_id, timer_id, req.after_occurrence, limit)
            .await
            .map_err(|e| api_status(&e))?;
        let full = fires.len() >= limit as usize;
        let next_after_occurrence = if full { fires.last().map_or(0, |f| f.occurrence) } else { 0 };
        Ok(tonic::Response::new(TimerFiresResponse {
            fires: fires.iter().map(fire_to_wire).collect(),
            next_after_occurrence,
        }))
    }
}

// ---- events -----------------------------------------------------------------

/// A client's event feed as a gRPC stream, ending with the status its
/// [`StreamEnd`] maps to. The feed's task stops when tonic drops this stream.
fn feed_to_stream(feed: EventFeed) -> impl Stream<Item = Result<pb::TimerEvent, Status>> + Send + 'static {
    futures::stream::unfold(feed, |mut feed| async move {
        match feed.next().await? {
            Ok(event) => Some((Ok(event_to_wire(&event)), feed)),
            Err(end) => Some((Err(stream_end_status(&end)), feed)),
        }
    })
}

/// The status that ends a stream for `end`.
fn stream_end_status(end: &StreamEnd) -> Status {
    let message = end.message();
    match end {
        StreamEnd::Lagged { .. } => Status::data_loss(message),
        StreamEnd::TooSlow { .. } => Status::resource_exhausted(message),
        StreamEnd::Revoked => Status::unauthenticated(message),
        StreamEnd::Stopping => Status::unavailable(message),
    }
}

/// Parses `topics`: `timer.scheduled` / `scheduled` (any case), likewise
/// `fired`, `cancelled`; `*` or `timer.*` for all. Empty = all (`None`).
pub fn parse_topics(topics: &[String]) -> Result<Option<BTreeSet<EventKind>>, ValidationError> {
    let mut kinds = BTreeSet::new();
    for topic in topics {
        let lower = topic.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("minoots.").unwrap_or(&lower);
        let name = name.strip_prefix("timer.").unwrap_or(name);
        match name {
            "*" => return Ok(None),
            "scheduled" => kinds.insert(EventKind::Scheduled),
            "fired" => kinds.insert(EventKind::Fired),
            "cancelled" | "canceled" => kinds.insert(EventKind::Cancelled),
            _ => {
                return Err(ValidationError::new(
                    "topics",
                    "must be timer.scheduled, timer.fired or timer.cancelled (or scheduled, fired, cancelled)",
                ));
            }
        };
    }
    Ok(if kinds.is_empty() { None } else { Some(kinds) })
}

/// An outbox event as the wire shows it.
pub fn event_to_wire(event: &OutboxEvent) -> pb::TimerEvent {
    let timer = Some(timer_to_wire(&event.timer));
    let body = match event.kind {
        EventKind::Scheduled => timer_event::Event::Scheduled(pb::TimerScheduled { timer }),
        EventKind::Fired => {
            let fire = event.fire.as_ref();
            timer_event::Event::Fired(pb::TimerFired {
                timer,
                result: None,
                occurrence: fire.map_or(event.occurrence, |f| f.occurrence),
                epoch: fire.map_or(0, |f| f.epoch),
                node_id: fire.map(|f| f.node_id.clone()).unwrap_or_default(),
                due_at_iso: fire.map(|f| format_wall_ms(f.due_ms)).unwrap_or_default(),
                fired_at_iso: fire.map(|f| format_wall_ms(f.fired_at_ms)).unwrap_or_default(),
            })
        }
        EventKind::Cancelled => timer_event::Event::Cancelled(pb::TimerCancelled {
            timer,
            reason: event.timer.cancel_reason.clone().unwrap_or_default(),
        }),
    };
    let dedupe_key = event.dedupe_key();
    pb::TimerEvent {
        event: Some(body),
        // The same id REST/SSE envelopes carry: deterministic per event.
        envelope_id: format!("evt-{dedupe_key}"),
        dedupe_key,
        seq: event.seq,
        tenant_id: event.tenant_id.to_string(),
        occurred_at_iso: format_wall_ms(event.occurred_at_ms),
        event_type: event_type(event.kind).to_owned(),
    }
}

// ---- wire → engine ----------------------------------------------------------

/// Turns a schedule request into a draft for `tenant` (already scoped).
/// Only wire-format parsing happens here; every rule is the engine's.
pub fn draft_from_wire(req: TimerScheduleRequest, tenant: TenantId) -> Result<TimerDraft, ValidationError> {
    let mut draft = TimerDraft {
        tenant_id: Some(tenant),
        requested_by: non_empty(req.requested_by),
        name: non_empty(req.name),
        cron: non_empty(req.cron),
        time_zone: non_empty(req.time_zone),
        max_occurrences: req.max_occurrences,
        misfire_policy: non_empty(req.misfire_policy),
        labels: req.labels,
        idempotency_key: non_empty(req.idempotency_key),
        ..TimerDraft::default()
    };
    match req.schedule_time {
        // A set oneof counts even at 0: the engine rejects a zero delay.
        Some(timer_schedule_request::ScheduleTime::DurationMs(ms)) => draft.duration_ms = Some(ms),
        Some(timer_schedule_request::ScheduleTime::FireTimeIso(text)) => {
            draft.fire_at_ms = Some(parse_instant("fireAt", &text)?);
        }
        None => {}
    }
    if !req.duration.is_empty() {
        if draft.duration_ms.is_some() {
            return Err(ValidationError::new("duration", "give duration_ms or duration, not both"));
        }
        draft.duration_ms = Some(parse_duration_text("duration", &req.duration)?);
    }
    draft.every_ms = req.every_ms;
    if !req.every.is_empty() {
        if draft.every_ms.is_some() {
            return Err(ValidationError::new("every", "give every_ms or every, not both"));
        }
        draft.every_ms = Some(parse_duration_text("every", &req.every)?);
    }
    if !req.start_at_iso.is_empty() {
        draft.start_at_ms = Some(parse_instant("startAt", &req.start_at_iso)?);
    }
    if !req.end_at_iso.is_empty() {
        draft.end_at_ms = Some(parse_instant("endAt", &req.end_at_iso)?);
    }
    draft.metadata = parse_json("metadata", &req.metadata_json)?;
    draft.action_bundle = parse_json("actionBundle", &req.action_bundle_json)?;
    draft.agent_binding = parse_json("agentBinding", &req.agent_binding_json)?;
    Ok(draft)
}

/// Which statuses a list request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusFilter {
    /// These (empty = all).
    Only(Vec<TimerStatus>),
    /// Only statuses that never occur here: the answer is empty.
    Nothing,
}

/// Parses list `statuses`: `scheduled`, `fired`, `cancelled` in any case,
/// with or without the `TIMER_STATUS_` prefix. MINOOTS's `armed` means
/// scheduled here; its `failed` is never reported, so it matches nothing.
pub fn parse_statuses(statuses: &[String]) -> Result<StatusFilter, ValidationError> {
    let mut wanted = BTreeSet::new();
    let mut only_never = !statuses.is_empty();
    for text in statuses {
        let lower = text.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("timer_status_").unwrap_or(&lower);
        let status = match name {
            "scheduled" | "armed" => TimerStatus::Scheduled,
            "fired" => TimerStatus::Fired,
            "cancelled" | "canceled" => TimerStatus::Cancelled,
            "failed" => continue,
            _ => return Err(ValidationError::new("statuses", "must be scheduled, fired or cancelled")),
        };
        only_never = false;
        wanted.insert(status);
    }
    Ok(if only_never { StatusFilter::Nothing } else { StatusFilter::Only(wanted.into_iter().collect()) })
}

/// `page_size` under the page policy of both APIs
/// ([`minoots_core::limits::page_size`]); proto3's 0 is "not set".
pub fn page_size(requested: u32) -> Result<u32, Status> {
    minoots_core::limits::page_size("page_size", (requested != 0).then_some(requested))
        .map_err(|e| invalid(&e))
}

fn parse_json(field: &str, text: &str) -> Result<Option<serde_json::Value>, ValidationError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(_) => Err(ValidationError::new(field, "must be valid JSON")),
    }
}

fn parse_timer_id(text: &str) -> Result<TimerId, Status> {
    TimerId::parse("timerId", text).map_err(|e| invalid(&e))
}

fn non_empty(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

// ---- engine → wire ----------------------------------------------------------

/// A timer as the wire shows it.
pub fn timer_to_wire(t: &TimerRecord) -> pb::Timer {
    let iso = |ms: Option<i64>| ms.map(format_wall_ms).unwrap_or_default();
    let mut timer = pb::Timer {
        id: t.id.to_string(),
        tenant_id: t.tenant_id.to_string(),
        requested_by: t.requested_by.clone(),
        name: t.name.clone().unwrap_or_default(),
        status: status_to_wire(t.status) as i32,
        created_at_iso: format_wall_ms(t.created_at_ms),
        fire_at_iso: format_wall_ms(t.next_due_ms),
        fired_at_iso: iso(t.last_fired_at_ms),
        cancelled_at_iso: iso(t.cancelled_at_ms),
        cancel_reason: t.cancel_reason.clone().unwrap_or_default(),
        cancelled_by: t.cancelled_by.clone().unwrap_or_default(),
        duration_ms: 0,
        metadata_json: json_text(t.metadata.as_ref()),
        action_bundle_json: json_text(
            t.action_bundle.as_ref().map(minoots_core::action::redacted_bundle).as_ref(),
        ),
        agent_binding_json: json_text(t.agent_binding.as_ref()),
        labels: t.labels.clone(),
        schedule_kind: t.schedule.kind_name().to_owned(),
        next_occurrence: t.next_occurrence,
        fired_count: t.fired_count(),
        idempotency_key: t.idempotency_key.clone().unwrap_or_default(),
        ..pb::Timer::default()
    };
    match &t.schedule {
        Schedule::Once { duration_ms, .. } => timer.duration_ms = duration_ms.unwrap_or(0),
        Schedule::Interval { every_ms, start_at_ms, end_at_ms, max_occurrences } => {
            timer.every_ms = *every_ms;
            timer.start_at_iso = format_wall_ms(*start_at_ms);
            timer.end_at_iso = iso(*end_at_ms);
            timer.max_occurrences = max_occurrences.unwrap_or(0);
        }
        Schedule::Cron { expression, time_zone, start_at_ms, end_at_ms, max_occurrences } => {
            timer.cron = expression.clone();
            timer.time_zone = time_zone.clone();
            timer.start_at_iso = format_wall_ms(*start_at_ms);
            timer.end_at_iso = iso(*end_at_ms);
            timer.max_occurrences = max_occurrences.unwrap_or(0);
        }
    }
    if t.schedule.is_recurring() {
        timer.misfire_policy = t.misfire.as_str().to_owned();
    }
    timer
}

fn status_to_wire(status: TimerStatus) -> pb::TimerStatus {
    match status {
        TimerStatus::Scheduled => pb::TimerStatus::Scheduled,
        TimerStatus::Fired => pb::TimerStatus::Fired,
        TimerStatus::Cancelled => pb::TimerStatus::Cancelled,
    }
}

fn json_text(value: Option<&serde_json::Value>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// A recorded fire as the wire shows it.
pub fn fire_to_wire(fire: &FireRecord) -> pb::TimerFire {
    pb::TimerFire {
        timer_id: fire.timer_id.to_string(),
        occurrence: fire.occurrence,
        epoch: fire.epoch,
        node_id: fire.node_id.clone(),
        due_at_iso: format_wall_ms(fire.due_ms),
        fired_at_iso: format_wall_ms(fire.fired_at_ms),
    }
}

fn batch_result_to_wire(result: &Result<Created, ApiError>) -> TimerBatchResult {
    match result {
        Ok(Created { timer, created }) => TimerBatchResult {
            result: Some(timer_batch_result::Result::Timer(timer_to_wire(timer))),
            created: *created,
        },
        Err(e) => {
            let status = api_status(e);
            let field = match e {
                ApiError::Invalid(v) => v.field.clone(),
                ApiError::Conflict { field, .. } => field.clone(),
                _ => String::new(),
            };
            TimerBatchResult {
                result: Some(timer_batch_result::Result::Error(TimerBatchError {
                    code: code_name(status.code()).to_owned(),
                    field,
                    message: status.message().to_owned(),
                })),
                created: false,
            }
        }
    }
}

// ---- statuses -----------------------------------------------------------------

/// Resolves the request's tenant against the key's (empty = the key's).
fn scope(principal: &Principal, requested: &str) -> Result<TenantId, Status> {
    principal.scope(Some(requested)).map_err(forbidden)
}

fn forbidden(e: Forbidden) -> Status {
    Status::permission_denied(e.to_string())
}

/// The credential in a call's metadata (`x-api-key`, or `authorization: Bearer …`).
fn credential_of(metadata: &MetadataMap) -> Result<Option<Credential<'_>>, AuthError> {
    let text = |name: &str| match metadata.get(name) {
        None => Ok(None),
        // Not visible ASCII: it cannot be any credential we accept.
        Some(value) => value.to_str().map(Some).map_err(|_| AuthError::Invalid),
    };
    Credential::from_headers(text(API_KEY_HEADER)?, text("authorization")?)
}

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Missing | AuthError::Invalid | AuthError::InvalidToken(_) => {
            Status::unauthenticated(e.to_string())
        }
        AuthError::Unavailable(_) => {
            let mut status = Status::unavailable(e.to_string());
            let retry = minoots_core::engine::RETRY_AFTER_MS.to_string();
            set_metadata(status.metadata_mut(), RETRY_AFTER_HEADER, &retry);
            status
        }
        AuthError::Throttled { retry_after_ms } => {
            let mut status = Status::resource_exhausted(e.to_string());
            set_metadata(status.metadata_mut(), RETRY_AFTER_HEADER, &retry_after_ms.to_string());
            status
        }
    }
}

/// A validation error as INVALID_ARGUMENT `"field: rule"` with `x-minoots-field`.
pub fn invalid(e: &ValidationError) -> Status {
    let mut status = Status::invalid_argument(e.to_string());
    set_metadata(status.metadata_mut(), FIELD_HEADER, &e.field);
    status
}

/// An engine error as a gRPC status (see the module docs for the table).
pub fn api_status(e: &ApiError) -> Status {
    match e {
        ApiError::Invalid(v) => invalid(v),
        ApiError::NotFound { .. } => Status::not_found(e.to_string()),
        ApiError::Conflict { field, .. } => {
            let code = if field == "idempotencyKey" { Code::AlreadyExists } else { Code::FailedPrecondition };
            let mut status = Status::new(code, e.to_string());
            set_metadata(status.metadata_mut(), FIELD_HEADER, field);
            status
        }
        ApiError::Unavailable { retry_after_ms, leader, .. } => {
            let code = if leader.is_some() { Code::FailedPrecondition } else { Code::Unavailable };
            let mut status = Status::new(code, e.to_string());
            set_metadata(status.metadata_mut(), RETRY_AFTER_HEADER, &retry_after_ms.to_string());
            if let Some(leader) = leader {
                let endpoint = crate::handle::leader_endpoint(leader, "grpc");
                set_metadata(status.metadata_mut(), LEADER_HEADER, endpoint);
            }
            status
        }
        ApiError::Overloaded { retry_after_ms, .. } => {
            let mut status = Status::resource_exhausted(e.to_string());
            set_metadata(status.metadata_mut(), RETRY_AFTER_HEADER, &retry_after_ms.to_string());
            status
        }
        ApiError::QuotaExceeded { limit_type, retry_after_ms, .. } => {
            let mut status = Status::resource_exhausted(e.to_string());
            set_metadata(status.metadata_mut(), RETRY_AFTER_HEADER, &retry_after_ms.to_string());
            set_metadata(status.metadata_mut(), LIMIT_TYPE_HEADER, limit_type.as_str());
            status
        }
    }
}

/// Sets ASCII metadata; a value that cannot travel as a header is left out
/// (the status message still carries it).
fn set_metadata(metadata: &mut MetadataMap, key: &'static str, value: &str) {
    if let Ok(value) = MetadataValue::try_from(value) {
        metadata.insert(key, value);
    }
}

/// The canonical upper-case name of a gRPC code (`ALREADY_EXISTS`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn statuses_accept_every_spelling() {
        let parse = |items: &[&str]| parse_statuses(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            parse(&["scheduled", "FIRED", "TIMER_STATUS_CANCELLED"]),
            Ok(StatusFilter::Only(vec![TimerStatus::Scheduled, TimerStatus::Fired, TimerStatus::Cancelled]))
        );
        assert_eq!(parse(&["armed"]), Ok(StatusFilter::Only(vec![TimerStatus::Scheduled])));
        assert_eq!(parse(&[]), Ok(StatusFilter::Only(vec![])));
        assert_eq!(parse(&["TIMER_STATUS_FAILED"]), Ok(StatusFilter::Nothing));
        assert_eq!(parse(&["failed", "fired"]), Ok(StatusFilter::Only(vec![TimerStatus::Fired])));
        assert_eq!(parse(&["bogus"]).unwrap_err().field, "statuses");
        assert_eq!(parse(&["TIMER_STATUS_UNSPECIFIED"]).unwrap_err().field, "statuses");
    }

    #[test]
    fn topics_accept_short_and_long_forms() {
        let parse = |items: &[&str]| parse_topics(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&["timer.*"]), Ok(None));
        assert_eq!(
            parse(&["timer.fired", "Cancelled"]),
            Ok(Some([EventKind::Fired, EventKind::Cancelled].into()))
        );
        assert_eq!(parse(&["timer.exploded"]).unwrap_err().field, "topics");
    }

    #[test]
    fn page_sizes_default_or_are_refused_above_the_maximum() {
        use minoots_core::limits::{PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
        assert_eq!(page_size(0).expect("default"), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(7).expect("as asked"), 7);
        assert_eq!(page_size(PAGE_SIZE_MAX).expect("the maximum"), PAGE_SIZE_MAX);
        let refused = page_size(PAGE_SIZE_MAX + 1).expect_err("above the maximum");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(refused.metadata().get(FIELD_HEADER).and_then(|v| v.to_str().ok()), Some("page_size"));
    }

    #[test]
    fn errors_map_to_codes_and_metadata() {
        let s = api_status(&ApiError::Invalid(ValidationError::new("duration", "must be ≥ 1 ms")));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "duration: must be ≥ 1 ms");
        assert_eq!(s.metadata().get(FIELD_HEADER).and_then(|v| v.to_str().ok()), Some("duration"));

        let conflict = |field: &str| ApiError::Conflict { field: field.into(), message: "x".into() };
        assert_eq!(api_status(&conflict("idempotencyKey")).code(), Code::AlreadyExists);
        assert_eq!(api_status(&conflict("status")).code(), Code::FailedPrecondition);

        let follower = api_status(&ApiError::Unavailable {
            reason: "not leader".into(),
            retry_after_ms: 250,
            leader: Some("10.0.0.1:50051".into()),
        });
        assert_eq!(follower.code(), Code::FailedPrecondition);
        assert_eq!(
            follower.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()),
            Some("10.0.0.1:50051")
        );
        assert_eq!(follower.metadata().get(RETRY_AFTER_HEADER).and_then(|v| v.to_str().ok()), Some("250"));
        let down = api_status(&ApiError::Unavailable { reason: "x".into(), retry_after_ms: 5, leader: None });
        assert_eq!(down.code(), Code::Unavailable);
        let busy = api_status(&ApiError::Overloaded { reason: "queue".into(), retry_after_ms: 9 });
        assert_eq!(busy.code(), Code::ResourceExhausted);
        assert_eq!(busy.metadata().get(RETRY_AFTER_HEADER).and_then(|v| v.to_str().ok()), Some("9"));

        // A field that cannot be a header value is left out, without panicking.
        let odd = invalid(&ValidationError::new("labels.\u{e9}\n", "bad"));
        assert!(odd.metadata().get(FIELD_HEADER).is_none());
    }

    #[test]
    fn drafts_keep_a_zero_duration_and_reject_double_forms() {
        let tenant = TenantId::parse("tenantId", "t1").unwrap();
        let req = TimerScheduleRequest {
            schedule_time: Some(timer_schedule_request::ScheduleTime::DurationMs(0)),
            ..Default::default()
        };
        let draft = draft_from_wire(req, tenant.clone()).unwrap();
        assert_eq!(draft.duration_ms, Some(0));
        assert_eq!(draft.tenant_id, Some(tenant.clone()));

        let both = TimerScheduleRequest {
            schedule_time: Some(timer_schedule_request::ScheduleTime::DurationMs(5)),
            duration: "5s".into(),
            ..Default::default()
        };
        assert_eq!(draft_from_wire(both, tenant.clone()).unwrap_err().field, "duration");

        let json = TimerScheduleRequest { metadata_json: "{not json".into(), ..Default::default() };
        assert_eq!(draft_from_wire(json, tenant.clone()).unwrap_err().field, "metadata");

        let ok = TimerScheduleRequest {
            every_ms: Some(1_000),
            metadata_json: r#"{"a":1}"#.into(),
            labels: BTreeMap::from([("team".to_owned(), "core".to_owned())]),
            idempotency_key: "k1".into(),
            ..Default::default()
        };
        let draft = draft_from_wire(ok, tenant).unwrap();
        assert_eq!(draft.every_ms, Some(1_000));
        assert_eq!(draft.metadata, Some(serde_json::json!({"a": 1})));
        assert_eq!(draft.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(draft.labels.get("team").map(String::as_str), Some("core"));
    }
}
