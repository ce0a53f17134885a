//! The fault plan and its injector. [`plan`] turns the seed into a timed
//! list of faults (printed with the seed); [`FaultInjector`] applies them to
//! the running cluster and undoes each when its window ends.
//!
//! Faults target "the leader" (resolved when the fault fires, from the
//! database's lease table) more often than a random node: the dangerous
//! moments are a leader that pauses past its lease, loses the database, or
//! whose clock jumps.
//!
//! Windows overlap freely: each node keeps one `until` per fault kind, a new
//! window extends it, and the fault is undone when the latest window ends.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use minoots_core::lease::LeaseConfig;

use crate::cluster::Cluster;
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

/// What the injector did, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Kills.
    pub crashes: u64,
    /// Pauses.
    pub pauses: u64,
    /// Partitions of any kind.
    pub partitions: u64,
    /// Wall-clock steps.
    pub clock_steps: u64,
    /// Database outages and slow phases.
    pub db_faults: u64,
    /// Loss/delay phases.
    pub loss_phases: u64,
    /// Successor processes started beside a frozen predecessor.
    pub successors: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct NodeFaults {
    down_until: Option<u64>,
    paused_until: Option<u64>,
    isolated_until: Option<u64>,
    db_cut_until: Option<u64>,
    clients_cut_until: Option<u64>,
}

/// Applies a fault plan to a cluster as simulated time passes.
pub struct FaultInjector {
    pending: VecDeque<FaultEvent>,
    nodes: Vec<NodeFaults>,
    db_down_until: Option<u64>,
    /// Active slow phases: (until, latency).
    db_slow: Vec<(u64, u64)>,
    /// Active loss phases: (until, loss percent, latency max).
    loss: Vec<(u64, u64, u64)>,
    /// Picks a node when a "leader" fault finds no leader.
    rng: SimRng,
    /// What was done.
    pub counts: FaultCounts,
}

impl FaultInjector {
    /// An injector for `events` on `nodes` nodes.
    pub fn new(seed: u64, events: &[FaultEvent], nodes: usize) -> Self {
        Self {
            pending: events.iter().copied().collect(),
            nodes: vec![NodeFaults::default(); nodes],
            db_down_until: None,
            db_slow: Vec::new(),
            loss: Vec::new(),
            rng: SimRng::new(seed, stream::FAULTS + 1),
            counts: FaultCounts::default(),
        }
    }

    /// Starts the faults due by `now_ms` and ends the windows that are over.
    pub fn step(&mut self, cluster: &Cluster, now_ms: u64) {
        while self.pending.front().is_some_and(|e| e.at_ms <= now_ms) {
            let event = self.pending.pop_front().expect("checked front");
            self.start(cluster, now_ms, event.action);
        }
        self.expire(cluster, now_ms);
    }

    /// Ends every fault now (the liveness phase begins) and drops the rest of the plan.
    pub fn heal(&mut self, cluster: &Cluster) {
        self.pending.clear();
        self.expire(cluster, u64::MAX);
        cluster.trace("heal: every fault ended".to_owned());
    }

    fn resolve(&mut self, cluster: &Cluster, target: Target) -> (usize, String) {
        match target {
            Target::Node(i) => (i, format!("n{}", i + 1)),
            Target::Leader => match cluster.leader() {
                Some(i) => (i, format!("n{} (leader)", i + 1)),
                None => {
                    let i = self.rng.below(self.nodes.len() as u64) as usize;
                    (i, format!("n{} (no leader)", i + 1))
                }
            },
        }
    }

