//! The write path: what the next commit holds (queued writes, then due
//! fires), and what its outcome means for each waiting request and each fire.

use std::collections::BTreeMap;

use super::requests::{not_found, reject_to_api, unavailable};
use super::{CommitPlan, CreateGroup, Engine, FireOutcome, Inflight, Leadership, Response};
use crate::error::{ApiError, StoreFailure, StoreReject};
use crate::ids::TimerId;
use crate::schedule::plan_fires;
use crate::store::{CommitBatch, CommitOutcome, Created, DueTimer, StoreOp};
use crate::time::Now;
use crate::timer::TimerStatus;

impl Engine {
    pub(super) fn on_committed(&mut self, now: Now, plan: CommitPlan, outcome: CommitOutcome) {
        assert_eq!(outcome.creates.len(), plan.create_groups.iter().map(|g| g.count).sum::<usize>());
        assert_eq!(outcome.cancels.len(), plan.cancel_reqs.len());
        assert_eq!(outcome.fires.len(), plan.fires.len());

        // What to arm, one entry per timer: creates propose, fire outcomes
        // (applied later in the same transaction) override.
        let mut to_arm: BTreeMap<TimerId, DueTimer> = BTreeMap::new();
        let mut creates = outcome.creates.into_iter();
        for CreateGroup { req, count, batch, acked } in plan.create_groups {
            let mut results: Vec<Result<Created, ApiError>> = Vec::with_capacity(count);
            let mut fenced_out = false;
            for result in creates.by_ref().take(count) {
                results.push(match result {
                    Ok(created) => {
                        // Also when the key matched an existing timer: that create may have
                        // applied from an earlier attempt whose reply was lost.
                        if created.timer.status == TimerStatus::Scheduled {
                            to_arm.insert(created.timer.id, DueTimer::of(&created.timer));
                        }
                        Ok(created)
                    }
                    Err(StoreReject::StaleEpoch { current_epoch }) => {
                        fenced_out = true;
                        self.depose(now, current_epoch);
                        Err(self.not_leader())
                    }
                    Err(e) => Err(reject_to_api(e, "idempotencyKey")),
                });
            }
            if acked {
                continue;
            }
            let reply = if fenced_out {
                // Fencing refuses a whole commit: the request is retried as a whole elsewhere.
                Err(self.not_leader())
            } else if batch {
                Ok(Response::ScheduledBatch(results))
            } else {
                results.into_iter().next().expect("one create per single request").map(Response::Scheduled)
            };
            self.reply(req, reply);
        }

        for ((req, timer_id), result) in plan.cancel_reqs.into_iter().zip(outcome.cancels) {
            let reply = match result {
                Ok(timer) => {
                    self.due.remove(&timer.tenant_id, timer.next_due_ms, timer.id);
                    match timer.status {
                        TimerStatus::Cancelled => Ok(Response::Timer(timer)),
                        TimerStatus::Fired => Err(ApiError::Conflict {
                            field: "status".into(),
                            message: "the timer already fired its last occurrence".into(),
                        }),
                        TimerStatus::Scheduled => {
                            panic!("store answered a cancel with a still-scheduled timer {}", timer.id)
                        }
                    }
                }
                Err(StoreReject::StaleEpoch { current_epoch }) => {
                    self.depose(now, current_epoch);
                    Err(self.not_leader())
                }
                Err(StoreReject::NotFound) => Err(not_found(timer_id)),
                Err(e) => Err(reject_to_api(e, "timerId")),
            };
            self.reply(req, reply);
        }

        // Per timer, its state after the last op that applied decides what to
        // arm next — exactly one entry, so no stale duplicate can linger.
        let mut outcomes: BTreeMap<TimerId, FireOutcome> = BTreeMap::new();
        for ((op, planned), result) in plan.fires.into_iter().zip(outcome.fires) {
            let entry = outcomes.entry(op.timer_id).or_default();
            match result {
                Ok(fired) => {
                    if !op.skipped {
                        self.stats.fires_recorded += 1;
                    }
                    entry.after = Some(fired.timer);
                }
                Err(e) => {
                    self.stats.fires_rejected += 1;
                    match e {
                        StoreReject::StaleEpoch { current_epoch } => self.depose(now, current_epoch),
                        StoreReject::TooEarly { store_now_ms } if entry.early.is_none() => {
                            entry.early = Some((op.due_ms.saturating_sub(store_now_ms), planned));
                        }
                        // Cancelled, fired elsewhere, gone, a stale index entry, or a later op
                        // of a chain that stopped early: the applied state (if any) is in `after`.
                        _ => {}
                    }
                }
            }
        }
        if !matches!(self.leadership, Leadership::Leader { .. }) {
            return;
        }
        for (timer_id, outcome) in outcomes {
            if let Some((early_by_ms, planned)) = outcome.early {
                // The store's clock is behind ours: wait until it has reached the due time,
                // then retry from the state the store holds now.
                let wait_ms = u64::try_from(early_by_ms).unwrap_or(0).clamp(1, self.config.idle_tick_ms);
                self.fire_hold_until_mono = self.fire_hold_until_mono.max(now.mono_ms + wait_ms);
                let retry = outcome.after.as_ref().map_or(planned, DueTimer::of);
                to_arm.remove(&timer_id);
                self.arm(retry);
            } else if let Some(timer) = outcome.after {
                if timer.status == TimerStatus::Scheduled {
                    to_arm.insert(timer_id, DueTimer::of(&timer));
                } else {
                    to_arm.remove(&timer_id);
                }
            }
        }
        for (_, timer) in to_arm {
            self.arm_if_loaded(timer);
        }
    }

