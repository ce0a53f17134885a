//! Prometheus metrics of one node, exposed as text at `/metrics`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `minoots_timers_scheduled_total` | counter | timers created |
//! | `minoots_timers_fired_total` | counter | occurrences fired (recorded) |
//! | `minoots_timers_cancelled_total` | counter | timers cancelled |
//! | `minoots_timers_pending` | gauge | timers in status `scheduled` (store count, refreshed every few seconds) |
//! | `minoots_due_index_entries` | gauge | occurrences held in memory |
//! | `minoots_fire_lateness_seconds` | histogram | recorded fire time − due time |
//! | `minoots_store_commit_seconds` | histogram | duration of one store commit |
//! | `minoots_store_commit_batch_size` | histogram | items (creates + cancels + fires) per commit |
//! | `minoots_store_failures_total` | counter | store operations that failed |
//! | `minoots_fires_rejected_total` | counter | fire ops the store refused (stale, early, changed) |
//! | `minoots_engine_resyncs_total` | counter | times the engine threw its due index away and paged it in again (a new leadership, a commit whose outcome is unknown) |
//! | `minoots_commits_refused_total` | counter | commits the store refused as a whole, nothing applied (an engine bug: alert on any) |
//! | `minoots_auth_failures_total` | counter | requests with a missing, unknown or revoked API key |
//! | `minoots_store_circuit_open` | gauge | 1 while the store's circuit breaker is open (PostgreSQL) |
//! | `minoots_store_circuit_opens_total` | counter | times the circuit breaker opened |
//! | `minoots_store_pool_exhaustion_warnings_total` | counter | warnings that a connection pool was nearly exhausted |
//! | `minoots_outbox_pending` | gauge | outbox rows after the published watermark (as this node's relay knows them) |
//! | `minoots_outbox_publish_lag_seconds` | histogram | sink acceptance (JetStream ack, action intake) − event time |
//! | `minoots_action_attempt_total{kind,outcome}` | counter | action attempts: `succeeded`, `retry`, `failed` (dead-lettered), by action kind |
//! | `minoots_action_duration_seconds` | histogram | duration of one action attempt |
//! | `minoots_action_dead_lettered_total` | counter | deliveries moved to the dead-letter queue |
//! | `minoots_action_deferred_total` | counter | attempts not made because the destination's circuit breaker was open (not counted as attempts) |
//! | `minoots_event_streams_closed_total{reason}` | counter | client event streams the server ended: `lagged`, `too_slow` (the client stopped reading), `unauthenticated` (key revoked), `unavailable` (node stopping) |
//! | `kernel_coordinator_election_attempts_total` | counter | lease acquisitions sent (cluster mode); elections this node started (Raft mode) |
//! | `kernel_coordinator_election_results_total{outcome}` | counter | their results: `granted`, `held`, `error` (Raft mode: `granted` when this node became the Raft leader) |
//! | `kernel_coordinator_leadership_transitions_total` | counter | times this node became or stopped being the leader |
//! | `minoots_raft_term` | gauge | Raft mode: the current term |
//! | `minoots_raft_commit_index` | gauge | Raft mode: the last log index known committed |
//! | `minoots_raft_applied_index` | gauge | Raft mode: the last log index applied to this node's state |
//! | `minoots_raft_apply_lag` | gauge | Raft mode: committed entries not yet applied here |
//! | `minoots_raft_quorum` | gauge | Raft mode: 1 while this node is part of a working majority |
//! | `kernel_coordinator_heartbeat_results_total{outcome}` | counter | lease renewals: `renewed`, `lost`, `error` |
//!
//! The `kernel_coordinator_*` names are MINOOTS's (its horology kernel's
//! coordinator); see [`crate::coordinator`] for how they are counted.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Timers created.
    pub scheduled: Counter,
    /// Occurrences fired.
    pub fired: Counter,
    /// Timers cancelled.
    pub cancelled: Counter,
    /// Timers pending in the store.
    pub pending: Gauge,
    /// Occurrences in memory.
    pub due_index: Gauge,
    /// Fire lateness, seconds.
    pub fire_lateness: Histogram,
    /// Commit duration, seconds.
    pub commit_seconds: Histogram,
    /// Items per commit.
    pub commit_batch: Histogram,
    /// Times the engine resynced its due index.
    pub resyncs: Counter,
    /// Commits refused as a whole.
    pub commits_refused: Counter,
    /// Failed store operations.
    pub store_failures: Counter,
    /// Refused fire ops.
    pub fires_rejected: Counter,
    /// Requests whose API key was missing, unknown or revoked.
    pub auth_failures: Counter,
    /// 1 while the store's circuit breaker is open.
    pub circuit_open: Gauge,
    /// Times the circuit breaker opened.
    pub circuit_opens: Counter,
    /// Pool-exhaustion warnings.
    pub pool_exhaustion_warnings: Counter,
    /// Lease acquisitions sent.
    pub election_attempts: Counter,
    /// Lease acquisition results, by `outcome`.
    pub election_results: Family<OutcomeLabel, Counter>,
    /// Changes into or out of the leader role.
    pub leadership_transitions: Counter,
    /// Lease renewal results, by `outcome`.
    pub heartbeat_results: Family<OutcomeLabel, Counter>,
    /// Outbox rows after the published watermark.
    pub outbox_pending: Gauge,
    /// `minoots_raft_term`.
    pub raft_term: Gauge,
    /// `minoots_raft_commit_index`.
    pub raft_commit_index: Gauge,
    /// `minoots_raft_applied_index`.
    pub raft_applied_index: Gauge,
    /// `minoots_raft_apply_lag`.
    pub raft_apply_lag: Gauge,
    /// `minoots_raft_quorum`.
    pub raft_quorum: Gauge,
    /// Sink acceptance minus event time, seconds.
    pub outbox_publish_lag: Histogram,
    /// Action attempts by `kind` and `outcome`.
    pub action_attempts: Family<ActionLabels, Counter>,
    /// Duration of one action attempt, seconds.
    pub action_duration: Histogram,
    /// Deliveries dead-lettered.
    pub action_dead_lettered: Counter,
    /// Attempts deferred by a destination's open circuit breaker.
    pub action_deferred: Counter,
    /// Client event streams the server ended, by `reason`.
    pub event_streams_closed: Family<ReasonLabel, Counter>,
}

