//! The fault plan: [`plan`] turns the seed into a timed list of faults
//! (printed with the seed, so a failing seed can be read); the injector in
//! [`crate::faults`] applies it to the running cluster.
//!
//! Faults target "the leader" (resolved when the fault fires, from the
//! database's lease table) more often than a random node: the dangerous
//! moments are a leader that pauses past its lease, loses the database, or
//! whose clock jumps.

use std::fmt;

use minoots_core::lease::LeaseConfig;

use crate::options::{FaultSet, RunOptions};
use crate::rng::{SimRng, stream};

/// Who a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The lease holder when the fault fires (a random node if there is none).
    Leader,
    /// Node `i` (0-based).
    Node(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Leader => f.write_str("leader"),
            Target::Node(i) => write!(f, "n{}", i + 1),
        }
    }
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Kill the node's process; restart it (fresh driver, no local state) after `down_ms`.
    Crash { target: Target, down_ms: u64 },
    /// Stop scheduling the node's tasks for `for_ms` (a GC pause; may exceed the lease TTL).
    Pause { target: Target, for_ms: u64 },
    /// Cut the node off from everyone (database, clients, peers).
    Isolate { target: Target, for_ms: u64 },
    /// Cut the link between the node and the database, both ways.
    CutDb { target: Target, for_ms: u64 },
    /// Cut the link between the clients and the node, both ways.
    CutClients { target: Target, for_ms: u64 },
    /// Every database operation takes up to `latency_ms` longer (jittered, so replies reorder).
    DbSlow { latency_ms: u64, for_ms: u64 },
    /// The database is unreachable.
    DbDown { for_ms: u64 },
    /// Messages are lost with `loss_percent` probability and delayed up to `latency_max_ms`.
    NetLoss { loss_percent: u64, latency_max_ms: u64, for_ms: u64 },
    /// The node's wall clock jumps by `delta_ms` (monotonic time does not).
    ClockStep { target: Target, delta_ms: i64 },
    /// The node's process freezes and a successor with the same node id
    /// starts on a spare machine (a replaced container whose predecessor is
    /// frozen, not dead); the old process resumes after `old_paused_ms`, and
    /// both live on.
    Successor { target: Target, old_paused_ms: u64 },
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Crash { target, down_ms } => write!(f, "crash {target}, restart after {down_ms} ms"),
            FaultAction::Pause { target, for_ms } => write!(f, "pause {target} for {for_ms} ms"),
            FaultAction::Isolate { target, for_ms } => write!(f, "isolate {target} for {for_ms} ms"),
            FaultAction::CutDb { target, for_ms } => write!(f, "cut {target} <-> db for {for_ms} ms"),
            FaultAction::CutClients { target, for_ms } => {
                write!(f, "cut clients <-> {target} for {for_ms} ms")
            }
            FaultAction::DbSlow { latency_ms, for_ms } => {
                write!(f, "db slow (up to +{latency_ms} ms) for {for_ms} ms")
            }
            FaultAction::DbDown { for_ms } => write!(f, "db unreachable for {for_ms} ms"),
            FaultAction::NetLoss { loss_percent, latency_max_ms, for_ms } => {
                write!(f, "network loss {loss_percent}% latency up to {latency_max_ms} ms for {for_ms} ms")
            }
            FaultAction::ClockStep { target, delta_ms } => {
                write!(f, "clock step {target} by {delta_ms:+} ms")
            }
            FaultAction::Successor { target, old_paused_ms } => {
                write!(f, "start a successor of {target}, resume the old process after {old_paused_ms} ms")
            }
        }
    }
}

/// A fault at a time (ms since the run began).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEvent {
    /// When it starts.
    pub at_ms: u64,
    /// What.
    pub action: FaultAction,
}

/// Most faults planned per seed.
pub const FAULTS_MAX: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Clock,
    Partition,
    Crash,
    Pause,
    Db,
    Loss,
}

