//! [`PostgresStore`]: the cluster store. Several nodes share one PostgreSQL
//! database; leases in it decide which node fires, judged by the database
//! clock, and fencing inside every commit's transaction makes a deposed
//! leader harmless. It implements the driver's [`Store`] and [`KeyStore`]
//! traits with the reference semantics of `minoots_core::model::StoreModel`
//! (the conformance suite checks it against a real server).
//!
//! - **Durability.** A commit returns after PostgreSQL's `COMMIT` (WAL
//!   flushed with `synchronous_commit = on`, the server default). Group
//!   commit comes from the engine, which batches many requests into one
//!   `Commit`; every kind of row of a commit is written by one `UNNEST`
//!   statement.
//! - **Store clock.** [`ClockSource::Database`] (production): every lease
//!   decision, the fencing check and the never-early check use
//!   `clock_timestamp()` read inside the transaction after its locks.
//!   [`ClockSource::Injected`] (tests): the same statements take the injected
//!   clock's reading as a parameter instead.
//! - **Pools.** Three, so that no kind of work waits behind another: *lease*
//!   (acquire, renew: a renewal never queues behind a big commit or a burst
//!   of reads), *writer* (commits and due loads, run one at a time by the
//!   driver, plus outbox marks and key writes) and *readers* (get, list,
//!   fires, outbox backlog, key lookups). Pools connect lazily: a node starts
//!   while the database is down and recovers by itself when it comes back
//!   (the engine backs off and retries failed operations).
//! - **Session settings** (each connection): `idle_in_transaction_session_timeout`
//!   (a paused or partitioned process cannot keep the lease row locked and
//!   block a takeover for longer than that), `lock_timeout` and
//!   `statement_timeout` (no operation waits forever), `application_name`.
//!   Each operation also has a client-side deadline (`op_timeout_ms`).
//! - **Circuit breaker and pool watch** (`guard`): after repeated failures,
//!   commits, loads and reads fail fast for a while, then a few probe
//!   through (lease operations keep running and count); a warning is logged
//!   when an operation had to wait for a pooled connection.
//! - **Schema.** Optionally in a named schema (`search_path`), created if
//!   missing: several stores can share one database (the tests use one
//!   schema per scenario).

mod commit;
mod guard;
mod lease;
pub(crate) mod rows;
mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_core::quota::TenantUsage;
use minoots_core::store::{LEASE_SHARD, ListQuery, StoreOp, StoreReply};
use minoots_core::{StoreFailure, TenantId, WallMs};
use minoots_node::clock::Clock;
use minoots_node::store::Store;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};

use crate::outbox_retention::{OutboxExtent, OutboxRetention};
use crate::postgres::rows::pg_failure;
use crate::postgres::sql::{LIST_TIMERS, MARK_PUBLISHED, OUTBOX_UNPUBLISHED, OUTBOX_UNPUBLISHED_SEQS};
use crate::rows::timer_from_row;
use crate::sql::{LOAD_DUE, OUTBOX_EXTENT_POSTGRES, OUTBOX_PRUNE};

use guard::{Breaker, PoolWatch};

crate::reads::shared_reads!(PostgresStore, pg_failure, OUTBOX_UNPUBLISHED, OUTBOX_UNPUBLISHED_SEQS);
pub use guard::{BreakerConfig, PoolWatchConfig};

/// The migrations, embedded at compile time.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Where the store's "now" comes from.
#[derive(Clone)]
pub enum ClockSource {
    /// The database's `clock_timestamp()` (production: one clock for every node).
    Database,
    /// This clock's wall reading, bound as a parameter where the database
    /// clock would be read (tests: the conformance suite's manual clock).
    Injected(Arc<dyn Clock>),
}

impl std::fmt::Debug for ClockSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClockSource::Database => f.write_str("Database"),
            ClockSource::Injected(_) => f.write_str("Injected"),
        }
    }
}

