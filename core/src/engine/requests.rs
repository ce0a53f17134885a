//! Client requests: validation and admission of writes, queueing creates and
//! cancels for the next commit, reads, and the errors clients get.

use super::{
    Command, CreateGroup, Engine, Inflight, Leadership, LeadershipMode, RETRY_AFTER_MS, ReadKind, RequestId,
    Response,
};
use crate::draft::TimerDraft;
use crate::error::{ApiError, StoreFailure, StoreReject};
use crate::ids::TimerId;
use crate::store::{CancelOp, StoreOp, StoreReply};
use crate::time::Now;
use crate::timer::{TimerRecord, TimerStatus};
use crate::validate::validate_all;

impl Engine {
    pub(super) fn on_request(&mut self, now: Now, req: RequestId, command: Command) {
        match command {
            Command::Schedule(draft) => match self.accept_drafts(now, std::slice::from_ref(&draft)) {
                Ok(records) => self.enqueue_creates(req, records, false),
                Err(e) => self.reply(req, Err(e)),
            },
            Command::ScheduleBatch(drafts) => match self.accept_drafts(now, &drafts) {
                Ok(records) => self.enqueue_creates(req, records, true),
                Err(e) => self.reply(req, Err(e)),
            },
            Command::Cancel { tenant_id, timer_id, requested_by, reason } => {
                if let Err(e) = crate::validate::check_cancel_text(&requested_by, reason.as_deref()) {
                    return self.reply(req, Err(e.into()));
                }
                if let Err(e) = self.admit_writes(1) {
                    return self.reply(req, Err(e));
                }
                let op = CancelOp { tenant_id, timer_id, cancelled_by: requested_by, reason };
                self.queue.cancels.push_back((req, op));
            }
            Command::Get { tenant_id, timer_id } => self.emit_store(
                Inflight::Read { req, read: ReadKind::Get { timer_id } },
                StoreOp::Get { tenant_id, timer_id },
            ),
            // The page policy of both APIs (`limits::page_size`); the
            // adapters apply it first, naming their own field.
            Command::List(query) => match crate::limits::page_size("limit", Some(query.limit)) {
                Ok(_) => self.emit_store(Inflight::Read { req, read: ReadKind::List }, StoreOp::List(query)),
                Err(e) => self.reply(req, Err(e.into())),
            },
            Command::ListFires { tenant_id, timer_id, after_occurrence, limit } => {
                match crate::limits::page_size("limit", Some(limit)) {
                    Ok(limit) => self.emit_store(
                        Inflight::Read { req, read: ReadKind::Fires { timer_id } },
                        StoreOp::ListFires { tenant_id, timer_id, after_occurrence, limit },
                    ),
                    Err(e) => self.reply(req, Err(e.into())),
                }
            }
        }
    }

    /// Validates every draft (all or nothing) and builds the records.
    pub(super) fn accept_drafts(
        &mut self,
        now: Now,
        drafts: &[TimerDraft],
    ) -> Result<Vec<TimerRecord>, ApiError> {
        let valid = validate_all(drafts, now, &self.config.actions, self.config.past_fire_tolerance_ms)?;
        self.admit_writes(valid.len())?;
        Ok(valid
            .into_iter()
            .map(|v| {
                let id = self.ids.next_id(now.wall_ms);
                TimerRecord {
                    id,
                    tenant_id: v.tenant_id,
                    requested_by: v.requested_by,
                    name: v.name,
                    status: TimerStatus::Scheduled,
                    created_at_ms: now.wall_ms,
                    schedule: v.schedule,
                    misfire: v.misfire,
                    next_due_ms: v.first_due_ms,
                    next_occurrence: 1,
                    last_fired_at_ms: None,
                    cancelled_at_ms: None,
                    cancelled_by: None,
                    cancel_reason: None,
                    labels: v.labels,
                    metadata: v.metadata,
                    action_bundle: v.action_bundle,
                    agent_binding: v.agent_binding,
                    idempotency_key: v.idempotency_key,
                    request_fingerprint: v.fingerprint,
                    shard: id.shard(),
                }
            })
            .collect())
    }

    pub(super) fn admit_writes(&self, count: usize) -> Result<(), ApiError> {
        let leads = matches!(self.leadership, Leadership::Leader { .. });
        // A node that obtains leadership from elsewhere refuses writes until
        // it leads; standalone queues them until its `Open` completes.
        if self.config.mode != LeadershipMode::Standalone && !leads {
            return Err(self.not_leader());
        }
        if let Leadership::Deposed { .. } = self.leadership {
            return Err(ApiError::Unavailable {
                reason: "this node lost its store epoch to another writer".into(),
                retry_after_ms: RETRY_AFTER_MS,
                leader: None,
            });
        }
        if self.queued_writes() + count > self.config.queued_writes_max {
            return Err(ApiError::Overloaded {
                reason: format!("more than {} writes are queued", self.config.queued_writes_max),
                retry_after_ms: RETRY_AFTER_MS,
            });
        }
        Ok(())
    }

