//! The due index: pending occurrences due within the loading horizon, kept
//! per tenant in `(due_ms, timer_id)` order. The store holds everything
//! else; the engine pages timers in as the horizon advances.
//!
//! Firing is fair across tenants: when more occurrences are due than one
//! commit takes, every tenant with something due gets an equal share of the
//! batch (the earliest-due tenants first if there are more tenants than
//! places), so one tenant's burst of same-millisecond timers cannot push
//! another tenant's due occurrence past the next commit. Within a batch the
//! tenants take turns (each tenant's own occurrences in due order), so the
//! events a commit writes, and the deliveries they start, do not queue one
//! tenant's occurrence behind all of another's either.
//!
//! Entries are small (a key and an occurrence number; recurring timers add a
//! boxed schedule) and the tenant is held once per tenant, not per entry, so
//! memory per pending one-shot timer stays well under 100 bytes.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{TenantId, TimerId};
use crate::store::{DueKey, DueTimer, Recurrence};
use crate::time::WallMs;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Armed {
    occurrence: u32,
    recurrence: Option<Box<Recurrence>>,
}

/// Pending occurrences per tenant by `(due_ms, timer_id)`.
#[derive(Debug, Default)]
pub struct DueIndex {
    /// Each tenant's occurrences, earliest first; a tenant with none has no entry.
    by_tenant: BTreeMap<TenantId, BTreeMap<DueKey, Armed>>,
    /// Each tenant's earliest occurrence: the order tenants are served in.
    heads: BTreeSet<(DueKey, TenantId)>,
    /// Entries over all tenants.
    len: usize,
}

impl DueIndex {
    /// Inserts or replaces the entry for `(due, id)` of the timer's tenant.
    pub fn insert(&mut self, timer: DueTimer) {
        let key = (timer.due_ms, timer.timer_id);
        let armed = Armed { occurrence: timer.occurrence, recurrence: timer.recurrence.map(Box::new) };
        let tenant = timer.tenant_id;
        if !self.by_tenant.contains_key(&tenant) {
            self.by_tenant.insert(tenant.clone(), BTreeMap::new());
        }
        let queue = self.by_tenant.get_mut(&tenant).expect("the tenant's queue exists");
        let head_before = queue.first_key_value().map(|(k, _)| *k);
        if queue.insert(key, armed).is_none() {
            self.len += 1;
        }
        match head_before {
            None => {
                self.heads.insert((key, tenant));
            }
            Some(head) if key < head => {
                let old = (head, tenant);
                self.heads.remove(&old);
                self.heads.insert((key, old.1));
            }
            Some(_) => {}
        }
    }

    /// Removes the entry for `(due, id)` of `tenant_id`, if present.
    pub fn remove(&mut self, tenant_id: &TenantId, due_ms: WallMs, timer_id: TimerId) -> bool {
        let Some(queue) = self.by_tenant.get_mut(tenant_id) else { return false };
        let key = (due_ms, timer_id);
        let head_before = queue.first_key_value().map(|(k, _)| *k);
        if queue.remove(&key).is_none() {
            return false;
        }
        self.len -= 1;
        if head_before == Some(key) {
            self.heads.remove(&(key, tenant_id.clone()));
            self.restore_head(tenant_id);
        }
        true
    }

    /// After `tenant`'s head left `heads`: enters its new head, or drops its queue if empty.
    fn restore_head(&mut self, tenant: &TenantId) {
        match self.by_tenant.get(tenant).and_then(|queue| queue.first_key_value()) {
            Some((next, _)) => {
                self.heads.insert((*next, tenant.clone()));
            }
            None => {
                self.by_tenant.remove(tenant);
            }
        }
    }

    /// The earliest due time over all tenants.
    pub fn first_due(&self) -> Option<WallMs> {
        self.heads.first().map(|((due, _), _)| *due)
    }

