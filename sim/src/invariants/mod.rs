//! The safety properties, one per file, each stating its promise in its
//! first lines. [`Checker`] runs them all against one consistent snapshot of
//! the database and the oracle, after every supervisor step (every 100 ms of
//! simulated time) and once more at the end. Checks are incremental: each
//! property keeps a cursor into the append-only logs it reads, so a run
//! costs linear time in its history, not quadratic.

use crate::oracle::Oracle;
use crate::world::Database;
use crate::world::World;

pub mod acked_durable;
pub mod api_contract;
pub mod at_most_once;
pub mod deposed_never_acts;
pub mod events_match_store;
pub mod fire_fenced;
pub mod lease_exclusive;
pub mod never_early;

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property's name (its file name, dashed).
    pub property: &'static str,
    /// What exactly went wrong.
    pub message: String,
    /// Strings naming what is involved (timer ids, node ids, `epoch N`), to
    /// pick the relevant lines of history.
    pub subjects: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.property, self.message)
    }
}

/// One safety property.
pub trait Property {
    /// Checks what was appended since the last call; pushes what it finds.
    fn check(&mut self, db: &Database, oracle: &Oracle, found: &mut Vec<Violation>);
}

/// Every safety property, with its cursors.
pub struct Checker {
    properties: Vec<Box<dyn Property + Send>>,
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

impl Checker {
    /// All properties, nothing checked yet.
    pub fn new() -> Self {
        Self {
            properties: vec![
                Box::new(lease_exclusive::LeaseExclusive::default()),
                Box::new(deposed_never_acts::DeposedNeverActs::default()),
                Box::new(at_most_once::AtMostOnce::default()),
                Box::new(fire_fenced::FireFenced::default()),
                Box::new(never_early::NeverEarly::default()),
                Box::new(acked_durable::AckedDurable::default()),
                Box::new(events_match_store::EventsMatchStore::default()),
                Box::new(api_contract::ApiContract::default()),
            ],
        }
    }

    /// Runs every property on the current state.
    pub fn check(&mut self, world: &World) -> Vec<Violation> {
        let db = world.db.lock().expect("db lock");
        let oracle = world.oracle.lock().expect("oracle lock");
        let mut found = Vec::new();
        for property in &mut self.properties {
            property.check(&db, &oracle, &mut found);
        }
        found
    }
}
