//! **Each occurrence is recorded at most once.** Our own append-only log of
//! every fire the database recorded (read from commit outcomes, not from the
//! model's map, which a double record would overwrite) holds each
//! `(timer, occurrence)` at most once.

use std::collections::BTreeMap;

use minoots_core::TimerId;

use super::{Property, Violation};
use crate::oracle::Oracle;
use crate::world::Database;

/// Counts fires per occurrence.
#[derive(Debug, Default)]
pub struct AtMostOnce {
    next: usize,
    counts: BTreeMap<(TimerId, u32), u32>,
}

impl Property for AtMostOnce {
    fn check(&mut self, _db: &Database, oracle: &Oracle, found: &mut Vec<Violation>) {
        for log in &oracle.fires[self.next..] {
            let key = (log.fire.timer_id, log.fire.occurrence);
            let count = self.counts.entry(key).or_default();
            *count += 1;
            if *count > 1 {
                found.push(Violation {
                    property: "at-most-once",
                    message: format!(
                        "occurrence {}#{} recorded {} times (this time by {} epoch {})",
                        key.0, key.1, count, log.fire.node_id, log.fire.epoch
                    ),
                    subjects: vec![key.0.to_string()],
                });
            }
        }
        self.next = oracle.fires.len();
    }
}
