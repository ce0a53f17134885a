//! The engine: the whole scheduling logic of one node as a sans-IO state
//! machine. It owns the due index, group-commits writes, fires due
//! occurrences under its fencing epoch, and answers requests — but never
//! touches a disk, a socket or a clock. A driver feeds it inputs and executes
//! its effects.
//!
//! ```text
//!   Request(req, Command) ─┐                      ┌─▶ Store { io, op }     run it, report StoreDone(io)
//!   StoreDone(io, result) ─┼─▶ handle_input(now) ─┼─▶ Reply { req, result } answer the caller
//!   Tick                  ─┘                      └─▶ Publish { events }    relay committed outbox rows
//!                              poll_timeout() ──▶ monotonic ms at which to Tick next
//! ```
//!
//! # Call order
//! 1. `Engine::new(config, now)` (it emits `Store(Open)` at once).
//! 2. For each input: `handle_input(now, input)`, then drain `poll_output()`
//!    until `None`, then sleep until `poll_timeout()` (or the next input) and
//!    send `Input::Tick`.
//!
//! # What the driver must guarantee
//! - `now.mono_ms` never decreases (asserted).
//! - A store op for which [`StoreOp::runs_concurrently`] is false (`Open`,
//!   `Commit`, `LoadDue`) runs one at a time, in the order emitted, and its
//!   `StoreDone` arrives in that order; the others (reads, lease acquisition
//!   and renewal) may run concurrently with anything.
//! - A `Reply` is sent to its caller; a `Publish` is handed to the relay.
//!
//! # Invariants
//! Checked where they are decided, in every build:
//! - A fire is planned only once the engine's own wall clock says it is due
//!   (the store checks again against its clock).
//! - Fires are emitted only while leader, with the current epoch.
//!
//! Checked by `validate` after every input in debug builds:
//! - At most one `Commit` and one `LoadDue` in flight (whether one is, is
//!   read from `inflight`, never kept beside it).
//! - One due entry per timer.
//! - Queued creates are accounted to their requests.

use std::collections::{BTreeMap, VecDeque};

use crate::draft::TimerDraft;
use crate::error::{ApiError, StoreFailure, StoreReject, ValidationError};
use crate::event::OutboxEvent;
use crate::ids::{IdGenerator, TenantId, TimerId};
use crate::lease::{LeaseConfig, LeaseHolder};
use crate::schedule::plan_fires;
use crate::store::{
    CancelOp, CommitBatch, CommitOutcome, Created, DueKey, DueTimer, FireOp, LEASE_SHARD, LeaseReply,
    ListQuery, StoreOp, StoreReply,
};
use crate::time::{Now, WallMs};
use crate::timer::{FireRecord, TimerRecord, TimerStatus};
use crate::validate::validate_all;

/// Identifies a client request; chosen by the driver, echoed in `Reply`.
pub type RequestId = u64;
/// Identifies a store operation; chosen by the engine, echoed in `StoreDone`.
pub type IoId = u64;

/// How this engine obtains the right to fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadershipMode {
    /// The only writer of its store: `Open` bumps the epoch at start and the
    /// engine leads until another writer opens the store.
    Standalone,
    /// One of several nodes sharing a store: leads while it holds the store's
    /// lease (acquire, renew, step down before it can expire anywhere).
    Lease(LeaseConfig),
}

