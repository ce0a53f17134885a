//! The store protocol: the operations the engine asks of durable storage, and
//! their replies. [`crate::model::StoreModel`] is the reference semantics;
//! every real store (SQLite, PostgreSQL) must give the same replies for the
//! same operation sequence and the same store clock (the conformance suite
//! checks it).
//!
//! Semantics every store implements:
//! - **Fencing.** A commit's creates, cancels and fires apply only if the
//!   lease of [`LEASE_SHARD`] is held by `Commit.node_id` at `Commit.epoch`
//!   and is unexpired by the store's clock — checked in the same transaction,
//!   which therefore serialises with any takeover. Otherwise each is rejected
//!   with `StaleEpoch`. (Creates are fenced too: a deposed leader's delayed
//!   create would otherwise land after the new leader loaded its index, and
//!   never be armed.)
//! - **Leases.** `Open` takes the lease forever (standalone); `AcquireLease`
//!   grants it when free or expired, bumping the epoch, extends it at the
//!   same epoch when the asker already holds it in the same tenure, and takes
//!   it over at a new epoch from another tenure of the same node
//!   ([`crate::lease::Lease::acquire`]);
//!   `RenewLease` extends it only for its current holder and epoch.
//! - **Never early.** A fire whose `due_ms` is after the store's clock is
//!   rejected with `TooEarly`.
//! - **Compare-and-set.** A fire applies only if the timer is `scheduled` and
//!   its `next_occurrence` and `next_due_ms` equal the fire's `expect_*`;
//!   otherwise `StateChanged`. Each occurrence can therefore be recorded once.
//! - **Idempotent create.** A create whose `(tenant, idempotency_key)` exists
//!   returns the existing timer (`created = false`) if the fingerprints match,
//!   `IdempotencyMismatch` otherwise.
//! - **Outbox.** Every applied create, cancel and fire appends its event(s) to
//!   the outbox in the same transaction, with a store-assigned sequence number.
//! - **Atomicity.** A `Commit` applies as one transaction: all of its applied
//!   items or none (on failure, the reply is an error and nothing applied).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::StoreReject;
use crate::event::OutboxEvent;
use crate::ids::{TenantId, TimerId};
pub use crate::lease::LeaseReply;
use crate::time::WallMs;
use crate::timer::{FireRecord, TimerRecord, TimerStatus};

/// One operation for the store. Each runs as one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreOp {
    /// Standalone start-up: become the only writer. Takes the lease of
    /// [`LEASE_SHARD`] forever and bumps its epoch, whoever held it.
    Open {
        /// Who opens it.
        node_id: String,
    },
    /// Lease mode: take the lease of `shard` if it is free or expired by the
    /// store's clock (a grant bumps the epoch and runs `ttl_ms` of store time),
    /// extend it at the same epoch if this tenure already holds it (a retry or
    /// a late duplicate), or take it over at a new epoch if another tenure of
    /// this node holds it (a restart; node ids must be unique among running
    /// processes, and a second process with the same id replaces the first).
    AcquireLease {
        /// Which lease.
        shard: u32,
        /// Who asks.
        node_id: String,
        /// The asker's tenure id: new at every process start and after every
        /// commit whose outcome the asker could not learn.
        tenure: u64,
        /// Where clients reach it (the leader hint followers give out).
        address: String,
        /// Grant length, store clock.
        ttl_ms: u64,
    },
    /// Lease mode: extend this node's lease by `ttl_ms` from the store's now,
    /// if it is still this node's, at `epoch`, and unexpired.
    RenewLease {
        /// Which lease.
        shard: u32,
        /// Who asks.
        node_id: String,
        /// The epoch it holds.
        epoch: u64,
        /// Extension, store clock.
        ttl_ms: u64,
    },
    /// Apply creates, cancels and fires together (group commit).
    Commit(CommitBatch),
    /// Page pending timers due at or before `until_ms`, after the cursor, in (due, id) order.
    LoadDue {
        /// Exclusive lower bound: `(due_ms, id)` of the last timer already loaded.
        after: Option<DueKey>,
        /// Inclusive upper bound on due time.
        until_ms: WallMs,
        /// Page size.
        limit: u32,
    },
    /// One timer of a tenant.
    Get {
        /// Tenant scope.
        tenant_id: TenantId,
        /// Which timer.
        timer_id: TimerId,
    },
    /// A page of a tenant's timers.
    List(ListQuery),
    /// The recorded fires of one timer of a tenant, by occurrence.
    ListFires {
        /// Tenant scope.
        tenant_id: TenantId,
        /// Which timer.
        timer_id: TimerId,
        /// Exclusive lower bound on occurrence.
        after_occurrence: u32,
        /// Page size.
        limit: u32,
    },
}

impl StoreOp {
    /// Whether a driver may run this operation concurrently with any other;
    /// every other operation runs one at a time, in the order the engine
    /// emitted it, and completes in that order (the engine's I/O contract,
    /// written here once for every driver). Reads need no ordering; lease
    /// acquisition and renewal must never wait behind a large commit (a
    /// renewal stuck there would let a healthy lease expire), and the engine
    /// keeps at most one of each in flight, judging their replies by when it
    /// sent them.
    pub fn runs_concurrently(&self) -> bool {
        match self {
            StoreOp::Get { .. }
            | StoreOp::List(_)
            | StoreOp::ListFires { .. }
            | StoreOp::AcquireLease { .. }
            | StoreOp::RenewLease { .. } => true,
            StoreOp::Open { .. } | StoreOp::Commit(_) | StoreOp::LoadDue { .. } => false,
        }
    }
}

