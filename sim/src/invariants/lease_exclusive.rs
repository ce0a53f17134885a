//! **At most one valid lease holder per shard at any store time, and epochs
//! per shard strictly increase.** A grant to a new holder may only happen
//! once the previous holder's lease has expired by the store's clock, and
//! every new tenure carries a larger epoch than any earlier one of its shard.
//! The one grant that keeps its epoch is the holder re-acquiring its own
//! unexpired lease (a retry or a late duplicate) *in the same tenure*: every
//! process start, and every tenure a process moves to after a lost commit,
//! is fenced by an epoch of its own.

use std::collections::BTreeMap;

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Checks each lease grant once.
#[derive(Debug, Default)]
pub struct LeaseExclusive {
    next: usize,
    last_epoch: BTreeMap<u32, u64>,
}

impl Property for LeaseExclusive {
    fn check(&mut self, _db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        for grant in &oracle.grants[self.next..] {
            let lease = &grant.lease;
            let subjects = vec![lease.holder.clone(), format!("epoch {}", lease.epoch)];
            if let Some(prev) = &grant.previous
                && prev.holder != lease.holder
                && prev.expires_store_ms > grant.store_ms
            {
                found.push(Violation {
                    property: "lease-exclusive",
                    message: format!(
                        "shard {}: epoch {} granted to {} at store {} while {}'s epoch {} was valid until {}",
                        lease.shard,
                        lease.epoch,
                        lease.holder,
                        grant.store_ms,
                        prev.holder,
                        prev.epoch,
                        prev.expires_store_ms
                    ),
                    subjects: [subjects.clone(), vec![prev.holder.clone()]].concat(),
                });
            }
            let extension = grant.previous.as_ref().is_some_and(|prev| {
                prev.holder == lease.holder
                    && prev.epoch == lease.epoch
                    && prev.expires_store_ms > grant.store_ms
            });
            if extension
                && let (Some(prev), Some(asked)) = (&grant.previous, grant.asked_tenure)
                && asked != prev.tenure
            {
                found.push(Violation {
                    property: "lease-exclusive",
                    message: format!(
                        "shard {}: {} asked in tenure {asked} and was granted epoch {}, which belongs to its \
                         tenure {}: two processes (or tenures) share one fencing token",
                        lease.shard, lease.holder, lease.epoch, prev.tenure
                    ),
                    subjects: subjects.clone(),
                });
            }
            if let Some(last) = self.last_epoch.get(&lease.shard)
                && lease.epoch <= *last
                && !extension
            {
                found.push(Violation {
                    property: "lease-exclusive",
                    message: format!(
                        "shard {}: epoch {} granted to {} after epoch {} (epochs must increase)",
                        lease.shard, lease.epoch, lease.holder, last
                    ),
                    subjects,
                });
            }
            self.last_epoch.insert(lease.shard, lease.epoch);
        }
        self.next = oracle.grants.len();
    }
}