    /// Removes and returns up to `max` entries due at or before `now_ms`,
    /// shared fairly between the tenants that have some (see the module
    /// documentation): tenants take turns, earliest head first, and each
    /// tenant's entries are in `(due_ms, timer_id)` order.
    pub fn pop_due(&mut self, now_ms: WallMs, max: usize) -> Vec<DueTimer> {
        // Each tenant's share, in the order tenants were first served.
        let mut shares: Vec<Vec<DueTimer>> = Vec::new();
        let mut share_of: BTreeMap<TenantId, usize> = BTreeMap::new();
        let mut taken = 0;
        // Each round serves every tenant with something due, earliest head
        // first, up to an equal share of what room is left; a round that
        // takes nothing ends the loop, and every other round takes at least
        // one entry, so there are at most `max` rounds.
        while taken < max {
            let ready: Vec<TenantId> = self
                .heads
                .iter()
                .take_while(|((due, _), _)| *due <= now_ms)
                .map(|(_, t)| t.clone())
                .collect();
            if ready.is_empty() {
                break;
            }
            let share = ((max - taken) / ready.len()).max(1);
            for tenant in ready {
                if taken >= max {
                    break;
                }
                let slot = *share_of.entry(tenant.clone()).or_insert_with(|| {
                    shares.push(Vec::new());
                    shares.len() - 1
                });
                taken += self.pop_tenant(&tenant, now_ms, share.min(max - taken), &mut shares[slot]);
            }
        }
        // Turns: every tenant's first entry, then every tenant's second, ...
        let mut out = Vec::with_capacity(taken);
        let mut queues: Vec<std::vec::IntoIter<DueTimer>> = shares.into_iter().map(Vec::into_iter).collect();
        while out.len() < taken {
            for queue in &mut queues {
                out.extend(queue.next());
            }
        }
        out
    }

