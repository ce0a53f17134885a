//! **A deposed leader never acts.** Every fenced write (a commit carrying
//! cancels or fires) that a node sent with epoch `e` left the node, in true
//! time, before the database granted any later epoch of the shard. The
//! store's fencing would reject it anyway; this checks the engine's own
//! promise to step down before its lease can have expired anywhere (it is
//! what catches `early-stepdown-off`: a leader paused past its lease that
//! wakes up and fires).
//!
//! A send whose epoch a *newer tenure of the same node* had already taken
//! over, unexpired, is not judged here (a successor process started beside a
//! frozen predecessor, or a process that left a tenure after a lost commit):
//! the old tenure cannot know of it before it reads the store, and what
//! stops its writes is the store's fencing, which `fire-fenced`,
//! `at-most-once` and `acked-durable` check.

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Checks each send once: a later grant that already happened before it is
/// a violation; one that happens after it never is.
#[derive(Debug, Default)]
pub struct DeposedNeverActs {
    next: usize,
}

impl Property for DeposedNeverActs {
    fn check(&mut self, _db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        for send in &oracle.sends[self.next..] {
            // Revoked before it was sent: a newer tenure of the same node took
            // this epoch's unexpired lease over (whatever was granted after).
            let revoked = oracle.grants.iter().any(|g| {
                g.true_us <= send.true_us
                    && g.lease.holder == send.node_id
                    && g.previous.as_ref().is_some_and(|p| {
                        p.holder == send.node_id && p.epoch == send.epoch && p.expires_store_ms > g.store_ms
                    })
            });
            if revoked {
                continue;
            }
            let newer =
                oracle.grants.iter().find(|g| g.lease.epoch > send.epoch && g.true_us <= send.true_us);
            if let Some(grant) = newer {
                found.push(Violation {
                    property: "deposed-never-acts",
                    message: format!(
                        "{} sent a fenced commit ({} fires, {} cancels) with epoch {} at {:.3}s, after epoch {} \
                         was granted to {} at {:.3}s",
                        send.node_id,
                        send.fires,
                        send.cancels,
                        send.epoch,
                        send.true_us as f64 / 1e6,
                        grant.lease.epoch,
                        grant.lease.holder,
                        grant.true_us as f64 / 1e6
                    ),
                    subjects: vec![
                        send.node_id.clone(),
                        grant.lease.holder.clone(),
                        format!("epoch {}", send.epoch),
                        format!("epoch {}", grant.lease.epoch),
                    ],
                });
            }
        }
        self.next = oracle.sends.len();
    }
}
