//! `StoreModel`: the reference semantics of the store protocol
//! ([`crate::store`]), in memory. The simulator's database is a `StoreModel`;
//! the SQLite and PostgreSQL stores are tested against it (same operation
//! sequence and store clock → same replies).
//!
//! It is deliberately plain: ordered maps, no indexes beyond what the
//! semantics need, every rule spelled out once in [`StoreModel::apply`].

use std::collections::BTreeMap;

use crate::error::StoreReject;
use crate::event::{EventKind, OutboxEvent};
use crate::ids::{TenantId, TimerId};
use crate::lease::LeaseAsker;
use crate::store::{
    AfterFire, CancelOp, CommitBatch, CommitOutcome, Created, DueTimer, FireOp, Fired, LEASE_SHARD,
    ListQuery, StoreOp, StoreReply,
};
use crate::time::WallMs;
use crate::timer::{FireRecord, TimerRecord, TimerStatus};

/// An in-memory store with the reference semantics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreModel {
    leases: BTreeMap<u32, Lease>,
    timers: BTreeMap<TimerId, TimerRecord>,
    idempotency: BTreeMap<(TenantId, String), TimerId>,
    fires: BTreeMap<(TimerId, u32), FireRecord>,
    outbox: Vec<OutboxEvent>,
    next_seq: u64,
    #[cfg(feature = "planted-bugs")]
    plant: crate::plant::Plant,
}

pub use crate::lease::Lease;

impl StoreModel {
    /// An empty store at epoch 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with deliberate bugs (simulator only).
    #[cfg(feature = "planted-bugs")]
    pub fn with_plant(plant: crate::plant::Plant) -> Self {
        Self { plant, ..Self::default() }
    }

    /// The current fencing epoch of [`LEASE_SHARD`] (0 before any grant).
    pub fn epoch(&self) -> u64 {
        self.leases.get(&LEASE_SHARD).map_or(0, |l| l.holder.epoch)
    }

    /// Every lease row.
    pub fn leases(&self) -> &BTreeMap<u32, Lease> {
        &self.leases
    }

    /// Every recorded fire, by `(timer, occurrence)`.
    pub fn fires(&self) -> &BTreeMap<(TimerId, u32), FireRecord> {
        &self.fires
    }

    /// Every timer.
    pub fn timers(&self) -> &BTreeMap<TimerId, TimerRecord> {
        &self.timers
    }

    /// A tenant's pending timers and timers created at or after `day_start_ms`
    /// (what [`crate::quota`] counts).
    pub fn tenant_usage(&self, tenant: &TenantId, day_start_ms: WallMs) -> crate::quota::TenantUsage {
        let mut usage = crate::quota::TenantUsage::default();
        for timer in self.timers.values().filter(|t| &t.tenant_id == tenant) {
            usage.pending_timers += u64::from(timer.status == TimerStatus::Scheduled);
            usage.created_today += u64::from(timer.created_at_ms >= day_start_ms);
        }
        usage
    }

    /// Every outbox row ever written, in sequence order.
    pub fn outbox(&self) -> &[OutboxEvent] {
        &self.outbox
    }

