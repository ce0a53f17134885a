//! The per-seed plan derived from the run options: every choice the
//! simulator makes comes from the seed through here or through
//! [`crate::fault_plan`] and [`crate::workload`], and is printed, so a
//! failing seed can be read and replayed exactly.

use std::fmt;

use minoots_core::lease::LeaseConfig;

use crate::clock::{DRIFT_MAX_PPM, WALL_OFFSET_MAX_MS};
use crate::fault_plan::{self, FaultEvent};
use crate::options::RunOptions;
use crate::rng::{SimRng, stream};

/// Node clock settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPlan {
    /// Initial wall offset from true time.
    pub offset_ms: i64,
    /// Rate error in parts per million.
    pub drift_ppm: i64,
}

/// Everything derived from one seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    /// The seed.
    pub seed: u64,
    /// The run's options.
    pub options: RunOptions,
    /// Lease timing given to every node.
    pub lease: LeaseConfig,
    /// Store clock minus true time.
    pub store_offset_ms: i64,
    /// One per node.
    pub clocks: Vec<ClockPlan>,
    /// Concurrent clients.
    pub clients: usize,
    /// Pause between a client's operations, `[min, max)` ms.
    pub think_ms: (u64, u64),
    /// The fault schedule, in time order.
    pub faults: Vec<FaultEvent>,
}

impl SeedPlan {
    /// Derives the plan of `seed`.
    pub fn derive(seed: u64, options: &RunOptions) -> SeedPlan {
        let mut rng = SimRng::new(seed, stream::PLAN);
        let ttl_ms = *rng.pick(&[1_000, 1_500, 2_000]);
        let lease = LeaseConfig {
            ttl_ms,
            renew_every_ms: ttl_ms / 4,
            drift_bound_ppm: 50_000,
            margin_ms: 100,
            acquire_retry_ms: 250,
        };
        lease.check().expect("the simulator's lease timing is valid");
        assert!(
            lease.drift_bound_ppm as i64 > DRIFT_MAX_PPM,
            "node drift must stay inside the engine's drift bound"
        );
        let clock_faults = options.faults.clock;
        let store_offset_ms = if clock_faults { rng.range_i64(-500, 501) } else { 0 };
        let clocks = (0..options.nodes)
            .map(|_| {
                if clock_faults {
                    // Skewed towards fast clocks: a fast clock is what tempts a node to fire early.
                    let offset_ms =
                        rng.range_i64(-1_500, 2_501).clamp(-WALL_OFFSET_MAX_MS, WALL_OFFSET_MAX_MS);
                    let drift_ppm = rng.range_i64(-DRIFT_MAX_PPM, DRIFT_MAX_PPM + 1);
                    ClockPlan { offset_ms, drift_ppm }
                } else {
                    ClockPlan { offset_ms: 0, drift_ppm: 0 }
                }
            })
            .collect();
        let clients = rng.range(2, 5) as usize;
        let think_lo = rng.range(20, 120);
        let think_ms = (think_lo, think_lo + rng.range(50, 300));
        let faults = fault_plan::plan(seed, options, &lease);
        SeedPlan { seed, options: options.clone(), lease, store_offset_ms, clocks, clients, think_ms, faults }
    }
}

impl fmt::Display for SeedPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "seed {}: nodes={} faults={} plant={} safety_ms={}",
            self.seed,
            o.nodes,
            o.faults,
            o.plant.as_deref().unwrap_or("none"),
            o.safety_ms
        )?;
        let l = &self.lease;
        writeln!(
            f,
            "  lease: ttl_ms={} renew_every_ms={} drift_bound_ppm={} margin_ms={} acquire_retry_ms={}",
            l.ttl_ms, l.renew_every_ms, l.drift_bound_ppm, l.margin_ms, l.acquire_retry_ms
        )?;
        writeln!(f, "  store clock offset_ms={}", self.store_offset_ms)?;
        for (i, c) in self.clocks.iter().enumerate() {
            writeln!(f, "  n{} clock: offset_ms={} drift_ppm={}", i + 1, c.offset_ms, c.drift_ppm)?;
        }
        writeln!(f, "  clients={} think_ms={}..{}", self.clients, self.think_ms.0, self.think_ms.1)?;
        for event in &self.faults {
            writeln!(f, "  fault at {:>6} ms: {}", event.at_ms, event.action)?;
        }
        Ok(())
    }
}
