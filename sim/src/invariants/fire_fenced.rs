//! **Every fire is fenced.** Each recorded fire carries the epoch and holder
//! of the lease in force for its shard at the moment the database recorded
//! it, and that lease had not expired by the store's clock. This is what
//! the store's fencing guarantees (and what `no-fencing` breaks).

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Checks each recorded fire once.
#[derive(Debug, Default)]
pub struct FireFenced {
    next: usize,
}

impl Property for FireFenced {
    fn check(&mut self, _db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        for log in &oracle.fires[self.next..] {
            let fire = &log.fire;
            let problem = match &log.lease {
                None => Some("no lease was in force".to_owned()),
                Some(lease) if lease.epoch != fire.epoch || lease.holder != fire.node_id => {
                    Some(format!("the lease in force was {}'s epoch {}", lease.holder, lease.epoch))
                }
                Some(lease) if lease.expires_store_ms <= fire.fired_at_ms => Some(format!(
                    "{}'s epoch {} lease had expired at store {}",
                    lease.holder, lease.epoch, lease.expires_store_ms
                )),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                let mut subjects =
                    vec![fire.timer_id.to_string(), fire.node_id.clone(), format!("epoch {}", fire.epoch)];
                if let Some(lease) = &log.lease {
                    subjects.push(format!("epoch {}", lease.epoch));
                }
                found.push(Violation {
                    property: "fire-fenced",
                    message: format!(
                        "fire {}#{} recorded at store {} for {} epoch {}, but {problem}",
                        fire.timer_id, fire.occurrence, fire.fired_at_ms, fire.node_id, fire.epoch
                    ),
                    subjects,
                });
            }
        }
        self.next = oracle.fires.len();
    }
}
