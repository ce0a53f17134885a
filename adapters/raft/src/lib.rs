//! # minoots-raft
//!
//! The Raft mode (DESIGN.md §4): three or five `minoots serve` processes,
//! each with its own data directory, replicate every timer, fire, outbox
//! mark and key through openraft; the Raft leader's engine fires, and any
//! minority may fail without a timer firing twice, early, or being lost.
//!
//! - `types`: the openraft type configuration (an entry is one
//!   `ReplicatedWrite`).
//! - `log_store`: the log, vote and committed position in `raft-log.db`.
//! - `state_machine`: the standalone store's SQLite state, changed only by
//!   applying committed entries; snapshots as consistent copies.
//! - `transport`: Raft RPCs over gRPC (`minoots.raft.v1`).
//! - `replicated`: the driver's `Store`/`KeyStore`: writes proposed and
//!   answered after apply, reads from the local state.
//! - `cluster`: configuration, start-up, deterministic bootstrap, and the
//!   engine's leadership input (a `Lead` barrier per term).
//!
//! Real tokio only: this crate is empty under `--cfg madsim`.
#![cfg(not(madsim))]
#![forbid(unsafe_code)]
// openraft's storage traits return its `StorageError` (over 200 bytes) by value.
#![allow(clippy::result_large_err)]

pub mod cluster;
pub mod log_store;
pub mod replicated;
pub mod state_machine;
pub mod transport;
pub mod types;

pub use cluster::{RaftMode, RaftNodeConfig, StartError, parse_peers, start};
pub use replicated::ReplicatedStore;
