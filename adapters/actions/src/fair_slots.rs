//! The runner's slots, shared fairly among tenants: at most `total`
//! deliveries run at once, at most `per_tenant` of them for one tenant. A
//! delivery over its tenant's share waits here (in its tenant's queue, in
//! arrival order) instead of holding up the others; freed slots go to the
//! waiting tenants in turn. One tenant's stalled receiver can therefore hold
//! `per_tenant` slots, never all of them.
//!
//! Waiting is bounded by [`FairSlots::waiting_room`]: the runner stops
//! taking deliveries from its inbox while it is full, and a store claim
//! skips the tenants that are *stocked* ([`FairSlots::stocked`]): a full
//! share running and another full share waiting behind it. Keeping a share
//! queued is what keeps a busy tenant's slots busy: each freed slot starts
//! the next waiting delivery at once, and the runner claims more for the
//! tenant as soon as its queue runs below a share
//! ([`FairSlots::any_restocking`]), long before its slots run dry.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::ClaimedDelivery;

/// A delivery waiting for a slot, with when its wait began (wall ms).
struct Waiting {
    claimed: ClaimedDelivery,
    since_ms: i64,
}

#[derive(Default)]
struct TenantLoad {
    running: usize,
    waiting: VecDeque<Waiting>,
}

#[derive(Default)]
struct State {
    running: usize,
    waiting: usize,
    tenants: BTreeMap<String, TenantLoad>,
    /// The tenant served last, so that freed slots go round the others first.
    last_served: Option<String>,
}

/// Slots shared among tenants.
pub(crate) struct FairSlots {
    total: usize,
    per_tenant: usize,
    waiting_room: usize,
    state: Mutex<State>,
    /// Signalled when a slot frees.
    pub(crate) freed: Notify,
}

/// One running delivery's slot; given back on drop.
pub(crate) struct Slot {
    slots: Arc<FairSlots>,
    tenant: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut guard = self.slots.state();
            let state = &mut *guard;
            state.running = state.running.saturating_sub(1);
            if let Some(load) = state.tenants.get_mut(&self.tenant) {
                load.running = load.running.saturating_sub(1);
                if load.running == 0 && load.waiting.is_empty() {
                    state.tenants.remove(&self.tenant);
                }
            }
        }
        self.slots.freed.notify_one();
    }
}

/// A delivery given a slot, with how long it waited for it (ms).
pub(crate) struct Started {
    pub claimed: ClaimedDelivery,
    pub slot: Slot,
    pub waited_ms: i64,
}

