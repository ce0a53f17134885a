//! The decisions of one `StoreOp::Commit`, written once. Every store — the
//! reference [`crate::model::StoreModel`], SQLite and PostgreSQL — runs a
//! commit as the same three steps inside one transaction, and only the first
//! and last touch storage:
//! 1. **Read** the lease in force and the outbox counter; then, if
//!    [`CommitInput::fencing`] lets the batch apply, the stored timers the
//!    batch names: those holding one of [`CommitBatch::idempotency_keys`] and
//!    those with one of [`CommitBatch::named_timer_ids`] (absent ids are
//!    simply absent).
//! 2. **Decide** with [`decide`], a pure function of the batch, the store
//!    clock, the lease, the counter and those timers: every per-item outcome
//!    (idempotency, fencing, compare-and-set, never-early), every event with
//!    its sequence number, and what to write.
//! 3. **Write** the [`CommitWrites`]: new timers, changed timers, fire
//!    records, outbox rows, the counters.
//!
//! A batch the engine could never legitimately send (an id created twice, a
//! recurring fire whose next slot does not advance) is a [`CommitFault`]:
//! nothing of it applies, in every store. An item holding text no store may
//! keep (U+0000, which the validation refuses first) is refused alone, as
//! invalid, naming the field.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::error::{StoreReject, ValidationError};
use crate::event::{EventKind, OutboxEvent};
use crate::ids::{TenantId, TimerId};
use crate::lease::Lease;
use crate::store::{AfterFire, CancelOp, CommitBatch, CommitOutcome, Created, FireOp, Fired};
use crate::time::WallMs;
use crate::timer::{FireRecord, TimerRecord, TimerStatus};
use crate::validate::NO_NUL;

/// Whether a batch applies at all: its writer must hold the lease in force at
/// its epoch, unexpired by the store clock ([`Lease::fences`]). Creates are
/// fenced too: a deposed leader's delayed create would otherwise land after
/// the new leader loaded its index, and never be armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// The writer holds the lease: read the named timers and decide.
    Applies,
    /// Every item is refused with `StaleEpoch`; nothing is read or written.
    Stale {
        /// The epoch in force (0 before any grant).
        current_epoch: u64,
    },
}

impl CommitBatch {
    /// The `(tenant, idempotency key)` pairs of the creates, each once: the
    /// stored timers holding them must be read before [`decide`].
    pub fn idempotency_keys(&self) -> BTreeSet<(&TenantId, &str)> {
        self.creates.iter().filter_map(|r| r.idempotency_key.as_deref().map(|k| (&r.tenant_id, k))).collect()
    }

    /// The ids the cancels and fires name, each once: the stored timers with
    /// them must be read before [`decide`].
    pub fn named_timer_ids(&self) -> BTreeSet<TimerId> {
        self.cancels.iter().map(|c| c.timer_id).chain(self.fires.iter().map(|f| f.timer_id)).collect()
    }
}

/// The engine sent a batch it could never legitimately send. The whole
/// commit is refused and nothing of it applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitFault {
    /// A create reuses the id of a stored timer or of another create.
    #[error("timer id {timer_id} created twice: ids must be unique")]
    TimerCreatedTwice {
        /// The id.
        timer_id: TimerId,
    },
    /// A recurring fire whose next occurrence is not after this one.
    #[error(
        "fire of {timer_id}:{occurrence}: the next occurrence ({next_due_ms}) must come after this one ({due_ms})"
    )]
    NextOccurrenceNotAfter {
        /// Which timer.
        timer_id: TimerId,
        /// The occurrence fired.
        occurrence: u32,
        /// Its due time.
        due_ms: WallMs,
        /// The next due time the fire asked for.
        next_due_ms: WallMs,
    },
}

impl From<CommitFault> for crate::error::StoreFailure {
    fn from(fault: CommitFault) -> Self {
        Self::Refused(fault.to_string())
    }
}

/// What one commit decided.
#[derive(Debug)]
pub struct Decision<'b> {
    /// One outcome per item, in batch order.
    pub outcome: CommitOutcome,
    /// The outbox rows to append, in sequence order (also the reply's events).
    pub events: Vec<OutboxEvent>,
    /// The rows to write.
    pub writes: CommitWrites<'b>,
}

