//! Leadership as the engine sees it: one entry for every change
//! ([`Engine::on_leadership`]: "leading with epoch E until T", "following
//! (leader hint)", "stepped down"), fed by standalone's `Open`, by the lease
//! keeper ([`super::lease_keeper`]) or, in external mode, by the driver
//! ([`super::Input::Leadership`]); the bound T (stepping down at it), being
//! deposed. How leadership is obtained is not the engine's business.

use super::lease_keeper::{Heard, LeadershipChange, LeaseAsk};
use super::{Engine, Inflight, Leadership, LeadershipMode};
use crate::error::StoreFailure;
use crate::lease::LeaseHolder;
use crate::store::StoreReply;
use crate::time::Now;

impl Engine {
    /// Applies a change of leadership.
    pub(super) fn on_leadership(&mut self, change: LeadershipChange) {
        match change {
            LeadershipChange::Leading { epoch, until_mono }
                if self.leadership == (Leadership::Leader { epoch }) =>
            {
                self.lead_until_mono = until_mono; // the same tenure, a new bound
            }
            LeadershipChange::Leading { epoch, until_mono } => {
                self.leadership = Leadership::Leader { epoch };
                self.lead_until_mono = until_mono;
                self.stats.leaderships += 1;
                self.resync();
            }
            LeadershipChange::Following { leader } => self.leadership = Leadership::Follower { leader },
            LeadershipChange::SteppedDown { leader } => self.stop_leading(leader),
        }
    }

    /// Stops acting as leader now: the index is dropped, queued writes refused.
    fn stop_leading(&mut self, leader: Option<LeaseHolder>) {
        if let Leadership::Leader { .. } = self.leadership {
            self.stats.step_downs += 1;
        }
        self.leadership = Leadership::Follower { leader };
        self.lead_until_mono = None;
        self.resync();
        self.refuse_queued();
    }

    /// Steps down of the engine's own accord (the keeper asks again later).
    pub(super) fn step_down(&mut self, now: Now, leader: Option<LeaseHolder>) {
        self.stop_leading(leader);
        if let Some(keeper) = &mut self.keeper {
            keeper.step_down(now);
        }
    }

    /// The store refused our epoch: someone else writes now.
    pub(super) fn depose(&mut self, now: Now, current_epoch: u64) {
        if self.config.mode != LeadershipMode::Standalone {
            self.step_down(now, None);
        } else if let Leadership::Leader { .. } = self.leadership {
            // Standalone: another process opened the store after this one.
            self.leadership = Leadership::Deposed { current_epoch };
            self.stats.step_downs += 1;
            self.resync();
        }
    }

    /// Steps down once the leadership's bound has passed by the local clock.
    pub(super) fn expire_leadership(&mut self, now: Now) {
        #[cfg(feature = "planted-bugs")]
        if self.config.plant.early_stepdown_off {
            return;
        }
        if self.lead_until_mono.is_some_and(|until| now.mono_ms >= until) {
            self.step_down(now, None);
        }
    }

    /// The reply to a lease acquisition.
    pub(super) fn on_acquired(
        &mut self,
        now: Now,
        sent_mono: u64,
        tenure: u64,
        result: Result<StoreReply, StoreFailure>,
    ) {
        let keeper = self.keeper.as_mut().expect("a lease reply in standalone mode");
        let heard = keeper.on_acquired(now, sent_mono, tenure, result);
        self.on_heard(heard);
    }

    /// The reply to a lease renewal.
    pub(super) fn on_renewed(
        &mut self,
        now: Now,
        sent_mono: u64,
        epoch: u64,
        result: Result<StoreReply, StoreFailure>,
    ) {
        let keeper = self.keeper.as_mut().expect("a lease reply in standalone mode");
        let heard = keeper.on_renewed(now, sent_mono, epoch, result);
        self.on_heard(heard);
    }

    fn on_heard(&mut self, heard: Heard) {
        match heard {
            Heard::Nothing => {}
            Heard::Change(change) => self.on_leadership(change),
            Heard::StoreFailed => self.stats.store_failures += 1,
        }
    }

    /// A commit's outcome is unknown and may still apply later: in lease
    /// mode, stop leading and leave the tenure, so that the store fences that
    /// commit out (`LeaseKeeper::abandon_tenure`); in external mode, stop
    /// leading until the outside source reports leadership again (it must
    /// first make the store fence what is still in flight, e.g. a Raft
    /// barrier entry). Standalone has nothing to leave: it is the only writer.
    pub(super) fn abandon_tenure(&mut self, now: Now) {
        match (&mut self.keeper, self.config.mode) {
            (Some(keeper), _) => keeper.abandon_tenure(now),
            (None, LeadershipMode::External) => {}
            (None, _) => return,
        }
        if let Leadership::Leader { .. } = self.leadership {
            self.stop_leading(None);
        }
    }

    /// Sends the lease operation the keeper wants now, if any.
    pub(super) fn pump_lease(&mut self, now: Now) {
        let Some(keeper) = &mut self.keeper else { return };
        match keeper.poll_ask(now, &self.config.node_id, &self.config.address) {
            Some(LeaseAsk::Acquire { sent_mono, tenure, op }) => {
                self.emit_store(Inflight::Acquire { sent_mono, tenure }, op)
            }
            Some(LeaseAsk::Renew { sent_mono, epoch, op }) => {
                self.emit_store(Inflight::Renew { sent_mono, epoch }, op)
            }
            None => {}
        }
    }
}
