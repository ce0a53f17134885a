//! A runtime-free stepping harness: one or more engines driven against one
//! [`StoreModel`] with virtual time, synchronously. Store ops complete in the
//! order the engines emit them (the driver's contract), optionally with a
//! store clock skewed from the engine's. Tests and property tests use it to
//! check the engine's exact behaviour without tokio or I/O.

use std::collections::BTreeMap;

use crate::engine::{Command, Effect, Engine, EngineConfig, Input, RequestId, Response};
use crate::error::ApiError;
use crate::event::OutboxEvent;
use crate::model::StoreModel;
use crate::time::Now;

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
    /// When true, the next commit fails (outcome: not applied).
    pub fail_next_commit: bool,
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
            fail_next_commit: false,
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
                    let result = if self.fail_next_commit && matches!(op, crate::store::StoreOp::Commit(_)) {
                        self.fail_next_commit = false;
                        Err(crate::error::StoreFailure("injected".into()))
                    } else {
                        Ok(self.store.apply(self.now.wall_ms + self.store_skew_ms, &op))
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