impl FairSlots {
    /// `total` slots, `per_tenant` of them at most for one tenant (both at least 1),
    /// and room for `waiting_room` deliveries waiting.
    pub(crate) fn new(total: usize, per_tenant: usize, waiting_room: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            per_tenant: per_tenant.clamp(1, total),
            waiting_room: waiting_room.max(1),
            state: Mutex::default(),
            freed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `claimed` a slot now if its tenant is under its share and a
    /// slot is free; otherwise it waits in its tenant's queue.
    pub(crate) fn offer(self: &Arc<Self>, claimed: ClaimedDelivery, now_ms: i64) -> Option<Started> {
        let tenant = claimed.delivery.tenant_id.clone();
        let mut guard = self.state();
        let state = &mut *guard;
        let free = state.running < self.total;
        let load = state.tenants.entry(tenant.clone()).or_default();
        if free && load.running < self.per_tenant && load.waiting.is_empty() {
            load.running += 1;
            state.running += 1;
            return Some(Started { claimed, slot: Slot { slots: self.clone(), tenant }, waited_ms: 0 });
        }
        load.waiting.push_back(Waiting { claimed, since_ms: now_ms });
        state.waiting += 1;
        None
    }

    /// Waiting deliveries that may start now, taking tenants in turn.
    pub(crate) fn take_ready(self: &Arc<Self>, now_ms: i64) -> Vec<Started> {
        let mut started = Vec::new();
        let mut guard = self.state();
        let state = &mut *guard;
        // Bounded: each pass either starts one delivery or ends the loop.
        while state.running < self.total && state.waiting > 0 {
            let after = state.last_served.clone();
            let per_tenant = self.per_tenant;
            let eligible = |(tenant, load): (&String, &TenantLoad)| {
                (load.running < per_tenant && !load.waiting.is_empty()).then(|| tenant.clone())
            };
            let next = match &after {
                Some(last) => state
                    .tenants
                    .range::<String, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                    .find_map(eligible)
                    .or_else(|| state.tenants.iter().find_map(eligible)),
                None => state.tenants.iter().find_map(eligible),
            };
            let Some(tenant) = next else { break };
            let Some(load) = state.tenants.get_mut(&tenant) else { break };
            let Some(waiting) = load.waiting.pop_front() else { break };
            load.running += 1;
            state.running += 1;
            state.waiting -= 1;
            state.last_served = Some(tenant.clone());
            started.push(Started {
                claimed: waiting.claimed,
                slot: Slot { slots: self.clone(), tenant },
                waited_ms: now_ms.saturating_sub(waiting.since_ms),
            });
        }
        started
    }

    /// Slots not running a delivery.
    pub(crate) fn free(&self) -> usize {
        self.total.saturating_sub(self.state().running)
    }

    /// Whether the waiting room is full (the runner then leaves its inbox alone).
    pub(crate) fn waiting_is_full(&self) -> bool {
        self.state().waiting >= self.waiting_room
    }

    /// Whether a tenant with `load` has enough here: its share running and
    /// another share waiting. The one rule behind [`FairSlots::stocked`] and
    /// [`FairSlots::any_restocking`].
    fn is_stocked(&self, load: &TenantLoad) -> bool {
        load.running + load.waiting.len() >= self.per_tenant.saturating_mul(2)
    }

    /// Tenants that have enough here already: a store claim skips them.
    pub(crate) fn stocked(&self) -> Vec<String> {
        self.state()
            .tenants
            .iter()
            .filter(|(_, load)| self.is_stocked(load))
            .map(|(tenant, _)| tenant.clone())
            .collect()
    }

    /// Whether any of `tenants` (stocked when a claim skipped them) no
    /// longer is: the store is worth another look for it.
    pub(crate) fn any_restocking(&self, tenants: &[String]) -> bool {
        let state = self.state();
        tenants.iter().any(|tenant| state.tenants.get(tenant).is_none_or(|load| !self.is_stocked(load)))
    }

    /// Deliveries running.
    pub(crate) fn running(&self) -> usize {
        self.state().running
    }

    /// Whether nothing runs and nothing waits.
    #[cfg(test)]
    fn idle(&self) -> bool {
        let state = self.state();
        state.running == 0 && state.waiting == 0 && state.tenants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewDelivery;

    fn claimed(tenant: &str, n: u32) -> ClaimedDelivery {
        ClaimedDelivery {
            delivery: NewDelivery {
                idempotency_key: format!("{tenant}-{n}"),
                tenant_id: tenant.into(),
                timer_id: format!("timer-{n}"),
                occurrence: 1,
                action_id: "a".into(),
                kind: "webhook".into(),
                action: String::new(),
                retry_policy: String::new(),
                envelope: String::new(),
            },
            attempts: 0,
            round_attempts: 0,
        }
    }

    fn key(started: &Started) -> &str {
        &started.claimed.delivery.idempotency_key
    }

    #[test]
    fn one_tenant_holds_its_share_and_the_others_still_start() {
        let slots = FairSlots::new(4, 2, 100);
        let mut a: Vec<Started> = (0..3).filter_map(|n| slots.offer(claimed("a", n), 0)).collect();
        assert_eq!(a.len(), 2, "a gets its share, not every slot");
        assert!(slots.stocked().is_empty(), "a has a share running but less than a share waiting");
        assert!(slots.offer(claimed("a", 3), 0).is_none());
        assert_eq!(slots.stocked(), vec!["a".to_owned()], "a share running, a share waiting");
        let b = slots.offer(claimed("b", 0), 0).expect("b starts at once");
        assert_eq!(slots.free(), 1);
        assert!(slots.take_ready(5).is_empty(), "a waits for its own slots to free");
        drop(a.pop());
        let ready = slots.take_ready(7);
        assert_eq!(ready.iter().map(key).collect::<Vec<_>>(), ["a-2"]);
        assert_eq!(ready[0].waited_ms, 7);
        assert!(slots.any_restocking(&["a".to_owned()]), "a's queue ran below a share");
        assert!(!slots.any_restocking(&[]));
        drop((b, ready));
    }

    #[test]
    fn freed_slots_go_round_the_waiting_tenants_in_turn() {
        let slots = FairSlots::new(2, 2, 100);
        let running: Vec<_> = (0..2).map(|n| slots.offer(claimed("a", n), 0).expect("starts")).collect();
        for n in 2..5 {
            assert!(slots.offer(claimed("a", n), 0).is_none());
        }
        for n in 0..2 {
            assert!(slots.offer(claimed("b", n), 0).is_none(), "no slot is free");
        }
        assert!(!slots.waiting_is_full());
        drop(running);
        let first = slots.take_ready(1);
        assert_eq!(first.iter().map(key).collect::<Vec<_>>(), ["a-2", "b-0"], "one each, in turn");
        drop(first);
        let rest: Vec<String> = std::iter::from_fn(|| {
            let batch = slots.take_ready(2);
            (!batch.is_empty()).then(|| batch.iter().map(|s| key(s).to_owned()).collect::<Vec<_>>())
        })
        .flatten()
        .collect();
        assert_eq!(rest, ["a-3", "b-1", "a-4"]);
        assert!(slots.idle(), "every slot given back, no tenant left behind");
    }

    #[test]
    fn the_waiting_room_is_bounded() {
        let slots = FairSlots::new(1, 1, 2);
        let _running = slots.offer(claimed("a", 0), 0).expect("starts");
        assert!(slots.offer(claimed("a", 1), 0).is_none());
        assert!(!slots.waiting_is_full());
        assert!(slots.offer(claimed("b", 1), 0).is_none());
        assert!(slots.waiting_is_full());
    }
}
