//! The simulated cluster: the database node, N timer nodes (the real driver
//! from `minoots-node` plus its gRPC `HorologyKernel` server) and a client
//! node, wired on madsim's network, plus the shared [`World`] the supervisor,
//! the database and every checker read.
//!
//! ```text
//!   10.0.1.1 clients ──gRPC──▶ 10.0.0.i:50051  node n{i}: KernelService ─▶ driver ─▶ NetStore ──▶ 10.0.0.100 database
//!                                             (SimClock i, local key table)                    (StoreModel in World)
//! ```
//!
//! A node keeps nothing across a crash: its `init` closure builds a fresh
//! driver, store connection and key table each time madsim (re)starts it.
//! Only the database (in [`World`]) and the machine's clock survive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use minoots_core::TenantId;
use minoots_core::auth::Role;
use minoots_core::engine::{EngineConfig, LeadershipMode};
use minoots_node::grpc::KernelService;
use minoots_node::{ApiKeyRecord, KeyStore, NodeConfig, hash_api_key};
use minoots_testkit::model_store::ModelStore;
use tokio::sync::broadcast::error::RecvError;

use crate::clock::true_us;
use crate::db::{self, DB_IP, NetStore};
use crate::oracle::Relayed;
use crate::seed_plan::SeedPlan;
use crate::world::World;

/// The API key every client uses (timer read, write and cancel).
pub const API_KEY: &str = "sim-client-key";
/// The tenant of that key.
pub const TENANT: &str = "sim-tenant";
/// The gRPC port of every node.
pub const GRPC_PORT: u16 = 50_051;
/// The client node's address.
pub const CLIENT_IP: [u8; 4] = [10, 0, 1, 1];
/// Requests waiting for a node's engine before callers are told to retry.
const REQUEST_QUEUE: usize = 4_096;
/// Events a node's subscribers may fall behind.
const EVENT_BUFFER: usize = 8_192;

/// Node `i`'s id (`n1`, `n2`, …).
pub fn node_id(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Node `i`'s IP address.
pub fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i + 1) as u8))
}

/// Which machine a process of node `i` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// The node's own machine.
    Primary,
    /// The spare a successor starts on while the old process is frozen.
    Spare,
}

impl Machine {
    /// The machine's IP address for node `i`.
    pub fn ip(self, i: usize) -> IpAddr {
        match self {
            Machine::Primary => node_ip(i),
            Machine::Spare => IpAddr::V4(Ipv4Addr::new(10, 0, 2, (i + 1) as u8)),
        }
    }

    /// Its gRPC address, as leader hints spell it.
    pub fn addr(self, i: usize) -> String {
        format!("{}:{GRPC_PORT}", self.ip(i))
    }
}

/// Node `i`'s gRPC address, as leader hints spell it.
pub fn node_addr(i: usize) -> String {
    format!("{}:{GRPC_PORT}", node_ip(i))
}

/// The node index of an id like `n2`.
pub fn node_index(id: &str) -> Option<usize> {
    id.strip_prefix('n')?.parse::<usize>().ok()?.checked_sub(1)
}

/// A sub-seed of `a` for `b` (node, incarnation).
pub fn mix(a: u64, b: u64) -> u64 {
    minoots_core::ids::mix64(a ^ b.wrapping_mul(minoots_core::ids::GOLDEN_GAMMA))
}

/// The engine configuration of node `i`'s `incarnation`-th process.
fn engine_config(world: &World, i: usize, incarnation: u64, machine: Machine) -> EngineConfig {
    let seed = mix(mix(world.plan.seed, i as u64 + 1), incarnation);
    let mut config = EngineConfig::new(node_id(i), seed);
    config.address = machine.addr(i);
    config.mode = leadership_mode(&world.plan);
    config.plant = world.plant;
    config
}

fn leadership_mode(plan: &SeedPlan) -> LeadershipMode {
    LeadershipMode::Lease(plan.lease)
}

/// The running cluster's madsim nodes.
pub struct Cluster {
    /// Shared state.
    pub world: Arc<World>,
    db: NodeHandle,
    nodes: Vec<NodeHandle>,
    /// Spare machines, one per node, made when a successor first starts there.
    spares: Mutex<Vec<Option<NodeHandle>>>,
    client: NodeHandle,
}

impl Cluster {
    /// Creates the database, the timer nodes and the client node; they start at once.
    pub fn start(world: Arc<World>) -> Cluster {
        let handle = Handle::current();
        let db_world = world.clone();
        let db = handle
            .create_node()
            .name("db")
            .ip(IpAddr::from(DB_IP))
            .init(move || db::serve(db_world.clone()))
            .build();
        let nodes = (0..world.plan.options.nodes)
            .map(|i| {
                let node_world = world.clone();
                handle
                    .create_node()
                    .name(node_id(i))
                    .ip(node_ip(i))
                    .init(move || run_node(node_world.clone(), i, Machine::Primary))
                    .build()
            })
            .collect();
        let client = handle.create_node().name("clients").ip(IpAddr::from(CLIENT_IP)).build();
        let spares = Mutex::new(vec![None; world.plan.options.nodes]);
        Cluster { world, db, nodes, spares, client }
    }

    /// The node the workload runs on.
    pub fn client_node(&self) -> &NodeHandle {
        &self.client
    }

    /// Number of timer nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no timer nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Appends to the observable history.
    pub fn trace(&self, text: String) {
        self.world.trace(text);
    }

