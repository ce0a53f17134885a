//! `minoots serve` configuration: flags with environment-variable
//! equivalents (MINOOTS's names where they exist), and logging set-up.

use minoots_core::command::CommandPolicy;
use minoots_core::destination::{DestinationPolicy, parse_allowed};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Which store backs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite file in the data directory (standalone, always leader).
    Sqlite,
    /// A PostgreSQL database shared by several nodes (cluster: leases, fencing).
    Postgres,
    /// Three or five nodes, each with its own SQLite state and Raft log,
    /// replicating every write through openraft (`KERNEL_RAFT_*`).
    Raft,
}

/// The Raft mode's settings (`--store raft`, or `KERNEL_RAFT_NODE_ID` set).
#[derive(Debug, Clone, clap::Args)]
pub struct RaftArgs {
    /// This node's Raft id, one of the ids of `--raft-peers`; setting it selects Raft mode.
    #[arg(long, env = "KERNEL_RAFT_NODE_ID")]
    pub raft_node_id: Option<u64>,
    /// Where this node's Raft transport (gRPC `minoots.raft.v1`) listens;
    /// default: the host and port of its own entry in `--raft-peers`.
    #[arg(long, env = "KERNEL_RAFT_ADDR")]
    pub raft_addr: Option<SocketAddr>,
    /// Every voter: `1=http://127.0.0.1:7207,2=http://127.0.0.1:7208,3=http://127.0.0.1:7209`.
    #[arg(long, env = "KERNEL_RAFT_PEERS")]
    pub raft_peers: Option<String>,
    /// Shortest election timeout (ms).
    #[arg(long, env = "KERNEL_RAFT_ELECTION_MIN_MS", default_value_t = 300)]
    pub raft_election_min_ms: u64,
    /// Longest election timeout (ms).
    #[arg(long, env = "KERNEL_RAFT_ELECTION_MAX_MS", default_value_t = 600)]
    pub raft_election_max_ms: u64,
    /// Leader heartbeat interval (ms).
    #[arg(long, env = "KERNEL_RAFT_HEARTBEAT_MS", default_value_t = 100)]
    pub raft_heartbeat_ms: u64,
    /// Build a snapshot (and purge the log before it) after this many applied entries.
    #[arg(long, env = "KERNEL_RAFT_SNAPSHOT_EVERY_ENTRIES", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub raft_snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    #[arg(long, env = "KERNEL_RAFT_KEEP_AFTER_SNAPSHOT_ENTRIES", default_value_t = 1_000)]
    pub raft_keep_after_snapshot_entries: u64,
    /// How long a write may wait for its Raft commit before its outcome counts as unknown (ms).
    #[arg(long, env = "KERNEL_RAFT_PROPOSE_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub raft_propose_timeout_ms: u64,
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
    /// How long the circuit breaker stays open before probing: seconds (`1`, `0.5`) or a duration
    /// (`500ms`); doubles while probes fail. Default 1 s.
    #[arg(long = "db-circuit-breaker-recovery-timeout", env = "DB_CIRCUIT_BREAKER_RECOVERY_TIMEOUT", value_parser = parse_seconds_ms)]
    pub db_circuit_breaker_recovery_timeout_ms: Option<u64>,
    /// Alias of `--db-circuit-breaker-recovery-timeout`, in milliseconds.
    #[arg(long, env = "DB_CIRCUIT_BREAKER_RESET_MS")]
    pub db_circuit_breaker_reset_ms: Option<u64>,
    /// Longest open period while probes keep failing (seconds or a duration).
    #[arg(long = "db-circuit-breaker-recovery-timeout-max", env = "DB_CIRCUIT_BREAKER_RECOVERY_TIMEOUT_MAX", default_value = "30", value_parser = parse_seconds_ms)]
    pub db_circuit_breaker_recovery_timeout_max_ms: u64,
    /// Operations let through at once to probe a half-open breaker; that many successes close it.
    #[arg(long, env = "DB_CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_circuit_breaker_half_open_max_calls: u32,
    /// Warn when an operation waited at least this long for a pooled connection (0: never).
    #[arg(long, env = "POSTGRES_POOL_WAIT_WARN_MS", default_value_t = 50)]
    pub postgres_pool_wait_warn_ms: u64,
    /// Kept for old configurations: `0` turns the pool-wait warning off; other values are ignored
    /// (the warning is about waiting, see `--postgres-pool-wait-warn-ms`).
    #[arg(long, env = "POSTGRES_POOL_EXHAUSTION_THRESHOLD", default_value_t = 0.9)]
    pub postgres_pool_exhaustion_threshold: f64,
    /// Least time between two pool-wait warnings for one pool.
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
            breaker: BreakerArgs {
                failure_threshold: self.db_circuit_breaker_failure_threshold,
                recovery_timeout_ms: self.db_circuit_breaker_recovery_timeout_ms,
                recovery_timeout_alias_ms: self.db_circuit_breaker_reset_ms,
                recovery_timeout_max_ms: self.db_circuit_breaker_recovery_timeout_max_ms,
                half_open_max_calls: self.db_circuit_breaker_half_open_max_calls,
            }
            .config("DB_CIRCUIT_BREAKER")?,
            pool_watch: minoots_store::PoolWatchConfig {
                wait_warn_ms: if self.postgres_pool_exhaustion_threshold <= 0.0 {
                    0
                } else {
                    self.postgres_pool_wait_warn_ms
                },
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

/// A duration given in seconds (`1`, `0.5`, `30`), the seed system's unit,
/// or as text with a unit (`500ms`, `2s`, `1m`); in milliseconds.
pub fn parse_seconds_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return minoots_core::validate::duration_text_ms(text).map_err(|e| format!("{text:?} {}", e.rule()));
    }
    let seconds: f64 =
        text.parse().map_err(|_| format!("{text:?}: seconds (`1`, `0.5`) or a duration (`500ms`)"))?;
    if !seconds.is_finite() || !(0.0..=31_536_000.0).contains(&seconds) {
        return Err(format!("{text:?}: between 0 and one year of seconds"));
    }
    Ok((seconds * 1_000.0).round() as u64)
}

