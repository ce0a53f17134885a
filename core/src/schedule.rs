//! Schedule arithmetic: the slots of interval and cron schedules, and the
//! plan of what to record when an occurrence comes due (misfire policies).
//!
//! Cron expressions have 5 fields (`min hour dom month dow`) or 6 with a
//! leading seconds field, plus nicknames (`@hourly`, `@daily`, …). They are
//! evaluated in the timer's IANA time zone.
//!
//! DST rules (documented to users in README.md):
//! - **Spring forward (a local time that does not exist).** A slot whose
//!   wall-clock time falls in the gap fires at the first instant after the gap
//!   (e.g. `30 2 * * *` in Europe/Paris on the change day fires at 03:00 local).
//! - **Fall back (a local time that happens twice).** A slot whose local time
//!   occurs twice fires once, at its first (earlier, DST) instant.
//! - Interval schedules are absolute (UTC milliseconds) and ignore DST.

use crate::ids::TimerId;
use crate::store::{AfterFire, FireOp, Recurrence};
use crate::time::WallMs;
use crate::timer::Schedule;

/// The first slot of `schedule` strictly after `after_ms`, honouring
/// `start_at_ms` and `end_at_ms` (not `max_occurrences`, which is counted by
/// the caller). `None` when no slot remains. `Once` schedules: their
/// `fire_at_ms` if it is after `after_ms`.
pub fn slot_after(schedule: &Schedule, after_ms: WallMs) -> Option<WallMs> {
    let _ = (schedule, after_ms);
    todo!("implemented in the schedule module")
}

/// What to record when occurrence `occurrence`, due at `due_ms`, of a timer is
/// taken for firing at engine time `now_ms` (≥ `due_ms`).
///
/// - One-shot timers (`recurrence` = `None`): one fire, then `Finished`.
/// - Recurring timers: occurrence numbers count fires (1-based); a timer with
///   `max_occurrences = n` finishes after fire n; `end_at_ms` bounds slots.
///   - `fire_once`: fire this occurrence; the next is the first slot after `now_ms`
///     (every missed slot in between is coalesced into this one fire).
///   - `fire_all`: fire this occurrence and then every further slot ≤ `now_ms`,
///     each as its own occurrence, up to [`crate::timer::MISFIRE_FIRE_ALL_CAP`]
///     fires; the next is the first slot after `now_ms`.
///   - `skip`: if `now_ms − due_ms` > [`crate::timer::MISFIRE_GRACE_MS`], record no
///     fire (`skipped = true`, occurrence unchanged) and move to the first slot
///     after `now_ms`; otherwise as `fire_once`.
///
/// The ops chain: each op's `then` is `Next { due_ms }` equal to the following
/// op's `due_ms`; the last op's `then` is `Finished` or the next future slot.
pub fn plan_fires(
    timer_id: TimerId,
    occurrence: u32,
    due_ms: WallMs,
    recurrence: Option<&Recurrence>,
    now_ms: WallMs,
) -> Vec<FireOp> {
    let _ = (timer_id, occurrence, due_ms, recurrence, now_ms, AfterFire::Finished);
    todo!("implemented in the schedule module")
}
