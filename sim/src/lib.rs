//! # minoots-sim
//!
//! Deterministic simulation of a MINOOTS cluster under madsim: N nodes of
//! the real driver and gRPC service, a simulated database holding the
//! reference `StoreModel`, seeded clients, seeded faults (clock skew and
//! steps, partitions, crashes, pauses, a slow or unreachable database,
//! message loss), and checkers for every promise of DESIGN.md §1. Every
//! choice derives from one seed; the same seed replays the same history.
//!
//! - [`options`] → [`seed_plan`] (with [`fault_plan`]): what one seed will do,
//!   derived and printed before anything runs.
//! - [`world`]: what the supervisor holds — the plan, the database's state
//!   (the reference model), the oracle, the node clocks.
//! - [`cluster`]: the nodes and the database node acting on the world.
//! - [`db`]: the database server and the nodes' `NetStore`.
//! - [`clock`]: true time, the store clock, per-node skewed clocks.
//! - [`faults`]: the injector applying the fault plan to the cluster.
//! - [`workload`]: the gRPC clients.
//! - [`oracle`]: what was observed (client acks, grants, sends, fires, events, trace).
//! - [`invariants`]: safety properties, one per file.
//! - [`liveness`]: heal, then everything due must fire.
//! - [`runner`]: one seed in a fresh thread and runtime.
//!
//! Compiled only with `--cfg madsim` (this keeps the `planted-bugs` feature
//! of `minoots-core` out of every normal build). Run it with the `cargo sim`
//! alias (`.cargo/config.toml`: release build into `target/sim`):
//!
//! ```text
//! cargo sim run --seed 1 --count 1000 --nodes 3 --faults all --jobs 2
//! cargo sim reproduce 42 --nodes 3 --faults all [--grep <text>]...
//! cargo sim determinism --count 50
//! cargo sim plant-check --max-seeds 300
//! cargo sim regressions sim/regressions.txt
//! scripts/sim                                   # the CI sweep: all of the above
//! ```
//!
//! The modules form layers (plan → world → database and cluster → faults,
//! workload, checkers → runner); none imports one that imports it back
//! (`scripts/module-cycles` checks it in CI).
#![cfg(madsim)]
#![forbid(unsafe_code)]

pub mod clock;
pub mod cluster;
pub mod db;
pub mod fault_plan;
pub mod faults;
pub mod invariants;
pub mod liveness;
pub mod options;
pub mod oracle;
pub mod rng;
pub mod runner;
pub mod seed_plan;
pub mod workload;
pub mod world;
