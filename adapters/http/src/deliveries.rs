//! Delivery history and the dead-letter queue over REST:
//! `GET /api/timers/{id}/deliveries`, `GET /api/dlq`, `GET /api/dlq/{id}`,
//! `POST /api/dlq/{id}/replay`, `POST /api/dlq/replay` (every dead letter in
//! scope not replayed yet). Scoped to the caller's tenant like every route;
//! a replay keeps the delivery's idempotency key.

use axum::Json;
use axum::extract::{Path, State};
use minoots_actions::ActionStore;
use minoots_actions::store::{AttemptRecord, DeadLetter};
use serde::Serialize;

use crate::AppState;
use crate::error::HttpError;
use crate::extract::{Caller, QueryPairs, ReadRole, TimerPath, WriteRole};

/// Most dead letters one `POST /api/dlq/replay` replays.
const REPLAY_ALL_MAX: u32 = 10_000;

/// The action store, or 404 when actions are off on this server.
pub(crate) fn store(state: &AppState) -> Result<&ActionStore, HttpError> {
    state
        .config
        .actions
        .as_ref()
        .ok_or_else(|| HttpError::not_found("actions are not enabled on this server"))
}

/// A failed action-store request: logged, 503 with a retry hint.
pub(crate) fn failed(e: minoots_actions::store::StoreError) -> HttpError {
    tracing::warn!(error = %e, "action store request failed");
    HttpError::unavailable("the action store is unavailable", 1_000)
}

/// Bookkeeping time of a change made through the API.
pub(crate) fn now_ms() -> i64 {
    #[allow(clippy::disallowed_methods)] // Bookkeeping time of a replay request.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn tenant_param(params: &[(String, String)]) -> Result<Option<&str>, HttpError> {
    let mut tenant = None;
    for (name, value) in params {
        match name.as_str() {
            "tenantId" => tenant = Some(value.as_str()),
            "after" | "limit" | "includeReplayed" => {}
            other => return Err(HttpError::invalid(other, "is not a parameter of this route")),
        }
    }
    Ok(tenant)
}

/// A timer's delivery attempts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryHistory {
    timer_id: String,
    deliveries: Vec<AttemptRecord>,
}

/// `GET /api/timers/{id}/deliveries`.
pub async fn history(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    TimerPath(timer_id): TimerPath,
    QueryPairs(params): QueryPairs,
) -> Result<Json<impl Serialize>, HttpError> {
    let tenant = caller.principal.scope(tenant_param(&params)?)?;
    let id = timer_id.to_string();
    let deliveries = store(&state)?.attempts_of_timer(tenant.as_str(), &id).await.map_err(failed)?;
    Ok(Json(DeliveryHistory { timer_id: id, deliveries }))
}

/// A page of dead letters.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterPage {
    dead_letters: Vec<DeadLetter>,
    /// Pass as `after` for the next page; `null` on the last page.
    next_after: Option<i64>,
}

/// `GET /api/dlq?after=&limit=&includeReplayed=`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<impl Serialize>, HttpError> {
    let tenant = caller.principal.scope(tenant_param(&params)?)?;
    let mut after = 0i64;
    let mut limit = minoots_core::limits::PAGE_SIZE_DEFAULT;
    let mut include_replayed = false;
    for (name, value) in &params {
        match name.as_str() {
            "after" => {
                after = value.parse().ok().filter(|id: &i64| *id >= 0).ok_or_else(|| {
                    HttpError::invalid("after", "must be a dead-letter id (a whole number ≥ 0)")
                })?;
            }
            "limit" => {
                limit = crate::timers::parse_limit(value)?;
            }
            "includeReplayed" => {
                include_replayed = value
                    .parse()
                    .map_err(|_| HttpError::invalid("includeReplayed", "must be true or false"))?;
            }
            _ => {}
        }
    }
    let dead_letters = store(&state)?
        .dead_letters(Some(tenant.as_str()), after, limit, include_replayed)
        .await
        .map_err(failed)?;
    let next_after =
        (dead_letters.len() >= limit as usize).then(|| dead_letters.last().map(|d| d.id)).flatten();
    Ok(Json(DeadLetterPage { dead_letters, next_after }))
}

/// One dead letter with its delivery's attempts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterDetail {
    #[serde(flatten)]
    dead_letter: DeadLetter,
    /// The delivery's attempts (`attempts` is their count).
    history: Vec<AttemptRecord>,
}

fn dlq_id(text: &str) -> Result<i64, HttpError> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| HttpError::invalid("id", "must be a dead-letter id"))
}

/// `GET /api/dlq/{id}`.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller<ReadRole>,
    Path(id): Path<String>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<impl Serialize>, HttpError> {
    let tenant = caller.principal.scope(tenant_param(&params)?)?;
    let store = store(&state)?;
    let id = dlq_id(&id)?;
    let dead_letter = store
        .dead_letter(Some(tenant.as_str()), id)
        .await
        .map_err(failed)?
        .ok_or_else(|| HttpError::not_found(format!("dead letter {id} not found")))?;
    let history = store
        .attempts_of_timer(tenant.as_str(), &dead_letter.timer_id)
        .await
        .map_err(failed)?
        .into_iter()
        .filter(|a| a.idempotency_key == dead_letter.idempotency_key)
        .collect();
    Ok(Json(DeadLetterDetail { dead_letter, history }))
}

/// The result of a replay.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Replayed {
    replayed: Vec<i64>,
}

/// `POST /api/dlq/{id}/replay`.
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller<WriteRole>,
    Path(id): Path<String>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<impl Serialize>, HttpError> {
    let tenant = caller.principal.scope(tenant_param(&params)?)?;
    let id = dlq_id(&id)?;
    let store = store(&state)?;
    if store.replay(Some(tenant.as_str()), id, now_ms()).await.map_err(failed)? {
        return Ok(Json(Replayed { replayed: vec![id] }));
    }
    match store.dead_letter(Some(tenant.as_str()), id).await.map_err(failed)? {
        None => Err(HttpError::not_found(format!("dead letter {id} not found"))),
        Some(_) => Err(HttpError::new(
            axum::http::StatusCode::CONFLICT,
            "already_replayed",
            format!("dead letter {id} was already replayed"),
        )),
    }
}

/// `POST /api/dlq/replay`: every dead letter in scope not replayed yet.
pub async fn replay_all(
    State(state): State<AppState>,
    caller: Caller<WriteRole>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<impl Serialize>, HttpError> {
    let tenant = caller.principal.scope(tenant_param(&params)?)?;
    let store = store(&state)?;
    let now = now_ms();
    let mut replayed = Vec::new();
    let mut after = 0;
    while (replayed.len() as u32) < REPLAY_ALL_MAX {
        let page = store.dead_letters(Some(tenant.as_str()), after, 500, false).await.map_err(failed)?;
        let Some(last) = page.last().map(|d| d.id) else { break };
        // One transaction per page: a sync per dead letter made replaying
        // thousands take longer than a client waits.
        let ids: Vec<i64> = page.iter().map(|d| d.id).collect();
        replayed.extend(store.replay_many(Some(tenant.as_str()), &ids, now).await.map_err(failed)?);
        after = last;
    }
    Ok(Json(Replayed { replayed }))
}