/// Tunables. Defaults suit a single node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This node's id (recorded with fires).
    pub node_id: String,
    /// Where clients reach this node (given to followers' callers as the leader hint).
    pub address: String,
    /// Standalone or lease-based leadership.
    pub mode: LeadershipMode,
    /// Deliberate bugs for the simulator's checker tests (never in production builds).
    #[cfg(feature = "planted-bugs")]
    pub plant: crate::plant::Plant,
    /// Seed for timer ids and jitter. Every incarnation of every node needs
    /// its own (draw it from OS randomness at start-up): ids are unique only
    /// across distinct seeds.
    pub seed: u64,
    /// Keep timers due within this far ahead in memory.
    pub horizon_ms: i64,
    /// Timers per `LoadDue` page.
    pub load_page: u32,
    /// Most fire ops in one commit.
    pub commit_fires_max: usize,
    /// Most creates in one commit.
    pub commit_creates_max: usize,
    /// Most queued (uncommitted) creates and cancels before new writes are refused.
    pub queued_writes_max: usize,
    /// Longest sleep the engine asks for, so wall-clock steps are noticed.
    pub idle_tick_ms: u64,
    /// First retry delay after a store failure; doubles up to `store_backoff_max_ms`.
    pub store_backoff_min_ms: u64,
    /// Longest retry delay after store failures.
    pub store_backoff_max_ms: u64,
    /// Which action kinds the operator allows (checked when a timer is scheduled).
    pub actions: crate::action::ActionPolicy,
    /// How far in the past a `fireAt` may lie (a client whose clock is behind);
    /// such a timer fires at once, due at the requested instant. Older is refused.
    pub past_fire_tolerance_ms: u64,
}

impl EngineConfig {
    /// Whether [`Command::Schedule`] or [`Command::ScheduleBatch`] with these
    /// drafts would pass validation (the same rules, the same error), without
    /// creating anything. Lets an adapter answer a request that is both
    /// invalid and over quota with the validation error.
    pub fn check_drafts(&self, drafts: &[TimerDraft], now: Now) -> Result<(), ValidationError> {
        validate_all(drafts, now, &self.actions, self.past_fire_tolerance_ms).map(drop)
    }

    /// Defaults for `node_id` with id seed `seed`.
    pub fn new(node_id: impl Into<String>, seed: u64) -> Self {
        Self {
            node_id: node_id.into(),
            address: String::new(),
            mode: LeadershipMode::Standalone,
            #[cfg(feature = "planted-bugs")]
            plant: crate::plant::Plant::default(),
            seed,
            horizon_ms: 60_000,
            load_page: 10_000,
            commit_fires_max: 4_096,
            commit_creates_max: 8_192,
            queued_writes_max: 200_000,
            idle_tick_ms: 1_000,
            store_backoff_min_ms: 10,
            store_backoff_max_ms: 2_000,
            actions: crate::action::ActionPolicy::default(),
            past_fire_tolerance_ms: crate::limits::PAST_FIRE_TOLERANCE_DEFAULT_MS,
        }
    }
}

/// What a client asks of the engine.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // Moved once per request; boxing would only add an allocation.
pub enum Command {
    /// Create one timer.
    Schedule(TimerDraft),
    /// Create up to [`crate::limits::BATCH_MAX`] timers: all validate or none is created.
    ScheduleBatch(Vec<TimerDraft>),
    /// Cancel a timer (idempotent for already-cancelled timers).
    Cancel {
        /// Tenant scope.
        tenant_id: TenantId,
        /// Which timer.
        timer_id: TimerId,
        /// Who cancels.
        requested_by: String,
        /// Why.
        reason: Option<String>,
    },
    /// Read one timer.
    Get {
        /// Tenant scope.
        tenant_id: TenantId,
        /// Which timer.
        timer_id: TimerId,
    },
    /// Read a page of timers.
    List(ListQuery),
    /// Read a timer's recorded fires.
    ListFires {
        /// Tenant scope.
        tenant_id: TenantId,
        /// Which timer.
        timer_id: TimerId,
        /// Exclusive lower bound on occurrence.
        after_occurrence: u32,
        /// Page size (1..=1000).
        limit: u32,
    },
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// To `Schedule`.
    Scheduled(Created),
    /// To `ScheduleBatch`: one result per draft, in order (idempotency
    /// conflicts are per item).
    ScheduledBatch(Vec<Result<Created, ApiError>>),
    /// To `Get` and `Cancel`.
    Timer(TimerRecord),
    /// To `List`.
    Timers {
        /// The page.
        timers: Vec<TimerRecord>,
        /// Pass as `after` to get the next page.
        next_cursor: Option<TimerId>,
    },
    /// To `ListFires`.
    Fires(Vec<FireRecord>),
}

