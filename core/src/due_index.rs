//! The due index: pending occurrences due within the loading horizon, in
//! `(due_ms, timer_id)` order. The store holds everything else; the engine
//! pages timers in as the horizon advances. Entries are small (a key and an
//! occurrence number; recurring timers add a boxed schedule), so memory per
//! pending one-shot timer stays well under 100 bytes.

use std::collections::BTreeMap;

use crate::ids::TimerId;
use crate::store::{DueKey, DueTimer, Recurrence};
use crate::time::WallMs;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Armed {
    occurrence: u32,
    recurrence: Option<Box<Recurrence>>,
}

/// Pending occurrences by `(due_ms, timer_id)`.
#[derive(Debug, Default)]
pub struct DueIndex {
    entries: BTreeMap<DueKey, Armed>,
}

impl DueIndex {
    /// Inserts or replaces the entry for `(due, id)`.
    pub fn insert(&mut self, timer: DueTimer) {
        self.entries.insert(
            (timer.due_ms, timer.timer_id),
            Armed { occurrence: timer.occurrence, recurrence: timer.recurrence.map(Box::new) },
        );
    }

    /// Removes the entry for `(due, id)`, if present.
    pub fn remove(&mut self, due_ms: WallMs, timer_id: TimerId) -> bool {
        self.entries.remove(&(due_ms, timer_id)).is_some()
    }

    /// The earliest due time.
    pub fn first_due(&self) -> Option<WallMs> {
        self.entries.first_key_value().map(|((due, _), _)| *due)
    }

    /// Removes and returns up to `max` entries due at or before `now_ms`, earliest first.
    pub fn pop_due(&mut self, now_ms: WallMs, max: usize) -> Vec<DueTimer> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(entry) = self.entries.first_entry() else { break };
            if entry.key().0 > now_ms {
                break;
            }
            let ((due_ms, timer_id), armed) = entry.remove_entry();
            out.push(DueTimer {
                timer_id,
                occurrence: armed.occurrence,
                due_ms,
                recurrence: armed.recurrence.map(|r| *r),
            });
        }
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry (on losing leadership).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
