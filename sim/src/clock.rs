//! Time in the simulation. madsim has one global clock; this module derives
//! from it the *true* time (what the checkers judge by), the store's clock
//! (true time plus a fixed offset) and one [`SimClock`] per node machine with
//! its own offset, drift rate and wall-clock steps (NTP jumps).
//!
//! ```text
//!   true_us      = simulated time since the run began (µs)
//!   node mono_ms = true_us × (1 + drift_ppm/10⁶) / 1000          never decreases
//!   node wall_ms = BASE_WALL_MS + offset_ms + Σ steps_ms + mono_ms  may jump either way
//! ```
//!
//! The drift is bounded by [`DRIFT_MAX_PPM`], below the engine's lease
//! `drift_bound_ppm`: within that bound a node that believes it leads really
//! does, by the store's clock. A node's clock belongs to the machine, not to
//! the process, so it survives crashes and restarts.

use std::sync::Mutex;

use minoots_core::Now;
use minoots_core::time::WallMs;
use minoots_node::Clock;

/// Wall time at the start of every run: 2026-01-01T00:00:00Z.
pub const BASE_WALL_MS: WallMs = 1_767_225_600_000;

/// Largest drift rate given to a node clock, in parts per million (3%). The
/// lease's drift bound (default 5%) must exceed it.
pub const DRIFT_MAX_PPM: i64 = 30_000;

/// Largest absolute total wall offset (initial offset plus steps) of a node clock.
pub const WALL_OFFSET_MAX_MS: i64 = 3_000;

/// Microseconds of simulated time since the run began (the checkers' time axis).
pub fn true_us() -> u64 {
    madsim::time::TimeHandle::current().elapsed().as_micros() as u64
}

/// True wall time in milliseconds.
pub fn true_wall_ms() -> WallMs {
    BASE_WALL_MS + (true_us() / 1_000) as WallMs
}

/// The skewed clock of one node machine.
#[derive(Debug)]
pub struct SimClock {
    offset_ms: i64,
    drift_ppm: i64,
    steps_ms: Mutex<i64>,
}

impl SimClock {
    /// A clock `offset_ms` ahead of true wall time (negative: behind), running
    /// `drift_ppm` fast (negative: slow).
    pub fn new(offset_ms: i64, drift_ppm: i64) -> Self {
        assert!(drift_ppm.abs() <= DRIFT_MAX_PPM, "drift {drift_ppm} ppm beyond the simulated bound");
        Self { offset_ms, drift_ppm, steps_ms: Mutex::new(0) }
    }

    /// Steps the wall clock by `delta_ms`, keeping the total offset within
    /// [`WALL_OFFSET_MAX_MS`]; returns the step actually applied.
    pub fn step(&self, delta_ms: i64) -> i64 {
        let mut steps = self.steps_ms.lock().expect("clock lock");
        let total = (self.offset_ms + *steps + delta_ms).clamp(-WALL_OFFSET_MAX_MS, WALL_OFFSET_MAX_MS);
        let applied = total - self.offset_ms - *steps;
        *steps += applied;
        applied
    }

    /// Current wall offset from true time, excluding drift.
    pub fn wall_offset_ms(&self) -> i64 {
        self.offset_ms + *self.steps_ms.lock().expect("clock lock")
    }

    /// Drift rate in parts per million.
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }
}

impl Clock for SimClock {
    fn now(&self) -> Now {
        let true_us = i128::from(true_us());
        let local_us = true_us + true_us * i128::from(self.drift_ppm) / 1_000_000;
        let mono_ms = (local_us / 1_000) as u64;
        let wall_ms = BASE_WALL_MS + self.wall_offset_ms() + mono_ms as i64;
        Now { wall_ms, mono_ms }
    }
}
