//! The store lease as its own sans-IO state machine: when to ask for the
//! lease, when to renew it, what a reply means, and when the lease ends by
//! this node's own clock. It knows nothing of timers; it tells the engine
//! what leadership it holds through one type, [`LeadershipChange`], and the
//! engine tells it when it must let go (a store refusing its epoch, a commit
//! whose outcome is unknown). Standalone mode has no keeper: `Open` makes
//! the engine leader for good. In external mode the driver feeds the same
//! changes ([`super::Input::Leadership`]), from a Raft election for instance.

use crate::error::StoreFailure;
use crate::lease::{LeaseConfig, LeaseHolder};
use crate::store::{LEASE_SHARD, LeaseReply, StoreOp, StoreReply};
use crate::time::Now;

/// What the engine learns about its right to fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadershipChange {
    /// Leading at `epoch` until `until_mono`. For an epoch not held yet it
    /// is a new tenure (the due index is reloaded); for the epoch held it
    /// only moves the bound (a renewal).
    Leading {
        /// The fencing epoch.
        epoch: u64,
        /// Act only before this monotonic time of this node's clock: every
        /// commit must be sent before it, and the engine steps down at it.
        /// `None`: until told otherwise (standalone's `Open`).
        until_mono: Option<u64>,
    },
    /// Not leading; someone else holds it (a hint for clients), or nobody
    /// known. Not a step down: the engine was not leading.
    Following {
        /// The holder, if known.
        leader: Option<LeaseHolder>,
    },
    /// Stop leading now (the lease was lost, or ran out by the local clock).
    SteppedDown {
        /// The new holder, if known.
        leader: Option<LeaseHolder>,
    },
}

/// What a lease reply meant to the keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Heard {
    /// Nothing the engine must act on (a grant too late to use, a reply of
    /// a tenure or epoch already over).
    Nothing,
    /// Leadership changed.
    Change(LeadershipChange),
    /// The store failed this tenure's request (the keeper retries on its own).
    StoreFailed,
}

/// A lease operation the keeper wants sent, and what to remember about it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum LeaseAsk {
    /// Ask for the lease in `tenure`.
    Acquire {
        /// When it was sent.
        sent_mono: u64,
        /// The tenure it asks in.
        tenure: u64,
        /// The op.
        op: StoreOp,
    },
    /// Renew the lease held at `epoch`.
    Renew {
        /// When it was sent.
        sent_mono: u64,
        /// The epoch held.
        epoch: u64,
        /// The op.
        op: StoreOp,
    },
}

/// The lease of one engine, on its monotonic clock.
#[derive(Debug)]
pub(super) struct LeaseKeeper {
    config: LeaseConfig,
    /// The epoch held while leading.
    held: Option<u64>,
    /// While leading: act only before this.
    valid_until_mono: u64,
    /// While leading: send the next renewal at this time.
    next_renew_mono: u64,
    renew_inflight: bool,
    /// While not leading: ask for the lease at this time.
    next_acquire_mono: u64,
    acquire_inflight: bool,
    /// This engine's lease tenure id (see [`crate::lease`]): new at every
    /// start and after every commit whose outcome it could not learn.
    tenure: u64,
}

impl LeaseKeeper {
    /// A keeper with nothing held yet, asking in `tenure`.
    pub(super) fn new(config: LeaseConfig, tenure: u64) -> Self {
        Self {
            config,
            held: None,
            valid_until_mono: 0,
            next_renew_mono: 0,
            renew_inflight: false,
            next_acquire_mono: 0,
            acquire_inflight: false,
            tenure,
        }
    }

    /// The engine stops leading (the lease ran out by its clock, or the store
    /// refused the epoch): ask again after the retry delay.
    pub(super) fn step_down(&mut self, now: Now) {
        self.held = None;
        self.next_acquire_mono = now.mono_ms + self.config.acquire_retry_ms;
    }

    /// A commit's outcome is unknown: let go of the lease and leave this
    /// tenure (also when the lease already ran out locally: the next grant
    /// must not extend it), and ask at once in a new one, whose new epoch the
    /// store grants only after that commit applied, or makes it refuse it.
    pub(super) fn abandon_tenure(&mut self, now: Now) {
        self.held = None;
        self.tenure = self.tenure.saturating_add(1);
        self.next_acquire_mono = self.next_acquire_mono.min(now.mono_ms);
    }

