//! The engine loop (in progress).

use std::sync::Arc;

use crate::clock::Clock;
use crate::handle::NodeHandle;
use crate::keys::KeyStore;
use crate::store::Store;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: String,
    /// Seed for timer ids (take it from OS randomness in production, from the seed in the simulator).
    pub seed: u64,
    /// Requests waiting for the engine before callers are told to retry.
    pub request_queue: usize,
    /// Events a subscriber may fall behind before it is told it lagged.
    pub event_buffer: usize,
}

/// Starts a node; returns its handle and the task running it (ends after shutdown).
pub fn start_node(
    config: NodeConfig,
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    let _ = (config, store, keys, clock);
    todo!()
}
