//! The timer routes under `/api/timers`: create (one or a batch), list, get,
//! recorded fires and cancel. Each handler authenticates (see
//! [`crate::extract::Caller`]), scopes the request to the key's tenant,
//! converts the wire format, sends one [`Command`] to the node and renders
//! the reply with the shared views. Another tenant's timer is simply not
//! found (404): the store is queried under the caller's tenant only.
//!
//! Idempotent create: a retry whose idempotency key matches an existing timer
//! (same request) answers **200** with that timer and the header
//! `Idempotent-Replayed: true`; a first create answers **201** with a
//! `Location` header. A reused key with a different request is 409.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minoots_core::limits::{BATCH_MAX, PAGE_SIZE_DEFAULT};
use minoots_core::store::{Created, ListQuery};
use minoots_core::timer::TimerStatus;
use minoots_core::{ApiError, TenantId, TimerId};
use minoots_node::views::{FireView, TimerView};
use serde::Serialize;

use crate::AppState;
use crate::error::HttpError;
use crate::extract::{
    Caller, CancelRole, JsonBody, OptionalJsonBody, QueryPairs, ReadRole, TimerPath, WriteRole,
};
use crate::wire::{BatchBody, CancelBody, CreateError, CreateTimerBody};

/// The header a client may send instead of `idempotencyKey`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Set to `true` on a 200 answer to an idempotent retry.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

impl From<CreateError> for HttpError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Invalid(v) => HttpError::from(v),
            CreateError::Forbidden(f) => HttpError::from(f),
        }
    }
}

fn idempotency_header(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
    match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => Ok(None),
        // Visible ASCII and spaces: `to_str` alone would let a tab through.
        Some(v) => v
            .to_str()
            .ok()
            .filter(|text| text.bytes().all(|b| (b' '..=b'~').contains(&b)))
            .map(Some)
            .ok_or_else(|| HttpError::invalid("Idempotency-Key", "must be visible ASCII text")),
    }
}

/// The answer to one create: 201 + `Location`, or 200 + `Idempotent-Replayed` on a retry.
fn created_response(created: &Created) -> Response {
    let view = TimerView::from(&created.timer);
    let location = HeaderValue::from_str(&format!("/api/timers/{}", view.id));
    if created.created {
        let mut response = (StatusCode::CREATED, Json(view)).into_response();
        if let Ok(location) = location {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    } else {
        let mut response = (StatusCode::OK, Json(view)).into_response();
        response.headers_mut().insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
        response
    }
}

/// `POST /api/timers`.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller<WriteRole>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateTimerBody>,
) -> Result<Response, HttpError> {
    let header_key = idempotency_header(&headers)?;
    let draft = body.into_draft(&caller.principal, header_key, "")?;
    let created = state.handle.schedule(&caller.principal.tenant_id, draft).await?;
    Ok(created_response(&created))
}

/// The batch answer, serialized straight from the views (no intermediate JSON tree).
#[derive(Debug, Serialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