/// Tuning of a [`PostgresStore`]; [`PostgresConfig::new`] gives production defaults.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Connection URL (`postgres://user:password@host:port/database`).
    pub url: String,
    /// Schema for every table (created if missing); `None`: the server's default `search_path`.
    pub schema: Option<String>,
    /// The store clock.
    pub clock: ClockSource,
    /// Connections in the read pool.
    pub readers: u32,
    /// Connections in the writer pool (commits and loads, outbox marks, key writes).
    pub writers: u32,
    /// Connections in the lease pool.
    pub lease_connections: u32,
    /// How long an operation waits for a pooled connection (including connecting) before it fails.
    pub acquire_timeout_ms: u64,
    /// Client-side deadline of one operation (the outcome of a timed-out commit is unknown to the engine, which resynchronises).
    pub op_timeout_ms: u64,
    /// `statement_timeout` of every session.
    pub statement_timeout_ms: u64,
    /// `lock_timeout` of every session.
    pub lock_timeout_ms: u64,
    /// `idle_in_transaction_session_timeout` of every session: the longest a
    /// stalled client (SIGSTOP, GC pause, partition) can hold row locks.
    pub idle_in_transaction_timeout_ms: u64,
    /// Published outbox rows older than this (store clock) are deleted.
    pub outbox_keep_ms: i64,
    /// At most this many published outbox rows are kept.
    pub outbox_keep_published_rows: u64,
    /// Outbox pruning runs on every this-many-th `outbox_mark_published`.
    pub outbox_prune_every: u64,
    /// Most rows one pruning pass deletes.
    pub outbox_prune_max_rows: u64,
    /// `application_name` of every session (shows in `pg_stat_activity`).
    pub application_name: String,
    /// The circuit breaker in front of commits, loads and reads.
    pub breaker: BreakerConfig,
    /// When to warn that operations wait for pooled connections.
    pub pool_watch: PoolWatchConfig,
}

impl PostgresConfig {
    /// Production defaults for `url`, judged by the database clock.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            clock: ClockSource::Database,
            readers: 8,
            writers: 2,
            lease_connections: 2,
            acquire_timeout_ms: 1_000,
            op_timeout_ms: 10_000,
            statement_timeout_ms: 10_000,
            lock_timeout_ms: 5_000,
            idle_in_transaction_timeout_ms: 1_000,
            outbox_keep_ms: 3_600_000,
            outbox_keep_published_rows: 100_000,
            outbox_prune_every: 16,
            outbox_prune_max_rows: 50_000,
            application_name: "minoots".into(),
            breaker: BreakerConfig::default(),
            pool_watch: PoolWatchConfig::default(),
        }
    }
}

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The URL or a setting is not valid.
    #[error("invalid PostgreSQL configuration: {0}")]
    Config(String),
    /// The database could not be reached.
    #[error("connecting to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    /// A migration failed.
    #[error("migrating the PostgreSQL database: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

impl PgOpenError {
    /// Whether retrying later may succeed (the database is unreachable or
    /// starting), as opposed to a configuration or migration error.
    pub fn is_transient(&self) -> bool {
        match self {
            PgOpenError::Connect(_) => true,
            PgOpenError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => {
                matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
            }
            _ => false,
        }
    }
}

fn connect_options(config: &PostgresConfig) -> Result<PgConnectOptions, PgOpenError> {
    let mut settings = vec![
        ("statement_timeout".to_owned(), config.statement_timeout_ms.to_string()),
        ("lock_timeout".to_owned(), config.lock_timeout_ms.to_string()),
        ("idle_in_transaction_session_timeout".to_owned(), config.idle_in_transaction_timeout_ms.to_string()),
    ];
    if let Some(schema) = &config.schema {
        check_schema_name(schema)?;
        settings.push(("search_path".to_owned(), schema.clone()));
    }
    let options = PgConnectOptions::from_str(&config.url)
        .map_err(|e| PgOpenError::Config(format!("database URL: {e}")))?
        .application_name(&config.application_name)
        .options(settings);
    Ok(options)
}

/// Schema names are restricted to plain identifiers (they are spliced into SQL).
fn check_schema_name(schema: &str) -> Result<(), PgOpenError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(PgOpenError::Config(format!(
            "schema {schema:?}: use 1-63 lowercase letters, digits or '_', not starting with a digit"
        )))
    }
}

fn pool(options: &PgConnectOptions, config: &PostgresConfig, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms.max(1)))
        .idle_timeout(Some(Duration::from_secs(300)))
        // A connection broken by a database restart is noticed (and replaced) on acquire.
        .test_before_acquire(true)
        .connect_lazy_with(options.clone())
}