    pub(super) fn enqueue_creates(&mut self, req: RequestId, records: Vec<TimerRecord>, batch: bool) {
        #[allow(unused_mut)]
        let mut acked = false;
        #[cfg(feature = "planted-bugs")]
        if self.config.plant.ack_before_commit {
            // The planted bug: answer before the commit makes it durable.
            let created = |t: &TimerRecord| crate::store::Created { timer: t.clone(), created: true };
            let reply = if batch {
                Response::ScheduledBatch(records.iter().map(|t| Ok(created(t))).collect())
            } else {
                Response::Scheduled(created(&records[0]))
            };
            self.reply(req, Ok(reply));
            acked = true;
        }
        self.queue.create_groups.push_back(CreateGroup { req, count: records.len(), batch, acked });
        self.queue.creates.extend(records);
    }

    pub(super) fn on_read(&mut self, req: RequestId, read: ReadKind, reply: StoreReply) {
        let result = match (read, reply) {
            (ReadKind::Get { .. }, StoreReply::Timer(Some(t))) => Ok(Response::Timer(t)),
            (ReadKind::Get { timer_id }, StoreReply::Timer(None)) => Err(not_found(timer_id)),
            (ReadKind::List, StoreReply::Timers { timers, more }) => {
                let next_cursor = if more { timers.last().map(|t| t.id) } else { None };
                Ok(Response::Timers { timers, next_cursor })
            }
            (ReadKind::Fires { .. }, StoreReply::Fires(Some(fires))) => Ok(Response::Fires(fires)),
            (ReadKind::Fires { timer_id }, StoreReply::Fires(None)) => Err(not_found(timer_id)),
            (read, reply) => panic!("store replied {reply:?} to read {read:?}"),
        };
        self.reply(req, result);
    }

    pub(super) fn refuse_queued(&mut self) {
        let groups: Vec<_> = self.queue.create_groups.drain(..).collect();
        self.queue.creates.clear();
        for group in groups.into_iter().filter(|g| !g.acked) {
            let refusal = self.not_leader();
            self.reply(group.req, Err(refusal));
        }
        let cancels: Vec<_> = self.queue.cancels.drain(..).collect();
        for (req, _) in cancels {
            let refusal = self.not_leader();
            self.reply(req, Err(refusal));
        }
    }

    /// The refusal a non-leader gives writes: retry, at the leader if known.
    pub(super) fn not_leader(&self) -> ApiError {
        let leader = match &self.leadership {
            Leadership::Follower { leader: Some(holder) } if !holder.address.is_empty() => {
                Some(holder.address.clone())
            }
            _ => None,
        };
        ApiError::Unavailable {
            reason: "this node is not the leader".into(),
            retry_after_ms: RETRY_AFTER_MS,
            leader,
        }
    }
}

pub(super) fn not_found(timer_id: TimerId) -> ApiError {
    ApiError::NotFound { timer_id: timer_id.to_string() }
}

pub(super) fn unavailable(failure: &StoreFailure) -> ApiError {
    let reason = match failure {
        StoreFailure::Unknown(detail) => {
            format!(
                "the store failed; the outcome is unknown, retry with the same idempotency key ({detail})"
            )
        }
        StoreFailure::NotSent(detail) => format!("not applied, retry: {detail}"),
        StoreFailure::Refused(detail) => format!("not applied: the store refused the commit ({detail})"),
    };
    ApiError::Unavailable { reason, retry_after_ms: RETRY_AFTER_MS, leader: None }
}

pub(super) fn reject_to_api(reject: StoreReject, field: &str) -> ApiError {
    match reject {
        StoreReject::IdempotencyMismatch => ApiError::Conflict {
            field: "idempotencyKey".into(),
            message: "was used before with a different request".into(),
        },
        StoreReject::NotFound => ApiError::NotFound { timer_id: String::new() },
        StoreReject::Invalid(error) => ApiError::Invalid(error),
        StoreReject::StaleEpoch { .. } => ApiError::Unavailable {
            reason: "this node is not the leader".into(),
            retry_after_ms: RETRY_AFTER_MS,
            leader: None,
        },
        other => ApiError::Conflict { field: field.into(), message: format!("store refused: {other}") },
    }
}