    /// The node holding an unexpired lease at the database, if any.
    pub fn leader(&self) -> Option<usize> {
        let db = self.world.db.lock().expect("db lock");
        let now = db.now_ms();
        let lease = db.fencing_lease().filter(|l| l.expires_store_ms > now)?;
        node_index(&lease.holder).filter(|i| *i < self.nodes.len())
    }

    /// Kills node `i`'s process (all its tasks and sockets).
    pub fn kill(&self, i: usize) {
        Handle::current().kill(self.nodes[i].id());
    }

    /// Starts node `i` afresh.
    pub fn restart(&self, i: usize) {
        Handle::current().restart(self.nodes[i].id());
    }

    /// Starts a new process of node `i` (same node id, next incarnation) on
    /// its spare machine, whatever the process on its own machine is doing;
    /// a successor already running there is replaced.
    pub fn start_successor(&self, i: usize) {
        let mut spares = self.spares.lock().expect("spares lock");
        match &spares[i] {
            Some(spare) => Handle::current().restart(spare.id()),
            None => {
                let world = self.world.clone();
                let spare = Handle::current()
                    .create_node()
                    .name(format!("{}-spare", node_id(i)))
                    .ip(Machine::Spare.ip(i))
                    .init(move || run_node(world.clone(), i, Machine::Spare))
                    .build();
                spares[i] = Some(spare);
            }
        }
    }

    /// Stops scheduling node `i`'s tasks.
    pub fn pause(&self, i: usize) {
        Handle::current().pause(self.nodes[i].id());
    }

    /// Resumes node `i`'s tasks.
    pub fn resume(&self, i: usize) {
        Handle::current().resume(self.nodes[i].id());
    }

    /// Cuts node `i` off from everyone (`on`) or reconnects it.
    pub fn isolate(&self, i: usize, on: bool) {
        let net = NetSim::current();
        if on { net.clog_node(self.nodes[i].id()) } else { net.unclog_node(self.nodes[i].id()) }
    }

    /// Cuts the link between node `i` and the database, both ways (`on`), or restores it.
    pub fn cut_db(&self, i: usize, on: bool) {
        self.cut_link(self.nodes[i].id(), self.db.id(), on);
    }

    /// Cuts the link between the clients and node `i`, both ways (`on`), or restores it.
    pub fn cut_clients(&self, i: usize, on: bool) {
        self.cut_link(self.nodes[i].id(), self.client.id(), on);
    }

    fn cut_link(&self, a: madsim::task::NodeId, b: madsim::task::NodeId, on: bool) {
        let net = NetSim::current();
        if on {
            net.clog_link(a, b);
            net.clog_link(b, a);
        } else {
            net.unclog_link(a, b);
            net.unclog_link(b, a);
        }
    }

    /// Makes the database reachable or not.
    pub fn db_reachable(&self, reachable: bool) {
        let net = NetSim::current();
        if reachable { net.unclog_node(self.db.id()) } else { net.clog_node(self.db.id()) }
    }
}

/// One process of node `i`: a fresh driver on a fresh database connection,
/// a subscriber recording every relayed event, and the gRPC server.
async fn run_node(world: Arc<World>, i: usize, machine: Machine) {
    let incarnation = world.next_incarnation(i);
    let clock = world.clocks[i].clone();
    let store = Arc::new(NetStore::connect(world.clone(), node_id(i), incarnation).await);
    let keys = Arc::new(ModelStore::new(clock.clone()));
    let record = ApiKeyRecord {
        id: "key-sim".into(),
        tenant_id: TenantId::parse("tenant", TENANT).expect("the simulator's tenant id is valid"),
        roles: [Role::TimerRead, Role::TimerWrite, Role::TimerCancel].into_iter().collect(),
        label: "simulated clients".into(),
        created_at_ms: 0,
        revoked_at_ms: None,
    };
    keys.insert_key(record, hash_api_key(API_KEY)).await.expect("the local key table accepts the key");
    let engine_config = engine_config(&world, i, incarnation, machine);
    let node_config = NodeConfig {
        request_queue: REQUEST_QUEUE,
        event_buffer: EVENT_BUFFER,
        ..NodeConfig::new(node_id(i), engine_config.seed)
    };
    let (handle, _driver) =
        minoots_node::driver::start_node_with(engine_config, node_config, store, keys, clock);
    let on = if machine == Machine::Spare { " on its spare machine" } else { "" };
    world.trace(format!("{}: process started (incarnation {incarnation}){on}", node_id(i)));

    let mut events = handle.subscribe();
    let relay_world = world.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    let mut oracle = relay_world.oracle.lock().expect("oracle lock");
                    oracle.counters.events_relayed += 1;
                    oracle.relayed.push(Relayed { node: i, event: (*event).clone(), true_us: true_us() });
                }
                Err(RecvError::Lagged(_)) => {
                    relay_world.oracle.lock().expect("oracle lock").counters.relay_lags += 1;
                }
                Err(RecvError::Closed) => break,
            }
        }
    });

    let addr = SocketAddr::new(machine.ip(i), GRPC_PORT);
    let served = tonic::transport::Server::builder()
        .add_service(KernelService::new(handle).into_server())
        .serve(addr)
        .await;
    if let Err(e) = served {
        world.trace(format!("{}: gRPC server ended: {e}", node_id(i)));
    }
}