/// The `reason` label of the stream-closed counter.
pub type ReasonLabel = [(&'static str, &'static str); 1];

/// The `kind` and `outcome` labels of the action attempt counter.
pub type ActionLabels = [(&'static str, &'static str); 2];

/// The `outcome` label of the coordinator's result counters.
pub type OutcomeLabel = [(&'static str, &'static str); 1];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Records a Raft-mode consensus status (`before`: the previous one, to
    /// count elections started and won).
    pub fn record_consensus(
        &self,
        before: Option<&crate::status::ConsensusStatus>,
        now: &crate::status::ConsensusStatus,
    ) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.raft_term.set(gauge(now.term));
        self.raft_commit_index.set(gauge(now.commit_index));
        self.raft_applied_index.set(gauge(now.applied_index));
        self.raft_apply_lag.set(gauge(now.commit_index.saturating_sub(now.applied_index)));
        self.raft_quorum.set(i64::from(now.quorum));
        let was = |state: &str| before.is_some_and(|b| b.state == state && b.term == now.term);
        if now.state == "Candidate" && !was("Candidate") {
            self.election_attempts.inc();
        }
        if now.state == "Leader" && !was("Leader") {
            self.election_results.get_or_create(&[("outcome", "granted")]).inc();
        }
    }

    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let latency_buckets =
            [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];
        let mut registry = Registry::default();
        let scheduled = Counter::default();
        let fired = Counter::default();
        let cancelled = Counter::default();
        let pending = Gauge::default();
        let due_index = Gauge::default();
        let fire_lateness = Histogram::new(latency_buckets);
        let commit_seconds = Histogram::new(latency_buckets);
        let commit_batch = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0]);
        let store_failures = Counter::default();
        let fires_rejected = Counter::default();
        let resyncs = Counter::default();
        let commits_refused = Counter::default();
        let auth_failures = Counter::default();
        let circuit_open = Gauge::default();
        let circuit_opens = Counter::default();
        let pool_exhaustion_warnings = Counter::default();
        registry.register("minoots_timers_scheduled", "Timers created", scheduled.clone());
        registry.register(
            "minoots_timers_fired",
            "Timer occurrences fired (durably recorded)",
            fired.clone(),
        );
        registry.register("minoots_timers_cancelled", "Timers cancelled", cancelled.clone());
        registry.register("minoots_timers_pending", "Timers in status scheduled", pending.clone());
        registry.register(
            "minoots_due_index_entries",
            "Occurrences held in the in-memory due index",
            due_index.clone(),
        );
        registry.register(
            "minoots_fire_lateness_seconds",
            "Recorded fire time minus due time",
            fire_lateness.clone(),
        );
        registry.register(
            "minoots_store_commit_seconds",
            "Duration of one store commit",
            commit_seconds.clone(),
        );
        registry.register(
            "minoots_store_commit_batch_size",
            "Creates, cancels and fires per commit",
            commit_batch.clone(),
        );
        registry.register("minoots_store_failures", "Store operations that failed", store_failures.clone());
        registry.register(
            "minoots_fires_rejected",
            "Fire operations the store refused (stale epoch, early, changed)",
            fires_rejected.clone(),
        );
        registry.register(
            "minoots_engine_resyncs",
            "Times the engine threw its due index away and paged it in again",
            resyncs.clone(),
        );
        registry.register(
            "minoots_commits_refused",
            "Commits the store refused as a whole, nothing applied (an engine bug)",
            commits_refused.clone(),
        );
        registry.register(
            "minoots_auth_failures",
            "Requests with a missing, unknown or revoked API key",
            auth_failures.clone(),
        );
        let election_attempts = Counter::default();
        let election_results = Family::<OutcomeLabel, Counter>::default();
        let leadership_transitions = Counter::default();
        let heartbeat_results = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "kernel_coordinator_election_attempts",
            "Lease acquisitions sent to the store (cluster mode)",
            election_attempts.clone(),
        );
        registry.register(
            "kernel_coordinator_election_results",
            "Lease acquisition results by outcome (granted, held, error)",
            election_results.clone(),
        );
        registry.register(
            "kernel_coordinator_leadership_transitions",
            "Times this node became or stopped being the leader",
            leadership_transitions.clone(),
        );
        registry.register(
            "kernel_coordinator_heartbeat_results",
            "Lease renewal results by outcome (renewed, lost, error)",
            heartbeat_results.clone(),
        );
        registry.register(
            "minoots_store_circuit_open",
            "1 while the store's circuit breaker is open",
            circuit_open.clone(),
        );
        registry.register(
            "minoots_store_circuit_opens",
            "Times the store's circuit breaker opened",
            circuit_opens.clone(),
        );
        registry.register(
            "minoots_store_pool_exhaustion_warnings",
            "Warnings that a store connection pool was nearly exhausted",
            pool_exhaustion_warnings.clone(),
        );
        let raft_term = Gauge::default();
        let raft_commit_index = Gauge::default();
        let raft_applied_index = Gauge::default();
        let raft_apply_lag = Gauge::default();
        let raft_quorum = Gauge::default();
        for (name, help, gauge) in [
            ("minoots_raft_term", "Raft mode: the current term", &raft_term),
            (
                "minoots_raft_commit_index",
                "Raft mode: the last log index known committed",
                &raft_commit_index,
            ),
            ("minoots_raft_applied_index", "Raft mode: the last log index applied here", &raft_applied_index),
            ("minoots_raft_apply_lag", "Raft mode: committed entries not yet applied here", &raft_apply_lag),
            (
                "minoots_raft_quorum",
                "Raft mode: 1 while this node is part of a working majority",
                &raft_quorum,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        let outbox_pending = Gauge::default();
        let outbox_publish_lag = Histogram::new(latency_buckets);
        let action_attempts = Family::<ActionLabels, Counter>::default();
        let action_duration = Histogram::new(latency_buckets);
        let action_dead_lettered = Counter::default();
        let action_deferred = Counter::default();
        let event_streams_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "minoots_event_streams_closed",
            "Client event streams the server ended, by reason (lagged, too_slow, unauthenticated, unavailable)",
            event_streams_closed.clone(),
        );
        registry.register(
            "minoots_outbox_pending",
            "Outbox rows after the published watermark",
            outbox_pending.clone(),
        );
        registry.register(
            "minoots_outbox_publish_lag_seconds",
            "Time from an event to its acceptance by the sink (JetStream ack or action intake)",
            outbox_publish_lag.clone(),
        );
        registry.register(
            "minoots_action_attempt",
            "Action attempts by kind and outcome (succeeded, retry, failed)",
            action_attempts.clone(),
        );
        registry.register(
            "minoots_action_duration_seconds",
            "Duration of one action attempt",
            action_duration.clone(),
        );
        registry.register(
            "minoots_action_dead_lettered",
            "Deliveries moved to the dead-letter queue",
            action_dead_lettered.clone(),
        );
        registry.register(
            "minoots_action_deferred",
            "Attempts not made because the destination's circuit breaker was open (deferred, not counted)",
            action_deferred.clone(),
        );
        Self {
            registry,
            raft_term,
            raft_commit_index,
            raft_applied_index,
            raft_apply_lag,
            raft_quorum,
            outbox_pending,
            outbox_publish_lag,
            action_attempts,
            action_duration,
            action_dead_lettered,
            action_deferred,
            event_streams_closed,
            election_attempts,
            election_results,
            leadership_transitions,
            heartbeat_results,
            scheduled,
            fired,
            cancelled,
            pending,
            due_index,
            fire_lateness,
            commit_seconds,
            commit_batch,
            store_failures,
            fires_rejected,
            resyncs,
            commits_refused,
            auth_failures,
            circuit_open,
            circuit_opens,
            pool_exhaustion_warnings,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
