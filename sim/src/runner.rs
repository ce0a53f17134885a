//! Runs one seed: a fresh OS thread, a fresh madsim runtime seeded with it,
//! and the supervisor that drives the phases and checks every promise.
//!
//! ```text
//!   start cluster + clients ─▶ safety phase: every 100 ms { apply due faults; check safety }
//!     ─▶ heal, stop clients, wait for their last operation (checking)
//!     ─▶ liveness phase: run until settled or the bound (checking) ─▶ liveness verdict + final check
//! ```
//!
//! Never two runtimes on one thread: std's `HashMap` seeding (used inside
//! tonic/h2) is only deterministic for the first runtime on a thread.
//! A panic anywhere in the simulation (an engine assertion, the model's own
//! double-record check) fails the seed with its message.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use madsim::runtime::Runtime;

use crate::clock::true_us;
use crate::cluster::Cluster;
use crate::faults::{FaultCounts, FaultInjector};
use crate::invariants::{Checker, Violation};
use crate::liveness;
use crate::options::RunOptions;
use crate::oracle::{Counters, Oracle};
use crate::seed_plan::SeedPlan;
use crate::workload::Workload;
use crate::world::World;

/// Supervisor step: faults are applied and every property checked this often.
const STEP_MS: u64 = 100;
/// Longest wait for the clients' last operations after the heal.
const CLIENT_DRAIN_MAX_MS: u64 = 45_000;
/// Simulated-time limit of one run (a hang fails instead of spinning).
const TIME_LIMIT_S: u64 = 300;
/// History lines printed with a failure.
pub const HISTORY_LINES: usize = 30;

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The plan, as printed.
    pub plan: String,
    /// Broken promises (empty: the seed passed).
    pub violations: Vec<Violation>,
    /// Relevant history for the first violation.
    pub history: Vec<String>,
    /// Hash of the observable history.
    pub trace_hash: u64,
    /// Observations.
    pub counters: Counters,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Simulated time, ms.
    pub sim_ms: u64,
    /// The whole kept history (only when asked for).
    pub trace: Vec<String>,
}

impl SeedReport {
    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `seed` in a fresh thread and reports.
pub fn run_seed(seed: u64, options: &RunOptions) -> SeedReport {
    run_seed_traced(seed, options, false)
}

/// Like [`run_seed`]; with `keep_trace`, the report carries the whole history.
pub fn run_seed_traced(seed: u64, options: &RunOptions, keep_trace: bool) -> SeedReport {
    let options = options.clone();
    std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || run_seed_here(seed, &options, keep_trace))
        .expect("spawn a seed thread")
        .join()
        .unwrap_or_else(|_| panic!("seed {seed}: the seed thread panicked outside the simulation"))
}

fn run_seed_here(seed: u64, options: &RunOptions, keep_trace: bool) -> SeedReport {
    let plan = SeedPlan::derive(seed, options);
    let plan_text = plan.to_string();
    let world = World::new(plan);
    let mut runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(Duration::from_secs(TIME_LIMIT_S));
    let supervised = world.clone();
    let outcome = catch_unwind(AssertUnwindSafe(|| runtime.block_on(supervise(supervised))));
    let (mut violations, faults, sim_ms) = match outcome {
        Ok(done) => done,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(non-text panic)".to_owned());
            let property = if message.contains("recorded twice") { "at-most-once" } else { "no-panic" };
            let violation = Violation {
                property,
                message: format!("the simulation panicked: {message}"),
                subjects: vec![],
            };
            (vec![violation], FaultCounts::default(), 0)
        }
    };
    drop(runtime);
    let oracle = lock(&world.oracle);
    violations.truncate(8);
    let history = history_for(&oracle, violations.first());
    SeedReport {
        seed,
        plan: plan_text,
        violations,
        history,
        trace_hash: oracle.trace_hash(),
        counters: oracle.counters,
        faults,
        sim_ms,
        trace: if keep_trace { oracle.trace_lines().map(|l| l.to_string()).collect() } else { Vec::new() },
    }
}

fn history_for(oracle: &Oracle, violation: Option<&Violation>) -> Vec<String> {
    let Some(violation) = violation else { return Vec::new() };
    let mut lines = oracle.history(&violation.subjects, HISTORY_LINES);
    if lines.len() < 10 {
        lines = oracle.history(&[], HISTORY_LINES);
    }
    lines
}

fn now_ms() -> u64 {
    true_us() / 1_000
}

async fn step(world: &World, checker: &mut Checker) -> Vec<Violation> {
    tokio::time::sleep(Duration::from_millis(STEP_MS)).await;
    checker.check(world)
}

/// The supervisor: phases, faults and checks. Returns what broke.
async fn supervise(world: Arc<World>) -> (Vec<Violation>, FaultCounts, u64) {
    let plan = &world.plan;
    let cluster = Cluster::start(world.clone());
    let mut faults = FaultInjector::new(plan.seed, &plan.faults, cluster.len());
    let workload = Workload::start(&world, cluster.client_node());
    let mut checker = Checker::new();

    // Safety phase.
    while now_ms() < plan.options.safety_ms {
        let found = step(&world, &mut checker).await;
        if !found.is_empty() {
            return (found, faults.counts, now_ms());
        }
        faults.step(&cluster, now_ms());
    }

    // Heal, let the clients finish their last operation.
    faults.heal(&cluster);
    workload.stop();
    let healed_ms = now_ms();
    let mut drained = std::pin::pin!(workload.join());
    loop {
        tokio::select! {
            biased;
            _ = &mut drained => break,
            found = step(&world, &mut checker) => {
                if !found.is_empty() {
                    return (found, faults.counts, now_ms());
                }
                if now_ms() - healed_ms > CLIENT_DRAIN_MAX_MS {
                    let violation = Violation {
                        property: "liveness-clients",
                        message: format!("client operations still unfinished {CLIENT_DRAIN_MAX_MS} ms after the heal"),
                        subjects: vec![],
                    };
                    return (vec![violation], faults.counts, now_ms());
                }
            }
        }
    }
    world.trace("clients stopped; liveness phase".to_owned());

    // Liveness phase.
    let live_from_ms = now_ms();
    let bound_ms = liveness::bound_ms(plan);
    loop {
        let found = step(&world, &mut checker).await;
        if !found.is_empty() {
            return (found, faults.counts, now_ms());
        }
        if liveness::settled(&world) || now_ms() - live_from_ms >= bound_ms {
            break;
        }
    }
    let mut found = liveness::check(&world);
    found.extend(checker.check(&world));
    world.trace(format!("end: {} violations", found.len()));
    (found, faults.counts, now_ms())
}