/// An input to the engine.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // Moved once per input; boxing would only add an allocation.
pub enum Input {
    /// A client request.
    Request {
        /// Echoed in the reply.
        req: RequestId,
        /// What is asked.
        command: Command,
    },
    /// A store operation finished.
    StoreDone {
        /// Which operation.
        io: IoId,
        /// Its reply, or why it failed (a failed commit's outcome is unknown).
        result: Result<StoreReply, StoreFailure>,
    },
    /// Time passed (the deadline from `poll_timeout`, or any wake-up).
    Tick,
}

/// An effect for the driver to carry out.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // Drained once per effect; boxing would only add an allocation.
pub enum Effect {
    /// Run this store operation and report `StoreDone { io, .. }`.
    Store {
        /// Echo in `StoreDone`.
        io: IoId,
        /// The operation.
        op: StoreOp,
    },
    /// Answer request `req`.
    Reply {
        /// The request.
        req: RequestId,
        /// The answer.
        result: Result<Response, ApiError>,
    },
    /// These outbox rows are committed: relay them to subscribers, then mark
    /// them published.
    Publish {
        /// In outbox order.
        events: Vec<OutboxEvent>,
    },
}

/// The engine's view of its own authority to fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Waiting for the store to grant an epoch.
    Opening,
    /// May fire and cancel with this epoch.
    Leader {
        /// Fencing token.
        epoch: u64,
    },
    /// The store holds a newer epoch: another writer took over. Writes are refused.
    Deposed {
        /// The epoch the store reported.
        current_epoch: u64,
    },
    /// Lease mode: another node leads (or nobody does yet). Writes are refused
    /// with the leader's address as a hint; reads are served.
    Follower {
        /// The leader, as the store last reported it.
        leader: Option<LeaseHolder>,
    },
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Fires recorded by this engine.
    pub fires_recorded: u64,
    /// Fire ops the store refused as stale, early or changed.
    pub fires_rejected: u64,
    /// Commits completed.
    pub commits: u64,
    /// Store failures seen.
    pub store_failures: u64,
    /// Commits the store refused as a whole (an engine bug; nothing applied).
    pub commits_refused: u64,
    /// Times this engine became leader.
    pub leaderships: u64,
    /// Times it stepped down (lease lost, expired locally, or fenced out).
    pub step_downs: u64,
    /// Times it threw its due index away to page it in again.
    pub resyncs: u64,
}

#[derive(Debug)]
enum Inflight {
    Open,
    Acquire { sent_mono: u64, tenure: u64 },
    Renew { sent_mono: u64, epoch: u64 },
    Commit(CommitPlan),
    Load { generation: u64 },
    Read { req: RequestId, read: ReadKind },
}

#[derive(Debug, Clone, Copy)]
enum ReadKind {
    Get { timer_id: TimerId },
    List,
    Fires { timer_id: TimerId },
}

/// What one commit did to one timer's fire ops.
#[derive(Default)]
struct FireOutcome {
    /// The timer after the last op that applied.
    after: Option<TimerRecord>,
    /// The first op refused as early: by how much (store clock), and the
    /// index entry it was planned from.
    early: Option<(WallMs, DueTimer)>,
}

/// The creates of one request: they always commit together.
#[derive(Debug, Clone, Copy)]
struct CreateGroup {
    req: RequestId,
    count: usize,
    batch: bool,
    /// Already answered (only with the `ack_before_commit` planted bug).
    acked: bool,
}

/// Who waits on which items of an in-flight commit.
#[derive(Debug, Default)]
struct CommitPlan {
    /// The epoch the commit was written at.
    epoch: u64,
    /// One entry per create request, in order.
    create_groups: Vec<CreateGroup>,
    /// One request per cancel, in order, with the timer it names.
    cancel_reqs: Vec<(RequestId, TimerId)>,
    /// The fire ops sent, to re-arm on failure.
    fires: Vec<(FireOp, DueTimer)>,
}

#[derive(Debug, Default)]
struct WriteQueue {
    creates: Vec<TimerRecord>,
    create_groups: VecDeque<CreateGroup>,
    cancels: VecDeque<(RequestId, CancelOp)>,
}

