//! The liveness phase. After the safety phase every fault is healed (killed
//! nodes restart, pauses end, links and the database come back, the network
//! is clean), the clients finish their last operation and stop, and the
//! cluster runs on for at most [`bound_ms`]. By then:
//!
//! - **every due occurrence has fired**: no timer in the store is still
//!   scheduled with a due time more than [`lateness_max_ms`] in the past
//!   (store clock). Acknowledged timers are in the store (checked by
//!   `acked-durable`), so this covers every due, uncancelled acknowledged
//!   occurrence. It covers *unacknowledged* timers just the same: a timer
//!   is live as soon as its create committed in the store, whether or not
//!   its reply reached anyone — a create whose reply was lost, or whose
//!   commit timed out at the node and applied at the database later, or
//!   that a crashed incarnation sent before it died, must fire like any
//!   other, because its client may never retry;
//! - **every committed event reached the stream**: each outbox row was
//!   relayed to subscribers by some node (rows committed within the last
//!   [`RELAY_ALLOWANCE_MS`] of the phase may still be on their way).
//!
//! The bound: the latest due time a timer acknowledged before the heal can
//! have (one-shot delay or recurring span, plus the most a node clock runs
//! ahead of the store) plus the lateness allowed after the heal: two lease
//! TTLs to elect a leader, the most a node clock runs behind (it fires late
//! by that much), drift over the phase, and 2 s of slack. The phase ends
//! early once nothing is scheduled and every event was relayed.

use std::collections::BTreeSet;

use minoots_core::timer::TimerStatus;

use crate::clock::WALL_OFFSET_MAX_MS;
use crate::invariants::Violation;
use crate::seed_plan::SeedPlan;
use crate::workload::{ONCE_DELAY_MAX_MS, RECURRING_SPAN_MAX_MS};
use crate::world::World;

/// Clock drift allowance over the liveness phase.
const DRIFT_ALLOWANCE_MS: u64 = 1_000;
/// Extra slack.
const SLACK_MS: u64 = 2_000;
/// Rows committed this recently (store clock) when the phase ends need not
/// have been relayed yet: a recurring timer can fire a moment before the end,
/// and its row is on its way to the relay.
const RELAY_ALLOWANCE_MS: i64 = 1_000;

/// How late (store clock) an occurrence may fire once every fault is healed.
pub fn lateness_max_ms(plan: &SeedPlan) -> u64 {
    2 * plan.lease.ttl_ms + WALL_OFFSET_MAX_MS as u64 + DRIFT_ALLOWANCE_MS + SLACK_MS
}

/// How long the liveness phase may last.
pub fn bound_ms(plan: &SeedPlan) -> u64 {
    ONCE_DELAY_MAX_MS.max(RECURRING_SPAN_MAX_MS) + WALL_OFFSET_MAX_MS as u64 + lateness_max_ms(plan)
}

/// Whether everything that must happen has happened: nothing scheduled, every event relayed.
pub fn settled(world: &World) -> bool {
    let db = world.db.lock().expect("db lock");
    if db.model.timers().values().any(|t| t.status == TimerStatus::Scheduled) {
        return false;
    }
    let oracle = world.oracle.lock().expect("oracle lock");
    let relayed: BTreeSet<u64> = oracle.relayed.iter().map(|r| r.event.seq).collect();
    db.model.outbox().iter().all(|row| relayed.contains(&row.seq))
}

/// The liveness verdict at the end of the phase.
pub fn check(world: &World) -> Vec<Violation> {
    let lateness_max = lateness_max_ms(&world.plan) as i64;
    let db = world.db.lock().expect("db lock");
    let oracle = world.oracle.lock().expect("oracle lock");
    let now = db.now_ms();
    let mut found = Vec::new();
    for timer in db.model.timers().values() {
        if timer.status == TimerStatus::Scheduled && timer.next_due_ms <= now - lateness_max {
            let acked = if oracle.acked.contains_key(&timer.id) { "acknowledged" } else { "unacknowledged" };
            found.push(Violation {
                property: "liveness-fires",
                message: format!(
                    "{acked} timer {} occurrence {} was due at store {} and has not fired {} ms later \
                     (allowed {} ms after healing)",
                    timer.id,
                    timer.next_occurrence,
                    timer.next_due_ms,
                    now - timer.next_due_ms,
                    lateness_max
                ),
                subjects: vec![timer.id.to_string()],
            });
        }
    }
    let relayed: BTreeSet<u64> = oracle.relayed.iter().map(|r| r.event.seq).collect();
    let missing: Vec<u64> = db
        .model
        .outbox()
        .iter()
        .filter(|r| r.occurred_at_ms <= now - RELAY_ALLOWANCE_MS)
        .map(|r| r.seq)
        .filter(|s| !relayed.contains(s))
        .collect();
    if let Some(first) = missing.first() {
        let row = &db.model.outbox()[db.model.outbox().iter().position(|r| r.seq == *first).unwrap_or(0)];
        found.push(Violation {
            property: "liveness-events",
            message: format!(
                "{} committed outbox rows were never relayed to subscribers (first: seq {} {} {}#{})",
                missing.len(),
                row.seq,
                row.kind.as_str(),
                row.timer_id,
                row.occurrence
            ),
            subjects: vec![row.timer_id.to_string()],
        });
    }
    found
}
