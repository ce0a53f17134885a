//! Leadership observability (cluster mode): MINOOTS's coordinator metrics and
//! tracing spans, derived from what the driver already sees. The engine asks
//! for the lease with `Effect::Store` carrying `StoreOp::AcquireLease` or
//! `StoreOp::RenewLease`, and learns the answer from the matching
//! `StoreDone`; the driver hands both to a [`Coordinator`], which counts:
//!
//! - `kernel_coordinator_election_attempts_total`: each `AcquireLease` sent;
//! - `kernel_coordinator_election_results_total{outcome}`: its reply,
//!   `granted`, `held` (another node leads) or `error` (the store failed);
//! - `kernel_coordinator_heartbeat_results_total{outcome}`: each
//!   `RenewLease` reply, `renewed`, `lost` or `error`;
//! - `kernel_coordinator_leadership_transitions_total`: each change into or
//!   out of the `leader` role, as the driver publishes it.
//!
//! Spans: every acquisition runs inside `coordinator.election_round` and
//! every renewal inside `coordinator.heartbeat` (fields `node_id`, `shard`,
//! `epoch`, `outcome`); a grant that replaces another node's tenure is
//! recorded as a `coordinator.takeover` span with the previous leader.
//! Nothing here changes what the engine decides.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use minoots_core::StoreFailure;
use minoots_core::engine::{IoId, Leadership};
use minoots_core::store::{LeaseReply, StoreOp, StoreReply};

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseOp {
    Acquire,
    Renew,
}

/// Counts lease operations and leadership changes; one per driver.
#[derive(Debug, Default)]
pub struct Coordinator {
    node_id: String,
    inflight: BTreeMap<IoId, (LeaseOp, tracing::Span)>,
    /// Whether the last published role was `leader` (shared: the driver publishes its status through `&self`).
    was_leader: AtomicBool,
}