/// The engine. See the module docs for the call order.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    ids: IdGenerator,
    leadership: Leadership,
    last_now: Now,
    next_io: IoId,
    effects: VecDeque<Effect>,
    inflight: BTreeMap<IoId, Inflight>,
    queue: WriteQueue,
    due: crate::due_index::DueIndex,
    /// Every pending timer with `(due, id)` ≤ this key is in the index (or in flight).
    loaded_through: Option<DueKey>,
    /// No store writes or loads before this monotonic time (after failures).
    backoff_until_mono: u64,
    backoff_ms: u64,
    /// No fires before this monotonic time (after the store said "too early").
    fire_hold_until_mono: u64,
    /// The `until_ms` of the load in flight.
    pending_load_until: Option<WallMs>,
    lease: LeaseClock,
    /// This engine's lease tenure id (see [`crate::lease`]): new at every
    /// process start, and one more after every commit whose outcome is unknown.
    tenure: u64,
    /// Bumped whenever the index is thrown away; loads carry it.
    index_generation: u64,
    stats: EngineStats,
}

/// Lease-mode timing of this engine, on its monotonic clock.
#[derive(Debug, Default)]
struct LeaseClock {
    /// While leader: act only before this.
    valid_until_mono: u64,
    /// While leader: send the next renewal at this time.
    next_renew_mono: u64,
    renew_inflight: bool,
    /// While not leader: try to acquire at this time.
    next_acquire_mono: u64,
    acquire_inflight: bool,
}

/// Retry hint given to callers when the engine cannot take writes.
pub const RETRY_AFTER_MS: u64 = 250;

impl Engine {
    /// A new engine at `now`; it immediately asks the store to `Open`.
    pub fn new(config: EngineConfig, now: Now) -> Self {
        if let LeadershipMode::Lease(lease) = config.mode {
            assert!(lease.check().is_ok(), "invalid lease timing: {:?}", lease.check());
        }
        let ids = IdGenerator::from_seed(config.seed);
        let config_seed = config.seed;
        let mut engine = Self {
            config,
            ids,
            leadership: Leadership::Opening,
            last_now: now,
            next_io: 1,
            effects: VecDeque::new(),
            inflight: BTreeMap::new(),
            queue: WriteQueue::default(),
            due: Default::default(),
            loaded_through: None,
            backoff_until_mono: 0,
            backoff_ms: 0,
            fire_hold_until_mono: 0,
            pending_load_until: None,
            lease: LeaseClock::default(),
            tenure: crate::lease::first_tenure(now.wall_ms, config_seed),
            index_generation: 0,
            stats: EngineStats::default(),
        };
        match engine.config.mode {
            LeadershipMode::Standalone => {
                let node_id = engine.config.node_id.clone();
                engine.emit_store(Inflight::Open, StoreOp::Open { node_id });
            }
            LeadershipMode::Lease(_) => engine.pump(now),
        }
        engine
    }

    /// Current leadership.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Occurrences held in memory.
    pub fn due_len(&self) -> usize {
        self.due.len()
    }

    /// Creates and cancels waiting for a commit.
    pub fn queued_writes(&self) -> usize {
        self.queue.creates.len() + self.queue.cancels.len()
    }

    /// Whether writes are queued or a commit is in flight (shutdown waits for these).
    pub fn writes_pending(&self) -> bool {
        self.commit_inflight() || self.queued_writes() > 0
    }

    /// Feeds one input at time `now`.
    pub fn handle_input(&mut self, now: Now, input: Input) {
        assert!(
            now.mono_ms >= self.last_now.mono_ms,
            "monotonic time went backwards: {} < {}",
            now.mono_ms,
            self.last_now.mono_ms
        );
        self.last_now = now;
        self.expire_lease(now);
        match input {
            Input::Request { req, command } => self.on_request(now, req, command),
            Input::StoreDone { io, result } => self.on_store_done(now, io, result),
            Input::Tick => {}
        }
        self.pump(now);
        #[cfg(debug_assertions)]
        self.validate();
    }