    /// The lease operation to send now, if any.
    pub(super) fn poll_ask(&mut self, now: Now, node_id: &str, address: &str) -> Option<LeaseAsk> {
        let ttl_ms = self.config.ttl_ms;
        match self.held {
            Some(epoch) if !self.renew_inflight && now.mono_ms >= self.next_renew_mono => {
                self.renew_inflight = true;
                let op =
                    StoreOp::RenewLease { shard: LEASE_SHARD, node_id: node_id.to_owned(), epoch, ttl_ms };
                Some(LeaseAsk::Renew { sent_mono: now.mono_ms, epoch, op })
            }
            None if !self.acquire_inflight && now.mono_ms >= self.next_acquire_mono => {
                self.acquire_inflight = true;
                let op = StoreOp::AcquireLease {
                    shard: LEASE_SHARD,
                    node_id: node_id.to_owned(),
                    tenure: self.tenure,
                    address: address.to_owned(),
                    ttl_ms,
                };
                Some(LeaseAsk::Acquire { sent_mono: now.mono_ms, tenure: self.tenure, op })
            }
            _ => None,
        }
    }

    /// The reply to an `AcquireLease` sent at `sent_mono` in `tenure`.
    pub(super) fn on_acquired(
        &mut self,
        now: Now,
        sent_mono: u64,
        tenure: u64,
        result: Result<StoreReply, StoreFailure>,
    ) -> Heard {
        self.acquire_inflight = false;
        if tenure != self.tenure {
            // Asked for in a tenure this engine has left since (a commit's
            // outcome became unknown meanwhile): a grant extends that tenure,
            // which must not be acted on. Ask again, in the current one, now.
            self.next_acquire_mono = now.mono_ms;
            return Heard::Nothing;
        }
        self.next_acquire_mono = now.mono_ms + self.config.acquire_retry_ms;
        match result {
            Ok(StoreReply::Lease(LeaseReply::Granted { epoch })) => {
                if self.config.valid_until(sent_mono) <= now.mono_ms {
                    return Heard::Nothing; // came back too late to act on: try again
                }
                self.held = Some(epoch);
                self.valid_until_mono = self.config.valid_until(sent_mono);
                self.next_renew_mono = sent_mono + self.config.renew_every_ms;
                self.renew_inflight = false; // one of an earlier tenure answers into the void
                Heard::Change(LeadershipChange::Leading { epoch, until_mono: Some(self.valid_until_mono) })
            }
            Ok(StoreReply::Lease(LeaseReply::Held { holder })) => {
                Heard::Change(LeadershipChange::Following { leader: Some(holder) })
            }
            Ok(other) => panic!("store replied {other:?} to AcquireLease"),
            Err(_) => Heard::StoreFailed,
        }
    }

    /// The reply to a `RenewLease` of `epoch` sent at `sent_mono`.
    pub(super) fn on_renewed(
        &mut self,
        now: Now,
        sent_mono: u64,
        epoch: u64,
        result: Result<StoreReply, StoreFailure>,
    ) -> Heard {
        if self.held != Some(epoch) {
            // A renewal of a tenure already over; the flag belongs to the
            // current tenure's renewal (cleared when the tenure began).
            if self.held.is_none() {
                self.renew_inflight = false;
            }
            return Heard::Nothing;
        }
        self.renew_inflight = false;
        match result {
            Ok(StoreReply::Lease(LeaseReply::Renewed)) => {
                self.valid_until_mono = self.valid_until_mono.max(self.config.valid_until(sent_mono));
                self.next_renew_mono = sent_mono + self.config.renew_every_ms;
                Heard::Change(LeadershipChange::Leading { epoch, until_mono: Some(self.valid_until_mono) })
            }
            Ok(StoreReply::Lease(LeaseReply::Lost { holder })) => {
                self.step_down(now);
                Heard::Change(LeadershipChange::SteppedDown { leader: holder })
            }
            Ok(other) => panic!("store replied {other:?} to RenewLease"),
            Err(_) => {
                // Keep trying until the lease runs out locally.
                self.next_renew_mono = now.mono_ms + (self.config.renew_every_ms / 4).max(1);
                Heard::StoreFailed
            }
        }
    }