/// Connects once and applies every pending migration (creating the schema
/// first, if one is configured): what `minoots migrate` runs, and what
/// [`PostgresStore::open`] runs. Safe to run from several nodes at once
/// (sqlx takes an advisory lock).
pub async fn migrate_postgres(config: &PostgresConfig) -> Result<(), PgOpenError> {
    let options = connect_options(config)?;
    let timeout = Duration::from_millis(config.acquire_timeout_ms.max(1_000));
    let mut conn = match tokio::time::timeout(timeout, sqlx::ConnectOptions::connect(&options)).await {
        Ok(conn) => conn.map_err(PgOpenError::Connect)?,
        Err(_) => return Err(PgOpenError::Connect(sqlx::Error::PoolTimedOut)),
    };
    let result = async {
        if let Some(schema) = &config.schema {
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
                .execute(&mut conn)
                .await
                .map_err(PgOpenError::Connect)?;
        }
        MIGRATOR.run(&mut conn).await.map_err(PgOpenError::Migrate)
    }
    .await;
    let _ = sqlx::Connection::close(conn).await;
    result
}

/// The cluster store: one PostgreSQL database shared by every node.
pub struct PostgresStore {
    lease_pool: PgPool,
    writer: PgPool,
    readers: PgPool,
    config: PostgresConfig,
    marks: AtomicU64,
    breaker: Breaker,
    pool_watch: PoolWatch,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("schema", &self.config.schema).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Migrates the database, then builds the (lazily connecting) pools.
    pub async fn open(config: PostgresConfig) -> Result<Self, PgOpenError> {
        migrate_postgres(&config).await?;
        Self::connect_lazy(config)
    }

