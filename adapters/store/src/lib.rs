//! # minoots-store
//!
//! The durable stores behind the driver's `Store` and `KeyStore` traits,
//! built on sqlx: [`SqliteStore`], the standalone store (one SQLite file in
//! WAL mode, one writer connection, a small read pool), and
//! [`PostgresStore`], the cluster store (several nodes on one database,
//! leases and fencing judged by the database clock). Real tokio only: this
//! crate is empty under `--cfg madsim`, where the simulator uses the
//! in-memory reference model instead.
//!
//! - [`sqlite`]: opening, pragmas, reads and the `Store` implementation.
//! - `commit`: one `Commit` as one transaction, with the reference semantics.
//! - `lease`: `Open`, `AcquireLease`, `RenewLease` and the fencing check.
//! - `rows`: row encoding and the chunked multi-row inserts.
//! - `keys`: tenants and API keys.
//! - `checkpoint`: WAL checkpoints in the background, off the commit path.
//! - [`postgres`]: the PostgreSQL store, with the same structure (`commit`,
//!   `lease`, `rows`, `keys`, `sql` submodules).
//!
//! Migrations live in the workspace's `migrations/sqlite/` and
//! `migrations/postgres/` and are embedded at compile time; [`migrate`] and
//! [`migrate_postgres`] apply them (the `minoots migrate` command), and the
//! stores' `open` applies them too.
#![cfg(not(madsim))]
#![forbid(unsafe_code)]

mod checkpoint;
mod commit;
mod keys;
mod lease;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

pub use postgres::{
    BreakerConfig, ClockSource, PgOpenError, PoolWatchConfig, PostgresConfig, PostgresStore, migrate_postgres,
};
pub use sqlite::{OpenError, SqliteConfig, SqliteStore, migrate};