fn kinds(set: FaultSet) -> Vec<Kind> {
    let all = [
        (set.clock, Kind::Clock),
        (set.partition, Kind::Partition),
        (set.crash, Kind::Crash),
        (set.pause, Kind::Pause),
        (set.db, Kind::Db),
        (set.loss, Kind::Loss),
    ];
    all.iter().filter(|(on, _)| *on).map(|(_, k)| *k).collect()
}

/// The fault schedule of `seed`: 3 to [`FAULTS_MAX`] faults during the safety
/// phase (none in its first second or its last second), in time order.
pub fn plan(seed: u64, options: &RunOptions, lease: &LeaseConfig) -> Vec<FaultEvent> {
    let kinds = kinds(options.faults);
    if kinds.is_empty() || options.safety_ms < 3_000 {
        return Vec::new();
    }
    let mut rng = SimRng::new(seed, stream::FAULTS);
    let nodes = options.nodes as u64;
    let ttl = lease.ttl_ms;
    let count = rng.range(3, FAULTS_MAX + 1);
    let mut events: Vec<FaultEvent> = (0..count)
        .map(|_| {
            let at_ms = rng.range(1_000, options.safety_ms - 1_000);
            let target = |rng: &mut SimRng, leader_percent: u64| {
                if rng.chance(leader_percent) {
                    Target::Leader
                } else {
                    Target::Node(rng.below(nodes) as usize)
                }
            };
            let action = match *rng.pick(&kinds) {
                Kind::Crash => {
                    FaultAction::Crash { target: target(&mut rng, 70), down_ms: rng.range(200, 3_000) }
                }
                Kind::Pause => {
                    // Half of the pauses outlast the lease: the classic deposed-leader case.
                    let for_ms = if rng.chance(50) {
                        rng.range(ttl + 200, 2 * ttl + 1_000)
                    } else {
                        rng.range(50, ttl / 2)
                    };
                    FaultAction::Pause { target: target(&mut rng, 80), for_ms }
                }
                Kind::Partition => {
                    let target = target(&mut rng, 60);
                    let for_ms = rng.range(300, 3_000);
                    match rng.below(3) {
                        0 => FaultAction::Isolate { target, for_ms },
                        1 => FaultAction::CutDb { target, for_ms },
                        _ => FaultAction::CutClients { target, for_ms },
                    }
                }
                Kind::Db => {
                    if rng.chance(50) {
                        let latency_ms = *rng.pick(&[30, 150, 400, 900, 1_500, 3_000]);
                        FaultAction::DbSlow { latency_ms, for_ms: rng.range(500, 3_000) }
                    } else {
                        FaultAction::DbDown { for_ms: rng.range(200, 2_500) }
                    }
                }
                Kind::Loss => FaultAction::NetLoss {
                    loss_percent: rng.range(1, 11),
                    latency_max_ms: *rng.pick(&[20, 100, 300, 600]),
                    for_ms: rng.range(500, 3_000),
                },
                Kind::Clock => {
                    let magnitude = rng.range(200, 2_001) as i64;
                    // Forward steps more often: they are what makes a node fire early.
                    let delta_ms = if rng.chance(60) { magnitude } else { -magnitude };
                    FaultAction::ClockStep { target: target(&mut rng, 60), delta_ms }
                }
            };
            FaultEvent { at_ms, action }
        })
        .collect();
    // A third of the seeds with crashes or pauses also replace a node while
    // its old process is frozen (drawn apart, so the faults above are the
    // same with or without this one).
    let mut successors = SimRng::new(seed, stream::SUCCESSORS);
    if (options.faults.crash || options.faults.pause) && successors.chance(33) {
        let at_ms = successors.range(1_000, options.safety_ms - 1_000);
        // Shorter than the lease (it wakes believing it leads) or longer.
        let old_paused_ms =
            if successors.chance(50) { successors.range(50, ttl) } else { successors.range(ttl, 3 * ttl) };
        let target = if successors.chance(80) {
            Target::Leader
        } else {
            Target::Node(successors.below(nodes) as usize)
        };
        events.push(FaultEvent { at_ms, action: FaultAction::Successor { target, old_paused_ms } });
    }
    events.sort_by_key(|e| e.at_ms);
    events
}
