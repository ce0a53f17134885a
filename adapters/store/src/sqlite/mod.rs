//! [`SqliteStore`]: the standalone store, one SQLite file in WAL mode,
//! implementing the driver's [`Store`] and [`KeyStore`] traits.
//!
//! - **Durability.** `journal_mode=WAL` with `synchronous=FULL`: every commit
//!   fsyncs the WAL before it returns, so an acknowledged write survives power
//!   loss. Group commit comes from the engine, which batches many requests
//!   into one `Commit` (one transaction, one fsync).
//! - **One writer.** Every write (Open and the lease operations, Commit,
//!   outbox marking, key writes) and LoadDue run on a pool of exactly one
//!   connection, each write as one `BEGIN IMMEDIATE` transaction: writes
//!   serialise without `SQLITE_BUSY` retries, and the lease check of a commit
//!   cannot interleave with a takeover.
//! - **Readers.** Get, List, ListFires, the outbox backlog, the pending count
//!   and key lookups use a separate small pool of `query_only` connections;
//!   WAL lets them read the last committed state while a write is under way.
//! - **Store clock.** Read from the injected [`Clock`] once per operation,
//!   after the write lock is taken (so it is never older than the state it
//!   judges).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_core::quota::TenantUsage;
use minoots_core::store::{CommitBatch, LEASE_SHARD, ListQuery, StoreOp, StoreReply};
use minoots_core::{StoreFailure, TenantId, WallMs};
use minoots_node::clock::Clock;
use minoots_node::store::Store;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite};

use crate::outbox_retention::{OutboxExtent, OutboxRetention};
use crate::rows::timer_from_row;
use crate::sql::{OUTBOX_EXTENT_SQLITE, OUTBOX_PRUNE};
use checkpoint::Checkpointer;
use rows::db_failure;
use sql::{MARK_PUBLISHED, OUTBOX_UNPUBLISHED, OUTBOX_UNPUBLISHED_SEQS, Sql};

crate::reads::shared_reads!(SqliteStore, db_failure, OUTBOX_UNPUBLISHED, OUTBOX_UNPUBLISHED_SEQS);

mod checkpoint;
mod commit;
mod lease;
pub mod replica;
pub(crate) mod rows;
mod sql;

/// The migrations, embedded at compile time.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("creating the data directory {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened or configured.
    #[error("opening the SQLite database {path}: {source}")]
    Connect {
        /// The database file.
        path: String,
        /// The SQLite error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migrating the SQLite database {path}: {source}")]
    Migrate {
        /// The database file.
        path: String,
        /// The migration error.
        source: sqlx::migrate::MigrateError,
    },
}

/// Tuning of a [`SqliteStore`]; [`Default`] is what production uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Connections in the read pool.
    pub readers: u32,
    /// How long a connection waits on a lock held by another process before failing.
    pub busy_timeout_ms: u64,
    /// Published outbox rows older than this (store clock) are deleted.
    pub outbox_keep_ms: i64,
    /// At most this many published outbox rows are kept.
    pub outbox_keep_published_rows: u64,
    /// Outbox pruning runs on every this-many-th `outbox_mark_published`.
    pub outbox_prune_every: u64,
    /// Most rows one pruning pass deletes (bounds the pass's latency).
    pub outbox_prune_max_rows: u64,
    /// How often the background task checkpoints the WAL (0: no background
    /// task; the writer checkpoints by itself at `wal_autocheckpoint_pages`).
    pub checkpoint_interval_ms: u64,
    /// WAL size (in pages of 4 KiB) at which the writer checkpoints inside a
    /// commit. With the background task on, only a safety bound.
    pub wal_autocheckpoint_pages: u32,
    /// The writer connection's page cache (KiB): most of what the process
    /// holds once the store is warm.
    pub writer_cache_kib: u32,
    /// Each read connection's page cache (KiB).
    pub reader_cache_kib: u32,
}

/// The default writer page cache (KiB). Writes touch the right edges of
/// time-ordered indexes and the pages of timers coming due: 16 MiB holds
/// them with millions of timers stored, where 64 MiB (and 16 MiB per reader)
/// only held more of the process's memory with no measurable gain.
const WRITER_CACHE_KIB: u32 = 16_384;
/// The default page cache of each reader (KiB).
const READER_CACHE_KIB: u32 = 2_048;

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            readers: 4,
            busy_timeout_ms: 5_000,
            outbox_keep_ms: 3_600_000,
            outbox_keep_published_rows: 100_000,
            outbox_prune_every: 16,
            outbox_prune_max_rows: 50_000,
            checkpoint_interval_ms: 200,
            wal_autocheckpoint_pages: 16_000,
            writer_cache_kib: WRITER_CACHE_KIB,
            reader_cache_kib: READER_CACHE_KIB,
        }
    }
}

/// The standalone store: one SQLite file.
pub struct SqliteStore {
    /// The database file.
    path: std::path::PathBuf,
    writer: SqlitePool,
    readers: SqlitePool,
    checkpointer: Option<Checkpointer>,
    clock: Arc<dyn Clock>,
    sql: Sql,
    config: SqliteConfig,
    marks: AtomicU64,
}