impl Coordinator {
    /// An observer for node `node_id`.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self { node_id: node_id.into(), inflight: BTreeMap::new(), was_leader: AtomicBool::new(false) }
    }

    /// A store operation is about to be sent. Returns the span to run it in
    /// (`Span::none()` for anything but a lease operation).
    pub fn on_sent(&mut self, metrics: &Metrics, io: IoId, op: &StoreOp) -> tracing::Span {
        let (kind, span) = match op {
            StoreOp::AcquireLease { shard, .. } => {
                metrics.election_attempts.inc();
                let span = tracing::debug_span!(
                    "coordinator.election_round",
                    node_id = %self.node_id,
                    shard = *shard,
                    epoch = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                );
                (LeaseOp::Acquire, span)
            }
            StoreOp::RenewLease { shard, epoch, .. } => {
                let span = tracing::trace_span!(
                    "coordinator.heartbeat",
                    node_id = %self.node_id,
                    shard = *shard,
                    epoch = *epoch,
                    outcome = tracing::field::Empty,
                );
                (LeaseOp::Renew, span)
            }
            _ => return tracing::Span::none(),
        };
        self.inflight.insert(io, (kind, span.clone()));
        span
    }

    /// A store operation finished; `before` is the engine's leadership before
    /// it sees the result.
    pub fn on_done(
        &mut self,
        metrics: &Metrics,
        io: IoId,
        result: &Result<StoreReply, StoreFailure>,
        before: &Leadership,
    ) {
        let Some((kind, span)) = self.inflight.remove(&io) else { return };
        let outcome = match (kind, result) {
            (LeaseOp::Acquire, Ok(StoreReply::Lease(LeaseReply::Granted { epoch }))) => {
                span.record("epoch", *epoch);
                if let Leadership::Follower { leader: Some(previous) } = before
                    && previous.node_id != self.node_id
                {
                    let takeover = tracing::info_span!(
                        parent: &span,
                        "coordinator.takeover",
                        node_id = %self.node_id,
                        epoch = *epoch,
                        previous_leader = %previous.node_id,
                        previous_epoch = previous.epoch,
                    );
                    takeover.in_scope(|| {
                        tracing::info!(epoch, previous = %previous.node_id, "took over the lease");
                    });
                }
                "granted"
            }
            (LeaseOp::Acquire, Ok(StoreReply::Lease(LeaseReply::Held { holder }))) => {
                span.record("epoch", holder.epoch);
                "held"
            }
            (LeaseOp::Renew, Ok(StoreReply::Lease(LeaseReply::Renewed))) => "renewed",
            (LeaseOp::Renew, Ok(StoreReply::Lease(LeaseReply::Lost { .. }))) => "lost",
            (_, Ok(_)) => "unexpected",
            (_, Err(_)) => "error",
        };
        span.record("outcome", outcome);
        let family = match kind {
            LeaseOp::Acquire => &metrics.election_results,
            LeaseOp::Renew => &metrics.heartbeat_results,
        };
        family.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// The driver published `role`; counts a transition into or out of `leader`.
    pub fn on_role(&self, metrics: &Metrics, role: crate::handle::NodeRole) {
        let leads = role == crate::handle::NodeRole::Leader;
        if self.was_leader.swap(leads, Ordering::Relaxed) != leads {
            metrics.leadership_transitions.inc();
            if leads {
                tracing::info!(node_id = %self.node_id, "leading");
            } else {
                tracing::info!(node_id = %self.node_id, role = role.as_str(), "no longer leading");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minoots_core::lease::LeaseHolder;

    fn text(metrics: &Metrics) -> String {
        metrics.encode()
    }

    #[test]
    fn counts_elections_heartbeats_and_transitions() {
        let metrics = Metrics::new();
        let mut c = Coordinator::new("n1");
        let acquire = StoreOp::AcquireLease {
            shard: 0,
            node_id: "n1".into(),
            tenure: 1,
            address: "a".into(),
            ttl_ms: 2_000,
        };
        c.on_sent(&metrics, 1, &acquire);
        c.on_sent(&metrics, 2, &acquire);
        let other = LeaseHolder { node_id: "n2".into(), address: "b".into(), epoch: 4, tenure: 1 };
        let held = Ok(StoreReply::Lease(LeaseReply::Held { holder: other.clone() }));
        c.on_done(&metrics, 1, &held, &Leadership::Opening);
        let granted = Ok(StoreReply::Lease(LeaseReply::Granted { epoch: 5 }));
        c.on_done(&metrics, 2, &granted, &Leadership::Follower { leader: Some(other) });
        c.on_role(&metrics, crate::handle::NodeRole::Leader);
        let renew = StoreOp::RenewLease { shard: 0, node_id: "n1".into(), epoch: 5, ttl_ms: 2_000 };
        c.on_sent(&metrics, 3, &renew);
        c.on_done(&metrics, 3, &Ok(StoreReply::Lease(LeaseReply::Renewed)), &Leadership::Leader { epoch: 5 });
        c.on_sent(&metrics, 4, &renew);
        c.on_done(&metrics, 4, &Err(StoreFailure::Unknown("down".into())), &Leadership::Leader { epoch: 5 });
        c.on_role(&metrics, crate::handle::NodeRole::Leader);
        c.on_role(&metrics, crate::handle::NodeRole::Follower);
        // Other ops are not counted.
        c.on_sent(&metrics, 5, &StoreOp::Open { node_id: "n1".into() });
        c.on_done(&metrics, 5, &Ok(StoreReply::Opened { epoch: 1 }), &Leadership::Opening);

        let out = text(&metrics);
        for line in [
            "kernel_coordinator_election_attempts_total 2",
            "kernel_coordinator_election_results_total{outcome=\"held\"} 1",
            "kernel_coordinator_election_results_total{outcome=\"granted\"} 1",
            "kernel_coordinator_heartbeat_results_total{outcome=\"renewed\"} 1",
            "kernel_coordinator_heartbeat_results_total{outcome=\"error\"} 1",
            "kernel_coordinator_leadership_transitions_total 2",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }
}