    pub(super) fn on_commit_failed(&mut self, now: Now, plan: CommitPlan, failure: &StoreFailure) {
        for group in plan.create_groups.into_iter().filter(|g| !g.acked) {
            self.reply(group.req, Err(unavailable(failure)));
        }
        for (req, _) in plan.cancel_reqs {
            self.reply(req, Err(unavailable(failure)));
        }
        match failure {
            // Nothing applied, and the index is exact but for the fires this
            // commit took out of it: put them back while still leading at
            // the commit's epoch (any change of leadership since has emptied
            // the index, and its reload finds them).
            StoreFailure::NotSent(_) => {
                if self.leadership == (Leadership::Leader { epoch: plan.epoch }) {
                    for (_, timer) in plan.fires {
                        self.arm_if_loaded(timer);
                    }
                }
            }
            // Nothing applied, but the batch was one the store can never
            // accept (an engine bug): its fires are not put back, so that one
            // timer the engine cannot plan does not block every later commit.
            // The next resync loads them again.
            StoreFailure::Refused(_) => self.stats.commits_refused += 1,
            StoreFailure::Unknown(_) => self.on_commit_outcome_unknown(now),
        }
    }

    pub(super) fn on_commit_outcome_unknown(&mut self, now: Now) {
        // The commit may have applied (creates inside the horizon among
        // them), so the index can no longer be trusted. Reload it from the
        // store; fires retried from there are safe because the store
        // compare-and-sets every occurrence.
        self.resync();
        // The commit may still be on its way and apply *after* a reload has
        // read the store — a timer it creates or advances would then never
        // be armed. Fence it out instead.
        self.abandon_tenure(now);
    }

    pub(super) fn pump(&mut self, now: Now) {
        self.pump_lease(now);
        if now.mono_ms < self.backoff_until_mono {
            return;
        }
        let Leadership::Leader { epoch } = self.leadership else {
            if let Leadership::Deposed { .. } | Leadership::Follower { .. } = self.leadership {
                self.refuse_queued();
            }
            return;
        };
        if !self.load_inflight() && self.next_load_wall().is_some_and(|at| at <= now.wall_ms) {
            self.emit_load(now);
        }
        if !self.commit_inflight() {
            let mut batch = CommitBatch { epoch, node_id: self.config.node_id.clone(), ..Default::default() };
            let mut plan = CommitPlan { epoch, ..CommitPlan::default() };
            self.take_queued(&mut batch, &mut plan);
            if now.mono_ms >= self.fire_hold_until_mono {
                self.take_due(now, &mut batch, &mut plan);
            }
            if !batch.is_empty() {
                batch.send_before_mono = self.lead_until_mono;
                #[cfg(feature = "planted-bugs")]
                if self.config.plant.early_stepdown_off {
                    batch.send_before_mono = None; // the whole local-expiry rule is off
                }
                assert!(
                    batch.fires.is_empty() || self.leadership == (Leadership::Leader { epoch: batch.epoch }),
                    "fires are emitted only while leading, at the current epoch"
                );
                self.emit_store(Inflight::Commit(plan), StoreOp::Commit(batch));
            }
        }
    }

    pub(super) fn take_queued(&mut self, batch: &mut CommitBatch, plan: &mut CommitPlan) {
        // Whole create requests only: a batch request never spans two commits.
        while let Some(&group) = self.queue.create_groups.front() {
            if !batch.creates.is_empty() && batch.creates.len() + group.count > self.config.commit_creates_max
            {
                break;
            }
            self.queue.create_groups.pop_front();
            batch.creates.extend(self.queue.creates.drain(..group.count));
            plan.create_groups.push(group);
        }
        while let Some((req, op)) = self.queue.cancels.pop_front() {
            plan.cancel_reqs.push((req, op.timer_id));
            batch.cancels.push(op);
        }
    }

    pub(super) fn take_due(&mut self, now: Now, batch: &mut CommitBatch, plan: &mut CommitPlan) {
        let room = self.config.commit_fires_max;
        for due in self.due.pop_due(now.wall_ms, room) {
            let ops =
                plan_fires(due.timer_id, due.occurrence, due.due_ms, due.recurrence.as_ref(), now.wall_ms);
            for op in ops {
                // The promise "never early", checked where the engine decides
                // (the store checks it again against its own clock).
                assert!(
                    op.due_ms <= now.wall_ms,
                    "fire of {}:{} planned at {} before it is due at {}",
                    op.timer_id,
                    op.occurrence,
                    now.wall_ms,
                    op.due_ms
                );
                plan.fires.push((op.clone(), due.clone()));
                batch.fires.push(op);
            }
        }
    }

    /// Whether a commit is in flight (at most one is: the write queue's order).
    pub(super) fn commit_inflight(&self) -> bool {
        self.inflight.values().any(|w| matches!(w, Inflight::Commit(_)))
    }
}
