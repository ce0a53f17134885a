//! # minoots-node
//!
//! The driver. It owns one [`minoots_core::Engine`], feeds it requests, store
//! completions and ticks, and carries out its effects through the [`Store`]
//! and [`Clock`] traits. Everything here builds on real tokio and, under
//! `--cfg madsim`, on the simulator's runtime: no sqlx, axum or hyper.
//!
//! - [`driver`]: the engine loop (one wake-up for the whole engine).
//! - [`handle::NodeHandle`]: what API adapters (REST, gRPC) call.
//! - [`relay`]: the outbox relay (committed events → subscribers → marked published).
//! - [`grpc`]: the `minoots.timer.v1.HorologyKernel` service.
//! - [`requests`]: the typed requests API adapters make (one method per command).
//! - [`quotas`]: per-tenant quotas, charged where requests enter ([`requests`]).
//! - [`subscription`]: client event streams (per-subscriber bounds, how they end).
//! - [`status`]: what a node reports about itself (role, epoch, leader).
//! - [`coordinator`]: leadership metrics and spans (cluster mode).
#![forbid(unsafe_code)]

pub mod auth_throttle;
pub mod clock;
pub mod coordinator;
pub mod driver;
pub mod grpc;
pub mod handle;
pub mod keys;
pub mod metrics;
pub mod quotas;
pub mod relay;
pub mod requests;
pub mod status;
pub mod store;
pub mod subscription;
pub mod views;

pub use clock::{Clock, ManualClock, SystemClock};
pub use driver::{NodeConfig, start_node};
pub use handle::{AuthError, Credential, NodeHandle, NodeRole, NodeStatus, TokenVerifier, leader_endpoint};
pub use keys::{ApiKeyRecord, KeyStore, hash_api_key};
pub use relay::EventSink;
pub use status::ConsensusStatus;
pub use store::{Store, StoreGuardStats};
