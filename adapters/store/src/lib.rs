//! # minoots-store
//!
//! The durable stores behind the driver's `Store` and `KeyStore` traits,
//! built on sqlx. Today: [`SqliteStore`], the standalone store (one SQLite
//! file in WAL mode, one writer connection, a small read pool). Real tokio
//! only: this crate is empty under `--cfg madsim`, where the simulator uses
//! the in-memory reference model instead.
//!
//! - [`sqlite`]: opening, pragmas, reads and the `Store` implementation.
//! - `commit`: one `Commit` as one transaction, with the reference semantics.
//! - `lease`: `Open`, `AcquireLease`, `RenewLease` and the fencing check.
//! - `rows`: row encoding and the chunked multi-row inserts.
//! - `keys`: tenants and API keys.
//! - `checkpoint`: WAL checkpoints in the background, off the commit path.
//!
//! Migrations live in the workspace's `migrations/sqlite/` and are embedded
//! at compile time; [`migrate`] applies them (the `minoots migrate` command),
//! and [`SqliteStore::open`] applies them too.
#![cfg(not(madsim))]
#![forbid(unsafe_code)]

mod checkpoint;
mod commit;
mod keys;
mod lease;
mod rows;
mod sql;
pub mod sqlite;

pub use sqlite::{OpenError, SqliteConfig, SqliteStore, migrate};
