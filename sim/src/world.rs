//! The world the supervisor holds: the seed's plan, the simulated database's
//! state (the reference [`StoreModel`] with its clock and latency), the
//! oracle every checker reads, and each node machine's clock. It outlives
//! every fault; the database node ([`crate::db`]) and the cluster
//! ([`crate::cluster`]) act on it.

use std::sync::{Arc, Mutex};

use minoots_core::model::StoreModel;
use minoots_core::plant::Plant;
use minoots_core::store::LEASE_SHARD;
use minoots_core::time::WallMs;

use crate::clock::{SimClock, true_wall_ms};
use crate::oracle::{LeaseInForce, Oracle};
use crate::seed_plan::SeedPlan;

/// State shared by the supervisor, the database, the nodes and the checkers.
/// Lock order: `db` before `oracle`, never the other way round.
#[derive(Debug)]
pub struct World {
    /// The seed's plan.
    pub plan: SeedPlan,
    /// The planted bug, if any.
    pub plant: Plant,
    /// The database.
    pub db: Mutex<Database>,
    /// What was observed.
    pub oracle: Mutex<Oracle>,
    /// One clock per node machine.
    pub clocks: Vec<Arc<SimClock>>,
    incarnations: Mutex<Vec<u64>>,
}

impl World {
    /// The world of `plan`, before anything runs.
    pub fn new(plan: SeedPlan) -> Arc<World> {
        let plant = plan.options.plant.as_deref().map_or_else(Plant::default, |name| {
            Plant::parse(name).unwrap_or_else(|| panic!("unknown planted bug {name:?}"))
        });
        let clocks = plan.clocks.iter().map(|c| Arc::new(SimClock::new(c.offset_ms, c.drift_ppm))).collect();
        let db = Mutex::new(Database::new(StoreModel::with_plant(plant), plan.store_offset_ms));
        let nodes = plan.options.nodes;
        Arc::new(World {
            plan,
            plant,
            db,
            oracle: Mutex::new(Oracle::default()),
            clocks,
            incarnations: Mutex::new(vec![0; nodes]),
        })
    }

    /// Appends to the observable history.
    pub fn trace(&self, text: String) {
        self.oracle.lock().expect("oracle lock").trace(text);
    }

    /// The next incarnation number of node `i` (1 for its first process).
    pub fn next_incarnation(&self, i: usize) -> u64 {
        let mut incarnations = self.incarnations.lock().expect("incarnation lock");
        incarnations[i] += 1;
        incarnations[i]
    }
}

/// The database's state, shared with the supervisor.
#[derive(Debug)]
pub struct Database {
    /// The reference store.
    pub model: StoreModel,
    /// Outbox watermark (shared by every node's relay, as one table would be).
    pub published_through: u64,
    /// Store clock minus true time.
    pub offset_ms: i64,
    /// Each operation waits up to this long before it applies.
    pub latency_max_ms: u64,
}

impl Database {
    /// An empty database whose clock is `offset_ms` off true time.
    pub fn new(model: StoreModel, offset_ms: i64) -> Self {
        Self { model, published_through: 0, offset_ms, latency_max_ms: 0 }
    }

    /// The store clock now.
    pub fn now_ms(&self) -> WallMs {
        true_wall_ms() + self.offset_ms
    }

    /// The lease row of `shard`, as the model holds it (expired or not).
    pub fn lease(&self, shard: u32) -> Option<LeaseInForce> {
        self.model.leases().get(&shard).map(|l| LeaseInForce {
            shard,
            epoch: l.holder.epoch,
            holder: l.holder.node_id.clone(),
            expires_store_ms: l.expires_at_ms,
            tenure: l.holder.tenure,
        })
    }

    /// The lease whose holder may fire and cancel (every timer falls under [`LEASE_SHARD`]).
    pub fn fencing_lease(&self) -> Option<LeaseInForce> {
        self.lease(LEASE_SHARD)
    }
}