/// One breaker's settings as given on the command line (database or webhooks).
struct BreakerArgs {
    failure_threshold: u32,
    recovery_timeout_ms: Option<u64>,
    /// The older millisecond setting (`DB_CIRCUIT_BREAKER_RESET_MS`), if this breaker has one.
    recovery_timeout_alias_ms: Option<u64>,
    recovery_timeout_max_ms: u64,
    half_open_max_calls: u32,
}

impl BreakerArgs {
    /// The breaker's configuration; `prefix` names its environment variables in errors.
    fn config(&self, prefix: &str) -> Result<minoots_core::breaker::BreakerConfig, String> {
        let defaults = minoots_core::breaker::BreakerConfig::default();
        let recovery_timeout_ms = match (self.recovery_timeout_ms, self.recovery_timeout_alias_ms) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "{prefix}_RECOVERY_TIMEOUT ({a} ms) and its alias {prefix}_RESET_MS ({b} ms) disagree: set one"
                ));
            }
            (Some(ms), _) | (None, Some(ms)) => ms,
            (None, None) => defaults.recovery_timeout_ms,
        }
        .max(1);
        if self.recovery_timeout_max_ms < recovery_timeout_ms {
            return Err(format!(
                "{prefix}_RECOVERY_TIMEOUT_MAX ({} ms) is below {prefix}_RECOVERY_TIMEOUT ({recovery_timeout_ms} ms)",
                self.recovery_timeout_max_ms
            ));
        }
        Ok(minoots_core::breaker::BreakerConfig {
            failure_threshold: self.failure_threshold,
            recovery_timeout_ms,
            recovery_timeout_max_ms: self.recovery_timeout_max_ms,
            half_open_max_calls: self.half_open_max_calls.max(1),
            half_open_retry_ms: defaults.half_open_retry_ms,
        })
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

