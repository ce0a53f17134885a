//! `minoots serve` configuration: flags with environment-variable
//! equivalents (MINOOTS's names where they exist), and logging set-up.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Which store backs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite file in the data directory (standalone, always leader).
    Sqlite,
    /// A PostgreSQL database shared by several nodes (cluster: leases, fencing).
    Postgres,
}

/// Where a cluster store lives, and how a node leads (`--store postgres`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`); `DATABASE_URL` is read when this is unset.
    #[arg(long, env = "KERNEL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Keep every table in this schema (created if missing) instead of the server's default.
    #[arg(long, env = "KERNEL_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Connections in the read pool (the lease and writer pools have 2 each).
    #[arg(long, env = "KERNEL_DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: u32,
    /// How long an operation waits for a database connection before failing (then the engine backs off).
    #[arg(long, env = "KERNEL_DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 1_000)]
    pub database_acquire_timeout_ms: u64,
    /// Lease length, database clock.
    #[arg(long, env = "KERNEL_LEASE_TTL_MS", default_value_t = 2_000)]
    pub lease_ttl_ms: u64,
    /// How often the leader renews its lease.
    #[arg(long, env = "KERNEL_LEASE_RENEW_MS", default_value_t = 500)]
    pub lease_renew_ms: u64,
    /// Largest clock-rate difference assumed between a node and the database, parts per million.
    #[arg(long, env = "KERNEL_LEASE_DRIFT_PPM", default_value_t = 50_000)]
    pub lease_drift_ppm: u64,
    /// How often a follower tries to take the lease.
    #[arg(long, env = "KERNEL_LEASE_ACQUIRE_RETRY_MS", default_value_t = 250)]
    pub lease_acquire_retry_ms: u64,
    /// Consecutive database failures that open the circuit breaker (commits and reads then fail fast; 0: off).
    #[arg(long, env = "DB_CIRCUIT_BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub db_circuit_breaker_failure_threshold: u32,
    /// How long the circuit breaker stays open before letting operations through again.
    #[arg(long, env = "DB_CIRCUIT_BREAKER_RESET_MS", default_value_t = 1_000)]
    pub db_circuit_breaker_reset_ms: u64,
    /// Warn when this share (0–1) of a connection pool is in use (0: never).
    #[arg(long, env = "POSTGRES_POOL_EXHAUSTION_THRESHOLD", default_value_t = 0.9)]
    pub postgres_pool_exhaustion_threshold: f64,
    /// Least time between two pool-exhaustion warnings for one pool.
    #[arg(long, env = "POSTGRES_POOL_EXHAUSTION_WARN_INTERVAL_MS", default_value_t = 10_000)]
    pub postgres_pool_exhaustion_warn_interval_ms: u64,
    /// Host (name or IP) other nodes' callers are sent to (the leader hint is
    /// `rest=http://HOST:REST_PORT grpc=http://HOST:GRPC_PORT`); default: the REST listener's IP.
    #[arg(long, env = "KERNEL_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
}

impl ClusterArgs {
    /// The database URL: `--database-url` / `KERNEL_DATABASE_URL`, else `DATABASE_URL`.
    pub fn url(&self) -> Result<String, String> {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
            .ok_or_else(|| {
                "--store postgres needs --database-url (or KERNEL_DATABASE_URL or DATABASE_URL)".to_owned()
            })
    }

    /// The PostgreSQL store settings.
    pub fn postgres_config(&self) -> Result<minoots_store::PostgresConfig, String> {
        Ok(minoots_store::PostgresConfig {
            schema: self.database_schema.clone(),
            readers: self.database_pool_size.max(1),
            acquire_timeout_ms: self.database_acquire_timeout_ms.max(1),
            breaker: minoots_store::BreakerConfig {
                failure_threshold: self.db_circuit_breaker_failure_threshold,
                reset_ms: self.db_circuit_breaker_reset_ms.max(1),
            },
            pool_watch: minoots_store::PoolWatchConfig {
                threshold: self.postgres_pool_exhaustion_threshold.clamp(0.0, 1.0),
                warn_interval_ms: self.postgres_pool_exhaustion_warn_interval_ms,
            },
            ..minoots_store::PostgresConfig::new(self.url()?)
        })
    }

    /// The lease timing, checked.
    pub fn lease_config(&self) -> Result<minoots_core::lease::LeaseConfig, String> {
        let config = minoots_core::lease::LeaseConfig {
            ttl_ms: self.lease_ttl_ms,
            renew_every_ms: self.lease_renew_ms,
            drift_bound_ppm: self.lease_drift_ppm,
            acquire_retry_ms: self.lease_acquire_retry_ms,
            ..Default::default()
        };
        config.check().map_err(|e| {
            format!(
                "lease timing (KERNEL_LEASE_TTL_MS={}, KERNEL_LEASE_RENEW_MS={}, KERNEL_LEASE_DRIFT_PPM={}): {e}",
                self.lease_ttl_ms, self.lease_renew_ms, self.lease_drift_ppm
            )
        })?;
        Ok(config)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `minoots serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// REST API address (`/api`, `/healthz`, `/health`, SSE).
    #[arg(long, env = "MINOOTS_HTTP_ADDR", default_value = "127.0.0.1:4000")]
    pub http_addr: SocketAddr,
    /// gRPC address (`minoots.timer.v1.HorologyKernel`, health, reflection).
    #[arg(long, env = "KERNEL_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Prometheus `/metrics` address.
    #[arg(long, env = "KERNEL_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Directory for the SQLite store and other local state.
    #[arg(long, env = "MINOOTS_DATA_DIR", default_value = "./minoots-data")]
    pub data_dir: PathBuf,
    /// Store backend: `sqlite` (standalone) or `postgres` (cluster).
    #[arg(long, env = "KERNEL_STORE", value_enum, default_value = "sqlite")]
    pub store: StoreKind,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// This node's id (recorded with every fire it makes).
    #[arg(long, env = "KERNEL_NODE_ID", default_value = "node-1")]
    pub node_id: String,
    /// Log level or tracing filter (`info`, `debug`, `minoots_node=debug,info`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Largest accepted REST request body, in bytes.
    #[arg(long, env = "MINOOTS_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Do not create the development tenant and key on an empty store.
    #[arg(long, env = "MINOOTS_NO_DEV_KEY")]
    pub no_dev_key: bool,
}

/// Installs the global tracing subscriber.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