    /// Moves up to `take` of `tenant`'s entries due by `now_ms` into `out`; returns how many.
    fn pop_tenant(
        &mut self,
        tenant: &TenantId,
        now_ms: WallMs,
        take: usize,
        out: &mut Vec<DueTimer>,
    ) -> usize {
        let Some(queue) = self.by_tenant.get_mut(tenant) else { return 0 };
        let Some((head, _)) = queue.first_key_value() else { return 0 };
        self.heads.remove(&(*head, tenant.clone()));
        let mut taken = 0;
        while taken < take {
            let Some(entry) = queue.first_entry() else { break };
            if entry.key().0 > now_ms {
                break;
            }
            let ((due_ms, timer_id), armed) = entry.remove_entry();
            out.push(DueTimer {
                timer_id,
                tenant_id: tenant.clone(),
                occurrence: armed.occurrence,
                due_ms,
                recurrence: armed.recurrence.map(|r| *r),
            });
            taken += 1;
        }
        self.len -= taken;
        self.restore_head(tenant);
        taken
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer has more than one entry (the engine's invariant:
    /// one due entry per timer). Linear: for checks, not the hot path.
    pub fn one_entry_per_timer(&self) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        self.by_tenant.values().flat_map(|queue| queue.keys()).all(|(_, id)| seen.insert(*id))
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops every entry (on losing leadership).
    pub fn clear(&mut self) {
        self.by_tenant.clear();
        self.heads.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse("tenantId", name).expect("tenant")
    }

    fn due(tenant_name: &str, due_ms: WallMs, n: u128) -> DueTimer {
        DueTimer {
            timer_id: TimerId(uuid::Uuid::from_u128(n)),
            tenant_id: tenant(tenant_name),
            occurrence: 1,
            due_ms,
            recurrence: None,
        }
    }

    fn tenants_of(batch: &[DueTimer]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for d in batch {
            *counts.entry(d.tenant_id.as_str().to_owned()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn a_burst_from_one_tenant_leaves_room_for_the_others_in_the_next_batch() {
        let mut index = DueIndex::default();
        for n in 0..10_000 {
            index.insert(due("noisy", 1_000, n));
        }
        index.insert(due("quiet", 1_001, 1_000_000));
        index.insert(due("later", 2_000, 1_000_001));
        assert_eq!(index.len(), 10_002);
        assert_eq!(index.first_due(), Some(1_000));

        let batch = index.pop_due(1_500, 100);
        assert_eq!(batch.len(), 100);
        assert_eq!(tenants_of(&batch), BTreeMap::from([("noisy".into(), 99), ("quiet".into(), 1)]));
        assert_eq!(batch[1].tenant_id.as_str(), "quiet", "the quiet tenant's turn comes second");
        assert_eq!(index.len(), 9_902);
        // Nothing not yet due is taken, whatever the room.
        let rest = index.pop_due(1_500, 20_000);
        assert_eq!(tenants_of(&rest), BTreeMap::from([("noisy".into(), 9_901)]));
        assert_eq!(index.first_due(), Some(2_000));
        assert_eq!(index.pop_due(2_000, 10).len(), 1);
        assert!(index.is_empty());
        assert_eq!(index.first_due(), None);
    }

    #[test]
    fn tenants_take_turns_and_each_keeps_its_due_order() {
        let mut index = DueIndex::default();
        let mut expected: BTreeMap<String, Vec<DueKey>> = BTreeMap::new();
        for n in 0..30u128 {
            let name = ["a", "b", "c"][(n % 3) as usize];
            let d = due(name, 100 + (n as i64 * 7) % 11, n);
            expected.entry(name.to_owned()).or_default().push((d.due_ms, d.timer_id));
            index.insert(d);
        }
        let batch = index.pop_due(1_000, 64);
        assert_eq!(batch.len(), 30);
        for (name, keys) in &mut expected {
            keys.sort();
            let got: Vec<DueKey> = batch
                .iter()
                .filter(|d| d.tenant_id.as_str() == name)
                .map(|d| (d.due_ms, d.timer_id))
                .collect();
            assert_eq!(&got, keys, "tenant {name}'s entries in due order");
        }
        let names: String = batch.iter().take(6).map(|d| d.tenant_id.as_str()).collect();
        assert_eq!(names.len(), 6);
        assert!(
            names[..3].contains('a') && names[..3].contains('b') && names[..3].contains('c'),
            "turns: {names}"
        );
    }

    #[test]
    fn more_tenants_than_room_serves_the_earliest_heads_first() {
        let mut index = DueIndex::default();
        for t in 0..10u128 {
            index.insert(due(&format!("t{t}"), 100 + t as i64, t));
            index.insert(due(&format!("t{t}"), 100 + t as i64, 100 + t));
        }
        let batch = index.pop_due(1_000, 4);
        let names: Vec<_> = batch.iter().map(|d| d.tenant_id.as_str().to_owned()).collect();
        assert_eq!(names, ["t0", "t1", "t2", "t3"]);
        assert_eq!(index.len(), 16);
    }

    #[test]
    fn replacing_and_removing_keep_heads_and_counts_true() {
        let mut index = DueIndex::default();
        index.insert(due("a", 50, 1));
        index.insert(due("a", 50, 1)); // the same key again replaces
        index.insert(due("a", 40, 2));
        index.insert(due("b", 45, 3));
        assert_eq!(index.len(), 3);
        assert_eq!(index.first_due(), Some(40));
        assert!(index.remove(&tenant("a"), 40, TimerId(uuid::Uuid::from_u128(2))));
        assert!(!index.remove(&tenant("b"), 50, TimerId(uuid::Uuid::from_u128(1))), "wrong tenant");
        assert_eq!(index.first_due(), Some(45));
        assert!(index.remove(&tenant("b"), 45, TimerId(uuid::Uuid::from_u128(3))));
        assert_eq!(index.first_due(), Some(50));
        assert_eq!(index.len(), 1);
        index.clear();
        assert!(index.is_empty());
        assert_eq!(index.first_due(), None);
    }
}