impl RaftArgs {
    /// The node's Raft configuration; `engine_node_id` and `client_address`
    /// are what its fires carry and what followers hand clients.
    pub fn node_config(
        &self,
        engine_node_id: &str,
        client_address: String,
    ) -> Result<minoots_raft::RaftNodeConfig, String> {
        let node_id = self.raft_node_id.ok_or("Raft mode needs KERNEL_RAFT_NODE_ID (--raft-node-id)")?;
        let peers = minoots_raft::parse_peers(
            self.raft_peers.as_deref().ok_or("Raft mode needs KERNEL_RAFT_PEERS (--raft-peers)")?,
        )?;
        let listen_addr = match self.raft_addr {
            Some(addr) => addr,
            None => {
                let own = peers.get(&node_id).ok_or_else(|| {
                    format!("KERNEL_RAFT_NODE_ID {node_id} must be one of the ids of KERNEL_RAFT_PEERS")
                })?;
                let authority = own.split("://").nth(1).unwrap_or(own).trim_end_matches('/');
                authority.parse().map_err(|_| {
                    format!("KERNEL_RAFT_ADDR is unset and this node's peer address {own:?} is not IP:port: set KERNEL_RAFT_ADDR")
                })?
            }
        };
        let config = minoots_raft::RaftNodeConfig {
            node_id,
            listen_addr,
            peers,
            election_min_ms: self.raft_election_min_ms,
            election_max_ms: self.raft_election_max_ms,
            heartbeat_ms: self.raft_heartbeat_ms,
            snapshot_every_entries: self.raft_snapshot_every_entries,
            keep_after_snapshot_entries: self.raft_keep_after_snapshot_entries,
            propose_timeout_ms: self.raft_propose_timeout_ms,
            engine_node_id: engine_node_id.to_owned(),
            client_address,
        };
        config.validate()?;
        Ok(config)
    }
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
    /// Store backend: `sqlite` (standalone), `postgres` (cluster on a shared
    /// database) or `raft` (replicated; also selected by `KERNEL_RAFT_NODE_ID`).
    #[arg(long, env = "KERNEL_STORE", value_enum, default_value = "sqlite")]
    pub store: StoreKind,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub raft: RaftArgs,
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
    /// PEM certificate chain: REST and gRPC speak TLS (with `--tls-key`).
    #[arg(long, env = "MINOOTS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "MINOOTS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: gRPC clients must present a certificate it issued (needs `--tls-cert`).
    #[arg(long, env = "MINOOTS_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Most connections open at once on each of the REST and gRPC listeners; more are closed at once.
    #[arg(long, env = "MINOOTS_MAX_CONNECTIONS", default_value_t = 4_096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Time a REST client has for the TLS handshake and for each request's headers; an idle
    /// kept-alive connection is closed after it too. A gRPC client has as long to send its
    /// connection's opening bytes (the HTTP/2 preface) and to finish its TLS handshake.
    #[arg(long, env = "MINOOTS_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub header_timeout_ms: u64,
    /// Time a REST client has to send a request's body once its headers are in.
    #[arg(long, env = "MINOOTS_BODY_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub body_timeout_ms: u64,
    /// Most concurrent calls (streams included) on one gRPC connection.
    #[arg(long, env = "MINOOTS_GRPC_MAX_STREAMS_PER_CONNECTION", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_streams_per_connection: u32,
    /// Events one event-stream subscriber (SSE or gRPC) may have waiting; a client
    /// that stops reading longer is told `too_slow` and its stream ends.
    #[arg(long, env = "MINOOTS_STREAM_BUFFER_EVENTS", default_value_t = 8_192, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub stream_buffer_events: u64,
    /// Event streams (SSE and gRPC together) one tenant may hold open on this node.
    #[arg(long, env = "MINOOTS_MAX_STREAMS_PER_TENANT", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_streams_per_tenant: u64,
    /// Default limit on a tenant's timers pending at once (429 `limitType: burst`);
    /// unset: none. `minoots tenants quota` sets a tenant's own.
    #[arg(long, env = "MINOOTS_QUOTA_PENDING_TIMERS", value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub quota_pending_timers: Option<u64>,
    /// Default limit on timers a tenant creates per UTC day (429 `limitType: daily`); unset: none.
    #[arg(long, env = "MINOOTS_QUOTA_DAILY_CREATES", value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64))]
    pub quota_daily_creates: Option<u64>,
    /// Default limit on a tenant's API requests per second (429 `limitType: rate`); unset: none.
    #[arg(long, env = "MINOOTS_QUOTA_REQUESTS_PER_SECOND", value_parser = clap::value_parser!(u32).range(1..))]
    pub quota_requests_per_second: Option<u32>,
    /// Accept JWTs (`Authorization: Bearer …`) signed with this public key beside API
    /// keys: PEM text or the path of a PEM file (RSA, EC or Ed25519).
    #[arg(long, env = "JWT_PUBLIC_KEY", hide_env_values = true)]
    pub jwt_public_key: Option<String>,
    /// With `--jwt-public-key`: tokens must name this audience (`aud`).
    #[arg(long, env = "JWT_AUDIENCE", requires = "jwt_public_key")]
    pub jwt_audience: Option<String>,
    /// With `--jwt-public-key`: tokens must come from this issuer (`iss`).
    #[arg(long, env = "JWT_ISSUER", requires = "jwt_public_key")]
    pub jwt_issuer: Option<String>,
    /// Do not create the development tenant and key on an empty store.
    #[arg(long, env = "MINOOTS_NO_DEV_KEY")]
    pub no_dev_key: bool,
    /// How far in the past a `fireAt` may lie (a client whose clock is behind);
    /// such a timer fires at once. Older is refused (400). At most one day.
    #[arg(
        long,
        env = "MINOOTS_PAST_FIRE_TOLERANCE_MS",
        default_value_t = minoots_core::limits::PAST_FIRE_TOLERANCE_DEFAULT_MS,
        value_parser = clap::value_parser!(u64).range(..=PAST_FIRE_TOLERANCE_MAX_MS)
    )]
    pub past_fire_tolerance_ms: u64,
}