    /// Applies one operation at store time `store_now_ms`.
    pub fn apply(&mut self, store_now_ms: WallMs, op: &StoreOp) -> StoreReply {
        match op {
            StoreOp::Open { node_id } => {
                let lease = Lease::open(self.leases.get(&LEASE_SHARD), node_id);
                let epoch = lease.holder.epoch;
                self.leases.insert(LEASE_SHARD, lease);
                StoreReply::Opened { epoch }
            }
            StoreOp::AcquireLease { shard, node_id, tenure, address, ttl_ms } => {
                #[cfg(feature = "planted-bugs")]
                let tenure = &match self.leases.get(shard).filter(|l| l.holder.node_id == *node_id) {
                    // The planted bug: every process of the node is "the same tenure".
                    Some(held) if self.plant.node_keeps_epoch => held.holder.tenure,
                    _ => *tenure,
                };
                let asker = LeaseAsker { node_id, address, tenure: *tenure };
                let (row, reply) = Lease::acquire(self.leases.get(shard), store_now_ms, &asker, *ttl_ms);
                if let Some(row) = row {
                    self.leases.insert(*shard, row);
                }
                StoreReply::Lease(reply)
            }
            StoreOp::RenewLease { shard, node_id, epoch, ttl_ms } => {
                let (row, reply) =
                    Lease::renew(self.leases.get(shard), store_now_ms, node_id, *epoch, *ttl_ms);
                if let Some(row) = row {
                    self.leases.insert(*shard, row);
                }
                StoreReply::Lease(reply)
            }
            StoreOp::Commit(batch) => self.commit(store_now_ms, batch),
            StoreOp::LoadDue { after, until_ms, limit } => {
                let mut due: Vec<&TimerRecord> = self
                    .timers
                    .values()
                    .filter(|t| t.status == TimerStatus::Scheduled && t.next_due_ms <= *until_ms)
                    .filter(|t| after.is_none_or(|a| (t.next_due_ms, t.id) > a))
                    .collect();
                due.sort_by_key(|t| (t.next_due_ms, t.id));
                let more = due.len() > *limit as usize;
                let timers = due.into_iter().take(*limit as usize).map(DueTimer::of).collect();
                StoreReply::Loaded { timers, more }
            }
            StoreOp::Get { tenant_id, timer_id } => {
                StoreReply::Timer(self.timer_in(tenant_id, timer_id).cloned())
            }
            StoreOp::List(query) => self.list(query),
            StoreOp::ListFires { tenant_id, timer_id, after_occurrence, limit } => {
                if self.timer_in(tenant_id, timer_id).is_none() {
                    return StoreReply::Fires(None);
                }
                let fires = match after_occurrence.checked_add(1) {
                    Some(first) => self
                        .fires
                        .range((*timer_id, first)..=(*timer_id, u32::MAX))
                        .take(*limit as usize)
                        .map(|(_, f)| f.clone())
                        .collect(),
                    None => Vec::new(),
                };
                StoreReply::Fires(Some(fires))
            }
        }
    }

    fn timer_in(&self, tenant_id: &TenantId, timer_id: &TimerId) -> Option<&TimerRecord> {
        self.timers.get(timer_id).filter(|t| &t.tenant_id == tenant_id)
    }

    fn list(&self, query: &ListQuery) -> StoreReply {
        let limit = query.limit as usize;
        let mut page: Vec<TimerRecord> = self
            .timers
            .values()
            .filter(|t| t.tenant_id == query.tenant_id)
            .filter(|t| query.after.is_none_or(|a| t.id > a))
            .filter(|t| query.statuses.is_empty() || query.statuses.contains(&t.status))
            .filter(|t| query.labels.iter().all(|(k, v)| t.labels.get(k) == Some(v)))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        StoreReply::Timers { timers: page, more }
    }

    /// One transaction: creates, then cancels, then fires, in batch order.
    fn commit(&mut self, now: WallMs, batch: &CommitBatch) -> StoreReply {
        let mut outcome = CommitOutcome::default();
        let mut events = Vec::new();
        let fenced = self.fenced(now, batch);
        for record in &batch.creates {
            let result = if fenced {
                self.create(now, record, &mut events)
            } else {
                Err(StoreReject::StaleEpoch { current_epoch: self.epoch() })
            };
            outcome.creates.push(result);
        }
        for cancel in &batch.cancels {
            let result = if fenced {
                self.cancel(now, cancel, &mut events)
            } else {
                Err(StoreReject::StaleEpoch { current_epoch: self.epoch() })
            };
            outcome.cancels.push(result);
        }
        for fire in &batch.fires {
            let result = if fenced {
                self.fire(now, batch, fire, &mut events)
            } else {
                Err(StoreReject::StaleEpoch { current_epoch: self.epoch() })
            };
            outcome.fires.push(result);
        }
        StoreReply::Committed { outcome, events }
    }