    /// Builds the pools without touching the database (no migration): every
    /// connection is made on first use.
    pub fn connect_lazy(config: PostgresConfig) -> Result<Self, PgOpenError> {
        let options = connect_options(&config)?;
        Ok(Self {
            lease_pool: pool(&options, &config, config.lease_connections),
            writer: pool(&options, &config, config.writers),
            readers: pool(&options, &config, config.readers),
            breaker: Breaker::new(config.breaker),
            pool_watch: PoolWatch::new(config.pool_watch),
            config,
            marks: AtomicU64::new(0),
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.lease_pool.close().await;
        self.readers.close().await;
        self.writer.close().await;
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The injected clock's reading, or `None` in database-clock mode.
    fn injected_now(&self) -> Option<WallMs> {
        match &self.config.clock {
            ClockSource::Database => None,
            ClockSource::Injected(clock) => Some(clock.now().wall_ms),
        }
    }

    /// The store clock now (a round trip in database-clock mode).
    pub async fn store_now(&self) -> Result<WallMs, StoreFailure> {
        let mut conn = self.reader("acquiring a reader").await?;
        lease::store_now(&mut conn, self.injected_now()).await
    }

    pub(crate) fn readers(&self) -> &PgPool {
        &self.readers
    }

    /// A write transaction on the writer pool.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreFailure> {
        self.writer.begin().await.map_err(|e| pg_failure("starting a write transaction", e))
    }

    fn retention(&self) -> OutboxRetention {
        OutboxRetention {
            keep_published_rows: self.config.outbox_keep_published_rows,
            max_rows: self.config.outbox_prune_max_rows,
        }
    }

    async fn lease_op(&self, op: &StoreOp) -> Result<StoreReply, StoreFailure> {
        let pool = if matches!(op, StoreOp::Open { .. }) { &self.writer } else { &self.lease_pool };
        let mut tx = pool.begin().await.map_err(|e| pg_failure("starting a lease transaction", e))?;
        let reply = match op {
            StoreOp::Open { node_id } => lease::open(&mut tx, LEASE_SHARD, node_id).await?,
            StoreOp::AcquireLease { shard, node_id, tenure, address, ttl_ms } => {
                let asker = minoots_core::lease::LeaseAsker { node_id, address, tenure: *tenure };
                lease::acquire(&mut tx, self.injected_now(), *shard, &asker, *ttl_ms).await?
            }
            StoreOp::RenewLease { shard, node_id, epoch, ttl_ms } => {
                lease::renew(&mut tx, self.injected_now(), *shard, node_id, *epoch, *ttl_ms).await?
            }
            other => return Err(StoreFailure::Unknown(format!("not a lease operation: {other:?}"))),
        };
        tx.commit().await.map_err(|e| pg_failure("committing a lease", e))?;
        Ok(reply)
    }

    async fn commit(&self, batch: &minoots_core::store::CommitBatch) -> Result<StoreReply, StoreFailure> {
        let mut conn = self.writer_conn("acquiring a writer for a commit").await?;
        let mut tx = conn.begin().await.map_err(|e| pg_failure("starting a commit", e))?;
        let reply = commit::commit(&mut tx, || self.injected_now(), batch).await?;
        tx.commit().await.map_err(|e| pg_failure("committing", e))?;
        Ok(reply)
    }

    /// The server's query plan (`EXPLAIN`, text) of the `LoadDue` statement
    /// for a first page due by `until_ms`: a diagnostic showing that the due
    /// scan is a range scan of the partial index `timers_due`, whatever the
    /// number of pending timers beyond the horizon.
    pub async fn explain_load_due(&self, until_ms: WallMs, limit: u32) -> Result<String, StoreFailure> {
        let rows = sqlx::query(AssertSqlSafe(format!("EXPLAIN {}", LOAD_DUE.as_str())))
            .bind(until_ms)
            .bind(WallMs::MIN)
            .bind(uuid::Uuid::nil())
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.readers)
            .await
            .map_err(|e| pg_failure("explaining the due scan", e))?;
        let lines: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(|e| pg_failure("reading a query plan", e))?;
        Ok(lines.join("\n"))
    }

    async fn list(&self, query: &ListQuery) -> Result<StoreReply, StoreFailure> {
        let statuses: Option<Vec<&str>> =
            (!query.statuses.is_empty()).then(|| query.statuses.iter().map(|s| s.as_str()).collect());
        let labels = if query.labels.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&query.labels)
                    .map_err(|e| StoreFailure::Unknown(format!("encoding the label filter: {e}")))?,
            )
        };
        if query.labels.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
            // No stored label can hold U+0000 (`TimerRecord::text_has_nul`).
            return Ok(StoreReply::Timers { timers: Vec::new(), more: false });
        }
        let limit = query.limit as usize;
        let rows = sqlx::query(AssertSqlSafe(LIST_TIMERS.as_str()))
            .bind(query.tenant_id.as_str())
            .bind(query.after.map_or(uuid::Uuid::nil(), |a| a.0))
            .bind(statuses)
            .bind(labels)
            .bind(i64::from(query.limit) + 1)
            .fetch_all(&mut *self.reader("acquiring a reader").await?)
            .await
            .map_err(|e| pg_failure("listing timers", e))?;
        let more = rows.len() > limit;
        let timers = rows.iter().take(limit).map(timer_from_row).collect::<Result<_, _>>()?;
        Ok(StoreReply::Timers { timers, more })
    }

    /// Deletes published outbox rows beyond the retention bounds, at most
    /// `outbox_prune_max_rows` per call. Returns how many rows it deleted.
    pub async fn prune_outbox(&self) -> Result<u64, StoreFailure> {
        let mut conn = self.writer_conn("acquiring a writer").await?;
        let now = lease::store_now(&mut conn, self.injected_now()).await?;
        let cutoff_ms = now.saturating_sub(self.config.outbox_keep_ms);
        let columns = sqlx::query_as(OUTBOX_EXTENT_POSTGRES)
            .bind(cutoff_ms)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| pg_failure("reading the outbox extent", e))?;
        let extent = OutboxExtent::from_columns(columns);
        let Some(through) = self.retention().prune_through(extent) else {
            return Ok(0);
        };
        let result = sqlx::query(OUTBOX_PRUNE)
            .bind(through)
            .execute(&mut *conn)
            .await
            .map_err(|e| pg_failure("pruning the outbox", e))?;
        Ok(result.rows_affected())
    }

    async fn mark_published(&self, up_to_seq: u64) -> Result<(), StoreFailure> {
        let up_to = i64::try_from(up_to_seq).unwrap_or(i64::MAX);
        let call = self.marks.fetch_add(1, Ordering::Relaxed) + 1;
        sqlx::query(MARK_PUBLISHED)
            .bind(up_to)
            .execute(&mut *self.writer_conn("acquiring a writer to mark the outbox").await?)
            .await
            .map_err(|e| pg_failure("marking the outbox published", e))?;
        if call.is_multiple_of(self.config.outbox_prune_every.max(1)) {
            self.prune_outbox().await?;
        }
        Ok(())
    }

    /// Runs `work` with the client-side deadline, behind the circuit breaker
    /// unless it is a lease operation (`bypass`: it always runs), and records its outcome.
    async fn deadline<T>(
        &self,
        what: &str,
        bypass: bool,
        work: impl Future<Output = Result<T, StoreFailure>>,
    ) -> Result<T, StoreFailure> {
        let call = self.breaker.call(bypass)?;
        let result =
            match tokio::time::timeout(Duration::from_millis(self.config.op_timeout_ms.max(1)), work).await {
                Ok(result) => result,
                Err(_) => Err(StoreFailure::Unknown(format!(
                    "postgres {what}: no answer within {} ms",
                    self.config.op_timeout_ms
                ))),
            };
        call.finish(result.is_ok());
        result
    }

    /// Whether the circuit breaker is open (the database failed repeatedly just now).
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The due scan's connection: a writer's, so that it sees the last commit.
    async fn due_reader(&self, what: &str) -> Result<PoolConnection<Postgres>, StoreFailure> {
        self.writer_conn(what).await
    }

    /// A writer connection, its wait timed by the pool watch.
    async fn writer_conn(&self, what: &str) -> Result<PoolConnection<Postgres>, StoreFailure> {
        self.pool_watch.acquire("writer", &self.writer).await.map_err(|e| pg_failure(what, e))
    }

    /// A reader connection, its wait timed by the pool watch.
    async fn reader(&self, what: &str) -> Result<PoolConnection<Postgres>, StoreFailure> {
        self.pool_watch.acquire("readers", &self.readers).await.map_err(|e| pg_failure(what, e))
    }
}