/// The largest `--past-fire-tolerance-ms` accepted: one day.
pub const PAST_FIRE_TOLERANCE_MAX_MS: u64 = 86_400_000;

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
    /// PEM CA bundle the NATS server's certificate must chain to (instead of the system's
    /// roots); setting it, or a client certificate, makes TLS to NATS required.
    #[arg(long, env = "NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,
    /// PEM certificate chain this process presents to NATS (servers with `verify: true`).
    #[arg(long, env = "NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of `--nats-tls-cert`.
    #[arg(long, env = "NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Do not run the action runner in this process (events are still published).
    #[arg(long, env = "MINOOTS_NO_ACTION_RUNNER")]
    pub no_action_runner: bool,
    /// Deliveries the runner runs at once.
    #[arg(long, env = "ACTION_RUNNER_CONCURRENCY", default_value_t = 256)]
    pub action_concurrency: usize,
    /// Deliveries of one tenant the runner runs at once (at most the concurrency):
    /// a tenant whose receivers stall holds this many slots, never all of them.
    #[arg(long, env = "ACTION_RUNNER_CONCURRENCY_PER_TENANT", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub action_concurrency_per_tenant: u64,
    /// Default webhook timeout.
    #[arg(long, env = "ACTION_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// Consecutive connection errors, timeouts, 408s or 5xx from one webhook destination
    /// (scheme, host, port) of one tenant that open its circuit breaker (0: off).
    #[arg(long, env = "ACTION_WEBHOOK_BREAKER_FAILURE_THRESHOLD", default_value_t = 5)]
    pub webhook_breaker_failure_threshold: u32,
    /// How long an open destination waits before probing: seconds (`1`, `0.5`) or a duration
    /// (`500ms`); doubles while probes fail. Short by default: a receiver back after a
    /// redeploy of a fraction of a second gets its deliveries within about that long.
    #[arg(long = "webhook-breaker-recovery-timeout", env = "ACTION_WEBHOOK_BREAKER_RECOVERY_TIMEOUT", default_value = "250ms", value_parser = parse_seconds_ms)]
    pub webhook_breaker_recovery_timeout_ms: u64,
    /// Longest open period while a destination's probes keep failing (seconds or a duration).
    #[arg(long = "webhook-breaker-recovery-timeout-max", env = "ACTION_WEBHOOK_BREAKER_RECOVERY_TIMEOUT_MAX", default_value = "30", value_parser = parse_seconds_ms)]
    pub webhook_breaker_recovery_timeout_max_ms: u64,
    /// Attempts let through at once to probe a half-open destination; that many successes close it.
    #[arg(long, env = "ACTION_WEBHOOK_BREAKER_HALF_OPEN_MAX_CALLS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_breaker_half_open_max_calls: u32,
    /// Let tenants' webhooks reach every address, loopback and private networks included
    /// (tests, a single-user machine). Off: those are refused when a timer is scheduled and
    /// again after DNS when the runner connects.
    #[arg(long, env = "ACTION_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Destinations allowed although private: comma-separated CIDRs (`10.1.0.0/16`),
    /// addresses (`127.0.0.1`) or host names (`receiver.internal`, whatever it resolves to).
    #[arg(long, env = "ACTION_WEBHOOK_ALLOWED_DESTINATIONS", value_delimiter = ',')]
    pub webhook_allowed_destinations: Vec<String>,
    /// PEM bundle of CA certificates trusted for HTTPS webhooks beside the system's roots.
    #[arg(long, env = "ACTION_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// How often the action runner renews its heartbeat.
    #[arg(long, env = "ACTION_RUNNER_HEARTBEAT_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub action_runner_heartbeat_ms: u64,
    /// A runner whose heartbeat is this old (database clock) is dead: any runner takes over its claims.
    #[arg(long, env = "ACTION_RUNNER_HEARTBEAT_LAPSE_MS", default_value_t = 5_000)]
    pub action_runner_heartbeat_lapse_ms: u64,
    /// JSON file of operator-managed webhook signing keys (`{"default"?: {"current", "next"?},
    /// "tenants": {...}}`); tenants it does not cover sign with their own generated key.
    #[arg(long, env = "MINOOTS_SIGNING_KEYS_FILE")]
    pub signing_keys_file: Option<PathBuf>,
    /// One signing key for every tenant (at least 16 bytes; a single-tenant deployment);
    /// overrides the keys file.
    #[arg(long, env = "MINOOTS_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// The next signing key during a rotation (requests carry both signatures).
    #[arg(long, env = "MINOOTS_SIGNING_KEY_NEXT", hide_env_values = true)]
    pub signing_key_next: Option<String>,
    /// Command lines `command` actions may run, comma-separated: each a program (name or
    /// path) and one pattern per argument, a literal, `*` (any one) or, last, `**` (any
    /// further); a program alone runs with no arguments. Empty: commands off.
    #[arg(long, env = "ACTION_COMMAND_ALLOW", value_delimiter = ',')]
    pub command_allow: Vec<String>,
    /// Variables of the server's environment a command also gets (comma-separated names);
    /// nothing else of it reaches the command but the fire's `MINOOTS_*` variables.
    #[arg(long, env = "ACTION_COMMAND_ENV", value_delimiter = ',', default_value = "PATH")]
    pub command_env: Vec<String>,
    /// Keep a command's output (stdout and stderr, last 2 KiB) in the delivery history,
    /// which its tenant reads. Off: only the exit code is kept.
    #[arg(long, env = "ACTION_COMMAND_SHOW_OUTPUT")]
    pub command_show_output: bool,
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