pub(crate) fn connect_options(path: &Path, config: &SqliteConfig) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_millis(config.busy_timeout_ms))
        .foreign_keys(true)
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", config.wal_autocheckpoint_pages.to_string())
        .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
        .row_buffer_size(1024)
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

fn create_parent(path: &Path) -> Result<(), OpenError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(|source| OpenError::CreateDir { dir: path_text(dir), source }),
        _ => Ok(()),
    }
}

async fn writer_pool(path: &Path, config: &SqliteConfig) -> Result<SqlitePool, OpenError> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .test_before_acquire(false)
        .connect_with(
            connect_options(path, config)
                .create_if_missing(true)
                .pragma("cache_size", format!("-{}", config.writer_cache_kib)),
        )
        .await
        .map_err(|source| OpenError::Connect { path: path_text(path), source })
}

/// Creates the database file (and its directory) if needed and applies every
/// pending migration: what `minoots migrate` runs.
pub async fn migrate(path: &Path) -> Result<(), OpenError> {
    create_parent(path)?;
    let config = SqliteConfig::default();
    let pool = writer_pool(path, &config).await?;
    let result =
        MIGRATOR.run(&pool).await.map_err(|source| OpenError::Migrate { path: path_text(path), source });
    pool.close().await;
    result
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and migrates it. The
    /// store clock is `clock`.
    pub async fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, OpenError> {
        Self::open_with(path, clock, SqliteConfig::default()).await
    }

    /// [`SqliteStore::open`] with explicit tuning.
    pub async fn open_with(
        path: &Path,
        clock: Arc<dyn Clock>,
        config: SqliteConfig,
    ) -> Result<Self, OpenError> {
        create_parent(path)?;
        let writer = writer_pool(path, &config).await?;
        MIGRATOR.run(&writer).await.map_err(|source| OpenError::Migrate { path: path_text(path), source })?;
        let readers = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(
                connect_options(path, &config)
                    .pragma("query_only", "ON")
                    .pragma("cache_size", format!("-{}", config.reader_cache_kib)),
            )
            .await
            .map_err(|source| OpenError::Connect { path: path_text(path), source })?;
        let checkpointer = if config.checkpoint_interval_ms > 0 {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .connect_with(connect_options(path, &config))
                .await
                .map_err(|source| OpenError::Connect { path: path_text(path), source })?;
            Some(Checkpointer::start(pool, Duration::from_millis(config.checkpoint_interval_ms)))
        } else {
            None
        };
        Ok(Self {
            path: path.to_owned(),
            writer,
            readers,
            checkpointer,
            clock,
            sql: Sql::new(),
            config,
            marks: AtomicU64::new(0),
        })
    }

    /// Closes every connection (the last one checkpoints the WAL into the
    /// database file). Dropping the store without closing it loses nothing
    /// that was committed.
    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
        self.readers.close().await;
        self.writer.close().await;
    }

    fn now_ms(&self) -> WallMs {
        self.clock.now().wall_ms
    }

    /// Runs a lease operation in its own write transaction.
    async fn lease_op(&self, op: &StoreOp) -> Result<StoreReply, StoreFailure> {
        let mut tx = self.begin_write().await?;
        let now = self.now_ms();
        let reply = match op {
            StoreOp::Open { node_id } => lease::open(&mut tx, LEASE_SHARD, node_id).await?,
            StoreOp::AcquireLease { shard, node_id, tenure, address, ttl_ms } => {
                let asker = minoots_core::lease::LeaseAsker { node_id, address, tenure: *tenure };
                lease::acquire(&mut tx, now, *shard, &asker, *ttl_ms).await?
            }
            StoreOp::RenewLease { shard, node_id, epoch, ttl_ms } => {
                lease::renew(&mut tx, now, *shard, node_id, *epoch, *ttl_ms).await?
            }
            other => return Err(StoreFailure::Unknown(format!("not a lease operation: {other:?}"))),
        };
        tx.commit().await.map_err(|e| db_failure("committing a lease", e))?;
        Ok(reply)
    }

    async fn commit(&self, batch: &CommitBatch) -> Result<StoreReply, StoreFailure> {
        let mut tx = self.begin_write().await?;
        let now = self.now_ms();
        let reply = commit::commit(&mut tx, &self.sql, now, batch).await?;
        tx.commit().await.map_err(|e| db_failure("committing", e))?;
        Ok(reply)
    }

    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreFailure> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_failure("starting a write transaction", e))
    }

    /// A connection of its own to the database (not query-only: `VACUUM
    /// INTO` writes its copy through the connection).
    pub(crate) async fn own_connection(&self) -> Result<sqlx::SqliteConnection, sqlx::Error> {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect_with(&connect_options(&self.path, &self.config)).await
    }

    pub(crate) fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    /// A read connection (the query-only pool), for [`crate::reads`].
    async fn reader(&self, doing: &str) -> Result<PoolConnection<Sqlite>, StoreFailure> {
        self.readers.acquire().await.map_err(|e| db_failure(doing, e))
    }

    /// The due scan's connection: the writer, so that it sees the last commit.
    async fn due_reader(&self, doing: &str) -> Result<PoolConnection<Sqlite>, StoreFailure> {
        self.writer.acquire().await.map_err(|e| db_failure(doing, e))
    }

    fn retention(&self) -> OutboxRetention {
        OutboxRetention {
            keep_published_rows: self.config.outbox_keep_published_rows,
            max_rows: self.config.outbox_prune_max_rows,
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<StoreReply, StoreFailure> {
        let encode = |what: &str, value: Result<String, serde_json::Error>| {
            value.map_err(|e| StoreFailure::Unknown(format!("encoding the {what} filter: {e}")))
        };
        let statuses = if query.statuses.is_empty() {
            None
        } else {
            let names: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
            Some(encode("status", serde_json::to_string(&names))?)
        };
        let labels = if query.labels.is_empty() {
            None
        } else {
            Some(encode("label", serde_json::to_string(&query.labels))?)
        };
        let limit = query.limit as usize;
        let rows = sqlx::query(AssertSqlSafe(self.sql.list_timers.clone()))
            .bind(query.tenant_id.as_str().to_owned())
            .bind(query.after.map_or(uuid::Uuid::nil(), |after| after.0))
            .bind(statuses)
            .bind(labels)
            .bind(i64::from(query.limit) + 1)
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_failure("listing timers", e))?;
        let more = rows.len() > limit;
        let timers = rows.iter().take(limit).map(timer_from_row).collect::<Result<_, _>>()?;
        Ok(StoreReply::Timers { timers, more })
    }

    /// Deletes published outbox rows beyond the retention bounds (older than
    /// `outbox_keep_ms`, or more than `outbox_keep_published_rows`), at most
    /// `outbox_prune_max_rows` per call. Returns how many rows it deleted.
    pub async fn prune_outbox(&self) -> Result<u64, StoreFailure> {
        let mut tx = self.begin_write().await?;
        let deleted = self.prune_in(&mut tx, self.now_ms()).await?;
        tx.commit().await.map_err(|e| db_failure("committing the outbox pruning", e))?;
        Ok(deleted)
    }

    /// Prunes at store time `now` (a replicated mark passes the leader's stamp).
    pub(crate) async fn prune_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        now: WallMs,
    ) -> Result<u64, StoreFailure> {
        let cutoff_ms = now.saturating_sub(self.config.outbox_keep_ms);
        let columns = sqlx::query_as(OUTBOX_EXTENT_SQLITE)
            .bind(cutoff_ms)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| db_failure("reading the outbox extent", e))?;
        let extent = OutboxExtent::from_columns(columns);
        let Some(through) = self.retention().prune_through(extent) else {
            return Ok(0);
        };
        let result = sqlx::query(OUTBOX_PRUNE)
            .bind(through)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_failure("pruning the outbox", e))?;
        Ok(result.rows_affected())
    }

    async fn mark_published(&self, up_to_seq: u64) -> Result<(), StoreFailure> {
        let mut tx = self.begin_write().await?;
        self.mark_published_in(&mut tx, up_to_seq, self.now_ms()).await?;
        tx.commit().await.map_err(|e| db_failure("committing the outbox watermark", e))
    }

    /// Marks the outbox published through `up_to_seq` on `conn` (inside a
    /// write transaction), pruning on every `outbox_prune_every`-th call at
    /// store time `now`.
    pub(crate) async fn mark_published_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        up_to_seq: u64,
        now: WallMs,
    ) -> Result<(), StoreFailure> {
        let up_to = i64::try_from(up_to_seq).unwrap_or(i64::MAX);
        let call = self.marks.fetch_add(1, Ordering::Relaxed) + 1;
        sqlx::query(MARK_PUBLISHED)
            .bind(up_to)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_failure("marking the outbox published", e))?;
        if call.is_multiple_of(self.config.outbox_prune_every.max(1)) {
            self.prune_in(conn, now).await?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn execute(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>> {
        Box::pin(async move {
            match &op {
                StoreOp::Open { .. } | StoreOp::AcquireLease { .. } | StoreOp::RenewLease { .. } => {
                    self.lease_op(&op).await
                }
                StoreOp::Commit(batch) => self.commit(batch).await,
                StoreOp::LoadDue { after, until_ms, limit } => self.load_due(*after, *until_ms, *limit).await,
                StoreOp::Get { tenant_id, timer_id } => self.get(tenant_id, timer_id).await,
                StoreOp::List(query) => self.list(query).await,
                StoreOp::ListFires { tenant_id, timer_id, after_occurrence, limit } => {
                    self.list_fires(tenant_id, timer_id, *after_occurrence, *limit).await
                }
            }
        })
    }

    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>> {
        Box::pin(self.unpublished(after_seq, limit))
    }

    fn outbox_unpublished_seqs(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreFailure>> {
        Box::pin(self.unpublished_seqs(after_seq, limit))
    }

    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(self.mark_published(up_to_seq))
    }

    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        Box::pin(self.pending())
    }

    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a TenantId,
        day_start_ms: WallMs,
    ) -> BoxFuture<'a, Result<TenantUsage, StoreFailure>> {
        Box::pin(self.usage(tenant, day_start_ms))
    }
}
