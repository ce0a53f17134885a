//! The engine loop: one task owns the [`Engine`] and is the only place its
//! inputs are fed and its effects carried out.
//!
//! ```text
//!  NodeHandle::call ──▶ calls ─┐
//!  write executor  ──▶ done  ──┼─▶ engine.handle_input ─▶ effects ─┬─▶ Store(write) ─▶ write executor (one at a time, in order)
//!  sleep(poll_timeout) ───────┘                                    ├─▶ Store(read)  ─▶ spawned, ≤ READS_IN_FLIGHT_MAX at once
//!                                                                  ├─▶ Reply        ─▶ the caller's oneshot
//!                                                                  └─▶ Publish      ─▶ relay (subscribers, then mark published)
//! ```
//!
//! There is one wake-up for the whole engine (`poll_timeout`), never a task
//! per timer. Shutdown stops taking calls, lets queued writes commit (bounded
//! by `SHUTDOWN_FLUSH_MS`), then ends the relay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use minoots_core::engine::{
    Effect, Engine, EngineConfig, Input, IoId, Leadership, LeadershipChange, RequestId,
};
use minoots_core::event::{EventKind, OutboxEvent};
use minoots_core::store::{StoreOp, StoreReply};
use minoots_core::{ApiError, Response, StoreFailure};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot, watch};
use tracing::Instrument;

use crate::clock::Clock;
use crate::coordinator::Coordinator;
use crate::handle::{Call, NodeHandle, NodeRole, NodeStatus, TokenVerifier};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::quotas::Quotas;
use crate::relay::{self, EventSink};
use crate::status::ConsensusStatus;
use crate::store::Store;
use crate::subscription::StreamLimits;
use minoots_core::quota::QuotaLimits;

/// Most store reads running at once.
const READS_IN_FLIGHT_MAX: usize = 64;
/// Most calls taken from the queue per loop turn before effects are drained.
const CALLS_PER_TURN_MAX: usize = 4_096;
/// How long shutdown waits for queued writes to commit.
const SHUTDOWN_FLUSH_MS: u64 = 5_000;
/// How often the pending-timers gauge is refreshed from the store.
const PENDING_GAUGE_PERIOD_MS: u64 = 5_000;
/// How often the store's guard gauges are refreshed.
const GUARD_GAUGE_PERIOD_MS: u64 = 1_000;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: String,
    /// Seed for timer ids (take it from OS randomness in production, from the seed in the simulator).
    pub seed: u64,
    /// Requests waiting for the engine before callers are told to retry.
    pub request_queue: usize,
    /// Events the shared broadcast ring holds: a subscriber's task that
    /// falls further behind is told it lagged.
    pub event_buffer: usize,
    /// Bounds on client event streams (each one's own queue, open streams per tenant).
    pub stream_limits: StreamLimits,
    /// Every tenant's quota limits unless the key store sets its own (default: none).
    pub default_quotas: QuotaLimits,
    /// Checks bearer tokens (JWTs); `None`: API keys only.
    pub token_verifier: Option<Arc<dyn TokenVerifier>>,
    /// Where committed events go durably before they are marked published
    /// (NATS JetStream, the in-process action intake); `None`: nowhere.
    pub event_sink: Option<Arc<dyn EventSink>>,
    /// External leadership mode only: where the election reports what this
    /// node holds (the latest change; `None` until the first).
    pub leadership: Option<watch::Receiver<Option<LeadershipChange>>>,
    /// Raft mode: the consensus state the Raft layer publishes (for
    /// `/health` and the `minoots_raft_*` metrics).
    pub consensus: Option<watch::Receiver<ConsensusStatus>>,
}

impl NodeConfig {
    /// Defaults for `node_id` with id seed `seed`.
    pub fn new(node_id: impl Into<String>, seed: u64) -> Self {
        Self {
            node_id: node_id.into(),
            seed,
            request_queue: 65_536,
            event_buffer: 65_536,
            stream_limits: StreamLimits::default(),
            default_quotas: QuotaLimits::default(),
            token_verifier: None,
            event_sink: None,
            leadership: None,
            consensus: None,
        }
    }

    fn engine_config(&self) -> EngineConfig {
        EngineConfig::new(self.node_id.clone(), self.seed)
    }
}

/// Starts a node; returns its handle and the task running it (it ends after
/// [`NodeHandle::shutdown`]).
pub fn start_node(
    config: NodeConfig,
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    start_node_with(config.engine_config(), config, store, keys, clock)
}

