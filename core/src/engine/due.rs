//! The due index and its loading: paging pending timers in from the store
//! up to the horizon, arming and re-arming entries, and throwing the index
//! away when it can no longer be trusted.

use super::{Engine, Inflight, Leadership};
use crate::ids::TimerId;
use crate::store::{DueTimer, StoreOp};
use crate::time::{Now, WallMs};

impl Engine {
    /// Forgets the in-memory index and pages it in again from the store; a
    /// page already in flight is dropped when it lands.
    pub(super) fn resync(&mut self) {
        self.stats.resyncs += 1;
        self.due.clear();
        self.loaded_through = None;
        self.index_generation += 1;
    }

    pub(super) fn on_loaded(&mut self, generation: u64, timers: Vec<DueTimer>, more: bool) {
        let Some(until) = self.pending_load_until.take() else {
            panic!("load reply without a load in flight");
        };
        if !matches!(self.leadership, Leadership::Leader { .. }) || generation != self.index_generation {
            // Stepped down or resynced while the page was in flight: drop it.
            return;
        }
        let last = timers.last().map(|t| (t.due_ms, t.timer_id));
        for t in timers {
            self.due.insert(t);
        }
        self.loaded_through = match (more, last) {
            (true, Some(key)) => Some(key),
            _ => Some((until, TimerId(uuid::Uuid::max()))),
        };
    }

    pub(super) fn emit_load(&mut self, now: Now) {
        let until = now.wall_ms.saturating_add(self.config.horizon_ms);
        self.pending_load_until = Some(until);
        let after = self.loaded_through;
        let generation = self.index_generation;
        self.emit_store(
            Inflight::Load { generation },
            StoreOp::LoadDue { after, until_ms: until, limit: self.config.load_page },
        );
    }

    /// The wall time at which the next page should be loaded.
    pub(super) fn next_load_wall(&self) -> Option<WallMs> {
        if self.load_inflight() {
            return None;
        }
        match self.loaded_through {
            None => Some(WallMs::MIN),
            Some((due, _)) => Some(due.saturating_sub(self.config.horizon_ms / 2)),
        }
    }

    /// Whether a page of the due index is being loaded (at most one is).
    pub(super) fn load_inflight(&self) -> bool {
        self.inflight.values().any(|w| matches!(w, Inflight::Load { .. }))
    }

    pub(super) fn arm(&mut self, timer: DueTimer) {
        self.due.insert(timer);
    }

    pub(super) fn arm_if_loaded(&mut self, timer: DueTimer) {
        if self.loaded_through.is_some_and(|through| (timer.due_ms, timer.timer_id) <= through) {
            self.due.insert(timer);
        }
    }
}
