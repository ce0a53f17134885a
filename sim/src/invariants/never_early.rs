//! **Never early.** No occurrence is recorded before its due time by the
//! store's clock: `fired_at_ms ≥ due_ms` for every recorded fire, however
//! fast the firing node's clock runs (what `no-due-check` breaks).

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Checks each recorded fire once.
#[derive(Debug, Default)]
pub struct NeverEarly {
    next: usize,
}

impl Property for NeverEarly {
    fn check(&mut self, _db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        for log in &oracle.fires[self.next..] {
            let fire = &log.fire;
            if fire.fired_at_ms < fire.due_ms {
                found.push(Violation {
                    property: "never-early",
                    message: format!(
                        "fire {}#{} recorded at store {} by {}, {} ms before it was due ({})",
                        fire.timer_id,
                        fire.occurrence,
                        fire.fired_at_ms,
                        fire.node_id,
                        fire.due_ms - fire.fired_at_ms,
                        fire.due_ms
                    ),
                    subjects: vec![fire.timer_id.to_string(), fire.node_id.clone()],
                });
            }
        }
        self.next = oracle.fires.len();
    }
}