/// Like [`start_node`], with explicit engine tunables.
pub fn start_node_with(
    engine_config: EngineConfig,
    config: NodeConfig,
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    let (calls_tx, calls_rx) = mpsc::channel(config.request_queue.max(1));
    let (events_tx, _) = broadcast::channel(config.event_buffer.max(16));
    let initial = NodeStatus {
        node_id: config.node_id.clone(),
        role: NodeRole::Opening,
        epoch: None,
        leader: None,
        store_ok: true,
        due_index: 0,
        queued_writes: 0,
    };
    let (status_tx, status_rx) = watch::channel(initial);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let handle = NodeHandle {
        calls: calls_tx,
        events: events_tx.clone(),
        status: status_rx.clone(),
        keys: keys.clone(),
        metrics: metrics.clone(),
        shutdown: Arc::new(shutdown_tx),
        throttle: Arc::default(),
        stream_limits: config.stream_limits,
        open_streams: Arc::default(),
        quotas: Arc::new(Quotas::new(
            config.default_quotas,
            engine_config.clone(),
            store.clone(),
            keys,
            clock.clone(),
            status_rx,
        )),
        tokens: config.token_verifier.clone(),
        clock: clock.clone(),
        consensus: config.consensus.clone(),
    };
    if let Some(consensus) = config.consensus.clone() {
        tokio::spawn(record_consensus(consensus, metrics.clone()));
    }
    let driver = Driver {
        engine: Engine::new(engine_config, clock.now()),
        store,
        clock,
        metrics,
        status: status_tx,
        replies: BTreeMap::new(),
        next_req: 1,
        reads: Arc::new(Semaphore::new(READS_IN_FLIGHT_MAX)),
        store_ok: true,
        leader: watch::channel(false).0,
        acting_epoch: Arc::new(AtomicU64::new(0)),
        coordinator: Coordinator::new(config.node_id.clone()),
        sink: config.event_sink.clone(),
    };
    let join = tokio::spawn(driver.run(calls_rx, shutdown_rx, events_tx, config.leadership));
    (handle, join)
}

struct Driver {
    engine: Engine,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    status: watch::Sender<NodeStatus>,
    replies: BTreeMap<RequestId, oneshot::Sender<Result<Response, ApiError>>>,
    next_req: RequestId,
    reads: Arc<Semaphore>,
    store_ok: bool,
    /// Whether the engine leads (the relay scans only while it does).
    leader: watch::Sender<bool>,
    /// The epoch the engine acts under, 0 when it does not lead. Updated after
    /// every input, read by the write executor before it sends a commit.
    acting_epoch: Arc<AtomicU64>,
    /// Lease metrics and spans (cluster mode).
    coordinator: Coordinator,
    /// The relay's durable sink.
    sink: Option<Arc<dyn EventSink>>,
}

type Done = (IoId, Result<StoreReply, StoreFailure>);

/// Keeps the `minoots_raft_*` metrics up to date while the Raft layer runs.
async fn record_consensus(mut consensus: watch::Receiver<ConsensusStatus>, metrics: Arc<Metrics>) {
    let mut before: Option<ConsensusStatus> = None;
    loop {
        let now = consensus.borrow_and_update().clone();
        metrics.record_consensus(before.as_ref(), &now);
        before = Some(now);
        if consensus.changed().await.is_err() {
            return;
        }
    }
}

/// The next leadership change an external election reports; never ready
/// without one (or once it is gone: the engine keeps what it was told last).
async fn next_leadership(source: &mut Option<watch::Receiver<Option<LeadershipChange>>>) -> LeadershipChange {
    loop {
        let Some(rx) = source.as_mut() else { return std::future::pending().await };
        if rx.changed().await.is_err() {
            *source = None;
            continue;
        }
        if let Some(change) = rx.borrow_and_update().clone() {
            return change;
        }
    }
}

