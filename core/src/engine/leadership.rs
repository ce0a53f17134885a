//! Leadership: becoming leader, keeping and renewing the lease, stepping
//! down, and being deposed — the only code that knows how the right to fire
//! is obtained.

use super::{Engine, Inflight, Leadership, LeadershipMode};
use crate::error::StoreFailure;
use crate::lease::{LeaseConfig, LeaseHolder};
use crate::store::{LEASE_SHARD, LeaseReply, StoreOp, StoreReply};
use crate::time::Now;

impl Engine {
    /// The store refused our epoch: someone else writes now.
    pub(super) fn depose(&mut self, now: Now, current_epoch: u64) {
        match self.config.mode {
            LeadershipMode::Standalone => {
                if let Leadership::Leader { .. } = self.leadership {
                    self.leadership = Leadership::Deposed { current_epoch };
                    self.stats.step_downs += 1;
                    self.resync();
                }
            }
            LeadershipMode::Lease(_) => self.step_down(now, None),
        }
    }

    /// Lease mode: stop acting as leader now.
    pub(super) fn step_down(&mut self, now: Now, leader: Option<LeaseHolder>) {
        if let Leadership::Leader { .. } = self.leadership {
            self.stats.step_downs += 1;
        }
        self.leadership = Leadership::Follower { leader };
        self.resync();
        self.refuse_queued();
        if let LeadershipMode::Lease(config) = self.config.mode {
            self.lease.next_acquire_mono = now.mono_ms + config.acquire_retry_ms;
        }
    }

    pub(super) fn become_leader(&mut self, epoch: u64, sent_mono: u64, config: LeaseConfig) {
        self.leadership = Leadership::Leader { epoch };
        self.stats.leaderships += 1;
        self.lease.valid_until_mono = config.valid_until(sent_mono);
        self.lease.next_renew_mono = sent_mono + config.renew_every_ms;
        self.lease.renew_inflight = false; // one of an earlier tenure answers into the void
        self.resync();
    }

    /// Lease mode: step down once the locally computed validity has passed.
    pub(super) fn expire_lease(&mut self, now: Now) {
        #[cfg(feature = "planted-bugs")]
        if self.config.plant.early_stepdown_off {
            return;
        }
        let leads = matches!(self.leadership, Leadership::Leader { .. });
        if matches!(self.config.mode, LeadershipMode::Lease(_))
            && leads
            && now.mono_ms >= self.lease.valid_until_mono
        {
            self.step_down(now, None);
        }
    }

    pub(super) fn on_acquired(
        &mut self,
        now: Now,
        sent_mono: u64,
        tenure: u64,
        result: Result<StoreReply, StoreFailure>,
    ) {
        self.lease.acquire_inflight = false;
        let LeadershipMode::Lease(config) = self.config.mode else {
            panic!("a lease reply in standalone mode");
        };
        if tenure != self.tenure {
            // Asked for in a tenure this engine has left since (a commit's
            // outcome became unknown meanwhile): a grant extends that tenure,
            // which must not be acted on. Ask again, in the current one, now.
            self.lease.next_acquire_mono = now.mono_ms;
            return;
        }
        self.lease.next_acquire_mono = now.mono_ms + config.acquire_retry_ms;
        match result {
            Ok(StoreReply::Lease(LeaseReply::Granted { epoch })) => {
                if config.valid_until(sent_mono) > now.mono_ms {
                    self.become_leader(epoch, sent_mono, config);
                }
                // Otherwise the grant came back too late to act on: try again.
            }
            Ok(StoreReply::Lease(LeaseReply::Held { holder })) => {
                self.leadership = Leadership::Follower { leader: Some(holder) };
            }
            Ok(other) => panic!("store replied {other:?} to AcquireLease"),
            Err(_) => self.stats.store_failures += 1,
        }
    }

    pub(super) fn on_renewed(
        &mut self,
        now: Now,
        sent_mono: u64,
        epoch: u64,
        result: Result<StoreReply, StoreFailure>,
    ) {
        let LeadershipMode::Lease(config) = self.config.mode else {
            panic!("a lease reply in standalone mode");
        };
        if self.leadership != (Leadership::Leader { epoch }) {
            // A renewal of a tenure already over; the flag belongs to the
            // current tenure's renewal (cleared when the tenure began).
            if !matches!(self.leadership, Leadership::Leader { .. }) {
                self.lease.renew_inflight = false;
            }
            return;
        }
        self.lease.renew_inflight = false;
        match result {
            Ok(StoreReply::Lease(LeaseReply::Renewed)) => {
                self.lease.valid_until_mono = self.lease.valid_until_mono.max(config.valid_until(sent_mono));
                self.lease.next_renew_mono = sent_mono + config.renew_every_ms;
            }
            Ok(StoreReply::Lease(LeaseReply::Lost { holder })) => self.step_down(now, holder),
            Ok(other) => panic!("store replied {other:?} to RenewLease"),
            Err(_) => {
                // Keep trying until the lease runs out locally.
                self.stats.store_failures += 1;
                self.lease.next_renew_mono = now.mono_ms + (config.renew_every_ms / 4).max(1);
            }
        }
    }

    pub(super) fn pump_lease(&mut self, now: Now) {
        let LeadershipMode::Lease(config) = self.config.mode else { return };
        let node_id = self.config.node_id.clone();
        match self.leadership {
            Leadership::Leader { epoch } => {
                if !self.lease.renew_inflight && now.mono_ms >= self.lease.next_renew_mono {
                    self.lease.renew_inflight = true;
                    let op =
                        StoreOp::RenewLease { shard: LEASE_SHARD, node_id, epoch, ttl_ms: config.ttl_ms };
                    self.emit_store(Inflight::Renew { sent_mono: now.mono_ms, epoch }, op);
                }
            }
            _ => {
                if !self.lease.acquire_inflight && now.mono_ms >= self.lease.next_acquire_mono {
                    self.lease.acquire_inflight = true;
                    let op = StoreOp::AcquireLease {
                        shard: LEASE_SHARD,
                        node_id,
                        tenure: self.tenure,
                        address: self.config.address.clone(),
                        ttl_ms: config.ttl_ms,
                    };
                    let tenure = self.tenure;
                    self.emit_store(Inflight::Acquire { sent_mono: now.mono_ms, tenure }, op);
                }
            }
        }
    }
}
