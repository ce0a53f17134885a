//! A runtime-free stepping harness: one or more engines driven against one
//! [`StoreModel`] with virtual time, synchronously. Store ops complete in the
//! order the engines emit them (the driver's contract), optionally with a
//! store clock skewed from the engine's. Tests and property tests use it to
//! check the engine's exact behaviour without tokio or I/O. Behind the
//! `harness` feature: test support, never in a server build.

use std::collections::BTreeMap;

use crate::engine::{Command, Effect, Engine, EngineConfig, Input, RequestId, Response};
use crate::error::{ApiError, StoreFailure};
use crate::event::OutboxEvent;
use crate::model::StoreModel;
use crate::store::StoreReply;
use crate::time::Now;

/// How the harness fails one commit: each way a real driver and store can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitFailure {
    /// The driver refuses to send it (its lease ended): nothing applies,
    /// `StoreFailure::NotSent`.
    NotSent,
    /// The request is lost on its way: nothing applies, `StoreFailure::Unknown`.
    LostRequest,
    /// The store applies it and the reply is lost (the dangerous case):
    /// `StoreFailure::Unknown`; its events reach subscribers through the
    /// outbox, as the relay's scan would deliver them.
    LostReply,
}

/// Bound on effect-processing rounds per step (guards against livelock bugs).
const ROUNDS_MAX: usize = 10_000;

/// One engine and a reference store, with virtual time.
#[derive(Debug)]
pub struct Harness {
    /// The engine under test.
    pub engine: Engine,
    /// The store.
    pub store: StoreModel,
    /// Engine time.
    pub now: Now,
    /// Store clock minus engine wall clock.
    pub store_skew_ms: i64,
    /// Replies received, by request.
    pub replies: BTreeMap<RequestId, Result<Response, ApiError>>,
    /// Events published, in order.
    pub published: Vec<OutboxEvent>,
    /// How the next commit fails, if it does.
    pub fail_next_commit: Option<CommitFailure>,
    next_req: RequestId,
    config: EngineConfig,
}

impl Harness {
    /// A fresh store and an engine started at `now`, run until idle.
    pub fn new(config: EngineConfig, now: Now) -> Self {
        let engine = Engine::new(config.clone(), now);
        let mut h = Self {
            engine,
            store: StoreModel::new(),
            now,
            store_skew_ms: 0,
            replies: BTreeMap::new(),
            published: Vec::new(),
            fail_next_commit: None,
            next_req: 1,
            config,
        };
        h.run_effects();
        h
    }

    /// Simulates a crash and restart: a new engine on the same store. Pending
    /// replies of the old engine are lost (as a crash loses them).
    pub fn restart(&mut self, seed: u64) {
        let mut config = self.config.clone();
        config.seed = seed;
        self.engine = Engine::new(config, self.now);
        self.run_effects();
    }

    /// Sends a command; returns its request id. Runs until idle.
    pub fn request(&mut self, command: Command) -> RequestId {
        let req = self.next_req;
        self.next_req += 1;
        self.engine.handle_input(self.now, Input::Request { req, command });
        self.run_effects();
        req
    }

    /// Takes the reply of `req`, if it came.
    pub fn take_reply(&mut self, req: RequestId) -> Option<Result<Response, ApiError>> {
        self.replies.remove(&req)
    }

    /// Advances virtual time by `ms`, ticking at every deadline the engine asks for on the way.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now.mono_ms + ms;
        for _ in 0..ROUNDS_MAX {
            let next = self.engine.poll_timeout().unwrap_or(end).min(end).max(self.now.mono_ms);
            let step = next - self.now.mono_ms;
            self.now.mono_ms += step;
            self.now.wall_ms += step as i64;
            self.engine.handle_input(self.now, Input::Tick);
            self.run_effects();
            if self.now.mono_ms >= end {
                return;
            }
        }
        panic!("advance({ms}) did not reach its end within {ROUNDS_MAX} ticks");
    }

    /// Steps the engine's wall clock by `ms` (NTP step); monotonic time is unchanged.
    pub fn step_wall(&mut self, ms: i64) {
        self.now.wall_ms += ms;
    }

    /// Carries out effects until the engine has none left.
    pub fn run_effects(&mut self) {
        for _ in 0..ROUNDS_MAX {
            let Some(effect) = self.engine.poll_output() else { return };
            match effect {
                Effect::Store { io, op } => {
                    let store_now_ms = self.now.wall_ms + self.store_skew_ms;
                    let failure = match op {
                        crate::store::StoreOp::Commit(_) => self.fail_next_commit.take(),
                        _ => None,
                    };
                    let result = match failure {
                        None => self.store.apply(store_now_ms, &op),
                        Some(CommitFailure::NotSent) => Err(StoreFailure::NotSent("injected".into())),
                        Some(CommitFailure::LostRequest) => Err(StoreFailure::Unknown("injected".into())),
                        Some(CommitFailure::LostReply) => {
                            if let Ok(StoreReply::Committed { events, .. }) =
                                self.store.apply(store_now_ms, &op)
                            {
                                self.published.extend(events);
                            }
                            Err(StoreFailure::Unknown("injected after the commit applied".into()))
                        }
                    };
                    self.engine.handle_input(self.now, Input::StoreDone { io, result });
                }
                Effect::Reply { req, result } => {
                    self.replies.insert(req, result);
                }
                Effect::Publish { events } => self.published.extend(events),
            }
        }
        panic!("the engine kept producing effects for {ROUNDS_MAX} rounds");
    }
}