    /// The next effect, if any. Drain until `None` after each input.
    pub fn poll_output(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The monotonic time (ms) at which the engine wants an `Input::Tick`.
    ///
    /// Never earlier than the moment something can happen: while a store
    /// backoff runs, nothing is sent before it ends; while a commit is in
    /// flight, due fires wait for its completion (an input), not for a tick.
    pub fn poll_timeout(&self) -> Option<u64> {
        let now = self.last_now;
        let mut at = now.mono_ms + self.config.idle_tick_ms;
        if let LeadershipMode::Lease(_) = self.config.mode {
            match self.leadership {
                Leadership::Leader { .. } => {
                    at = at.min(self.lease.valid_until_mono);
                    if !self.lease.renew_inflight {
                        at = at.min(self.lease.next_renew_mono);
                    }
                }
                _ if !self.lease.acquire_inflight => at = at.min(self.lease.next_acquire_mono),
                _ => {}
            }
        }
        if now.mono_ms < self.backoff_until_mono {
            return Some(self.backoff_until_mono.min(at.max(now.mono_ms)).max(now.mono_ms));
        }
        if let Leadership::Leader { .. } = self.leadership {
            if let (false, Some(due)) = (self.commit_inflight(), self.due.first_due()) {
                let fire_at = now.mono_ms.saturating_add(wall_wait_ms(now, due));
                at = at.min(fire_at.max(self.fire_hold_until_mono));
            }
            if let Some(load_at) = self.next_load_wall() {
                at = at.min(now.mono_ms.saturating_add(wall_wait_ms(now, load_at)));
            }
        }
        Some(at.max(now.mono_ms))
    }

    // ---- requests -------------------------------------------------------

    fn on_request(&mut self, now: Now, req: RequestId, command: Command) {
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
    fn accept_drafts(&mut self, now: Now, drafts: &[TimerDraft]) -> Result<Vec<TimerRecord>, ApiError> {
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

    fn admit_writes(&self, count: usize) -> Result<(), ApiError> {
        let leads = matches!(self.leadership, Leadership::Leader { .. });
        if matches!(self.config.mode, LeadershipMode::Lease(_)) && !leads {
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

    fn enqueue_creates(&mut self, req: RequestId, records: Vec<TimerRecord>, batch: bool) {
        #[allow(unused_mut)]
        let mut acked = false;
        #[cfg(feature = "planted-bugs")]
        if self.config.plant.ack_before_commit {
            // The planted bug: answer before the commit makes it durable.
            let created = |t: &TimerRecord| Created { timer: t.clone(), created: true };
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

    // ---- store completions ---------------------------------------------

    fn on_store_done(&mut self, now: Now, io: IoId, result: Result<StoreReply, StoreFailure>) {
        let Some(what) = self.inflight.remove(&io) else {
            // A completion for an op we no longer track (cannot happen with a correct driver).
            debug_assert!(false, "StoreDone for unknown io {io}");
            return;
        };
        match (what, result) {
            (Inflight::Open, Ok(StoreReply::Opened { epoch })) => {
                self.leadership = Leadership::Leader { epoch };
                self.reset_backoff();
            }
            (Inflight::Open, Err(_)) => {
                self.note_failure(now);
                let node_id = self.config.node_id.clone();
                self.emit_store(Inflight::Open, StoreOp::Open { node_id });
            }
            (Inflight::Acquire { sent_mono, tenure }, result) => {
                self.on_acquired(now, sent_mono, tenure, result)
            }
            (Inflight::Renew { sent_mono, epoch }, result) => self.on_renewed(now, sent_mono, epoch, result),
            (Inflight::Commit(plan), Ok(StoreReply::Committed { outcome, events })) => {
                self.stats.commits += 1;
                self.reset_backoff();
                self.on_committed(now, plan, outcome);
                if !events.is_empty() {
                    self.effects.push_back(Effect::Publish { events });
                }
            }
            (Inflight::Commit(plan), Err(failure)) => {
                self.note_failure(now);
                self.on_commit_failed(now, plan, &failure);
            }
            (Inflight::Load { generation }, Ok(StoreReply::Loaded { timers, more })) => {
                self.reset_backoff();
                self.on_loaded(generation, timers, more);
            }
            (Inflight::Load { .. }, Err(_)) => {
                self.note_failure(now);
            }
            (Inflight::Read { req, read }, Ok(reply)) => self.on_read(req, read, reply),
            (Inflight::Read { req, .. }, Err(failure)) => self.reply(req, Err(unavailable(&failure))),
            (what, Ok(reply)) => {
                // A reply of the wrong kind is a store bug: refuse to guess.
                panic!("store replied {reply:?} to {what:?}");
            }
        }
    }

    fn on_committed(&mut self, now: Now, plan: CommitPlan, outcome: CommitOutcome) {
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

    fn on_commit_failed(&mut self, now: Now, plan: CommitPlan, failure: &StoreFailure) {
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

    fn on_commit_outcome_unknown(&mut self, now: Now) {
        // The commit may have applied (creates inside the horizon among
        // them), so the index can no longer be trusted. Reload it from the
        // store; fires retried from there are safe because the store
        // compare-and-sets every occurrence.
        self.resync();
        if let LeadershipMode::Lease(_) = self.config.mode {
            // The commit may still be on its way and apply *after* a reload has
            // read the store — a timer it creates or advances would then never
            // be armed. Fence it out instead: leave this tenure (also when the
            // lease already ran out locally: the next grant must not extend
            // it) and ask at once for a new one, whose new epoch the store
            // grants only after that commit applied, or makes it refuse it.
            if let Leadership::Leader { .. } = self.leadership {
                self.step_down(now, None);
            }
            self.tenure = self.tenure.saturating_add(1);
            self.lease.next_acquire_mono = self.lease.next_acquire_mono.min(now.mono_ms);
        }
    }

    /// Forgets the in-memory index and pages it in again from the store; a
    /// page already in flight is dropped when it lands.
    fn resync(&mut self) {
        self.stats.resyncs += 1;
        self.due.clear();
        self.loaded_through = None;
        self.index_generation += 1;
    }

    fn on_loaded(&mut self, generation: u64, timers: Vec<DueTimer>, more: bool) {
        let Some(until) = self.pending_load_until.take() else {
            panic!("load reply without a load in flight");
        };
        if !matches!(self.leadership, Leadership::Leader { .. }) || generation != self.index_generation {
            // Stepped down or resynced while the page was in flight: drop it.
            return;
        }
        let last = timers.last().map(|t| (t.due_ms, t.timer_id));
        for t in timers {
            self.due.insert(t);
        }
        self.loaded_through = match (more, last) {
            (true, Some(key)) => Some(key),
            _ => Some((until, TimerId(uuid::Uuid::max()))),
        };
    }

    fn on_read(&mut self, req: RequestId, read: ReadKind, reply: StoreReply) {
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

    // ---- the pump: decide what to send next ------------------------------

    fn pump(&mut self, now: Now) {
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
                if let LeadershipMode::Lease(_) = self.config.mode {
                    batch.send_before_mono = Some(self.lease.valid_until_mono);
                }
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

    fn take_queued(&mut self, batch: &mut CommitBatch, plan: &mut CommitPlan) {
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

    fn take_due(&mut self, now: Now, batch: &mut CommitBatch, plan: &mut CommitPlan) {
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

    fn emit_load(&mut self, now: Now) {
        let until = now.wall_ms.saturating_add(self.config.horizon_ms);
        self.pending_load_until = Some(until);
        let after = self.loaded_through;
        let generation = self.index_generation;
        self.emit_store(
            Inflight::Load { generation },
            StoreOp::LoadDue { after, until_ms: until, limit: self.config.load_page },
        );
    }

    /// The wall time at which the next page should be loaded.
    fn next_load_wall(&self) -> Option<WallMs> {
        if self.load_inflight() {
            return None;
        }
        match self.loaded_through {
            None => Some(WallMs::MIN),
            Some((due, _)) => Some(due.saturating_sub(self.config.horizon_ms / 2)),
        }
    }

    // ---- helpers ---------------------------------------------------------

    /// Whether a commit is in flight (at most one is: the write queue's order).
    fn commit_inflight(&self) -> bool {
        self.inflight.values().any(|w| matches!(w, Inflight::Commit(_)))
    }

    /// Whether a page of the due index is being loaded (at most one is).
    fn load_inflight(&self) -> bool {
        self.inflight.values().any(|w| matches!(w, Inflight::Load { .. }))
    }

    fn arm(&mut self, timer: DueTimer) {
        self.due.insert(timer);
    }

    fn arm_if_loaded(&mut self, timer: DueTimer) {
        if self.loaded_through.is_some_and(|through| (timer.due_ms, timer.timer_id) <= through) {
            self.due.insert(timer);
        }
    }

    /// The store refused our epoch: someone else writes now.
    fn depose(&mut self, now: Now, current_epoch: u64) {
        match self.config.mode {
            LeadershipMode::Standalone => {
                if let Leadership::Leader { .. } = self.leadership {
                    self.leadership = Leadership::Deposed { current_epoch };
                    self.stats.step_downs += 1;
                    self.resync();
                }
            }
            LeadershipMode::Lease(_) => self.step_down(now, None),
        }
    }

    /// Lease mode: stop acting as leader now.
    fn step_down(&mut self, now: Now, leader: Option<LeaseHolder>) {
        if let Leadership::Leader { .. } = self.leadership {
            self.stats.step_downs += 1;
        }
        self.leadership = Leadership::Follower { leader };
        self.resync();
        self.refuse_queued();
        if let LeadershipMode::Lease(config) = self.config.mode {
            self.lease.next_acquire_mono = now.mono_ms + config.acquire_retry_ms;
        }
    }

    fn become_leader(&mut self, epoch: u64, sent_mono: u64, config: LeaseConfig) {
        self.leadership = Leadership::Leader { epoch };
        self.stats.leaderships += 1;
        self.lease.valid_until_mono = config.valid_until(sent_mono);
        self.lease.next_renew_mono = sent_mono + config.renew_every_ms;
        self.lease.renew_inflight = false; // one of an earlier tenure answers into the void
        self.resync();
    }

    /// Lease mode: step down once the locally computed validity has passed.
    fn expire_lease(&mut self, now: Now) {
        #[cfg(feature = "planted-bugs")]
        if self.config.plant.early_stepdown_off {
            return;
        }
        let leads = matches!(self.leadership, Leadership::Leader { .. });
        if matches!(self.config.mode, LeadershipMode::Lease(_))
            && leads
            && now.mono_ms >= self.lease.valid_until_mono
        {
            self.step_down(now, None);
        }
    }

    fn on_acquired(
        &mut self,
        now: Now,
        sent_mono: u64,
        tenure: u64,
        result: Result<StoreReply, StoreFailure>,
    ) {
        self.lease.acquire_inflight = false;
        let LeadershipMode::Lease(config) = self.config.mode else {
            panic!("a lease reply in standalone mode");
        };
        if tenure != self.tenure {
            // Asked for in a tenure this engine has left since (a commit's
            // outcome became unknown meanwhile): a grant extends that tenure,
            // which must not be acted on. Ask again, in the current one, now.
            self.lease.next_acquire_mono = now.mono_ms;
            return;
        }
        self.lease.next_acquire_mono = now.mono_ms + config.acquire_retry_ms;
        match result {
            Ok(StoreReply::Lease(LeaseReply::Granted { epoch })) => {
                if config.valid_until(sent_mono) > now.mono_ms {
                    self.become_leader(epoch, sent_mono, config);
                }
                // Otherwise the grant came back too late to act on: try again.
            }
            Ok(StoreReply::Lease(LeaseReply::Held { holder })) => {
                self.leadership = Leadership::Follower { leader: Some(holder) };
            }
            Ok(other) => panic!("store replied {other:?} to AcquireLease"),
            Err(_) => self.stats.store_failures += 1,
        }
    }

    fn on_renewed(&mut self, now: Now, sent_mono: u64, epoch: u64, result: Result<StoreReply, StoreFailure>) {
        let LeadershipMode::Lease(config) = self.config.mode else {
            panic!("a lease reply in standalone mode");
        };
        if self.leadership != (Leadership::Leader { epoch }) {
            // A renewal of a tenure already over; the flag belongs to the
            // current tenure's renewal (cleared when the tenure began).
            if !matches!(self.leadership, Leadership::Leader { .. }) {
                self.lease.renew_inflight = false;
            }
            return;
        }
        self.lease.renew_inflight = false;
        match result {
            Ok(StoreReply::Lease(LeaseReply::Renewed)) => {
                self.lease.valid_until_mono = self.lease.valid_until_mono.max(config.valid_until(sent_mono));
                self.lease.next_renew_mono = sent_mono + config.renew_every_ms;
            }
            Ok(StoreReply::Lease(LeaseReply::Lost { holder })) => self.step_down(now, holder),
            Ok(other) => panic!("store replied {other:?} to RenewLease"),
            Err(_) => {
                // Keep trying until the lease runs out locally.
                self.stats.store_failures += 1;
                self.lease.next_renew_mono = now.mono_ms + (config.renew_every_ms / 4).max(1);
            }
        }
    }

    fn pump_lease(&mut self, now: Now) {
        let LeadershipMode::Lease(config) = self.config.mode else { return };
        let node_id = self.config.node_id.clone();
        match self.leadership {
            Leadership::Leader { epoch } => {
                if !self.lease.renew_inflight && now.mono_ms >= self.lease.next_renew_mono {
                    self.lease.renew_inflight = true;
                    let op =
                        StoreOp::RenewLease { shard: LEASE_SHARD, node_id, epoch, ttl_ms: config.ttl_ms };
                    self.emit_store(Inflight::Renew { sent_mono: now.mono_ms, epoch }, op);
                }
            }
            _ => {
                if !self.lease.acquire_inflight && now.mono_ms >= self.lease.next_acquire_mono {
                    self.lease.acquire_inflight = true;
                    let op = StoreOp::AcquireLease {
                        shard: LEASE_SHARD,
                        node_id,
                        tenure: self.tenure,
                        address: self.config.address.clone(),
                        ttl_ms: config.ttl_ms,
                    };
                    let tenure = self.tenure;
                    self.emit_store(Inflight::Acquire { sent_mono: now.mono_ms, tenure }, op);
                }
            }
        }
    }

    fn refuse_queued(&mut self) {
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
    fn not_leader(&self) -> ApiError {
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

    fn note_failure(&mut self, now: Now) {
        self.stats.store_failures += 1;
        self.backoff_ms = if self.backoff_ms == 0 {
            self.config.store_backoff_min_ms
        } else {
            (self.backoff_ms * 2).min(self.config.store_backoff_max_ms)
        };
        self.backoff_until_mono = now.mono_ms + self.backoff_ms;
    }

    fn reset_backoff(&mut self) {
        self.backoff_ms = 0;
    }

    fn emit_store(&mut self, what: Inflight, op: StoreOp) {
        let io = self.next_io;
        self.next_io += 1;
        self.inflight.insert(io, what);
        self.effects.push_back(Effect::Store { io, op });
    }

    fn reply(&mut self, req: RequestId, result: Result<Response, ApiError>) {
        self.effects.push_back(Effect::Reply { req, result });
    }

    #[cfg(debug_assertions)]
    fn validate(&self) {
        let commits = self.inflight.values().filter(|w| matches!(w, Inflight::Commit(_))).count();
        let loads = self.inflight.values().filter(|w| matches!(w, Inflight::Load { .. })).count();
        assert!(commits <= 1, "at most one commit in flight");
        assert!(loads <= 1, "at most one load in flight");
        assert!(self.due.one_entry_per_timer(), "one due entry per timer");
        assert_eq!(
            self.queue.creates.len(),
            self.queue.create_groups.iter().map(|g| g.count).sum::<usize>(),
            "queued creates are accounted to requests"
        );
    }
}

/// Milliseconds from `now` until wall time `at` (0 if already past).
fn wall_wait_ms(now: Now, at: WallMs) -> u64 {
    u64::try_from(at.saturating_sub(now.wall_ms)).unwrap_or(0)
}

fn not_found(timer_id: TimerId) -> ApiError {
    ApiError::NotFound { timer_id: timer_id.to_string() }
}

fn unavailable(failure: &StoreFailure) -> ApiError {
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

fn reject_to_api(reject: StoreReject, field: &str) -> ApiError {
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