    /// The keeper's deadlines: the next renewal while leading, the next ask
    /// while not. (The lease's local end is the engine's: it is the bound of
    /// the leadership the keeper reported.)
    pub(super) fn deadlines(&self) -> [Option<(super::Deadline, u64)>; 2] {
        use super::Deadline;
        let leading = self.held.is_some();
        [
            (leading && !self.renew_inflight).then_some((Deadline::LeaseRenewal, self.next_renew_mono)),
            (!leading && !self.acquire_inflight).then_some((Deadline::LeaseAcquire, self.next_acquire_mono)),
        ]
    }
}

#[cfg(test)]
mod tests {
    //! Exact effects of each handler (default timing: TTL 2 s, valid for
    //! 1,800 ms of local time after sending, renew every 500 ms, retry 250 ms).

    use super::*;

    const NODE: &str = "node-a";

    fn at(mono_ms: u64) -> Now {
        Now::new(1_700_000_000_000 + mono_ms as i64, mono_ms)
    }

    fn keeper() -> LeaseKeeper {
        LeaseKeeper::new(LeaseConfig::default(), 7)
    }

    fn holder(node_id: &str) -> LeaseHolder {
        LeaseHolder { node_id: node_id.into(), address: "b".into(), epoch: 3, tenure: 1 }
    }

    fn granted(epoch: u64) -> Result<StoreReply, StoreFailure> {
        Ok(StoreReply::Lease(LeaseReply::Granted { epoch }))
    }

    fn acquire(tenure: u64, sent_mono: u64) -> LeaseAsk {
        let op = StoreOp::AcquireLease {
            shard: LEASE_SHARD,
            node_id: NODE.into(),
            tenure,
            address: "a".into(),
            ttl_ms: 2_000,
        };
        LeaseAsk::Acquire { sent_mono, tenure, op }
    }

    fn renew(epoch: u64, sent_mono: u64) -> LeaseAsk {
        let op = StoreOp::RenewLease { shard: LEASE_SHARD, node_id: NODE.into(), epoch, ttl_ms: 2_000 };
        LeaseAsk::Renew { sent_mono, epoch, op }
    }

    /// A keeper that asked at 0 and was granted `epoch` at 10.
    fn leading(epoch: u64) -> LeaseKeeper {
        let mut k = keeper();
        assert_eq!(k.poll_ask(at(0), NODE, "a"), Some(acquire(7, 0)));
        assert_eq!(
            k.on_acquired(at(10), 0, 7, granted(epoch)),
            Heard::Change(LeadershipChange::Leading { epoch, until_mono: Some(1_800) })
        );
        k
    }

    #[test]
    fn it_asks_once_at_a_time_and_a_grant_in_time_leads_until_the_local_validity() {
        let mut k = keeper();
        assert_eq!(k.deadlines(), [None, Some((crate::engine::Deadline::LeaseAcquire, 0))]);
        assert_eq!(k.poll_ask(at(0), NODE, "a"), Some(acquire(7, 0)));
        assert_eq!(k.poll_ask(at(1), NODE, "a"), None, "one ask in flight");
        assert_eq!(
            k.on_acquired(at(10), 0, 7, granted(4)),
            Heard::Change(LeadershipChange::Leading { epoch: 4, until_mono: Some(1_800) }),
            "validity counts from the send, not the reply"
        );
        assert_eq!(k.deadlines()[0], Some((crate::engine::Deadline::LeaseRenewal, 500)));
        assert_eq!(k.poll_ask(at(499), NODE, "a"), None);
        assert_eq!(k.poll_ask(at(500), NODE, "a"), Some(renew(4, 500)), "renewal every 500 ms from the send");
    }

