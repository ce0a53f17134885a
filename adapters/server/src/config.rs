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
    #[command(flatten)]
    pub actions: ActionArgs,
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

/// Events and actions: NATS JetStream, the action runner, signing keys and
/// what the operator allows.
#[derive(Debug, Clone, clap::Args)]
pub struct ActionArgs {
    /// NATS server URL(s); when set, events go to JetStream and the action runner consumes them from there.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream stream for timer events (subjects `minoots.timer.{tenant}.{event}`).
    #[arg(long, env = "NATS_JETSTREAM_STREAM", default_value = "MINOOTS_TIMER")]
    pub nats_stream: String,
    /// How long the event stream keeps messages (0: forever).
    #[arg(long, env = "NATS_JETSTREAM_MAX_AGE_MS", default_value_t = 7 * 24 * 3_600_000)]
    pub nats_max_age_ms: u64,
    /// JetStream duplicate window (re-publishes within it are dropped by `Nats-Msg-Id`).
    #[arg(long, env = "NATS_JETSTREAM_DUPLICATE_WINDOW_MS", default_value_t = 120_000)]
    pub nats_duplicate_window_ms: u64,
    /// JetStream stream for dead letters (subjects `minoots.dlq.{tenant}`).
    #[arg(long, env = "NATS_DLQ_STREAM", default_value = "MINOOTS_DLQ")]
    pub nats_dlq_stream: String,
    /// The action runner's durable JetStream consumer.
    #[arg(long, env = "NATS_JETSTREAM_CONSUMER", default_value = "ACTION_ORCHESTRATOR")]
    pub nats_consumer: String,
    /// Unacknowledged events the consumer may hold.
    #[arg(long, env = "NATS_MAX_ACK_PENDING", default_value_t = 1_000)]
    pub nats_max_ack_pending: i64,
    /// Redeliver an event not acknowledged within this long.
    #[arg(long, env = "NATS_ACK_WAIT_MS", default_value_t = 30_000)]
    pub nats_ack_wait_ms: u64,
    /// Most deliveries of one event to the consumer (-1: unlimited).
    #[arg(long, env = "NATS_MAX_DELIVER", default_value_t = -1, allow_negative_numbers = true)]
    pub nats_max_deliver: i64,
    /// Do not run the action runner in this process (events are still published).
    #[arg(long, env = "MINOOTS_NO_ACTION_RUNNER")]
    pub no_action_runner: bool,
    /// Deliveries the runner runs at once.
    #[arg(long, env = "ACTION_RUNNER_CONCURRENCY", default_value_t = 64)]
    pub action_concurrency: usize,
    /// Default webhook timeout.
    #[arg(long, env = "ACTION_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// JSON file of webhook signing keys (`{"default": {"current", "next"?}, "tenants": {...}}`);
    /// standalone default: `signing-keys.json` in the data directory, generated when missing.
    #[arg(long, env = "MINOOTS_SIGNING_KEYS_FILE")]
    pub signing_keys_file: Option<PathBuf>,
    /// One signing key for every tenant (at least 16 bytes); overrides the keys file.
    #[arg(long, env = "MINOOTS_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// The next signing key during a rotation (requests carry both signatures).
    #[arg(long, env = "MINOOTS_SIGNING_KEY_NEXT", hide_env_values = true)]
    pub signing_key_next: Option<String>,
    /// Programs `command` actions may run (comma-separated exact names or paths; empty: commands off).
    #[arg(long, env = "ACTION_COMMAND_ALLOW", value_delimiter = ',')]
    pub command_allow: Vec<String>,
    /// Default command timeout.
    #[arg(long, env = "ACTION_COMMAND_TIMEOUT_MS", default_value_t = 30_000)]
    pub command_timeout_ms: u64,
    /// Directory `file` actions write under (unset: file actions off).
    #[arg(long, env = "ACTION_FILE_BASE_DIR")]
    pub file_base_dir: Option<PathBuf>,
    /// Where `workflow_event` and `agent_prompt` actions are POSTed (signed).
    #[arg(long, env = "ACTION_AGENT_WEBHOOK_URL")]
    pub agent_webhook_url: Option<String>,
    /// NATS subject for `workflow_event` and `agent_prompt` actions (when no agent webhook is set).
    #[arg(long, env = "ACTION_AGENT_NATS_SUBJECT")]
    pub agent_nats_subject: Option<String>,
}

impl ActionArgs {
    /// The executor's configuration.
    pub fn exec_config(&self) -> minoots_actions::ExecConfig {
        minoots_actions::ExecConfig {
            webhook_timeout_ms: self.webhook_timeout_ms.max(1),
            command_programs: self.command_allow.iter().filter(|p| !p.is_empty()).cloned().collect(),
            command_timeout_ms: self.command_timeout_ms.max(1),
            file_base_dir: self.file_base_dir.clone(),
            agent: minoots_actions::AgentEndpoint {
                webhook_url: self.agent_webhook_url.clone(),
                nats_subject: self.agent_nats_subject.clone(),
            },
        }
    }

    /// The NATS settings, when NATS is configured.
    pub fn nats_config(&self) -> Option<minoots_actions::NatsConfig> {
        let url = self.nats_url.clone().filter(|u| !u.is_empty())?;
        Some(minoots_actions::NatsConfig {
            stream: self.nats_stream.clone(),
            max_age_ms: self.nats_max_age_ms,
            duplicate_window_ms: self.nats_duplicate_window_ms,
            dlq_stream: self.nats_dlq_stream.clone(),
            consumer: self.nats_consumer.clone(),
            max_ack_pending: self.nats_max_ack_pending.max(1),
            ack_wait_ms: self.nats_ack_wait_ms.max(1),
            max_deliver: self.nats_max_deliver,
            ..minoots_actions::NatsConfig::new(url)
        })
    }

    /// The signing keys: a configured key, a keys file, or (standalone) one generated into `data_dir`.
    pub fn signing_keys(
        &self,
        data_dir: Option<&std::path::Path>,
    ) -> Result<minoots_actions::SigningKeys, String> {
        if let Some(key) = &self.signing_key {
            return minoots_actions::SigningKeys::single(key.clone(), self.signing_key_next.clone())
                .map_err(|e| format!("MINOOTS_SIGNING_KEY: {e}"));
        }
        if let Some(path) = &self.signing_keys_file {
            return minoots_actions::SigningKeys::load(path).map_err(|e| e.to_string());
        }
        match data_dir {
            Some(dir) => minoots_actions::SigningKeys::load_or_create(&dir.join("signing-keys.json"))
                .map_err(|e| e.to_string()),
            None => {
                Err("webhook signing needs a key: set MINOOTS_SIGNING_KEY or MINOOTS_SIGNING_KEYS_FILE"
                    .into())
            }
        }
    }
}
