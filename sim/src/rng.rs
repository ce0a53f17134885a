//! Seeded randomness for every choice the simulator makes itself (fault
//! plan, clocks, workload). Each concern draws from its own ChaCha stream
//! of the run's seed, so adding a draw in one place never shifts the
//! choices made in another, and nothing depends on OS entropy.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// Stream numbers: one per concern.
pub mod stream {
    /// Cluster-wide options (lease timing, node clocks).
    pub const PLAN: u64 = 1;
    /// The fault schedule.
    pub const FAULTS: u64 = 2;
    /// Successor incarnations added to the fault schedule (their own stream,
    /// so the rest of a seed's plan is unchanged by them).
    pub const SUCCESSORS: u64 = 3;
    /// Client `i` uses `CLIENT_BASE + i`.
    pub const CLIENT_BASE: u64 = 100;
}

/// A deterministic generator for one concern of one seed.
#[derive(Debug, Clone)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// The generator of `stream` for `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self(rng)
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value to return");
        self.0.next_u64() % n
    }

    /// Uniform in `[lo, hi)`; `hi` must exceed `lo`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + self.below(hi - lo)
    }

    /// Uniform in `[lo, hi)` for signed values.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + self.below(hi.abs_diff(lo)) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