    /// Whether the batch's writer holds the lease at its epoch, unexpired.
    fn fenced(&self, now: WallMs, batch: &CommitBatch) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.plant.no_fencing {
            return true;
        }
        self.leases.get(&LEASE_SHARD).is_some_and(|l| l.fences(batch, now))
    }

    fn create(
        &mut self,
        now: WallMs,
        record: &TimerRecord,
        events: &mut Vec<OutboxEvent>,
    ) -> Result<Created, StoreReject> {
        if let Some(key) = &record.idempotency_key {
            if let Some(existing) = self.idempotency.get(&(record.tenant_id.clone(), key.clone())) {
                let timer = self.timers[existing].clone();
                if timer.request_fingerprint != record.request_fingerprint {
                    return Err(StoreReject::IdempotencyMismatch);
                }
                return Ok(Created { timer, created: false });
            }
            self.idempotency.insert((record.tenant_id.clone(), key.clone()), record.id);
        }
        assert!(
            !self.timers.contains_key(&record.id),
            "timer id {} created twice: ids must be unique",
            record.id
        );
        self.timers.insert(record.id, record.clone());
        self.push_event(events, EventKind::Scheduled, now, record, None);
        Ok(Created { timer: record.clone(), created: true })
    }

    fn cancel(
        &mut self,
        now: WallMs,
        op: &CancelOp,
        events: &mut Vec<OutboxEvent>,
    ) -> Result<TimerRecord, StoreReject> {
        let Some(timer) = self.timers.get_mut(&op.timer_id).filter(|t| t.tenant_id == op.tenant_id) else {
            return Err(StoreReject::NotFound);
        };
        if timer.status != TimerStatus::Scheduled {
            return Ok(timer.clone());
        }
        timer.status = TimerStatus::Cancelled;
        timer.cancelled_at_ms = Some(now);
        timer.cancelled_by = Some(op.cancelled_by.clone());
        timer.cancel_reason = op.reason.clone();
        let timer = timer.clone();
        self.push_event(events, EventKind::Cancelled, now, &timer, None);
        Ok(timer)
    }

    fn fire(
        &mut self,
        now: WallMs,
        batch: &CommitBatch,
        op: &FireOp,
        events: &mut Vec<OutboxEvent>,
    ) -> Result<Fired, StoreReject> {
        let Some(timer) = self.timers.get_mut(&op.timer_id) else {
            return Err(StoreReject::NotFound);
        };
        if timer.status != TimerStatus::Scheduled
            || timer.next_occurrence != op.occurrence
            || timer.next_due_ms != op.due_ms
        {
            return Err(StoreReject::StateChanged);
        }
        #[cfg(feature = "planted-bugs")]
        let due_check = !self.plant.no_due_check;
        #[cfg(not(feature = "planted-bugs"))]
        let due_check = true;
        if due_check && op.due_ms > now {
            return Err(StoreReject::TooEarly { store_now_ms: now });
        }
        match op.then {
            AfterFire::Finished => timer.status = TimerStatus::Fired,
            AfterFire::Next { due_ms } => {
                assert!(due_ms > op.due_ms, "the next occurrence must come after the current one");
                timer.next_due_ms = due_ms;
            }
        }
        if op.skipped {
            return Ok(Fired { fire: None, timer: timer.clone() });
        }
        timer.next_occurrence += 1;
        timer.last_fired_at_ms = Some(now);
        let fire = FireRecord {
            timer_id: op.timer_id,
            occurrence: op.occurrence,
            due_ms: op.due_ms,
            fired_at_ms: now,
            epoch: batch.epoch,
            node_id: batch.node_id.clone(),
        };
        let previous = self.fires.insert((op.timer_id, op.occurrence), fire.clone());
        assert!(previous.is_none(), "occurrence {}:{} recorded twice", op.timer_id, op.occurrence);
        let timer = timer.clone();
        self.push_event(events, EventKind::Fired, now, &timer, Some(fire.clone()));
        Ok(Fired { fire: Some(fire), timer })
    }

    fn push_event(
        &mut self,
        events: &mut Vec<OutboxEvent>,
        kind: EventKind,
        now: WallMs,
        timer: &TimerRecord,
        fire: Option<FireRecord>,
    ) {
        self.next_seq += 1;
        let event = OutboxEvent {
            seq: self.next_seq,
            kind,
            tenant_id: timer.tenant_id.clone(),
            timer_id: timer.id,
            occurrence: fire.as_ref().map_or(timer.next_occurrence, |f| f.occurrence),
            occurred_at_ms: now,
            timer: timer.clone(),
            fire,
        };
        self.outbox.push(event.clone());
        events.push(event);
    }
}