    fn start(&mut self, cluster: &Cluster, now: u64, action: FaultAction) {
        let extend = |slot: &mut Option<u64>, until: u64| {
            let was = slot.is_some();
            *slot = Some(slot.map_or(until, |u| u.max(until)));
            !was
        };
        match action {
            FaultAction::Crash { target, down_ms } => {
                let (i, who) = self.resolve(cluster, target);
                let node = &mut self.nodes[i];
                if node.down_until.is_some() {
                    return;
                }
                node.down_until = Some(now + down_ms);
                node.paused_until = None;
                self.counts.crashes += 1;
                cluster.kill(i);
                cluster.trace(format!("fault: crash {who} for {down_ms} ms"));
            }
            FaultAction::Pause { target, for_ms } => {
                let (i, who) = self.resolve(cluster, target);
                let node = &mut self.nodes[i];
                if node.down_until.is_some() {
                    return;
                }
                if extend(&mut node.paused_until, now + for_ms) {
                    cluster.pause(i);
                }
                self.counts.pauses += 1;
                cluster.trace(format!("fault: pause {who} for {for_ms} ms"));
            }
            FaultAction::Isolate { target, for_ms } => {
                let (i, who) = self.resolve(cluster, target);
                if extend(&mut self.nodes[i].isolated_until, now + for_ms) {
                    cluster.isolate(i, true);
                }
                self.counts.partitions += 1;
                cluster.trace(format!("fault: isolate {who} for {for_ms} ms"));
            }
            FaultAction::CutDb { target, for_ms } => {
                let (i, who) = self.resolve(cluster, target);
                if extend(&mut self.nodes[i].db_cut_until, now + for_ms) {
                    cluster.cut_db(i, true);
                }
                self.counts.partitions += 1;
                cluster.trace(format!("fault: cut {who} <-> db for {for_ms} ms"));
            }
            FaultAction::CutClients { target, for_ms } => {
                let (i, who) = self.resolve(cluster, target);
                if extend(&mut self.nodes[i].clients_cut_until, now + for_ms) {
                    cluster.cut_clients(i, true);
                }
                self.counts.partitions += 1;
                cluster.trace(format!("fault: cut clients <-> {who} for {for_ms} ms"));
            }
            FaultAction::DbSlow { latency_ms, for_ms } => {
                self.db_slow.push((now + for_ms, latency_ms));
                self.counts.db_faults += 1;
                self.apply_db_latency(cluster);
                cluster.trace(format!("fault: db slow up to +{latency_ms} ms for {for_ms} ms"));
            }
            FaultAction::DbDown { for_ms } => {
                if extend(&mut self.db_down_until, now + for_ms) {
                    cluster.db_reachable(false);
                }
                self.counts.db_faults += 1;
                cluster.trace(format!("fault: db unreachable for {for_ms} ms"));
            }
            FaultAction::NetLoss { loss_percent, latency_max_ms, for_ms } => {
                self.loss.push((now + for_ms, loss_percent, latency_max_ms));
                self.counts.loss_phases += 1;
                self.apply_net();
                cluster.trace(format!(
                    "fault: network loss {loss_percent}% latency up to {latency_max_ms} ms for {for_ms} ms"
                ));
            }
            FaultAction::ClockStep { target, delta_ms } => {
                let (i, who) = self.resolve(cluster, target);
                let applied = cluster.world.clocks[i].step(delta_ms);
                self.counts.clock_steps += 1;
                cluster.trace(format!("fault: clock step {who} by {applied:+} ms"));
            }
            FaultAction::Successor { target, old_paused_ms } => {
                let (i, who) = self.resolve(cluster, target);
                let node = &mut self.nodes[i];
                if node.down_until.is_some() {
                    return;
                }
                if extend(&mut node.paused_until, now + old_paused_ms) {
                    cluster.pause(i);
                }
                self.counts.successors += 1;
                cluster.trace(format!("fault: freeze {who} for {old_paused_ms} ms and start its successor"));
                cluster.start_successor(i);
            }
        }
    }

    fn expire(&mut self, cluster: &Cluster, now: u64) {
        let over = |slot: &mut Option<u64>| {
            if slot.is_some_and(|u| u <= now) {
                *slot = None;
                true
            } else {
                false
            }
        };
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if over(&mut node.down_until) {
                cluster.restart(i);
                cluster.trace(format!("fault end: restart n{}", i + 1));
            }
            if over(&mut node.paused_until) {
                cluster.resume(i);
                cluster.trace(format!("fault end: resume n{}", i + 1));
            }
            if over(&mut node.isolated_until) {
                cluster.isolate(i, false);
                cluster.trace(format!("fault end: n{} rejoins", i + 1));
            }
            if over(&mut node.db_cut_until) {
                cluster.cut_db(i, false);
                cluster.trace(format!("fault end: n{} <-> db restored", i + 1));
            }
            if over(&mut node.clients_cut_until) {
                cluster.cut_clients(i, false);
                cluster.trace(format!("fault end: clients <-> n{} restored", i + 1));
            }
        }
        if over(&mut self.db_down_until) {
            cluster.db_reachable(true);
            cluster.trace("fault end: db reachable".to_owned());
        }
        let slow_before = self.db_slow.len();
        self.db_slow.retain(|(until, _)| *until > now);
        if self.db_slow.len() != slow_before {
            self.apply_db_latency(cluster);
        }
        let loss_before = self.loss.len();
        self.loss.retain(|(until, _, _)| *until > now);
        if self.loss.len() != loss_before {
            self.apply_net();
        }
    }

    fn apply_db_latency(&self, cluster: &Cluster) {
        let latency_ms = self.db_slow.iter().map(|(_, l)| *l).max().unwrap_or(0);
        cluster.world.db.lock().expect("db lock").latency_max_ms = latency_ms;
    }

    fn apply_net(&self) {
        let loss = self.loss.iter().map(|(_, l, _)| *l).max().unwrap_or(0);
        let latency_ms = self.loss.iter().map(|(_, _, d)| *d).max().unwrap_or(10).max(10);
        madsim::net::NetSim::current().update_config(|c| {
            c.packet_loss_rate = loss as f64 / 100.0;
            c.send_latency = Duration::from_millis(1)..Duration::from_millis(latency_ms);
        });
    }
}