/// One item of a batch answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchItem {
    /// The status a single create would have had (201, 200, 409, …).
    status: u16,
    /// Whether a new timer was created (false on an idempotent retry or an error).
    created: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    timer: Option<TimerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<BatchItemError>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchItemError {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

fn batch_item(index: usize, result: Result<Created, ApiError>) -> BatchItem {
    match result {
        Ok(created) => BatchItem {
            status: if created.created { 201 } else { 200 },
            created: created.created,
            timer: Some(TimerView::from(&created.timer)),
            error: None,
        },
        Err(e) => {
            let e = HttpError::from(e);
            BatchItem {
                status: e.status.as_u16(),
                created: false,
                timer: None,
                error: Some(BatchItemError {
                    code: e.code,
                    message: e.message,
                    field: e.field.map(|f| format!("timers[{index}].{f}")),
                }),
            }
        }
    }
}

/// `POST /api/timers/batch`: every item validates or nothing is created (400
/// naming `timers[i].field`); idempotency conflicts are reported per item.
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller<WriteRole>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Response, HttpError> {
    if headers.contains_key(IDEMPOTENCY_KEY_HEADER) {
        return Err(HttpError::invalid(
            "Idempotency-Key",
            "is not accepted on a batch; give each timer its own idempotencyKey",
        ));
    }
    if body.timers.is_empty() || body.timers.len() > BATCH_MAX {
        return Err(HttpError::invalid("timers", format!("must hold 1 to {BATCH_MAX} timers")));
    }
    let drafts = body
        .timers
        .into_iter()
        .enumerate()
        .map(|(i, item)| item.into_draft(&caller.principal, None, &format!("timers[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let results = state.handle.schedule_batch(&caller.principal.tenant_id, drafts).await?;
    let results: Vec<BatchItem> = results.into_iter().enumerate().map(|(i, r)| batch_item(i, r)).collect();
    Ok((StatusCode::CREATED, Json(BatchAnswer { results })).into_response())
}

/// Resolves the optional `tenantId` parameter against the caller.
fn scope(caller: &minoots_core::auth::Principal, requested: Option<&str>) -> Result<TenantId, HttpError> {
    Ok(caller.scope(requested)?)
}

/// Parses `limit` under the page policy of both APIs
/// ([`minoots_core::limits::page_size`]); what is not a number is refused as 0 is.
pub(crate) fn parse_limit(text: &str) -> Result<u32, HttpError> {
    let requested = text.parse::<u32>().unwrap_or(0);
    Ok(minoots_core::limits::page_size("limit", Some(requested))?)
}

fn unknown_parameter(name: &str) -> HttpError {
    HttpError::invalid(name, "is not a parameter of this route")
}

/// A page of timers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TimerPage {
    timers: Vec<TimerView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// `GET /api/timers?status=&label=k=v&limit=&cursor=&tenantId=`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<impl Serialize>, HttpError> {
    let mut statuses: Vec<TimerStatus> = Vec::new();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut limit = PAGE_SIZE_DEFAULT;
    let mut after = None;
    let mut tenant = None;
    let mut matches_nothing = false;
    for (name, value) in &params {
        match name.as_str() {
            "status" => {
                // An empty value (`status=`, `status=fired,`) is no status: refused like any other.
                for part in value.split(',').map(str::trim) {
                    let status = TimerStatus::parse(part).ok_or_else(|| {
                        HttpError::invalid(
                            "status",
                            format!("unknown status {part:?}; use scheduled, fired or cancelled"),
                        )
                    })?;
                    if !statuses.contains(&status) {
                        statuses.push(status);
                    }
                }
            }
            "label" => {
                let (key, val) = value
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| HttpError::invalid("label", "must be key=value"))?;
                if labels.insert(key.to_owned(), val.to_owned()).is_some_and(|old| old != val) {
                    // One key with two values: a filter no timer can match.
                    matches_nothing = true;
                }
            }
            "limit" => limit = parse_limit(value)?,
            "cursor" => after = Some(TimerId::parse("cursor", value)?),
            "tenantId" => tenant = Some(value.as_str()),
            other => return Err(unknown_parameter(other)),
        }
    }
    statuses.sort();
    let query = ListQuery { tenant_id: scope(&caller.principal, tenant)?, statuses, labels, after, limit };
    if matches_nothing {
        return Ok(Json(TimerPage { timers: Vec::new(), next_cursor: None }));
    }
    let page = state.handle.list(&caller.principal.tenant_id, query).await?;
    Ok(Json(TimerPage {
        timers: page.timers.iter().map(TimerView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Only `tenantId` is accepted on single-timer reads.
fn tenant_param(params: &[(String, String)]) -> Result<Option<&str>, HttpError> {
    let mut tenant = None;
    for (name, value) in params {
        match name.as_str() {
            "tenantId" => tenant = Some(value.as_str()),
            other => return Err(unknown_parameter(other)),
        }
    }
    Ok(tenant)
}

/// `GET /api/timers/{id}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    TimerPath(timer_id): TimerPath,
    QueryPairs(params): QueryPairs,
) -> Result<Json<TimerView>, HttpError> {
    let tenant_id = scope(&caller.principal, tenant_param(&params)?)?;
    let timer = state
        .handle
        .get(&caller.principal.tenant_id, tenant_id, timer_id)
        .await
        .map_err(|e| HttpError::for_timer(e, &timer_id))?;
    Ok(Json(TimerView::from(&timer)))
}

/// A page of fires.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FirePage {
    fires: Vec<FireView>,
    /// Pass as `after` for the next page; `null` when this page was not full.
    next_after: Option<u32>,
}

/// `GET /api/timers/{id}/fires?after=&limit=`.
pub async fn fires(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    TimerPath(timer_id): TimerPath,
    QueryPairs(params): QueryPairs,
) -> Result<Json<impl Serialize>, HttpError> {
    let mut after_occurrence = 0;
    let mut limit = PAGE_SIZE_DEFAULT;
    let mut tenant = None;
    for (name, value) in &params {
        match name.as_str() {
            "after" => {
                after_occurrence = value.parse::<u32>().map_err(|_| {
                    HttpError::invalid("after", "must be an occurrence number (0 to 4294967295)")
                })?;
            }
            "limit" => limit = parse_limit(value)?,
            "tenantId" => tenant = Some(value.as_str()),
            other => return Err(unknown_parameter(other)),
        }
    }
    let tenant_id = scope(&caller.principal, tenant)?;
    let fires = state
        .handle
        .list_fires(&caller.principal.tenant_id, tenant_id, timer_id, after_occurrence, limit)
        .await
        .map_err(|e| HttpError::for_timer(e, &timer_id))?;
    let full = fires.len() >= limit as usize;
    let next_after = if full { fires.last().map(|f| f.occurrence) } else { None };
    Ok(Json(FirePage { fires: fires.iter().map(FireView::from).collect(), next_after }))
}

/// `POST /api/timers/{id}/cancel` with an optional `{reason, requestedBy, tenantId}` body.
/// Cancelling a cancelled timer answers it again (200); a fired one is 409.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller<CancelRole>,
    TimerPath(timer_id): TimerPath,
    OptionalJsonBody(body): OptionalJsonBody<CancelBody>,
) -> Result<Json<TimerView>, HttpError> {
    let (tenant_id, requested_by, reason) = body.resolve(&caller.principal)?;
    let timer = state
        .handle
        .cancel(&caller.principal.tenant_id, tenant_id, timer_id, requested_by, reason)
        .await
        .map_err(|e| HttpError::for_timer(e, &timer_id))?;
    Ok(Json(TimerView::from(&timer)))
}
