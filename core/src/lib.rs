//! # minoots-core
//!
//! The pure heart of MINOOTS: timers, schedules, validation, the store
//! protocol with its reference model, and the [`engine::Engine`] state
//! machine. Nothing here performs I/O, reads a clock, spawns a task or draws
//! OS randomness; every behaviour is a function of the inputs, which is what
//! lets the simulator and property tests drive it exactly.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod auth;
pub mod breaker;
pub mod command;
pub mod commit;
pub mod destination;
pub mod draft;
pub mod due_index;
pub mod engine;
pub mod error;
pub mod event;
#[cfg(feature = "harness")]
pub mod harness;
pub mod ids;
pub mod lease;
pub mod limits;
pub mod model;
#[cfg(feature = "planted-bugs")]
pub mod plant;
pub mod quota;
pub mod schedule;
pub mod store;
pub mod time;
pub mod timer;
pub mod validate;

pub use engine::{Command, Effect, Engine, EngineConfig, Input, Leadership, LeadershipMode, Response};
pub use error::{ApiError, StoreFailure, StoreReject, ValidationError};
pub use ids::{TenantId, TimerId};
pub use time::{Now, WallMs};