/// The rows a decided commit writes, beside its outbox rows.
#[derive(Debug, Default)]
pub struct CommitWrites<'b> {
    /// New timers in their final state, in creation order (borrowed from the
    /// batch unless a cancel or fire of the same batch changed them).
    pub inserted: Vec<Cow<'b, TimerRecord>>,
    /// Stored timers the batch changed, in their final state, by id.
    pub updated: Vec<TimerRecord>,
    /// Fire records, in batch order.
    pub fires: Vec<FireRecord>,
    /// The outbox counter after this commit (the last event's sequence).
    pub last_seq: u64,
    /// Change in the count of scheduled timers.
    pub pending_delta: i64,
}

impl CommitWrites<'_> {
    /// Whether the counters (outbox sequence, scheduled count) moved.
    pub fn counters_moved(&self, events: &[OutboxEvent]) -> bool {
        !events.is_empty() || self.pending_delta != 0
    }
}

/// What [`decide`] starts from.
#[derive(Debug, Clone, Copy)]
pub struct CommitInput<'b> {
    /// The store clock.
    pub now: WallMs,
    /// The batch.
    pub batch: &'b CommitBatch,
    /// The lease in force (of [`crate::store::LEASE_SHARD`]).
    pub lease: Option<&'b Lease>,
    /// The outbox counter before this commit.
    pub last_seq: u64,
    #[cfg(feature = "planted-bugs")]
    plant: crate::plant::Plant,
}

impl<'b> CommitInput<'b> {
    /// The input of a commit of `batch` at store time `now`.
    pub fn new(now: WallMs, batch: &'b CommitBatch, lease: Option<&'b Lease>, last_seq: u64) -> Self {
        Self {
            now,
            batch,
            lease,
            last_seq,
            #[cfg(feature = "planted-bugs")]
            plant: crate::plant::Plant::default(),
        }
    }

    /// The same input deciding with deliberate bugs (simulator only).
    #[cfg(feature = "planted-bugs")]
    pub fn with_plant(self, plant: crate::plant::Plant) -> Self {
        Self { plant, ..self }
    }

    /// Whether the batch applies at all ([`Fencing`]).
    pub fn fencing(&self) -> Fencing {
        #[cfg(feature = "planted-bugs")]
        if self.plant.no_fencing {
            return Fencing::Applies;
        }
        let (lease, batch) = (self.lease, self.batch);
        if lease.is_some_and(|l| l.fences(&batch.node_id, batch.epoch, self.now)) {
            Fencing::Applies
        } else {
            Fencing::Stale { current_epoch: lease.map_or(0, |l| l.holder.epoch) }
        }
    }

    fn due_check(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.plant.no_due_check {
            return false;
        }
        true
    }
}

/// Decides a commit. `stored` holds the stored timers read for it (by the
/// batch's idempotency keys and named ids; any superset is fine); it is
/// ignored when the batch is stale. Items apply in batch order: creates,
/// then cancels, then fires, each seeing the ones before.
///
/// A create whose id collides with a stored timer that `stored` lacks is not
/// seen here: the write refuses it (every store's primary key), which also
/// fails the whole commit.
pub fn decide<'b>(
    input: CommitInput<'b>,
    stored: BTreeMap<TimerId, TimerRecord>,
) -> Result<Decision<'b>, CommitFault> {
    let batch = input.batch;
    let mut outcome = CommitOutcome::default();
    if let Fencing::Stale { current_epoch } = input.fencing() {
        let stale = StoreReject::StaleEpoch { current_epoch };
        outcome.creates = batch.creates.iter().map(|_| Err(stale.clone())).collect();
        outcome.cancels = batch.cancels.iter().map(|_| Err(stale.clone())).collect();
        outcome.fires = batch.fires.iter().map(|_| Err(stale.clone())).collect();
        let writes = CommitWrites { last_seq: input.last_seq, ..CommitWrites::default() };
        return Ok(Decision { outcome, events: Vec::new(), writes });
    }
    let mut work = Working::new(input, stored);
    outcome.creates.reserve_exact(batch.creates.len());
    for record in &batch.creates {
        outcome.creates.push(work.create(record)?);
    }
    outcome.cancels.reserve_exact(batch.cancels.len());
    for cancel in &batch.cancels {
        outcome.cancels.push(work.cancel(cancel)?);
    }
    outcome.fires.reserve_exact(batch.fires.len());
    for fire in &batch.fires {
        outcome.fires.push(work.fire(fire)?);
    }
    Ok(work.finish(outcome))
}