impl Driver {
    async fn run(
        mut self,
        mut calls: mpsc::Receiver<Call>,
        mut shutdown: watch::Receiver<bool>,
        events: broadcast::Sender<Arc<OutboxEvent>>,
        mut leadership: Option<watch::Receiver<Option<LeadershipChange>>>,
    ) {
        // Completions: at most one commit, one load and READS_IN_FLIGHT_MAX reads are outstanding.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let (write_tx, write_rx) = mpsc::unbounded_channel::<(IoId, StoreOp)>();
        let (publish_tx, publish_rx) = mpsc::unbounded_channel::<Vec<OutboxEvent>>();
        let rescan = Arc::new(Notify::new());
        let signals = relay::RelaySignals { leader: self.leader.subscribe(), rescan: rescan.clone() };
        let writer = tokio::spawn(write_executor(
            self.store.clone(),
            self.clock.clone(),
            self.acting_epoch.clone(),
            write_rx,
            done_tx.clone(),
            self.metrics.clone(),
            rescan,
        ));
        let outputs = relay::RelayOutputs {
            subscribers: events,
            sink: self.sink.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
        };
        let relay = tokio::spawn(relay::run(self.store.clone(), publish_rx, signals, outputs));
        let gauge = tokio::spawn(pending_gauge(self.store.clone(), self.metrics.clone()));

        self.publish_status();
        self.drain_effects(&write_tx, &done_tx, &publish_tx);
        loop {
            let sleep_ms = self.sleep_ms();
            tokio::select! {
                biased;
                Some((io, result)) = done_rx.recv() => {
                    self.store_ok = result.is_ok();
                    self.coordinator.on_done(&self.metrics, io, &result, self.engine.leadership());
                    self.engine.handle_input(self.clock.now(), Input::StoreDone { io, result });
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                change = next_leadership(&mut leadership) => {
                    self.engine.handle_input(self.clock.now(), Input::Leadership(change));
                }
                call = calls.recv() => {
                    let Some(call) = call else { break };
                    self.on_call(call);
                    for _ in 1..CALLS_PER_TURN_MAX {
                        match calls.try_recv() {
                            Ok(call) => self.on_call(call),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                    self.engine.handle_input(self.clock.now(), Input::Tick);
                }
            }
            // Status first: the write executor reads the acting epoch it publishes.
            self.publish_status();
            self.drain_effects(&write_tx, &done_tx, &publish_tx);
        }

        // Graceful shutdown: refuse new calls, let queued writes commit, then stop.
        calls.close();
        while let Ok(call) = calls.try_recv() {
            self.on_call(call);
        }
        self.publish_status();
        self.drain_effects(&write_tx, &done_tx, &publish_tx);
        let flush = tokio::time::sleep(Duration::from_millis(SHUTDOWN_FLUSH_MS));
        tokio::pin!(flush);
        while self.engine.writes_pending() {
            tokio::select! {
                biased;
                Some((io, result)) = done_rx.recv() => {
                    self.engine.handle_input(self.clock.now(), Input::StoreDone { io, result });
                    self.publish_status();
                    self.drain_effects(&write_tx, &done_tx, &publish_tx);
                }
                _ = &mut flush => break,
            }
        }
        self.replies.clear();
        drop(write_tx);
        drop(publish_tx);
        let _ = writer.await;
        let _ = relay.await;
        gauge.abort();
        self.status.send_modify(|s| s.role = NodeRole::Stopped);
    }

    fn sleep_ms(&self) -> u64 {
        let now = self.clock.now().mono_ms;
        self.engine.poll_timeout().map_or(1_000, |at| at.saturating_sub(now))
    }

    fn on_call(&mut self, (command, reply): Call) {
        let req = self.next_req;
        self.next_req += 1;
        self.replies.insert(req, reply);
        self.engine.handle_input(self.clock.now(), Input::Request { req, command });
    }

    fn drain_effects(
        &mut self,
        writes: &mpsc::UnboundedSender<(IoId, StoreOp)>,
        done: &mpsc::UnboundedSender<Done>,
        publish: &mpsc::UnboundedSender<Vec<OutboxEvent>>,
    ) {
        while let Some(effect) = self.engine.poll_output() {
            match effect {
                Effect::Store { io, op } if op.runs_concurrently() => {
                    let store = self.store.clone();
                    let done = done.clone();
                    let reads = self.reads.clone();
                    // Lease operations run in their coordinator span and never
                    // queue behind reads for a permit.
                    let span = self.coordinator.on_sent(&self.metrics, io, &op);
                    let is_lease = !span.is_none();
                    tokio::spawn(
                        async move {
                            let _permit = if is_lease { None } else { reads.acquire_owned().await.ok() };
                            let result = store.execute(op).await;
                            let _ = done.send((io, result));
                        }
                        .instrument(span),
                    );
                }
                Effect::Store { io, op } => {
                    if let StoreOp::Commit(batch) = &op {
                        let items = batch.creates.len() + batch.cancels.len() + batch.fires.len();
                        self.metrics.commit_batch.observe(items as f64);
                    }
                    // The writer lives as long as this loop; a send can only fail after shutdown.
                    let _ = writes.send((io, op));
                }
                Effect::Reply { req, result } => {
                    if let Some(tx) = self.replies.remove(&req) {
                        let _ = tx.send(result);
                    }
                }
                Effect::Publish { events } => {
                    self.count_events(&events);
                    let _ = publish.send(events);
                }
            }
        }
    }

    fn count_events(&self, events: &[OutboxEvent]) {
        for event in events {
            match event.kind {
                EventKind::Scheduled => {
                    self.metrics.scheduled.inc();
                }
                EventKind::Cancelled => {
                    self.metrics.cancelled.inc();
                }
                EventKind::Fired => {
                    self.metrics.fired.inc();
                    if let Some(fire) = &event.fire {
                        let lateness_ms = (fire.fired_at_ms - fire.due_ms).max(0);
                        self.metrics.fire_lateness.observe(lateness_ms as f64 / 1_000.0);
                    }
                }
            }
        }
    }

    fn publish_status(&self) {
        let leadership = self.engine.leadership();
        let role = NodeRole::from(leadership);
        self.coordinator.on_role(&self.metrics, role);
        let leads = matches!(leadership, Leadership::Leader { .. });
        self.leader.send_if_modified(|l| std::mem::replace(l, leads) != leads);
        let acting = match leadership {
            Leadership::Leader { epoch } => *epoch,
            _ => 0,
        };
        self.acting_epoch.store(acting, Ordering::SeqCst);
        let (epoch, leader) = match leadership {
            Leadership::Opening => (None, None),
            Leadership::Leader { epoch } => (Some(*epoch), None),
            Leadership::Deposed { current_epoch } => (Some(*current_epoch), None),
            Leadership::Follower { leader } => {
                (leader.as_ref().map(|l| l.epoch), leader.as_ref().map(|l| l.address.clone()))
            }
        };
        let due_index = self.engine.due_len();
        let queued_writes = self.engine.queued_writes();
        self.metrics.due_index.set(due_index as i64);
        let stats = self.engine.stats();
        for (counter, value) in [
            (&self.metrics.fires_rejected, stats.fires_rejected),
            (&self.metrics.resyncs, stats.resyncs),
            (&self.metrics.commits_refused, stats.commits_refused),
        ] {
            counter.inner().store(value, std::sync::atomic::Ordering::Relaxed);
        }
        let store_ok = self.store_ok;
        self.status.send_if_modified(|s| {
            let next = NodeStatus {
                node_id: s.node_id.clone(),
                role,
                epoch,
                leader: leader.clone(),
                store_ok,
                due_index,
                queued_writes,
            };
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }
}

/// Runs writes and loads one at a time, in order, reporting each completion.
/// A commit is not sent (and is reported as `StoreFailure::NotSent`) if,
/// while it waited, its lease ran out or the engine stopped leading at its
/// epoch — a deposed leader never acts, even with a commit it queued while it
/// led. A commit whose outcome is unknown asks the relay to scan, since it
/// may have applied although no reply said so.
async fn write_executor(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    acting_epoch: Arc<AtomicU64>,
    mut ops: mpsc::UnboundedReceiver<(IoId, StoreOp)>,
    done: mpsc::UnboundedSender<Done>,
    metrics: Arc<Metrics>,
    rescan: Arc<Notify>,
) {
    while let Some((io, op)) = ops.recv().await {
        let refusal = match &op {
            StoreOp::Commit(batch) if batch.epoch != acting_epoch.load(Ordering::SeqCst) => {
                Some(format!("no longer leading at epoch {}", batch.epoch))
            }
            StoreOp::Commit(batch) if batch.send_before_mono.is_some_and(|d| clock.now().mono_ms >= d) => {
                Some("the lease ended before the commit could be sent".to_owned())
            }
            _ => None,
        };
        let is_commit = matches!(op, StoreOp::Commit(_));
        let result = if let Some(refusal) = refusal {
            Err(StoreFailure::NotSent(refusal))
        } else {
            #[allow(clippy::disallowed_methods)] // tokio's Instant: simulated under madsim.
            let started = tokio::time::Instant::now();
            let result = store.execute(op).await;
            if is_commit {
                metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            }
            result
        };
        if let Err(failure) = &result {
            metrics.store_failures.inc();
            tracing::warn!(error = %failure, "store operation failed");
            if is_commit && !failure.applied_nothing() {
                rescan.notify_one();
            }
        }
        if done.send((io, result)).is_err() {
            break;
        }
    }
}

/// Refreshes the store gauges: the pending count every `PENDING_GAUGE_PERIOD_MS`,
/// the store's guard (circuit breaker, pool watch) every `GUARD_GAUGE_PERIOD_MS`.
async fn pending_gauge(store: Arc<dyn Store>, metrics: Arc<Metrics>) {
    let mut since_count_ms = PENDING_GAUGE_PERIOD_MS;
    loop {
        if since_count_ms >= PENDING_GAUGE_PERIOD_MS {
            since_count_ms = 0;
            if let Ok(count) = store.count_pending().await {
                metrics.pending.set(count as i64);
            }
        }
        let guard = store.guard_stats();
        metrics.circuit_open.set(i64::from(guard.circuit_open));
        metrics.circuit_opens.inner().store(guard.circuit_opens, Ordering::Relaxed);
        metrics.pool_exhaustion_warnings.inner().store(guard.pool_exhaustion_warnings, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(GUARD_GAUGE_PERIOD_MS)).await;
        since_count_ms += GUARD_GAUGE_PERIOD_MS;
    }
}
