//! `minoots orchestrator`: the action runner alone, on any machine — it
//! consumes `fired` events from the JetStream durable consumer, keeps
//! deliveries, history and dead letters in the cluster database (or a local
//! SQLite file), and serves its metrics. Several orchestrators may share one
//! consumer and database: claims keep them from running a delivery twice
//! while they are healthy.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use minoots_node::metrics::Metrics;
use minoots_node::{Clock, SystemClock};
use tokio::sync::watch;

use crate::actions_setup::{ActionPlace, Actions};
use crate::config::{ActionArgs, LogFormat, init_logging};

/// Options of `minoots orchestrator`.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorArgs {
    #[command(flatten)]
    pub actions: ActionArgs,
    /// PostgreSQL URL of the cluster database (deliveries, history, DLQ); unset: SQLite in the data directory.
    #[arg(long, env = "KERNEL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// PostgreSQL schema.
    #[arg(long, env = "KERNEL_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Directory for the SQLite action store and signing keys (without a database URL).
    #[arg(long, env = "MINOOTS_DATA_DIR", default_value = "./minoots-data")]
    pub data_dir: PathBuf,
    /// Recorded with every attempt.
    #[arg(long, env = "KERNEL_NODE_ID", default_value = "orchestrator-1")]
    pub node_id: String,
    /// Prometheus `/metrics` address.
    #[arg(long, env = "KERNEL_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: SocketAddr,
    /// Log level or tracing filter.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: OrchestratorArgs) -> Result<(), Box<dyn Error>> {
    init_logging(&args.log_level, args.log_format);
    if args.actions.nats_url.as_deref().is_none_or(str::is_empty) {
        return Err("minoots orchestrator needs NATS (set --nats-url or NATS_URL)".into());
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let place = match &args.database_url {
        Some(url) => {
            let config = minoots_store::PostgresConfig {
                schema: args.database_schema.clone(),
                ..minoots_store::PostgresConfig::new(url.clone())
            };
            minoots_store::migrate_postgres(&config).await?;
            ActionPlace::Postgres { url: url.clone(), schema: args.database_schema.clone() }
        }
        None => {
            crate::secrets::private_data_dir(&args.data_dir)?;
            ActionPlace::Sqlite(args.data_dir.clone())
        }
    };
    let mut action_args = args.actions.clone();
    action_args.no_action_runner = false;
    let actions = Actions::prepare(&action_args, place, clock.clone(), &args.node_id).await?;
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks = actions.start(metrics.clone(), clock, stop_rx.clone());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let metrics_addr = listener.local_addr()?;
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { metrics.encode() }
        }),
    );
    let mut stopped = stop_rx.clone();
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    println!("minoots orchestrator ready: metrics=http://{metrics_addr}/metrics");
    crate::serve::wait_for_signal().await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = server.await;
    Ok(())
}