    #[test]
    fn a_grant_that_returns_too_late_is_not_acted_on_and_it_asks_again_after_the_retry() {
        let mut k = keeper();
        k.poll_ask(at(0), NODE, "a");
        assert_eq!(k.on_acquired(at(1_800), 0, 7, granted(4)), Heard::Nothing);
        assert_eq!(k.deadlines()[0], None, "not leading: no renewal");
        assert_eq!(k.poll_ask(at(2_049), NODE, "a"), None);
        assert_eq!(k.poll_ask(at(2_050), NODE, "a"), Some(acquire(7, 2_050)));
    }

    #[test]
    fn a_held_lease_names_its_holder_and_a_failure_waits_for_the_retry() {
        let mut k = keeper();
        k.poll_ask(at(0), NODE, "a");
        let held = Ok(StoreReply::Lease(LeaseReply::Held { holder: holder("node-b") }));
        assert_eq!(
            k.on_acquired(at(10), 0, 7, held),
            Heard::Change(LeadershipChange::Following { leader: Some(holder("node-b")) })
        );
        assert_eq!(k.poll_ask(at(260), NODE, "a"), Some(acquire(7, 260)));
        assert_eq!(
            k.on_acquired(at(270), 260, 7, Err(StoreFailure::Unknown("down".into()))),
            Heard::StoreFailed
        );
        assert_eq!(k.poll_ask(at(519), NODE, "a"), None);
        assert_eq!(k.poll_ask(at(520), NODE, "a"), Some(acquire(7, 520)));
    }

    #[test]
    fn a_reply_from_an_abandoned_tenure_is_ignored_and_it_asks_at_once_in_the_new_one() {
        let mut k = keeper();
        k.poll_ask(at(0), NODE, "a");
        k.abandon_tenure(at(5));
        let late = k.on_acquired(at(10), 0, 7, Err(StoreFailure::Unknown("down".into())));
        assert_eq!(late, Heard::Nothing, "a reply to tenure 7, even a failure, is not this tenure's");
        assert_eq!(k.poll_ask(at(10), NODE, "a"), Some(acquire(8, 10)));
    }

    #[test]
    fn a_renewal_extends_a_lost_lease_steps_down_and_a_failed_one_is_retried_sooner() {
        let mut k = leading(4);
        k.poll_ask(at(500), NODE, "a");
        let renewed = Ok(StoreReply::Lease(LeaseReply::Renewed));
        assert_eq!(
            k.on_renewed(at(520), 500, 4, renewed),
            Heard::Change(LeadershipChange::Leading { epoch: 4, until_mono: Some(2_300) }),
            "the same epoch, a later bound"
        );
        assert_eq!(k.poll_ask(at(1_000), NODE, "a"), Some(renew(4, 1_000)));
        assert_eq!(
            k.on_renewed(at(1_010), 1_000, 4, Err(StoreFailure::Unknown("down".into()))),
            Heard::StoreFailed,
            "a failed renewal extends nothing"
        );
        assert_eq!(k.poll_ask(at(1_134), NODE, "a"), None);
        assert_eq!(k.poll_ask(at(1_135), NODE, "a"), Some(renew(4, 1_135)), "retried after 500 / 4 ms");
        let lost = Ok(StoreReply::Lease(LeaseReply::Lost { holder: Some(holder("node-b")) }));
        assert_eq!(
            k.on_renewed(at(1_140), 1_135, 4, lost),
            Heard::Change(LeadershipChange::SteppedDown { leader: Some(holder("node-b")) })
        );
        assert_eq!(k.deadlines()[0], None, "not leading: no renewal");
        assert_eq!(k.poll_ask(at(1_389), NODE, "a"), None);
        assert_eq!(k.poll_ask(at(1_390), NODE, "a"), Some(acquire(7, 1_390)));
    }

    #[test]
    fn a_renewal_of_a_tenure_already_over_changes_nothing() {
        let mut k = leading(4);
        k.poll_ask(at(500), NODE, "a");
        k.step_down(at(600));
        let renewed = Ok(StoreReply::Lease(LeaseReply::Renewed));
        assert_eq!(k.on_renewed(at(610), 500, 4, renewed), Heard::Nothing);
        assert_eq!(k.deadlines()[1], Some((crate::engine::Deadline::LeaseAcquire, 850)));
    }
}
