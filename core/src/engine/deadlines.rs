//! When the engine wants its next tick: one table of every deadline it keeps
//! ([`Deadline`]), and `poll_timeout` as its minimum. A deadline is listed
//! only while something can happen at it: no fire or load deadline during a
//! store backoff (nothing is sent before it ends) or while not leading; no
//! fire deadline while a commit is in flight (its completion, an input, is
//! what lets the next fires go); no lease deadline for a step already in
//! flight.

use super::{Engine, Leadership};
use crate::time::{Now, WallMs};

/// Why the engine wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Nothing else pending: the idle tick.
    Idle,
    /// Leading with a bound (lease mode, external mode): it passes by the
    /// local clock (step down at it).
    LeadershipEnds,
    /// Leading in lease mode: send the next renewal.
    LeaseRenewal,
    /// Not leading in lease mode: ask for the lease again.
    LeaseAcquire,
    /// A store backoff ends: writes and loads may go again.
    BackoffEnds,
    /// The earliest armed occurrence is due (or the fire hold after a
    /// "too early" ends, whichever is later).
    NextFire,
    /// The next page of the due index should be loaded.
    NextLoad,
}

impl Engine {
    /// The monotonic time (ms) at which the engine wants an `Input::Tick`:
    /// the earliest of [`Engine::deadlines`], never before now.
    pub fn poll_timeout(&self) -> Option<u64> {
        let now = self.last_now.mono_ms;
        self.deadlines().into_iter().flatten().map(|(_, at)| at).min().map(|at| at.max(now))
    }

    /// Every deadline the engine keeps now, each with its monotonic time;
    /// `None` for one that does not apply.
    pub fn deadlines(&self) -> [Option<(Deadline, u64)>; 7] {
        let now = self.last_now;
        let leading = matches!(self.leadership, Leadership::Leader { .. });
        let backing_off = now.mono_ms < self.backoff_until_mono;
        let [lease_renewal, lease_acquire] =
            self.keeper.as_ref().map_or([None; 2], |keeper| keeper.deadlines());
        let next_fire = || {
            let due = self.due.first_due()?;
            let at = now.mono_ms.saturating_add(wall_wait_ms(now, due));
            Some(at.max(self.fire_hold_until_mono))
        };
        let next_load = || Some(now.mono_ms.saturating_add(wall_wait_ms(now, self.next_load_wall()?)));
        [
            Some((Deadline::Idle, now.mono_ms + self.config.idle_tick_ms)),
            self.lead_until_mono.filter(|_| leading).map(|at| (Deadline::LeadershipEnds, at)),
            lease_renewal,
            lease_acquire,
            backing_off.then_some((Deadline::BackoffEnds, self.backoff_until_mono)),
            (leading && !backing_off && !self.commit_inflight())
                .then(next_fire)
                .flatten()
                .map(|at| (Deadline::NextFire, at)),
            (leading && !backing_off).then(next_load).flatten().map(|at| (Deadline::NextLoad, at)),
        ]
    }
}

/// Milliseconds from `now` until wall time `at` (0 if already past).
pub(super) fn wall_wait_ms(now: Now, at: WallMs) -> u64 {
    u64::try_from(at.saturating_sub(now.wall_ms)).unwrap_or(0)
}