/// Where a timer of the working set comes from, and so how it is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Created by this batch: inserted.
    New,
    /// Read from the store: written back only if changed.
    Stored { changed: bool },
}

#[derive(Debug)]
struct Timer<'b> {
    record: Cow<'b, TimerRecord>,
    origin: Origin,
}

/// The working copy of one commit between its reads and its writes.
struct Working<'b> {
    input: CommitInput<'b>,
    timers: BTreeMap<TimerId, Timer<'b>>,
    by_key: BTreeMap<(TenantId, String), TimerId>,
    /// Ids of new timers, in creation order.
    created: Vec<TimerId>,
    fires: Vec<FireRecord>,
    events: Vec<OutboxEvent>,
    last_seq: u64,
    pending_delta: i64,
}

impl<'b> Working<'b> {
    fn new(input: CommitInput<'b>, stored: BTreeMap<TimerId, TimerRecord>) -> Self {
        let mut by_key = BTreeMap::new();
        let timers = stored
            .into_iter()
            .map(|(id, record)| {
                if let Some(key) = &record.idempotency_key {
                    by_key.insert((record.tenant_id.clone(), key.clone()), id);
                }
                (id, Timer { record: Cow::Owned(record), origin: Origin::Stored { changed: false } })
            })
            .collect();
        let batch = input.batch;
        Self {
            input,
            timers,
            by_key,
            created: Vec::with_capacity(batch.creates.len()),
            fires: Vec::with_capacity(batch.fires.len()),
            events: Vec::with_capacity(batch.creates.len() + batch.cancels.len() + batch.fires.len()),
            last_seq: input.last_seq,
            pending_delta: 0,
        }
    }

    fn create(&mut self, record: &'b TimerRecord) -> Result<Result<Created, StoreReject>, CommitFault> {
        if let Some(field) = record.field_with_nul() {
            return Ok(Err(StoreReject::Invalid(ValidationError::new(field, NO_NUL))));
        }
        if let Some(key) = &record.idempotency_key {
            let slot = (record.tenant_id.clone(), key.clone());
            if let Some(existing) = self.by_key.get(&slot) {
                let timer = self.timers[existing].record.clone().into_owned();
                if timer.request_fingerprint != record.request_fingerprint {
                    return Ok(Err(StoreReject::IdempotencyMismatch));
                }
                return Ok(Ok(Created { timer, created: false }));
            }
            self.by_key.insert(slot, record.id);
        }
        if self.timers.contains_key(&record.id) {
            return Err(CommitFault::TimerCreatedTwice { timer_id: record.id });
        }
        self.timers.insert(record.id, Timer { record: Cow::Borrowed(record), origin: Origin::New });
        self.created.push(record.id);
        if record.status == TimerStatus::Scheduled {
            self.pending_delta += 1;
        }
        self.push_event(EventKind::Scheduled, record.clone(), None);
        Ok(Ok(Created { timer: record.clone(), created: true }))
    }

    fn cancel(&mut self, op: &CancelOp) -> Result<Result<TimerRecord, StoreReject>, CommitFault> {
        let now = self.input.now;
        let Some(timer) = self.timers.get_mut(&op.timer_id).filter(|t| t.record.tenant_id == op.tenant_id)
        else {
            return Ok(Err(StoreReject::NotFound));
        };
        if timer.record.status != TimerStatus::Scheduled {
            return Ok(Ok(timer.record.clone().into_owned()));
        }
        if let Some(field) = op.field_with_nul() {
            return Ok(Err(StoreReject::Invalid(ValidationError::new(field, NO_NUL))));
        }
        timer.origin.mark_changed();
        let record = timer.record.to_mut();
        record.status = TimerStatus::Cancelled;
        record.cancelled_at_ms = Some(now);
        record.cancelled_by = Some(op.cancelled_by.clone());
        record.cancel_reason = op.reason.clone();
        let record = record.clone();
        self.pending_delta -= 1;
        self.push_event(EventKind::Cancelled, record.clone(), None);
        Ok(Ok(record))
    }

