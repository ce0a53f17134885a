//! Starting a node in Raft mode and keeping its engine told what it holds:
//!
//! - [`RaftNodeConfig`]: the peers, the election and heartbeat timing, the
//!   snapshot policy.
//! - [`start`]: opens the log and the state in the data directory, starts
//!   openraft and its gRPC transport, and bootstraps (see below).
//! - **Bootstrap, deterministic:** a node that has any Raft state (a vote, a
//!   log) rejoins its cluster. A node without state never initialises one
//!   unless it is the lowest id of the peer list, and then only once a
//!   majority of the peers (itself included) answered that they have no
//!   state and none answered that it has: starting every node at once forms
//!   one cluster, and a wiped lowest node rejoins the cluster its peers
//!   hold (it is caught up by a snapshot) instead of founding a second one.
//! - **Leadership as the engine's input:** when this node becomes the Raft
//!   leader of a term it first commits a `Lead` barrier of that term. Once
//!   the barrier is applied here, every entry of earlier terms is too, and
//!   every commit of an older term is fenced out on every node; only then is
//!   the engine told it leads, with the term as its epoch and a bound: the
//!   last time a quorum acknowledged it plus the longest election timeout
//!   (openraft's followers refuse votes for that long after hearing their
//!   leader, so no other node is elected sooner), renewed as the metrics
//!   move. Safety never rests on the bound (the term fences); it stops a
//!   leader cut off from the others from trying to fire.
//!   When it stops leading the engine is told at once, with the last
//!   applied leader as the hint for clients.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use minoots_core::engine::LeadershipChange;
use minoots_core::lease::LeaseHolder;
use minoots_node::ConsensusStatus;
use minoots_node::clock::Clock;
use minoots_store::SqliteStore;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use crate::log_store::LogStore;
use crate::replicated::ReplicatedStore;
use crate::state_machine::StateMachine;
use crate::transport::{LeaderContact, PeerFactory, RaftService, peer_channel, probe};
use crate::types::{RaftNode, ReplicatedWrite};

/// openraft's metrics of this node.
type RaftMetrics = openraft::RaftMetrics<u64, BasicNode>;

/// How a node runs in Raft mode.
#[derive(Debug, Clone)]
pub struct RaftNodeConfig {
    /// This node's Raft id (a key of `peers`).
    pub node_id: u64,
    /// Where this node's Raft transport listens.
    pub listen_addr: SocketAddr,
    /// Every voter of the cluster: id → Raft transport URL (`http://host:port`).
    pub peers: BTreeMap<u64, String>,
    /// Shortest election timeout (ms).
    pub election_min_ms: u64,
    /// Longest election timeout (ms).
    pub election_max_ms: u64,
    /// Heartbeat interval (ms).
    pub heartbeat_ms: u64,
    /// A snapshot is built after this many applied entries, and the log
    /// before it purged.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot (lagging followers catch up
    /// from them without a snapshot).
    pub keep_after_snapshot_entries: u64,
    /// How long a proposal may take before its outcome counts as unknown (ms).
    pub propose_timeout_ms: u64,
    /// This node's engine id (what its commits carry).
    pub engine_node_id: String,
    /// Where clients reach this node (the hint followers give out).
    pub client_address: String,
}

impl RaftNodeConfig {
    /// Checks the configuration, naming the setting and the rule broken.
    pub fn validate(&self) -> Result<(), String> {
        if !self.peers.contains_key(&self.node_id) {
            return Err(format!(
                "KERNEL_RAFT_NODE_ID {} must be one of the ids of KERNEL_RAFT_PEERS ({:?})",
                self.node_id,
                self.peers.keys().collect::<Vec<_>>()
            ));
        }
        if self.heartbeat_ms == 0 || self.election_min_ms <= self.heartbeat_ms {
            return Err(
                "KERNEL_RAFT_ELECTION_MIN_MS must be greater than KERNEL_RAFT_HEARTBEAT_MS (> 0)".to_owned()
            );
        }
        if self.election_max_ms <= self.election_min_ms {
            return Err(
                "KERNEL_RAFT_ELECTION_MAX_MS must be greater than KERNEL_RAFT_ELECTION_MIN_MS".to_owned()
            );
        }
        Ok(())
    }
}

