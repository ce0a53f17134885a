//! `StoreModel`: the reference semantics of the store protocol
//! ([`crate::store`]), in memory. The simulator's database is a `StoreModel`;
//! the SQLite and PostgreSQL stores are tested against it (same operation
//! sequence and store clock → same replies).
//!
//! It is deliberately plain: ordered maps, no indexes beyond what the
//! semantics need. Every rule is spelled out once: leases in
//! [`crate::lease`], commits in [`crate::commit`], reads here.

use std::collections::BTreeMap;

use crate::commit::{CommitInput, Decision, Fencing, decide};
use crate::error::StoreFailure;
use crate::event::OutboxEvent;
use crate::ids::{TenantId, TimerId};
use crate::lease::LeaseAsker;
use crate::store::{CommitBatch, DueTimer, LEASE_SHARD, ListQuery, StoreOp, StoreReply};
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
    /// Fails, with nothing applied, only on a commit [`decide`] refuses.
    pub fn apply(&mut self, store_now_ms: WallMs, op: &StoreOp) -> Result<StoreReply, StoreFailure> {
        Ok(match op {
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
            StoreOp::Commit(batch) => return self.commit(store_now_ms, batch),
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
                    return Ok(StoreReply::Fires(None));
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
        })
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

    /// One transaction, decided by [`crate::commit::decide`] like every
    /// store's: read the lease, the counter and the named timers; decide;
    /// write what it decided.
    fn commit(&mut self, now: WallMs, batch: &CommitBatch) -> Result<StoreReply, StoreFailure> {
        let input = CommitInput::new(now, batch, self.leases.get(&LEASE_SHARD), self.next_seq);
        #[cfg(feature = "planted-bugs")]
        let input = input.with_plant(self.plant);
        let stored = match input.fencing() {
            Fencing::Applies => self.named_timers(batch),
            Fencing::Stale { .. } => BTreeMap::new(),
        };
        let Decision { outcome, events, writes } = decide(input, stored).map_err(StoreFailure::from)?;
        for record in writes.inserted {
            if let Some(key) = &record.idempotency_key {
                self.idempotency.insert((record.tenant_id.clone(), key.clone()), record.id);
            }
            let previous = self.timers.insert(record.id, record.into_owned());
            assert!(previous.is_none(), "decide inserts only new ids");
        }
        for record in writes.updated {
            self.timers.insert(record.id, record);
        }
        for fire in writes.fires {
            let previous = self.fires.insert((fire.timer_id, fire.occurrence), fire);
            assert!(previous.is_none(), "an occurrence is recorded once: decide compares and sets");
        }
        self.outbox.extend(events.iter().cloned());
        self.next_seq = writes.last_seq;
        Ok(StoreReply::Committed { outcome, events })
    }

    /// The stored timers a commit of `batch` must read: by idempotency key
    /// and by id — and, standing in for the SQL stores' primary key, any
    /// stored timer a create's id collides with.
    fn named_timers(&self, batch: &CommitBatch) -> BTreeMap<TimerId, TimerRecord> {
        let by_key = batch
            .idempotency_keys()
            .into_iter()
            .filter_map(|(tenant, key)| self.idempotency.get(&(tenant.clone(), key.to_owned())));
        let by_id = batch.named_timer_ids().into_iter().chain(batch.creates.iter().map(|r| r.id));
        by_key.copied().chain(by_id).filter_map(|id| self.timers.get(&id).map(|t| (id, t.clone()))).collect()
    }
}