/// The lease every timer falls under in this version: one leader fires all
/// timers. Timers carry their virtual shard already, so leases per shard can
/// split the work later without a migration.
pub const LEASE_SHARD: u32 = 0;

/// `(due_ms, id)`: the due index's order and the load cursor.
pub type DueKey = (WallMs, TimerId);

/// Group commit: many requests, one transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitBatch {
    /// The writer's fencing epoch.
    pub epoch: u64,
    /// The writer's node id (recorded with fires).
    pub node_id: String,
    /// New timers.
    pub creates: Vec<TimerRecord>,
    /// Cancellations.
    pub cancels: Vec<CancelOp>,
    /// Fires.
    pub fires: Vec<FireOp>,
    /// Lease mode: the writer's lease ends locally at this monotonic time. A
    /// driver must not send the commit after it (it reports the commit as
    /// failed, not applied, instead): a deposed leader never acts.
    pub send_before_mono: Option<u64>,
}

impl CommitBatch {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.cancels.is_empty() && self.fires.is_empty()
    }
}

/// Cancel one timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOp {
    /// Tenant scope.
    pub tenant_id: TenantId,
    /// Which timer.
    pub timer_id: TimerId,
    /// Who cancels.
    pub cancelled_by: String,
    /// Why.
    pub reason: Option<String>,
}

/// Record one occurrence of one timer, and advance it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FireOp {
    /// Which timer.
    pub timer_id: TimerId,
    /// Occurrence number to record; must equal the timer's `next_occurrence`.
    pub occurrence: u32,
    /// Due time of this occurrence; must equal the timer's `next_due_ms`.
    pub due_ms: WallMs,
    /// What the timer becomes after this fire.
    pub then: AfterFire,
    /// A missed occurrence dropped by the `skip` misfire policy: the store
    /// checks and advances the timer exactly as for a fire, but records no
    /// fire, writes no event and leaves `next_occurrence` unchanged.
    pub skipped: bool,
}

/// The timer's state after a fire (computed by the engine from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterFire {
    /// No more occurrences: status becomes `fired`.
    Finished,
    /// The next occurrence: `next_occurrence = occurrence + 1`, `next_due_ms = due_ms`.
    Next {
        /// Due time of the next occurrence.
        due_ms: WallMs,
    },
}

/// List filters and cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Tenant scope.
    pub tenant_id: TenantId,
    /// Only these statuses (empty = all).
    pub statuses: Vec<TimerStatus>,
    /// Only timers carrying every one of these labels with these values.
    pub labels: BTreeMap<String, String>,
    /// Exclusive cursor: list ids after this one (ids are time-ordered).
    pub after: Option<TimerId>,
    /// Page size (1..=1000).
    pub limit: u32,
}

/// The outcome of one create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// The timer (the existing one, on an idempotent retry).
    pub timer: TimerRecord,
    /// False when the idempotency key matched an existing timer.
    pub created: bool,
}

/// The outcome of one fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// The recorded fire (`None` for a skipped op).
    pub fire: Option<FireRecord>,
    /// The timer after the fire.
    pub timer: TimerRecord,
}

/// Per-item outcomes of a commit, in the order of the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOutcome {
    /// One per create.
    pub creates: Vec<Result<Created, StoreReject>>,
    /// One per cancel: the timer after cancellation (or as it was, if already cancelled).
    pub cancels: Vec<Result<TimerRecord, StoreReject>>,
    /// One per fire op.
    pub fires: Vec<Result<Fired, StoreReject>>,
}

/// A pending timer as the due index needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueTimer {
    /// Which timer.
    pub timer_id: TimerId,
    /// Whose: firing shares each commit fairly between tenants.
    pub tenant_id: TenantId,
    /// Its next occurrence.
    pub occurrence: u32,
    /// When that occurrence is due.
    pub due_ms: WallMs,
    /// Needed to compute the occurrence after (recurring timers only).
    pub recurrence: Option<Recurrence>,
}

/// What a recurring timer needs to plan its next occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    /// The schedule.
    pub schedule: crate::timer::Schedule,
    /// Its misfire policy.
    pub misfire: crate::timer::MisfirePolicy,
}

impl DueTimer {
    /// The due-index view of a scheduled timer record.
    pub fn of(record: &TimerRecord) -> Self {
        Self {
            timer_id: record.id,
            tenant_id: record.tenant_id.clone(),
            occurrence: record.next_occurrence,
            due_ms: record.next_due_ms,
            recurrence: record
                .schedule
                .is_recurring()
                .then(|| Recurrence { schedule: record.schedule.clone(), misfire: record.misfire }),
        }
    }
}

/// A store's reply to a [`StoreOp`], variant by variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // Moved once per operation; boxing would only add an allocation.
pub enum StoreReply {
    /// To `Open`.
    Opened {
        /// The new epoch (previous + 1).
        epoch: u64,
    },
    /// To `AcquireLease` and `RenewLease`.
    Lease(LeaseReply),
    /// To `Commit`.
    Committed {
        /// Per-item outcomes.
        outcome: CommitOutcome,
        /// Events appended to the outbox by this commit, in order.
        events: Vec<OutboxEvent>,
    },
    /// To `LoadDue`.
    Loaded {
        /// Pending timers in (due, id) order.
        timers: Vec<DueTimer>,
        /// Whether more matched than `limit`.
        more: bool,
    },
    /// To `Get`.
    Timer(Option<TimerRecord>),
    /// To `List`.
    Timers {
        /// The page.
        timers: Vec<TimerRecord>,
        /// Whether more follow (cursor: the last id of the page).
        more: bool,
    },
    /// To `ListFires`: `None` when the timer does not exist in the tenant.
    Fires(Option<Vec<FireRecord>>),
}
