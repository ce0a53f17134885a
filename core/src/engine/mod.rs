//! The engine: the whole scheduling logic of one node as a sans-IO state
//! machine. It owns the due index, group-commits writes, fires due
//! occurrences under its fencing epoch, and answers requests — but never
//! touches a disk, a socket or a clock. A driver feeds it inputs and executes
//! its effects.
//!
//! ```text
//!   Request(req, Command) ─┐                      ┌─▶ Store { io, op }     run it, report StoreDone(io)
//!   StoreDone(io, result) ─┤                      │
//!   Tick                  ─┼─▶ handle_input(now) ─┼─▶ Reply { req, result } answer the caller
//!   Leadership(change)    ─┘  (external mode)     └─▶ Publish { events }    relay committed outbox rows
//!                              poll_timeout() ──▶ monotonic ms at which to Tick next
//! ```
//!
//! Leadership reaches the engine as one input, [`LeadershipChange`]
//! ("leading with epoch E until T", "following, leader hint", "stepped
//! down"), whatever obtains it: standalone's `Open` (leading, no bound),
//! the lease keeper in lease mode (a sub-machine whose store operations the
//! engine sends), or the driver in external mode (`Input::Leadership`).
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
//! # Layout
//! This module holds the types (config, commands, responses, inputs,
//! effects, leadership) and the input dispatch; each concern has its own:
//! `requests` (validation, admission, queueing, reads, client errors),
//! `writes` (the commit plan and what its outcome means), `due` (the due
//! index and its loading), `leadership` (one entry for every change of
//! leadership, stepping down), `lease_keeper` (the store lease as its own
//! sans-IO machine: how leadership is obtained in lease mode) and
//! `deadlines` (one table of every deadline; `poll_timeout` is its minimum).
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
//! - A leadership bound only while leading.
//! - Queued creates are accounted to their requests.

use std::collections::{BTreeMap, VecDeque};

use crate::draft::TimerDraft;
use crate::error::{ApiError, StoreFailure, ValidationError};
use crate::event::OutboxEvent;
use crate::ids::{IdGenerator, TenantId, TimerId};
use crate::lease::{LeaseConfig, LeaseHolder};
use crate::store::{CancelOp, Created, DueKey, DueTimer, FireOp, ListQuery, StoreOp, StoreReply};
use crate::time::{Now, WallMs};
use crate::timer::{FireRecord, TimerRecord};
use crate::validate::validate_all;

mod deadlines;
mod due;
mod leadership;
mod lease_keeper;
mod requests;
mod writes;

pub use deadlines::Deadline;
pub use lease_keeper::LeadershipChange;
use lease_keeper::LeaseKeeper;
use requests::unavailable;

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
    /// Leadership comes from the driver ([`Input::Leadership`]), which
    /// obtains it elsewhere (a Raft election, say). The engine follows until
    /// told it leads, and leads at the epoch and until the bound it is given;
    /// the store must fence commits by that epoch as by any other. After a
    /// commit whose outcome is unknown it stops leading until told again:
    /// the source must first make the store fence what may still be in
    /// flight.
    External,
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
    /// External mode only: leadership changed ([`LeadershipMode::External`]).
    Leadership(LeadershipChange),
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
    /// Lease mode: the lease keeper (standalone has none: `Open` leads for
    /// good; external mode neither: the driver reports leadership).
    keeper: Option<LeaseKeeper>,
    /// While leading: act only before this monotonic time (the bound of the
    /// last [`LeadershipChange::Leading`]; `None`: no bound).
    lead_until_mono: Option<u64>,
    /// Bumped whenever the index is thrown away; loads carry it.
    index_generation: u64,
    stats: EngineStats,
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
        let config_mode = config.mode;
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
            keeper: match config_mode {
                LeadershipMode::Lease(lease) => {
                    Some(LeaseKeeper::new(lease, crate::lease::first_tenure(now.wall_ms, config_seed)))
                }
                LeadershipMode::Standalone | LeadershipMode::External => None,
            },
            lead_until_mono: None,
            index_generation: 0,
            stats: EngineStats::default(),
        };
        match engine.config.mode {
            LeadershipMode::Standalone => {
                let node_id = engine.config.node_id.clone();
                engine.emit_store(Inflight::Open, StoreOp::Open { node_id });
            }
            LeadershipMode::Lease(_) => engine.pump(now),
            LeadershipMode::External => engine.leadership = Leadership::Follower { leader: None },
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
        self.expire_leadership(now);
        match input {
            Input::Request { req, command } => self.on_request(now, req, command),
            Input::StoreDone { io, result } => self.on_store_done(now, io, result),
            Input::Tick => {}
            Input::Leadership(change) => {
                assert_eq!(
                    self.config.mode,
                    LeadershipMode::External,
                    "leadership is reported in external mode only"
                );
                self.on_leadership(change);
                self.expire_leadership(now); // a bound already past ends it at once
            }
        }
        self.pump(now);
        #[cfg(debug_assertions)]
        self.validate();
    }

    /// The next effect, if any. Drain until `None` after each input.
    pub fn poll_output(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    fn on_store_done(&mut self, now: Now, io: IoId, result: Result<StoreReply, StoreFailure>) {
        let Some(what) = self.inflight.remove(&io) else {
            // A completion for an op we no longer track (cannot happen with a correct driver).
            debug_assert!(false, "StoreDone for unknown io {io}");
            return;
        };
        match (what, result) {
            (Inflight::Open, Ok(StoreReply::Opened { epoch })) => {
                self.on_leadership(LeadershipChange::Leading { epoch, until_mono: None });
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
        assert!(
            self.lead_until_mono.is_none() || matches!(self.leadership, Leadership::Leader { .. }),
            "a leadership bound only while leading"
        );
        assert_eq!(
            self.queue.creates.len(),
            self.queue.create_groups.iter().map(|g| g.count).sum::<usize>(),
            "queued creates are accounted to requests"
        );
    }
}
