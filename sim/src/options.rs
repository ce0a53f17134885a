//! Run options, from the command line: which faults, how many nodes, which
//! planted bug, how long. The per-seed plan derived from them is
//! [`crate::seed_plan`].

use std::fmt;

/// Which kinds of fault a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultSet {
    /// Node clock offsets, drift and wall-clock steps; a store clock offset.
    pub clock: bool,
    /// Network partitions: a node cut off from everyone, from the database, or from clients.
    pub partition: bool,
    /// Node crashes (kill) and restarts.
    pub crash: bool,
    /// Process pauses (the GC-pause case), some longer than the lease TTL.
    pub pause: bool,
    /// A slow or unreachable database.
    pub db: bool,
    /// Message loss and long, reordering delays.
    pub loss: bool,
}

impl FaultSet {
    /// Every fault kind.
    pub const ALL: FaultSet =
        FaultSet { clock: true, partition: true, crash: true, pause: true, db: true, loss: true };

    /// Parses `all`, `none` or a comma-separated list of kinds.
    pub fn parse(text: &str) -> Result<FaultSet, String> {
        match text {
            "all" => return Ok(FaultSet::ALL),
            "none" => return Ok(FaultSet::default()),
            _ => {}
        }
        let mut set = FaultSet::default();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "clock" => set.clock = true,
                "partition" => set.partition = true,
                "crash" => set.crash = true,
                "pause" => set.pause = true,
                "db" => set.db = true,
                "loss" => set.loss = true,
                other => {
                    return Err(format!(
                        "unknown fault kind {other:?}: use all, none or a list of clock,partition,crash,pause,db,loss"
                    ));
                }
            }
        }
        Ok(set)
    }

    /// Whether no fault is enabled.
    pub fn is_empty(&self) -> bool {
        *self == FaultSet::default()
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FaultSet::ALL {
            return f.write_str("all");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let names = [
            (self.clock, "clock"),
            (self.partition, "partition"),
            (self.crash, "crash"),
            (self.pause, "pause"),
            (self.db, "db"),
            (self.loss, "loss"),
        ];
        let on: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        f.write_str(&on.join(","))
    }
}

/// What the command line chose (the same for every seed of a run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Timer nodes (each a driver + gRPC server).
    pub nodes: usize,
    /// Faults to inject.
    pub faults: FaultSet,
    /// A planted bug (`minoots_core::plant::Plant::NAMES`), or none.
    pub plant: Option<String>,
    /// Simulated length of the safety phase (workload and faults), in ms.
    pub safety_ms: u64,
}

impl RunOptions {
    /// Nodes allowed.
    pub const NODES_MIN: usize = 1;
    /// Nodes allowed.
    pub const NODES_MAX: usize = 7;

    /// The flags that reproduce these options (after the seed).
    pub fn flags(&self) -> String {
        let mut flags = format!("--nodes {} --faults {}", self.nodes, self.faults);
        if let Some(plant) = &self.plant {
            flags.push_str(&format!(" --plant {plant}"));
        }
        if self.safety_ms != DEFAULT_SAFETY_MS {
            flags.push_str(&format!(" --safety-ms {}", self.safety_ms));
        }
        flags
    }

    /// The one command line that replays `seed` with these options.
    pub fn reproduce_command(&self, seed: u64) -> String {
        format!("cargo sim reproduce {seed} {}", self.flags())
    }
}

/// Default simulated length of the safety phase.
pub const DEFAULT_SAFETY_MS: u64 = 10_000;
