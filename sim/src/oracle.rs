//! The oracle: everything the checkers judge by, recorded as it happens on
//! the true time axis ([`crate::clock::true_us`]).
//!
//! - What clients were told: acknowledged schedules (with the timer as
//!   acknowledged), acknowledged cancels, and anomalies a client saw (an
//!   acknowledged timer reported missing, an unexpected status).
//! - What the database did: every lease grant (shard, epoch, holder, with
//!   the lease it replaced) and every recorded fire with the lease in force
//!   when it was recorded (appended from commit outcomes: our own log, not
//!   the model's map).
//! - What nodes sent: every fenced write (a commit carrying cancels or
//!   fires) with its epoch and the true time it left the node.
//! - What subscribers received: every event relayed by each node, and every
//!   event a gRPC `StreamTimerEvents` watcher received.
//! - A trace of observable history (fires, grants, replies, faults) whose
//!   hash must be the same for the same seed; it is also the history printed
//!   when a check fails. Never task ids or real time.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use minoots_core::TimerId;
use minoots_core::event::OutboxEvent;
use minoots_core::time::WallMs;
use minoots_core::timer::FireRecord;
use minoots_proto as pb;

use crate::clock::true_us;

/// Most trace lines kept (older ones are dropped from the printable history,
/// never from the hash).
const TRACE_LINES_MAX: usize = 200_000;

/// A lease as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInForce {
    /// Lease shard.
    pub shard: u32,
    /// Fencing epoch.
    pub epoch: u64,
    /// Holder's node id.
    pub holder: String,
    /// End of validity, store clock.
    pub expires_store_ms: WallMs,
    /// The holder's tenure id (new at every process start and after every lost commit).
    pub tenure: u64,
}

/// A lease granted (acquired or stolen, never a renewal) at the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The new lease.
    pub lease: LeaseInForce,
    /// When (true time).
    pub true_us: u64,
    /// When (store clock).
    pub store_ms: WallMs,
    /// The lease it replaced, as it stood just before.
    pub previous: Option<LeaseInForce>,
    /// The tenure the asker asked in (`None` for a standalone `Open`).
    pub asked_tenure: Option<u64>,
}

/// A fenced write as it left a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedSend {
    /// The sender's node id.
    pub node_id: String,
    /// The epoch it claimed.
    pub epoch: u64,
    /// When it left (true time).
    pub true_us: u64,
    /// Fire ops in it.
    pub fires: usize,
    /// Cancel ops in it.
    pub cancels: usize,
}

/// A fire the database recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireLog {
    /// The record.
    pub fire: FireRecord,
    /// When (true time).
    pub true_us: u64,
    /// The lease of the fire's shard in force at that moment, if any.
    pub lease: Option<LeaseInForce>,
}

/// A schedule a client was told succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct AckedTimer {
    /// The timer as the reply showed it.
    pub wire: pb::Timer,
    /// When the reply arrived.
    pub true_us: u64,
    /// Which client.
    pub client: usize,
}

/// A cancel a client was told succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedCancel {
    /// When the reply arrived.
    pub true_us: u64,
    /// Which client.
    pub client: usize,
}

/// Something a client saw that a correct service never shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The promise it breaks (`acked-durable`, `api-contract`).
    pub property: &'static str,
    /// What happened.
    pub message: String,
    /// The timer concerned, if any.
    pub timer: Option<TimerId>,
    /// When.
    pub true_us: u64,
}

/// An event a node handed to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// Which node (0-based).
    pub node: usize,
    /// The event.
    pub event: OutboxEvent,
    /// When.
    pub true_us: u64,
}

/// An event a client received on a node's gRPC event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamed {
    /// Which node served the stream (0-based).
    pub node: usize,
    /// The event as received.
    pub event: pb::TimerEvent,
    /// When.
    pub true_us: u64,
}

/// One line of observable history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// When (true time).
    pub true_us: u64,
    /// What.
    pub text: String,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>8.3}s {}", self.true_us as f64 / 1e6, self.text)
    }
}

/// Counters for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Lease grants to a different holder than the previous one.
    pub leader_changes: u64,
    /// Grants that replaced another holder's (expired) lease.
    pub lease_steals: u64,
    /// Fire ops the database refused for a stale epoch or lease.
    pub stale_fires_rejected: u64,
    /// Fire ops the database refused as early.
    pub early_fires_rejected: u64,
    /// Fires recorded.
    pub fires_recorded: u64,
    /// Client operations started.
    pub client_ops: u64,
    /// Client operations acknowledged.
    pub client_acks: u64,
    /// Client operations abandoned after the last retry.
    pub client_give_ups: u64,
    /// Events relayed to subscribers (all nodes).
    pub events_relayed: u64,
    /// Subscribers that lagged (their events are missing, not wrong).
    pub relay_lags: u64,
    /// Events received by gRPC stream watchers (all nodes).
    pub events_streamed: u64,
}

/// Everything observed in one run.
#[derive(Debug, Default)]
pub struct Oracle {
    /// Lease grants, in order.
    pub grants: Vec<LeaseGrant>,
    /// Fenced writes as sent, in order.
    pub sends: Vec<FencedSend>,
    /// Recorded fires, in order.
    pub fires: Vec<FireLog>,
    /// Acknowledged schedules by timer.
    pub acked: BTreeMap<TimerId, AckedTimer>,
    /// Acknowledged cancels by timer.
    pub cancels: BTreeMap<TimerId, AckedCancel>,
    /// Client-visible anomalies.
    pub anomalies: Vec<Anomaly>,
    /// Events relayed to subscribers, in order.
    pub relayed: Vec<Relayed>,
    /// Events received over gRPC streams, in order.
    pub streamed: Vec<Streamed>,
    /// Counters.
    pub counters: Counters,
    trace: VecDeque<TraceLine>,
    hasher: DefaultHasher,
}

impl Oracle {
    /// Appends a line of observable history at the current true time.
    pub fn trace(&mut self, text: String) {
        let line = TraceLine { true_us: true_us(), text };
        line.true_us.hash(&mut self.hasher);
        line.text.hash(&mut self.hasher);
        if self.trace.len() >= TRACE_LINES_MAX {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    /// The hash of the whole observable history so far.
    pub fn trace_hash(&self) -> u64 {
        self.hasher.finish()
    }

    /// The kept history.
    pub fn trace_lines(&self) -> impl Iterator<Item = &TraceLine> {
        self.trace.iter()
    }

    /// Records an anomaly (and traces it).
    pub fn anomaly(&mut self, property: &'static str, message: String, timer: Option<TimerId>) {
        self.trace(format!("ANOMALY {property}: {message}"));
        self.anomalies.push(Anomaly { property, message, timer, true_us: true_us() });
    }

    /// The last `max` history lines mentioning any of `subjects` (all lines if none).
    pub fn history(&self, subjects: &[String], max: usize) -> Vec<String> {
        let relevant: Vec<&TraceLine> = self
            .trace
            .iter()
            .filter(|l| subjects.is_empty() || subjects.iter().any(|s| l.text.contains(s.as_str())))
            .collect();
        let from = relevant.len().saturating_sub(max);
        relevant[from..].iter().map(|l| l.to_string()).collect()
    }
}