/// Parses `KERNEL_RAFT_PEERS`: `1=http://127.0.0.1:7207,2=http://…`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) =
            part.split_once('=').ok_or_else(|| format!("KERNEL_RAFT_PEERS: {part:?} must be `id=url`"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("KERNEL_RAFT_PEERS: node id {id:?} must be a whole number"))?;
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("KERNEL_RAFT_PEERS: address of node {id} ({url:?}) must be an http:// URL"));
        }
        if peers.insert(id, url.to_owned()).is_some() {
            return Err(format!("KERNEL_RAFT_PEERS: node id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("KERNEL_RAFT_PEERS must list at least this node".to_owned());
    }
    Ok(peers)
}

/// Why a Raft node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration breaks a rule.
    #[error("{0}")]
    Config(String),
    /// The state database could not be opened.
    #[error(transparent)]
    State(#[from] minoots_store::OpenError),
    /// The log database could not be opened.
    #[error("opening the Raft log {path}: {source}")]
    Log {
        /// The file.
        path: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The snapshot directory could not be created.
    #[error("creating the snapshot directory: {0}")]
    Snapshots(std::io::Error),
    /// openraft refused to start.
    #[error("starting Raft: {0}")]
    Raft(String),
}

/// A running Raft node.
pub struct RaftMode {
    /// The openraft node (metrics, status).
    pub raft: RaftNode,
    /// The driver's store and key store.
    pub store: Arc<ReplicatedStore>,
    /// What the engine holds, for `NodeConfig::leadership`.
    pub leadership: watch::Receiver<Option<LeadershipChange>>,
    /// The consensus state, for `NodeConfig::consensus`.
    pub consensus: watch::Receiver<ConsensusStatus>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RaftMode {
    /// Stops the transport, the bootstrap and leadership tasks, and openraft.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.raft.shutdown().await;
    }
}

/// Starts this node: state in `data_dir/minoots.db`, log in
/// `data_dir/raft-log.db`, snapshots in `data_dir/raft-snapshots/`.
pub async fn start(
    config: RaftNodeConfig,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
) -> Result<RaftMode, StartError> {
    config.validate().map_err(StartError::Config)?;
    let state = Arc::new(SqliteStore::open(&data_dir.join("minoots.db"), clock.clone()).await?);
    let log_path = data_dir.join("raft-log.db");
    let log = LogStore::open(&log_path)
        .await
        .map_err(|source| StartError::Log { path: log_path.display().to_string(), source })?;
    let state_machine =
        StateMachine::new(state.clone(), data_dir.join("raft-snapshots")).map_err(StartError::Snapshots)?;
    let raft_config = openraft::Config {
        cluster_name: "minoots".to_owned(),
        election_timeout_min: config.election_min_ms,
        election_timeout_max: config.election_max_ms,
        heartbeat_interval: config.heartbeat_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries.max(1)),
        max_in_snapshot_log_to_keep: config.keep_after_snapshot_entries,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Config(format!("Raft settings: {e}")))?;
    let raft = RaftNode::new(config.node_id, Arc::new(raft_config), PeerFactory, log.clone(), state_machine)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let store = Arc::new(ReplicatedStore::new(raft.clone(), state, clock.clone(), config.propose_timeout_ms));

    let (stop, stop_rx) = watch::channel(false);
    let (leadership_tx, leadership) = watch::channel(None);
    let (consensus_tx, consensus) = watch::channel(consensus_status(&raft.metrics().borrow(), &log, &config));
    let contact = Arc::new(LeaderContact::new(clock.clone()));
    let service = RaftService::new(raft.clone(), log.clone(), contact.clone()).into_server();
    let listen = config.listen_addr;
    let mut transport_stop = stop_rx.clone();
    let transport = tokio::spawn(async move {
        let stopped = async move {
            let _ = transport_stop.wait_for(|s| *s).await;
        };
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_shutdown(listen, stopped)
            .await
        {
            tracing::error!(error = %e, address = %listen, "the Raft transport stopped");
        }
    });
    let bootstrap = tokio::spawn(bootstrap(raft.clone(), log.clone(), config.clone(), stop_rx.clone()));
    let hasten = tokio::spawn(hasten_elections(raft.clone(), contact, config.clone(), stop_rx.clone()));
    let outputs = FeederOutputs { engine: leadership_tx, consensus: consensus_tx };
    let feeder =
        tokio::spawn(feed_leadership(raft.clone(), store.clone(), log, config, clock, outputs, stop_rx));
    Ok(RaftMode {
        raft,
        store,
        leadership,
        consensus,
        stop,
        tasks: vec![transport, bootstrap, hasten, feeder],
    })
}

/// How often bootstrap asks the peers again.
const BOOTSTRAP_RETRY_MS: u64 = 200;

async fn bootstrap(raft: RaftNode, log: LogStore, config: RaftNodeConfig, mut stop: watch::Receiver<bool>) {
    let lowest = config.peers.keys().next().copied();
    match log.has_state().await {
        Ok(true) => {
            tracing::info!(node = config.node_id, "Raft state found: rejoining the cluster");
            return;
        }
        Ok(false) if lowest != Some(config.node_id) => {
            tracing::info!(
                node = config.node_id,
                "no Raft state: waiting for the cluster to reach this node"
            );
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading the Raft log at start-up");
            return;
        }
    }
    let majority = config.peers.len() / 2 + 1;
    let others: Vec<(u64, String)> = config
        .peers
        .iter()
        .filter(|(id, _)| **id != config.node_id)
        .map(|(id, url)| (*id, url.clone()))
        .collect();
    loop {
        let mut empty = BTreeSet::from([config.node_id]);
        for (id, url) in &others {
            let Ok(channel) = peer_channel(url) else { continue };
            match probe(channel, Duration::from_millis(config.election_min_ms)).await {
                Ok(false) => {
                    empty.insert(*id);
                }
                Ok(true) => {
                    tracing::info!(
                        node = config.node_id,
                        peer = id,
                        "a peer has Raft state: rejoining its cluster"
                    );
                    return;
                }
                Err(_) => {}
            }
        }
        if empty.len() >= majority {
            let members: BTreeMap<u64, BasicNode> =
                config.peers.iter().map(|(id, url)| (*id, BasicNode::new(url.clone()))).collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(
                    node = config.node_id,
                    voters = config.peers.len(),
                    "initialised a new cluster"
                ),
                Err(e) => {
                    tracing::info!(node = config.node_id, error = %e, "not initialising: the node has state")
                }
            }
            return;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(BOOTSTRAP_RETRY_MS)) => {}
        }
    }
}