impl Store for PostgresStore {
    fn guard_stats(&self) -> minoots_node::StoreGuardStats {
        minoots_node::StoreGuardStats {
            circuit_open: self.breaker.is_open(),
            circuit_opens: self.breaker.opens(),
            pool_exhaustion_warnings: self.pool_watch.warnings.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn execute(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>> {
        Box::pin(async move {
            let probe = matches!(
                op,
                StoreOp::Open { .. } | StoreOp::AcquireLease { .. } | StoreOp::RenewLease { .. }
            );
            let work = async {
                match &op {
                    StoreOp::Open { .. } | StoreOp::AcquireLease { .. } | StoreOp::RenewLease { .. } => {
                        self.lease_op(&op).await
                    }
                    StoreOp::Commit(batch) => self.commit(batch).await,
                    StoreOp::LoadDue { after, until_ms, limit } => {
                        self.load_due(*after, *until_ms, *limit).await
                    }
                    StoreOp::Get { tenant_id, timer_id } => self.get(tenant_id, timer_id).await,
                    StoreOp::List(query) => self.list(query).await,
                    StoreOp::ListFires { tenant_id, timer_id, after_occurrence, limit } => {
                        self.list_fires(tenant_id, timer_id, *after_occurrence, *limit).await
                    }
                }
            };
            self.deadline("operation", probe, work).await
        })
    }

    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>> {
        Box::pin(self.deadline("reading the outbox", false, self.unpublished(after_seq, limit)))
    }

    fn outbox_unpublished_seqs(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreFailure>> {
        Box::pin(self.deadline("reading the outbox", false, self.unpublished_seqs(after_seq, limit)))
    }

    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(self.deadline("marking the outbox", false, self.mark_published(up_to_seq)))
    }

    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        Box::pin(self.deadline("counting pending timers", false, self.pending()))
    }

    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a TenantId,
        day_start_ms: WallMs,
    ) -> BoxFuture<'a, Result<TenantUsage, StoreFailure>> {
        Box::pin(self.deadline("counting a tenant's timers", false, self.usage(tenant, day_start_ms)))
    }
}