/// One node of a [`Cluster`].
#[derive(Debug)]
pub struct ClusterNode {
    /// Its engine.
    pub engine: Engine,
    /// Effects emitted but not yet carried out (held while paused).
    pub pending: std::collections::VecDeque<Effect>,
    /// A paused node receives no input and carries out nothing (a GC pause).
    pub paused: bool,
    /// Replies it gave.
    pub replies: BTreeMap<RequestId, Result<Response, ApiError>>,
    /// While true, every store operation of this node fails (a partition from the store).
    pub store_down: bool,
    config: EngineConfig,
}

/// Several engines sharing one [`StoreModel`], with one true clock. Store
/// operations apply when the node carries them out, at the true time (the
/// store's clock); a paused node's operations wait — so a commit it emitted
/// before a pause reaches the store only after it resumes, as with a real
/// GC pause between building a request and sending it.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<ClusterNode>,
    /// The shared store.
    pub store: StoreModel,
    /// True time (every node's clock, and the store's).
    pub now: Now,
    next_req: RequestId,
}

impl Cluster {
    /// Engines with these configs, started at `now`.
    pub fn new(configs: Vec<EngineConfig>, now: Now) -> Self {
        let nodes = configs
            .into_iter()
            .map(|config| ClusterNode {
                engine: Engine::new(config.clone(), now),
                pending: Default::default(),
                paused: false,
                replies: BTreeMap::new(),
                store_down: false,
                config,
            })
            .collect();
        let mut cluster = Self { nodes, store: StoreModel::new(), now, next_req: 1 };
        cluster.settle();
        cluster
    }

    /// Sends a command to node `i`; returns its request id.
    pub fn request(&mut self, i: usize, command: Command) -> RequestId {
        let req = self.next_req;
        self.next_req += 1;
        self.nodes[i].engine.handle_input(self.now, Input::Request { req, command });
        self.settle();
        req
    }

    /// Pauses node `i`: it stops receiving input and carrying out effects.
    pub fn pause(&mut self, i: usize) {
        self.collect(i);
        self.nodes[i].paused = true;
    }

    /// Resumes node `i`: it first carries out what it held, then sees the time.
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].paused = false;
        self.settle();
        self.nodes[i].engine.handle_input(self.now, Input::Tick);
        self.settle();
    }

    /// Crashes node `i` and starts a fresh engine in its place, with a new
    /// id seed (as a real restart draws one: two incarnations sharing a seed
    /// would mint the same timer ids).
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.config.seed = node.config.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        node.engine = Engine::new(node.config.clone(), self.now);
        node.pending.clear();
        node.paused = false;
        self.settle();
    }

    /// Starts a second incarnation of node `i` — the same node id, a new id
    /// seed — as a new node, while node `i` lives on (paused, typically: a
    /// replaced container whose predecessor is frozen, not dead). Returns
    /// the new node's index.
    pub fn start_successor(&mut self, i: usize) -> usize {
        let mut config = self.nodes[i].config.clone();
        config.seed = config.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.nodes.push(ClusterNode {
            engine: Engine::new(config.clone(), self.now),
            pending: Default::default(),
            paused: false,
            replies: BTreeMap::new(),
            store_down: false,
            config,
        });
        self.settle();
        self.nodes.len() - 1
    }

    /// Advances true time by `ms`, ticking each running node at its deadlines.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now.mono_ms + ms;
        for _ in 0..ROUNDS_MAX {
            let next = self
                .nodes
                .iter()
                .filter(|n| !n.paused)
                .filter_map(|n| n.engine.poll_timeout())
                .min()
                .unwrap_or(end)
                .clamp(self.now.mono_ms, end);
            let step = next - self.now.mono_ms;
            self.now.mono_ms += step;
            self.now.wall_ms += step as i64;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].paused {
                    self.nodes[i].engine.handle_input(self.now, Input::Tick);
                }
            }
            self.settle();
            if self.now.mono_ms >= end {
                return;
            }
        }
        panic!("advance({ms}) did not reach its end within {ROUNDS_MAX} rounds");
    }

    /// Indexes of the nodes that believe they lead.
    pub fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                matches!(self.nodes[i].engine.leadership(), crate::engine::Leadership::Leader { .. })
            })
            .collect()
    }

    fn collect(&mut self, i: usize) {
        while let Some(effect) = self.nodes[i].engine.poll_output() {
            self.nodes[i].pending.push_back(effect);
        }
    }

    /// Carries out every running node's effects until none is left.
    fn settle(&mut self) {
        for _ in 0..ROUNDS_MAX {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                if self.nodes[i].paused {
                    continue;
                }
                self.collect(i);
                while let Some(effect) = self.nodes[i].pending.pop_front() {
                    progressed = true;
                    match effect {
                        Effect::Store { io, op } => {
                            let result = if self.nodes[i].store_down {
                                Err(StoreFailure::Unknown("partitioned from the store".into()))
                            } else {
                                self.store.apply(self.now.wall_ms, &op)
                            };
                            self.nodes[i].engine.handle_input(self.now, Input::StoreDone { io, result });
                        }
                        Effect::Reply { req, result } => {
                            self.nodes[i].replies.insert(req, result);
                        }
                        Effect::Publish { .. } => {}
                    }
                    self.collect(i);
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("the cluster kept producing effects for {ROUNDS_MAX} rounds");
    }
}