/// A follower that has heard no leader for `election_max_ms` (plus a
/// jitter of its own, so that followers rarely start together) starts an
/// election. openraft 0.9 waits the old leader's lease (`election_max_ms`)
/// *plus* a random election timeout; the other followers grant votes as soon
/// as that lease has run out, so the second wait only delays failover.
/// Starting an election is always safe in Raft; this changes only when.
async fn hasten_elections(
    raft: RaftNode,
    contact: Arc<LeaderContact>,
    config: RaftNodeConfig,
    mut stop: watch::Receiver<bool>,
) {
    let jitter_span_ms = config.heartbeat_ms.saturating_mul(2).max(1);
    let mut attempt: u64 = 0;
    loop {
        let jitter_ms = minoots_core::ids::mix64(config.node_id ^ attempt.rotate_left(32)) % jitter_span_ms;
        let follows = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            m.state == ServerState::Follower
                && m.last_applied.is_some()
                && m.membership_config.membership().voter_ids().count() > 1
        };
        if follows && contact.silent_for_ms() > config.election_max_ms + jitter_ms {
            attempt += 1;
            contact.heard();
            tracing::debug!(
                node = config.node_id,
                "no leader heard for an election timeout: starting an election"
            );
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis((config.heartbeat_ms / 2).max(1))) => {}
        }
    }
}