impl ServeArgs {
    /// The store this node runs on: `--store`, except that a Raft node id
    /// selects Raft mode (and cannot be combined with PostgreSQL).
    pub fn store_kind(&self) -> Result<StoreKind, String> {
        match (self.store, self.raft.raft_node_id) {
            (StoreKind::Postgres, Some(_)) => {
                Err("KERNEL_RAFT_NODE_ID selects Raft mode: it cannot be combined with --store postgres"
                    .to_owned())
            }
            (_, Some(_)) | (StoreKind::Raft, None) => Ok(StoreKind::Raft),
            (kind, None) => Ok(kind),
        }
    }
}

impl ActionArgs {
    /// The executor's configuration.
    pub fn exec_config(&self) -> Result<minoots_actions::ExecConfig, String> {
        let webhook_breaker = BreakerArgs {
            failure_threshold: self.webhook_breaker_failure_threshold,
            recovery_timeout_ms: Some(self.webhook_breaker_recovery_timeout_ms),
            recovery_timeout_alias_ms: None,
            recovery_timeout_max_ms: self.webhook_breaker_recovery_timeout_max_ms,
            half_open_max_calls: self.webhook_breaker_half_open_max_calls,
        }
        .config("ACTION_WEBHOOK_BREAKER")?;
        let mut webhook_destinations = self
            .webhook_allowed_destinations
            .iter()
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                parse_allowed(entry).map_err(|e| format!("ACTION_WEBHOOK_ALLOWED_DESTINATIONS: {e}"))
            })
            .collect::<Result<DestinationPolicy, String>>()?;
        webhook_destinations.allow_private = self.webhook_allow_private;
        let webhook_roots_pem = match &self.webhook_ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| format!("ACTION_WEBHOOK_CA_FILE {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(minoots_actions::ExecConfig {
            webhook_timeout_ms: self.webhook_timeout_ms.max(1),
            commands: CommandPolicy::from_rules(&self.command_allow)
                .map_err(|e| format!("ACTION_COMMAND_ALLOW: {e}"))?,
            command_env: self
                .command_env
                .iter()
                .map(|name| name.trim())
                .filter(|name| !name.is_empty())
                .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_owned(), value)))
                .collect(),
            command_output_visible: self.command_show_output,
            command_timeout_ms: self.command_timeout_ms.max(1),
            file_base_dir: self.file_base_dir.clone(),
            agent: minoots_actions::AgentEndpoint {
                webhook_url: self.agent_webhook_url.clone(),
                nats_subject: self.agent_nats_subject.clone(),
            },
            webhook_breaker,
            webhook_destinations,
            webhook_roots_pem,
        })
    }

    /// The heartbeat timing of the action runner, checked: `(heartbeat_ms, heartbeat_lapse_ms)`.
    pub fn runner_heartbeat_ms(&self) -> Result<(u64, u64), String> {
        let (beat, lapse) = (self.action_runner_heartbeat_ms, self.action_runner_heartbeat_lapse_ms);
        if lapse < beat.saturating_mul(2) {
            return Err(format!(
                "ACTION_RUNNER_HEARTBEAT_LAPSE_MS ({lapse}) must be at least twice ACTION_RUNNER_HEARTBEAT_MS ({beat}): \
                 a live runner would lose its claims between two heartbeats"
            ));
        }
        Ok((beat, lapse))
    }

    /// The NATS settings, when NATS is configured; the TLS files are read
    /// now, so a wrong path or a file without PEM fails at start, naming its setting.
    pub fn nats_config(&self) -> Result<Option<minoots_actions::NatsConfig>, String> {
        let Some(url) = self.nats_url.clone().filter(|u| !u.is_empty()) else { return Ok(None) };
        if let Some(ca) = &self.nats_tls_ca_file {
            crate::listen::pem_certificates("NATS_TLS_CA_FILE", ca)?;
        }
        let client_cert = self.nats_tls_cert.clone().zip(self.nats_tls_key.clone());
        if let Some((cert, key)) = &client_cert {
            crate::listen::pem_certificates("NATS_TLS_CERT", cert)?;
            crate::listen::pem_private_key("NATS_TLS_KEY", key)?;
        }
        Ok(Some(minoots_actions::NatsConfig {
            stream: self.nats_stream.clone(),
            max_age_ms: self.nats_max_age_ms,
            duplicate_window_ms: self.nats_duplicate_window_ms,
            dlq_stream: self.nats_dlq_stream.clone(),
            consumer: self.nats_consumer.clone(),
            max_ack_pending: self.nats_max_ack_pending.max(1),
            ack_wait_ms: self.nats_ack_wait_ms.max(1),
            max_deliver: self.nats_max_deliver,
            tls: minoots_actions::NatsTls { ca_file: self.nats_tls_ca_file.clone(), client_cert },
            ..minoots_actions::NatsConfig::new(url)
        }))
    }

    /// The signing keys the operator configured (`MINOOTS_SIGNING_KEY` for every tenant, or
    /// the keys file); tenants they do not cover sign with their own generated key.
    /// `data_dir`: warn about a keys file an older version generated there and no longer read.
    pub fn signing_keys(
        &self,
        data_dir: Option<&std::path::Path>,
    ) -> Result<minoots_actions::SigningKeys, String> {
        if let Some(key) = &self.signing_key {
            tracing::warn!(
                "MINOOTS_SIGNING_KEY signs every tenant's webhooks with one key: receivers must check the \
                 signed tenant; unset it to give each tenant its own key"
            );
            return minoots_actions::SigningKeys::single(key.clone(), self.signing_key_next.clone())
                .map_err(|e| format!("MINOOTS_SIGNING_KEY: {e}"));
        }
        if let Some(path) = &self.signing_keys_file {
            return minoots_actions::SigningKeys::load(path).map_err(|e| e.to_string());
        }
        if let Some(old) = data_dir.map(|dir| dir.join("signing-keys.json")).filter(|p| p.exists()) {
            tracing::warn!(
                file = %old.display(),
                "this generated keys file is no longer read: each tenant now signs with its own key \
                 (GET /api/signing-keys); name it in MINOOTS_SIGNING_KEYS_FILE to keep using it"
            );
        }
        Ok(minoots_actions::SigningKeys::default())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        TestCli::try_parse_from(["minoots"].into_iter().chain(args.iter().copied())).expect("parses").serve
    }

    #[test]
    fn a_raft_node_id_selects_raft_mode_and_its_settings_are_checked() {
        assert_eq!(parse(&[]).store_kind(), Ok(StoreKind::Sqlite));
        assert_eq!(parse(&["--store", "raft"]).store_kind(), Ok(StoreKind::Raft));
        let peers = "1=http://127.0.0.1:7207,2=http://127.0.0.1:7208,3=http://127.0.0.1:7209";
        let raft = parse(&["--raft-node-id", "2", "--raft-peers", peers]);
        assert_eq!(raft.store_kind(), Ok(StoreKind::Raft));
        let config = raft.raft.node_config("node-2", "hint".into()).expect("valid");
        assert_eq!(config.listen_addr, "127.0.0.1:7208".parse().expect("address"), "its own peer entry");
        assert_eq!((config.election_min_ms, config.election_max_ms, config.heartbeat_ms), (300, 600, 100));
        let both = parse(&["--store", "postgres", "--raft-node-id", "1"]);
        assert!(both.store_kind().expect_err("both").contains("KERNEL_RAFT_NODE_ID"));
        let no_peers = parse(&["--store", "raft", "--raft-node-id", "1"]);
        assert!(
            no_peers.raft.node_config("n", String::new()).expect_err("peers").contains("KERNEL_RAFT_PEERS")
        );
        let no_id = parse(&["--store", "raft"]);
        assert!(no_id.raft.node_config("n", String::new()).expect_err("id").contains("KERNEL_RAFT_NODE_ID"));
    }

    /// Connection limits and timeouts are bounded: a value that would overflow
    /// a semaphore or a deadline is an error naming the flag, not a panic at start.
    #[test]
    fn connection_limits_and_timeouts_are_bounded() {
        let refused = |args: &[&str]| {
            TestCli::try_parse_from(["minoots"].into_iter().chain(args.iter().copied()))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        for (flag, value) in [
            ("--max-connections", "0"),
            ("--max-connections", "18446744073709551615"),
            ("--header-timeout-ms", "0"),
            ("--header-timeout-ms", "18446744073709551615"),
            ("--body-timeout-ms", "86400001"),
            ("--grpc-max-streams-per-connection", "0"),
        ] {
            assert!(refused(&[flag, value]).contains(flag), "{flag} {value}");
        }
        let ok = parse(&["--max-connections", "1000000", "--header-timeout-ms", "86400000"]);
        assert_eq!((ok.max_connections, ok.header_timeout_ms), (1_000_000, 86_400_000));
    }

    fn db_breaker(args: &[&str]) -> Result<minoots_core::breaker::BreakerConfig, String> {
        let mut argv = vec!["--database-url", "postgres://x@127.0.0.1/db"];
        argv.extend_from_slice(args);
        parse(&argv).cluster.postgres_config().map(|c| c.breaker)
    }

    #[test]
    fn recovery_timeouts_are_seconds_or_durations() {
        assert_eq!(parse_seconds_ms("1"), Ok(1_000));
        assert_eq!(parse_seconds_ms("0.5"), Ok(500));
        assert_eq!(parse_seconds_ms(" 60 "), Ok(60_000));
        assert_eq!(parse_seconds_ms("250ms"), Ok(250));
        assert_eq!(parse_seconds_ms("2s"), Ok(2_000));
        assert!(parse_seconds_ms("-1").is_err());
        assert!(parse_seconds_ms("soon").is_err());
    }

    #[test]
    fn database_breaker_flags_with_the_millisecond_alias() {
        let defaults = db_breaker(&[]).expect("defaults");
        assert_eq!(
            (defaults.failure_threshold, defaults.recovery_timeout_ms, defaults.recovery_timeout_max_ms),
            (5, 1_000, 30_000)
        );
        assert_eq!(defaults.half_open_max_calls, 3);
        let seconds = db_breaker(&["--db-circuit-breaker-recovery-timeout", "0.5"]).expect("seconds");
        assert_eq!(seconds.recovery_timeout_ms, 500);
        let alias = db_breaker(&["--db-circuit-breaker-reset-ms", "2500"]).expect("alias");
        assert_eq!(alias.recovery_timeout_ms, 2_500);
        let both = db_breaker(&[
            "--db-circuit-breaker-recovery-timeout",
            "2.5",
            "--db-circuit-breaker-reset-ms",
            "2500",
        ]);
        assert_eq!(both.map(|b| b.recovery_timeout_ms), Ok(2_500), "agreeing settings are fine");
        let clash = db_breaker(&[
            "--db-circuit-breaker-recovery-timeout",
            "1",
            "--db-circuit-breaker-reset-ms",
            "3000",
        ]);
        assert!(clash.expect_err("disagree").contains("DB_CIRCUIT_BREAKER_RESET_MS"));
        let upside_down = db_breaker(&["--db-circuit-breaker-recovery-timeout", "60"]);
        assert!(upside_down.expect_err("above the max").contains("RECOVERY_TIMEOUT_MAX"));
        let probes = db_breaker(&["--db-circuit-breaker-half-open-max-calls", "1"]).expect("probes");
        assert_eq!(probes.half_open_max_calls, 1);
    }

    #[test]
    fn webhook_breaker_and_runner_heartbeat_flags() {
        let exec = parse(&[]).actions.exec_config().expect("defaults");
        let expected =
            minoots_core::breaker::BreakerConfig { recovery_timeout_ms: 250, ..Default::default() };
        assert_eq!(exec.webhook_breaker, expected);
        let args = parse(&[
            "--webhook-breaker-failure-threshold",
            "2",
            "--webhook-breaker-recovery-timeout",
            "300ms",
            "--webhook-breaker-recovery-timeout-max",
            "10",
            "--webhook-breaker-half-open-max-calls",
            "1",
        ]);
        let breaker = args.actions.exec_config().expect("valid").webhook_breaker;
        assert_eq!(
            (
                breaker.failure_threshold,
                breaker.recovery_timeout_ms,
                breaker.recovery_timeout_max_ms,
                breaker.half_open_max_calls
            ),
            (2, 300, 10_000, 1)
        );
        assert_eq!(parse(&[]).actions.runner_heartbeat_ms(), Ok((1_000, 5_000)));
        let too_tight =
            parse(&["--action-runner-heartbeat-ms", "1000", "--action-runner-heartbeat-lapse-ms", "1500"]);
        assert!(too_tight.actions.runner_heartbeat_ms().is_err(), "a lapse under two heartbeats is refused");
    }

    #[test]
    fn the_pool_wait_warning_and_its_old_switch() {
        let url = ["--database-url", "postgres://x@127.0.0.1/db"];
        let watch = |extra: &[&str]| {
            let mut argv = url.to_vec();
            argv.extend_from_slice(extra);
            parse(&argv).cluster.postgres_config().expect("valid").pool_watch
        };
        assert_eq!(watch(&[]).wait_warn_ms, 50);
        assert_eq!(watch(&["--postgres-pool-wait-warn-ms", "200"]).wait_warn_ms, 200);
        assert_eq!(
            watch(&["--postgres-pool-exhaustion-threshold", "0"]).wait_warn_ms,
            0,
            "0 still turns it off"
        );
    }
}
