//! The fault injector: [`FaultInjector`] applies a fault plan
//! ([`crate::fault_plan`]) to the running cluster and undoes each fault when
//! its window ends.
//!
//! Windows overlap freely: each node keeps one `until` per fault kind, a new
//! window extends it, and the fault is undone when the latest window ends.

use std::collections::VecDeque;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::fault_plan::{FaultAction, FaultEvent, Target};
use crate::rng::{SimRng, stream};

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