    fn fire(&mut self, op: &FireOp) -> Result<Result<Fired, StoreReject>, CommitFault> {
        let now = self.input.now;
        let due_check = self.input.due_check();
        let Some(timer) = self.timers.get_mut(&op.timer_id) else {
            return Ok(Err(StoreReject::NotFound));
        };
        let current = &timer.record;
        if current.status != TimerStatus::Scheduled
            || current.next_occurrence != op.occurrence
            || current.next_due_ms != op.due_ms
        {
            return Ok(Err(StoreReject::StateChanged));
        }
        if due_check && op.due_ms > now {
            return Ok(Err(StoreReject::TooEarly { store_now_ms: now }));
        }
        if let AfterFire::Next { due_ms: next_due_ms } = op.then
            && next_due_ms <= op.due_ms
        {
            return Err(CommitFault::NextOccurrenceNotAfter {
                timer_id: op.timer_id,
                occurrence: op.occurrence,
                due_ms: op.due_ms,
                next_due_ms,
            });
        }
        timer.origin.mark_changed();
        let record = timer.record.to_mut();
        match op.then {
            AfterFire::Finished => {
                record.status = TimerStatus::Fired;
                self.pending_delta -= 1;
            }
            AfterFire::Next { due_ms } => record.next_due_ms = due_ms,
        }
        if op.skipped {
            return Ok(Ok(Fired { fire: None, timer: record.clone() }));
        }
        record.next_occurrence += 1;
        record.last_fired_at_ms = Some(now);
        let record = record.clone();
        let fire = FireRecord {
            timer_id: op.timer_id,
            occurrence: op.occurrence,
            due_ms: op.due_ms,
            fired_at_ms: now,
            epoch: self.input.batch.epoch,
            node_id: self.input.batch.node_id.clone(),
        };
        self.fires.push(fire.clone());
        self.push_event(EventKind::Fired, record.clone(), Some(fire.clone()));
        Ok(Ok(Fired { fire: Some(fire), timer: record }))
    }

    fn push_event(&mut self, kind: EventKind, timer: TimerRecord, fire: Option<FireRecord>) {
        self.last_seq += 1;
        self.events.push(OutboxEvent {
            seq: self.last_seq,
            kind,
            tenant_id: timer.tenant_id.clone(),
            timer_id: timer.id,
            occurrence: fire.as_ref().map_or(timer.next_occurrence, |f| f.occurrence),
            occurred_at_ms: self.input.now,
            timer,
            fire,
        });
    }

    fn finish(mut self, outcome: CommitOutcome) -> Decision<'b> {
        let mut inserted = Vec::with_capacity(self.created.len());
        for id in &self.created {
            if let Some(timer) = self.timers.remove(id) {
                inserted.push(timer.record);
            }
        }
        let updated = self
            .timers
            .into_values()
            .filter(|t| t.origin == Origin::Stored { changed: true })
            .map(|t| t.record.into_owned())
            .collect();
        let writes = CommitWrites {
            inserted,
            updated,
            fires: self.fires,
            last_seq: self.last_seq,
            pending_delta: self.pending_delta,
        };
        Decision { outcome, events: self.events, writes }
    }
}

impl Origin {
    fn mark_changed(&mut self) {
        if let Origin::Stored { changed } = self {
            *changed = true;
        }
    }
}

fn nul_in(text: &str) -> bool {
    text.contains('\0')
}

impl TimerRecord {
    /// The first field, as the API spells it, whose stored text holds U+0000
    /// (which the validation refuses and PostgreSQL cannot store). The JSON
    /// columns (`metadata`, the action bundle) keep it escaped.
    pub fn field_with_nul(&self) -> Option<&'static str> {
        let cron_text = match &self.schedule {
            crate::timer::Schedule::Cron { expression, time_zone, .. } => {
                [("cron", expression.as_str()), ("timeZone", time_zone.as_str())]
            }
            _ => [("cron", ""), ("timeZone", "")],
        };
        [("tenantId", self.tenant_id.as_str()), ("requestedBy", self.requested_by.as_str())]
            .into_iter()
            .chain(self.name.as_deref().map(|t| ("name", t)))
            .chain(self.idempotency_key.as_deref().map(|t| ("idempotencyKey", t)))
            .chain(self.labels.iter().flat_map(|(k, v)| [("labels", k.as_str()), ("labels", v.as_str())]))
            .chain(cron_text)
            .find(|(_, text)| nul_in(text))
            .map(|(field, _)| field)
    }
}

impl CancelOp {
    /// The first field, as the API spells it, whose text holds U+0000.
    pub fn field_with_nul(&self) -> Option<&'static str> {
        [("requestedBy", Some(self.cancelled_by.as_str())), ("reason", self.reason.as_deref())]
            .into_iter()
            .find(|(_, text)| text.is_some_and(nul_in))
            .map(|(field, _)| field)
    }
}