/// What the engine was told last.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Told {
    Nothing,
    Leading { term: u64, until_mono: u64 },
    Following { leader: Option<LeaseHolder> },
}

/// Where the leadership task reports.
struct FeederOutputs {
    /// The engine's leadership input.
    engine: watch::Sender<Option<LeadershipChange>>,
    /// The consensus state for `/health` and metrics.
    consensus: watch::Sender<ConsensusStatus>,
}

/// Whether `metrics` show a state holding what the cluster had committed:
/// this node leads (its term's barrier is applied before its engine acts),
/// or it follows a known leader and has applied everything it knows
/// committed (a node starting from nothing applies nothing until its
/// snapshot is installed).
fn caught_up(metrics: &RaftMetrics, status: &ConsensusStatus) -> bool {
    metrics.last_applied.is_some()
        && (status.is_leader
            || (metrics.current_leader.is_some() && status.applied_index >= status.commit_index))
}

/// The consensus state `metrics` describe.
fn consensus_status(metrics: &RaftMetrics, log: &LogStore, config: &RaftNodeConfig) -> ConsensusStatus {
    let state = match metrics.state {
        ServerState::Leader => "Leader",
        ServerState::Candidate => "Candidate",
        ServerState::Learner => "Learner",
        ServerState::Follower | ServerState::Shutdown => "Follower",
    };
    let is_leader = metrics.state == ServerState::Leader && metrics.current_leader == Some(config.node_id);
    let quorum = if is_leader {
        metrics.millis_since_quorum_ack.is_some_and(|ms| ms < config.election_max_ms)
    } else {
        metrics.current_leader.is_some() && metrics.state == ServerState::Follower
    };
    ConsensusStatus {
        node_id: config.node_id,
        state,
        is_leader,
        leader_address: metrics
            .current_leader
            .and_then(|id| metrics.membership_config.membership().get_node(&id).map(|n| n.addr.clone())),
        term: metrics.current_term,
        commit_index: log.committed_index(),
        applied_index: metrics.last_applied.map_or(0, |id| id.index),
        quorum,
        caught_up: false,
    }
}

