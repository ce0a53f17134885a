//! The node's requests, typed: one method per engine command, each returning
//! exactly what that command answers. The REST and gRPC layers call these and
//! never match on the engine's `Response` themselves; a reply of the wrong
//! kind (an engine bug) is turned into an error here, in one place.
//! Every request is charged to the caller's own tenant, `caller`, which an
//! operator's request may differ from the tenant it acts on
//! (`NodeHandle::call_as`).

use minoots_core::draft::TimerDraft;
use minoots_core::store::{Created, ListQuery};
use minoots_core::timer::{FireRecord, TimerRecord};
use minoots_core::{ApiError, Command, Response, TenantId, TimerId};

use crate::handle::NodeHandle;

/// A page of timers and the cursor of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerPage {
    /// The page.
    pub timers: Vec<TimerRecord>,
    /// Pass as `after` to get the next page; `None` on the last one.
    pub next_cursor: Option<TimerId>,
}

impl NodeHandle {
    /// Creates one timer (an idempotent retry answers the existing one).
    pub async fn schedule(&self, caller: &TenantId, draft: TimerDraft) -> Result<Created, ApiError> {
        match self.call_as(caller, Command::Schedule(draft)).await? {
            Response::Scheduled(created) => Ok(created),
            other => Err(mismatched("Schedule", &other)),
        }
    }

    /// Creates a batch of timers: all validate or none is created;
    /// idempotency conflicts are answered per item, in order.
    pub async fn schedule_batch(
        &self,
        caller: &TenantId,
        drafts: Vec<TimerDraft>,
    ) -> Result<Vec<Result<Created, ApiError>>, ApiError> {
        match self.call_as(caller, Command::ScheduleBatch(drafts)).await? {
            Response::ScheduledBatch(results) => Ok(results),
            other => Err(mismatched("ScheduleBatch", &other)),
        }
    }

    /// Cancels one of `tenant_id`'s timers; answers the timer after it.
    pub async fn cancel(
        &self,
        caller: &TenantId,
        tenant_id: TenantId,
        timer_id: TimerId,
        requested_by: String,
        reason: Option<String>,
    ) -> Result<TimerRecord, ApiError> {
        let command = Command::Cancel { tenant_id, timer_id, requested_by, reason };
        match self.call_as(caller, command).await? {
            Response::Timer(timer) => Ok(timer),
            other => Err(mismatched("Cancel", &other)),
        }
    }

    /// Reads one of `tenant_id`'s timers.
    pub async fn get(
        &self,
        caller: &TenantId,
        tenant_id: TenantId,
        timer_id: TimerId,
    ) -> Result<TimerRecord, ApiError> {
        match self.call_as(caller, Command::Get { tenant_id, timer_id }).await? {
            Response::Timer(timer) => Ok(timer),
            other => Err(mismatched("Get", &other)),
        }
    }

    /// Reads a page of the query's tenant's timers.
    pub async fn list(&self, caller: &TenantId, query: ListQuery) -> Result<TimerPage, ApiError> {
        match self.call_as(caller, Command::List(query)).await? {
            Response::Timers { timers, next_cursor } => Ok(TimerPage { timers, next_cursor }),
            other => Err(mismatched("List", &other)),
        }
    }

    /// Reads the fires of one of `tenant_id`'s timers after `after_occurrence`.
    pub async fn list_fires(
        &self,
        caller: &TenantId,
        tenant_id: TenantId,
        timer_id: TimerId,
        after_occurrence: u32,
        limit: u32,
    ) -> Result<Vec<FireRecord>, ApiError> {
        let command = Command::ListFires { tenant_id, timer_id, after_occurrence, limit };
        match self.call_as(caller, command).await? {
            Response::Fires(fires) => Ok(fires),
            other => Err(mismatched("ListFires", &other)),
        }
    }
}

/// The engine answered `asked` with a reply of another kind: an engine bug,
/// logged, and answered as a retryable failure rather than guessed at.
fn mismatched(asked: &str, reply: &Response) -> ApiError {
    tracing::error!(?reply, command = asked, "the engine answered with a reply of the wrong kind");
    ApiError::Unavailable {
        reason: format!("internal error: the engine answered {asked} with the wrong kind of reply"),
        retry_after_ms: minoots_core::engine::RETRY_AFTER_MS,
        leader: None,
    }
}

/// Quota admission around every command ([`crate::quotas`]).
impl NodeHandle {
    /// Runs `command` for the caller's `tenant`, charged to its quotas: refused
    /// with `QuotaExceeded` (after validation; nothing charged) when a limit
    /// would be passed, settled from the engine's reply otherwise.
    pub(crate) async fn call_as(&self, tenant: &TenantId, command: Command) -> Result<Response, ApiError> {
        let drafts = match &command {
            Command::Schedule(draft) => std::slice::from_ref(draft),
            Command::ScheduleBatch(drafts) => drafts.as_slice(),
            _ => &[],
        };
        let admission = self.quotas.admit(tenant, drafts).await?;
        let reply = self.call(command).await;
        admission.settle(&reply);
        reply
    }

    /// Charges one request that is not an engine command (opening an event
    /// stream) to the tenant's request rate.
    pub(crate) async fn charge_request(&self, tenant: &TenantId) -> Result<(), ApiError> {
        self.quotas.admit(tenant, &[]).await.map(drop)
    }
}
