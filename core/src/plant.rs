//! Deliberate bugs, compiled only with the `planted-bugs` feature (enabled by
//! the simulator, never by the server). Each one breaks a promise so that the
//! simulator's checkers can prove they would notice: a checker that never
//! fails on a broken build checks nothing.

use serde::{Deserialize, Serialize};

/// Which bugs are planted. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plant {
    /// The store accepts fires and cancels whatever their epoch and lease.
    pub no_fencing: bool,
    /// The store records fires whatever its clock says.
    pub no_due_check: bool,
    /// The leader ignores its locally computed lease validity — it neither
    /// steps down on it nor stamps its commits with it — and steps down only
    /// when the store tells it (a GC pause then leaves two leaders acting).
    pub early_stepdown_off: bool,
    /// Schedules are acknowledged as soon as they are queued, before commit.
    pub ack_before_commit: bool,
    /// The store ignores tenures: a node asking for its own unexpired lease
    /// keeps its epoch whatever process asks (a restarted or successor
    /// process then shares its predecessor's fencing token).
    pub node_keeps_epoch: bool,
}

impl Plant {
    /// Parses a planted-bug name as the simulator's `--plant` flag spells it.
    pub fn parse(name: &str) -> Option<Plant> {
        let mut plant = Plant::default();
        match name {
            "no-fencing" => plant.no_fencing = true,
            "no-due-check" => plant.no_due_check = true,
            "early-stepdown-off" => plant.early_stepdown_off = true,
            "ack-before-commit" => plant.ack_before_commit = true,
            "node-keeps-epoch" => plant.node_keeps_epoch = true,
            _ => return None,
        }
        Some(plant)
    }

    /// The names `parse` accepts.
    pub const NAMES: [&'static str; 5] =
        ["no-fencing", "no-due-check", "early-stepdown-off", "ack-before-commit", "node-keeps-epoch"];
}