async fn feed_leadership(
    raft: RaftNode,
    store: Arc<ReplicatedStore>,
    log: LogStore,
    config: RaftNodeConfig,
    clock: Arc<dyn Clock>,
    outputs: FeederOutputs,
    mut stop: watch::Receiver<bool>,
) {
    let FeederOutputs { engine, consensus } = outputs;
    let mut metrics = raft.metrics();
    let mut told = Told::Nothing;
    let mut barrier_term: Option<u64> = None;
    let mut applied_leader: Option<LeaseHolder> = None;
    loop {
        let now = metrics.borrow_and_update().clone();
        let mut status_now = consensus_status(&now, &log, &config);
        if !store.is_caught_up() && caught_up(&now, &status_now) {
            tracing::info!(applied = status_now.applied_index, "caught up with the cluster: serving reads");
            store.mark_caught_up();
        }
        status_now.caught_up = store.is_caught_up();
        consensus.send_if_modified(|status| {
            let next = status_now;
            let changed = *status != next;
            *status = next;
            changed
        });
        let leads = now.state == ServerState::Leader && now.current_leader == Some(config.node_id);
        if leads && barrier_term != Some(now.current_term) {
            let barrier = ReplicatedWrite::Lead {
                node_id: config.engine_node_id.clone(),
                address: config.client_address.clone(),
                term: now.current_term,
            };
            match store.propose(barrier).await {
                Ok(_) => barrier_term = Some(now.current_term),
                Err(e) => {
                    tracing::debug!(term = now.current_term, error = %e, "leadership barrier not committed")
                }
            }
        }
        let leads = leads && barrier_term == Some(now.current_term);
        let since_ack_ms = now.millis_since_quorum_ack.filter(|_| leads);
        if let Some(since_ack_ms) = since_ack_ms {
            let until_mono = clock.now().mono_ms.saturating_sub(since_ack_ms) + config.election_max_ms;
            let renewed = told != Told::Leading { term: now.current_term, until_mono };
            if renewed {
                engine.send_replace(Some(LeadershipChange::Leading {
                    epoch: now.current_term,
                    until_mono: Some(until_mono),
                }));
                told = Told::Leading { term: now.current_term, until_mono };
            }
        } else {
            // The applied barrier names the leader; read it again only until
            // this term's barrier has been applied here.
            if applied_leader.as_ref().is_none_or(|h| h.epoch < now.current_term) {
                applied_leader = store.state().replica_leader().await.ok().flatten();
            }
            let holder = applied_leader.clone().filter(|h| h.node_id != config.engine_node_id);
            let next = Told::Following { leader: holder.clone() };
            if next != told {
                let change = if matches!(told, Told::Leading { .. }) {
                    LeadershipChange::SteppedDown { leader: holder }
                } else {
                    LeadershipChange::Following { leader: holder }
                };
                engine.send_replace(Some(change));
                told = next;
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = metrics.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(config.heartbeat_ms)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: &str) -> RaftNodeConfig {
        RaftNodeConfig {
            node_id: 1,
            listen_addr: "127.0.0.1:7207".parse().expect("address"),
            peers: parse_peers(peers).expect("peers"),
            election_min_ms: 300,
            election_max_ms: 600,
            heartbeat_ms: 100,
            snapshot_every_entries: 10_000,
            keep_after_snapshot_entries: 1_000,
            propose_timeout_ms: 5_000,
            engine_node_id: "node-1".into(),
            client_address: "rest=http://127.0.0.1:4001".into(),
        }
    }

    #[test]
    fn peers_parse_and_bad_ones_name_the_setting_and_the_rule() {
        let peers =
            parse_peers(" 1=http://127.0.0.1:7207, 3=http://10.0.0.3:7207 ,2=https://b:1").expect("peers");
        assert_eq!(peers.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(peers[&3], "http://10.0.0.3:7207");
        for (text, rule) in [
            ("", "at least this node"),
            ("1", "`id=url`"),
            ("x=http://a:1", "whole number"),
            ("1=a:1", "http:// URL"),
            ("1=http://a:1,1=http://b:1", "appears twice"),
        ] {
            let error = parse_peers(text).expect_err(text);
            assert!(error.starts_with("KERNEL_RAFT_PEERS") && error.contains(rule), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_configuration_is_checked_before_anything_starts() {
        let peers = "1=http://127.0.0.1:7207,2=http://127.0.0.1:7208,3=http://127.0.0.1:7209";
        assert_eq!(config(peers).validate(), Ok(()));
        let mut outside = config(peers);
        outside.node_id = 4;
        assert!(outside.validate().expect_err("not a peer").contains("KERNEL_RAFT_NODE_ID 4"));
        let mut slow_heartbeat = config(peers);
        slow_heartbeat.heartbeat_ms = 300;
        assert!(slow_heartbeat.validate().expect_err("heartbeat").contains("KERNEL_RAFT_HEARTBEAT_MS"));
        let mut inverted = config(peers);
        inverted.election_max_ms = 300;
        assert!(inverted.validate().expect_err("inverted").contains("KERNEL_RAFT_ELECTION_MAX_MS"));
    }
}
