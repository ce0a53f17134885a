//! # minoots-actions
//!
//! What happens after a fire: committed events go to NATS JetStream (or, in
//! standalone mode, straight to the in-process action intake); the action
//! runner turns each fire into durable deliveries and runs them — signed
//! webhooks, NATS messages, allow-listed commands, files, agent events —
//! with retries, a per-destination circuit breaker, a recorded history of
//! every attempt and a dead-letter queue that can be replayed. A runner's
//! claims on deliveries belong to its incarnation and are released as soon
//! as it is known dead (`claims`).
//!
//! Real I/O only (sqlx, async-nats, reqwest): the simulator never links it.
#![cfg(not(madsim))]
#![warn(missing_docs)]

pub mod circuits;
pub mod claims;
pub mod destinations;
mod dialect;
pub mod execute;
mod fair_slots;
pub mod files;
pub mod inbox;
pub mod nats;
mod recorder;
pub mod runner;
pub mod signing;
pub mod store;
pub mod tenant_keys;

pub use execute::{AgentEndpoint, ExecConfig, Executor, Undelivered};
pub use inbox::Inbox;
pub use minoots_core::breaker::BreakerConfig;
pub use nats::{Nats, NatsConfig, NatsObserver, NatsTls};
pub use runner::{OutboxIntake, Runner, RunnerConfig};
pub use signing::SigningKeys;
pub use store::ActionStore;
pub use tenant_keys::{KeySource, TenantKeys};
