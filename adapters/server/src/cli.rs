//! Command-line surface of the `minoots` binary (clap), and dispatch.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{ServeArgs, StoreKind};
use crate::keys_cmd::KeysArgs;

/// MINOOTS: a durable timer service that fires every occurrence exactly once.
#[derive(Debug, clap::Parser)]
#[command(name = "minoots", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a node (standalone: embedded SQLite store in the data directory; cluster: `--store postgres`).
    Serve(Box<ServeArgs>),
    /// Create or upgrade the store schema, then exit.
    Migrate {
        /// Directory holding the store (SQLite).
        #[arg(long, env = "MINOOTS_DATA_DIR", default_value = "./minoots-data")]
        data_dir: PathBuf,
        /// Store backend: `sqlite` (standalone) or `postgres` (cluster).
        #[arg(long, env = "KERNEL_STORE", value_enum, default_value = "sqlite")]
        store: StoreKind,
        /// PostgreSQL URL; `DATABASE_URL` is read when this is unset.
        #[arg(long, env = "KERNEL_DATABASE_URL")]
        database_url: Option<String>,
        /// PostgreSQL schema holding the tables (created if missing).
        #[arg(long, env = "KERNEL_DATABASE_SCHEMA")]
        database_schema: Option<String>,
    },
    /// Manage API keys in a local store.
    Keys(KeysArgs),
    /// Set or show a tenant's own quota limits in a local store.
    Tenants(crate::tenants_cmd::TenantsArgs),
    /// Create, inspect, list, cancel and watch timers on a running server (gRPC).
    Timers(crate::timers_cmd::TimersArgs),
    /// The dead-letter queue of a running server: list, show, replay (REST).
    Dlq(crate::dlq_cmd::DlqArgs),
    /// Run only the action runner: consume fire events from NATS JetStream and deliver their actions.
    Orchestrator(Box<crate::orchestrator::OrchestratorArgs>),
    /// Load-generate against a running server: schedule rate, ack latency, fire lateness, RSS.
    Bench(Box<crate::bench::BenchArgs>),
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Serve(args) => crate::serve::serve(*args).await,
        Command::Migrate { store: StoreKind::Postgres, database_url, database_schema, .. } => {
            let url =
                database_url.or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty())).ok_or(
                    "--store postgres needs --database-url (or KERNEL_DATABASE_URL or DATABASE_URL)",
                )?;
            let config = minoots_store::PostgresConfig {
                schema: database_schema,
                ..minoots_store::PostgresConfig::new(url)
            };
            minoots_store::migrate_postgres(&config).await?;
            println!(
                "store is up to date: postgres{}",
                config.schema.map(|s| format!(" (schema {s})")).unwrap_or_default()
            );
            Ok(())
        }
        // A Raft node's state is the standalone schema in its data directory.
        Command::Migrate { data_dir, store: StoreKind::Sqlite | StoreKind::Raft, .. } => {
            crate::secrets::private_data_dir(&data_dir)?;
            let path = data_dir.join("minoots.db");
            let clock = Arc::new(minoots_node::SystemClock::new());
            minoots_store::SqliteStore::open(&path, clock).await?;
            println!("store is up to date: sqlite {}", path.display());
            Ok(())
        }
        Command::Keys(args) => crate::keys_cmd::run(args).await,
        Command::Tenants(args) => crate::tenants_cmd::run(args).await,
        Command::Timers(args) => crate::timers_cmd::run(args).await,
        Command::Bench(args) => crate::bench::run(*args).await,
        Command::Dlq(args) => crate::dlq_cmd::run(args).await,
        Command::Orchestrator(args) => crate::orchestrator::run(*args).await,
    }
}
