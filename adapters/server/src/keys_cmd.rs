//! `minoots keys create|list|revoke`: manage API keys directly in a local
//! store (the data directory), also while a server runs on it (SQLite WAL),
//! or in a cluster's PostgreSQL database (`--store postgres`).
//! A key's secret is printed once at creation; only its SHA-256 is stored.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use minoots_core::TenantId;
use minoots_core::auth::Role;
use minoots_node::{ApiKeyRecord, Clock, KeyStore, SystemClock, hash_api_key};
use minoots_store::{PostgresConfig, PostgresStore, SqliteStore};

use crate::config::StoreKind;
use rand::RngCore;

/// `minoots keys ...`
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: KeyStoreArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Where tenants and keys live: the data directory's store or a cluster's PostgreSQL.
#[derive(Debug, clap::Args)]
pub struct KeyStoreArgs {
    /// Directory holding the store.
    #[arg(long, env = "MINOOTS_DATA_DIR", default_value = "./minoots-data", global = true)]
    pub data_dir: PathBuf,
    /// Store backend: `sqlite` (the data directory) or `postgres` (a cluster's database).
    #[arg(long, env = "KERNEL_STORE", value_enum, default_value = "sqlite", global = true)]
    pub store: StoreKind,
    /// PostgreSQL URL (`--store postgres`); `DATABASE_URL` is read when this is unset.
    #[arg(long, env = "KERNEL_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema holding the tables.
    #[arg(long, env = "KERNEL_DATABASE_SCHEMA", global = true)]
    pub database_schema: Option<String>,
}

impl KeyStoreArgs {
    /// Opens the store (migrating it if needed).
    pub async fn open(&self, clock: Arc<SystemClock>) -> Result<Arc<dyn KeyStore>, Box<dyn Error>> {
        Ok(match self.store {
            StoreKind::Sqlite => {
                // A data directory made here is as private as one `serve` makes.
                crate::secrets::private_data_dir(&self.data_dir)?;
                Arc::new(SqliteStore::open(&self.data_dir.join("minoots.db"), clock).await?)
            }
            StoreKind::Postgres => {
                let url = self
                    .database_url
                    .clone()
                    .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
                    .ok_or(
                        "--store postgres needs --database-url (or KERNEL_DATABASE_URL or DATABASE_URL)",
                    )?;
                let config =
                    PostgresConfig { schema: self.database_schema.clone(), ..PostgresConfig::new(url) };
                Arc::new(PostgresStore::open(config).await?)
            }
            // Writing one node's copy would make the replicas diverge.
            StoreKind::Raft => {
                return Err(
                    "in Raft mode keys and tenants are replicated: a node's data directory cannot be \
                            changed offline (the development key is seeded by the first leader)"
                        .into(),
                );
            }
        })
    }
}

/// Key commands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant and print its secret (shown only once).
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// Comma-separated roles: timer.read, timer.write, timer.cancel, tenant.admin
        /// (every role in the tenant), operator (streams every tenant; never implied).
        #[arg(long, value_delimiter = ',', default_value = "timer.read,timer.write,timer.cancel")]
        roles: Vec<String>,
        /// A label to recognise the key by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id; it stops working at once.
    Revoke {
        /// The key id (`key_…`).
        id: String,
    },
}

/// Runs a key command.
pub async fn run(args: KeysArgs) -> Result<(), Box<dyn Error>> {
    let clock = Arc::new(SystemClock::new());
    let store = args.store.open(clock.clone()).await?;
    let now_ms = clock.now().wall_ms;
    match args.command {
        KeysCommand::Create { tenant, roles, label } => {
            let tenant_id = TenantId::parse("tenant", &tenant)?;
            let roles = roles.iter().map(|r| Role::parse("roles", r.trim())).collect::<Result<_, _>>()?;
            let secret = format!("mk_{}", random_hex(24));
            let record = ApiKeyRecord {
                id: format!("key_{}", random_hex(8)),
                tenant_id,
                roles,
                label,
                created_at_ms: now_ms,
                revoked_at_ms: None,
            };
            store.insert_key(record.clone(), hash_api_key(&secret)).await?;
            println!("id:     {}", record.id);
            println!("tenant: {}", record.tenant_id);
            println!("roles:  {}", roles_text(&record));
            println!("secret: {secret}");
            println!("(the secret is shown only now; send it as header x-api-key)");
        }
        KeysCommand::List { tenant } => {
            let tenant = tenant.map(|t| TenantId::parse("tenant", &t)).transpose()?;
            let keys = store.list_keys(tenant).await?;
            println!("{:<22} {:<20} {:<8} {:<50} LABEL", "ID", "TENANT", "STATE", "ROLES");
            for key in keys {
                let state = if key.revoked_at_ms.is_some() { "revoked" } else { "active" };
                println!(
                    "{:<22} {:<20} {:<8} {:<50} {}",
                    key.id,
                    key.tenant_id,
                    state,
                    roles_text(&key),
                    key.label
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_key(id.clone(), now_ms).await? {
                println!("revoked {id}");
            } else {
                return Err(format!("no active key with id {id}").into());
            }
        }
    }
    Ok(())
}

fn roles_text(key: &ApiKeyRecord) -> String {
    key.roles.iter().map(Role::as_str).collect::<Vec<_>>().join(",")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
