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
//! Shared by both stores, so each is written once:
//! - `sql`: every SQL text the two databases run word for word (reads,
//!   counters, outbox pruning, tenants and keys).
//! - `rows`: decoding selected rows back into records, value conversions.
//! - `reads`: the reads both make (get, fires, the due scan, the outbox
//!   backlog, counters), one body each.
//! - `keys`: the `KeyStore` implementation of both.
//! - `outbox_retention`: which published outbox rows pruning deletes.
//!
//! Per database, where the dialects must differ (the write path, locking,
//! JSON parameters; each module says why at its top):
//! - [`sqlite`]: opening, pragmas and the `Store` implementation, with
//!   `commit` (one `Commit` as one transaction: load, `decide`, write),
//!   `lease`, `rows` (the multi-row inserts), `sql` and `checkpoint` (WAL
//!   checkpoints in the background, off the commit path).
//! - [`postgres`]: the same structure, plus the circuit breaker and pool
//!   watch (`guard`).
//!
//! Migrations live in the workspace's `migrations/sqlite/` and
//! `migrations/postgres/` and are embedded at compile time; [`migrate`] and
//! [`migrate_postgres`] apply them (the `minoots migrate` command), and the
//! stores' `open` applies them too.
#![cfg(not(madsim))]
#![forbid(unsafe_code)]

mod keys;
mod outbox_retention;
pub mod postgres;
mod reads;
mod rows;
mod sql;
pub mod sqlite;

pub use postgres::{
    BreakerConfig, ClockSource, PgOpenError, PoolWatchConfig, PostgresConfig, PostgresStore, migrate_postgres,
};
pub use sqlite::{OpenError, SqliteConfig, SqliteStore, migrate};
