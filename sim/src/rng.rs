//! Seeded randomness for every choice the simulator makes itself (fault
//! plan, clocks, workload): the project's one seeded generator
//! ([`minoots_testkit::rng::SeededRng`]), and which of its streams each
//! concern draws from, so adding a draw in one place never shifts the
//! choices made in another.

pub use minoots_testkit::rng::SeededRng as SimRng;

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
