//! `minoots serve` configuration: flags with environment-variable
//! equivalents (MINOOTS's names where they exist), and logging set-up.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Which store backs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite file in the data directory (standalone, always leader).
    Sqlite,
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
    /// Store backend.
    #[arg(long, env = "KERNEL_STORE", value_enum, default_value = "sqlite")]
    pub store: StoreKind,
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
