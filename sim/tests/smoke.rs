//! A quick guard for `cargo test` under `--cfg madsim`: a fault-free cluster
//! keeps every promise, acknowledges work and fires it, and the same seed
//! replays the same history. The real sweep is `scripts/sim`.
#![cfg(madsim)]

use minoots_sim::options::{DEFAULT_SAFETY_MS, FaultSet, RunOptions};
use minoots_sim::runner::run_seed;

fn options(faults: FaultSet) -> RunOptions {
    RunOptions { nodes: 3, faults, plant: None, safety_ms: DEFAULT_SAFETY_MS }
}

#[test]
fn a_fault_free_cluster_keeps_every_promise_and_does_work() {
    for seed in 1..=3 {
        let report = run_seed(seed, &options(FaultSet::default()));
        assert!(report.passed(), "seed {seed}: {:?}\n{}", report.violations, report.history.join("\n"));
        assert!(report.counters.client_acks > 50, "seed {seed}: too little work acknowledged");
        assert!(report.counters.fires_recorded > 50, "seed {seed}: too few fires");
        assert!(report.counters.events_streamed > 0, "seed {seed}: the gRPC event streams delivered nothing");
    }
}

#[test]
fn the_same_seed_replays_the_same_history() {
    let a = run_seed(7, &options(FaultSet::ALL));
    let b = run_seed(7, &options(FaultSet::ALL));
    let c = run_seed(8, &options(FaultSet::ALL));
    assert_eq!(a.trace_hash, b.trace_hash, "seed 7 replayed differently");
    assert_ne!(a.trace_hash, c.trace_hash, "seeds 7 and 8 produced the same history");
}

#[test]
fn a_planted_bug_is_caught() {
    let planted = RunOptions { plant: Some("no-due-check".into()), ..options(FaultSet::ALL) };
    let caught =
        (1..=20).any(|seed| run_seed(seed, &planted).violations.iter().any(|v| v.property == "never-early"));
    assert!(caught, "no-due-check went unnoticed for 20 seeds");
}
