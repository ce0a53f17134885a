//! # minoots-proto
//!
//! The gRPC contract `minoots.timer.v1` (service `HorologyKernel`) and its
//! generated code. The `.proto` keeps MINOOTS's published interface
//! byte-for-byte compatible and adds only new fields (numbers ≥ 20), messages
//! and RPCs. The generated code targets `tonic`, which is madsim-tonic: real
//! tonic normally, the simulator's transport under `--cfg madsim`.
#![forbid(unsafe_code)]

/// `minoots.timer.v1`: messages, `horology_kernel_server` and `horology_kernel_client`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod timer_v1 {
    tonic::include_proto!("minoots.timer.v1");
}

pub use timer_v1::*;

/// `minoots.raft.v1`: the Raft mode's replication transport between nodes
/// (`raft_server`, `raft_client`); never exposed to clients.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod raft_v1 {
    tonic::include_proto!("minoots.raft.v1");
}

/// The encoded `FileDescriptorSet` of `minoots.timer.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/minoots_descriptor.bin"));

/// The fully qualified service name, as health checks and reflection name it.
pub const SERVICE_NAME: &str = "minoots.timer.v1.HorologyKernel";

/// MINOOTS's contract only (no extensions), client side: what a MINOOTS
/// client sees. For wire-compatibility tests; never served.
#[cfg(feature = "contract-client")]
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod contract {
    #[cfg(not(madsim))]
    include!(concat!(env!("OUT_DIR"), "/contract/minoots.timer.v1.rs"));
    #[cfg(madsim)]
    include!(concat!(env!("OUT_DIR"), "/contract/sim/minoots.timer.v1.rs"));
}
