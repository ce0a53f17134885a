//! Command-line surface of the `minoots` binary (clap), and dispatch.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ServeArgs;
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
    /// Run a node (standalone: embedded SQLite store in the data directory).
    Serve(Box<ServeArgs>),
    /// Create or upgrade the store schema, then exit.
    Migrate {
        /// Directory holding the store.
        #[arg(long, env = "MINOOTS_DATA_DIR", default_value = "./minoots-data")]
        data_dir: PathBuf,
    },
    /// Manage API keys in a local store.
    Keys(KeysArgs),
    /// Create, inspect, list, cancel and watch timers on a running server (gRPC).
    Timers(crate::timers_cmd::TimersArgs),
    /// Load-generate against a running server: schedule rate, ack latency, fire lateness, RSS.
    Bench(Box<crate::bench::BenchArgs>),
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Serve(args) => crate::serve::serve(*args).await,
        Command::Migrate { data_dir } => {
            std::fs::create_dir_all(&data_dir)?;
            let path = data_dir.join("minoots.db");
            let clock = Arc::new(minoots_node::SystemClock::new());
            minoots_store::SqliteStore::open(&path, clock).await?;
            println!("store is up to date: sqlite {}", path.display());
            Ok(())
        }
        Command::Keys(args) => crate::keys_cmd::run(args).await,
        Command::Timers(args) => crate::timers_cmd::run(args).await,
        Command::Bench(args) => crate::bench::run(*args).await,
    }
}
