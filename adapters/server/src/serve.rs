//! `minoots serve`: opens the store, seeds the development key on an empty
//! store, starts the node, and serves REST, gRPC and metrics until SIGINT or
//! SIGTERM; then shuts down gracefully (queued writes commit first).

use std::error::Error;
use std::sync::Arc;

use minoots_core::auth::Role;
use minoots_node::{ApiKeyRecord, KeyStore, NodeConfig, SystemClock, hash_api_key, start_node};
use minoots_store::SqliteStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ServeArgs, StoreKind, init_logging};

/// The tenant created on an empty store.
pub const DEV_TENANT: &str = "tenant-local";
/// The API key created for it (printed at start-up).
pub const DEV_KEY: &str = "local-dev-key";

/// Runs the server until a shutdown signal.
pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    init_logging(&args.log_level, args.log_format);
    let StoreKind::Sqlite = args.store;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", args.data_dir.display()))?;
    let db_path = args.data_dir.join("minoots.db");
    let clock = Arc::new(SystemClock::new());
    let store = Arc::new(SqliteStore::open(&db_path, clock.clone()).await?);
    if !args.no_dev_key {
        seed_dev_key(&*store, &clock).await?;
    }

    let seed: u64 = rand::random();
    let (handle, node_task) =
        start_node(NodeConfig::new(args.node_id.clone(), seed), store.clone(), store.clone(), clock);

    let http = TcpListener::bind(args.http_addr).await.map_err(|e| format!("REST address {}: {e}", args.http_addr))?;
    let grpc = TcpListener::bind(args.grpc_addr).await.map_err(|e| format!("gRPC address {}: {e}", args.grpc_addr))?;
    let metrics =
        TcpListener::bind(args.metrics_addr).await.map_err(|e| format!("metrics address {}: {e}", args.metrics_addr))?;
    let (http_addr, grpc_addr, metrics_addr) = (http.local_addr()?, grpc.local_addr()?, metrics.local_addr()?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_config = minoots_http::HttpConfig { max_body_bytes: args.max_body_bytes, ..Default::default() };
    let api = minoots_http::api_router(handle.clone(), http_config);
    let http_task = tokio::spawn(
        axum::serve(http, api).with_graceful_shutdown(stopped(stop_rx.clone())).into_future(),
    );
    let metrics_task = tokio::spawn(
        axum::serve(metrics, minoots_http::metrics_router(handle.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let grpc_task =
        tokio::spawn(crate::grpc_server::serve_grpc_listener(grpc, handle.clone(), stopped(stop_rx.clone())));

    handle.wait_for_role("leader").await;
    tracing::info!(node_id = %args.node_id, store = %db_path.display(), "minoots is serving");
    println!("minoots ready: rest=http://{http_addr} grpc=http://{grpc_addr} metrics=http://{metrics_addr}/metrics");
    println!("store: sqlite {}", db_path.display());

    wait_for_signal().await;
    tracing::info!("shutting down: refusing new requests, committing queued writes");
    handle.shutdown();
    let _ = node_task.await;
    let _ = stop_tx.send(true);
    let _ = http_task.await;
    let _ = metrics_task.await;
    let _ = grpc_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates tenant `tenant-local` with key `local-dev-key` (all roles) when the store has no key yet.
async fn seed_dev_key(keys: &dyn KeyStore, clock: &SystemClock) -> Result<(), Box<dyn Error>> {
    if keys.count_keys().await? > 0 {
        return Ok(());
    }
    let record = ApiKeyRecord {
        id: "key_local_dev".into(),
        tenant_id: minoots_core::TenantId::parse("tenant", DEV_TENANT)?,
        roles: Role::ALL.into_iter().collect(),
        label: "development key created on an empty store".into(),
        created_at_ms: minoots_node::Clock::now(clock).wall_ms,
        revoked_at_ms: None,
    };
    keys.insert_key(record, hash_api_key(DEV_KEY)).await?;
    tracing::warn!(
        tenant = DEV_TENANT,
        api_key = DEV_KEY,
        "empty store: created development tenant and API key with all roles; \
         create real keys with `minoots keys create` and revoke key_local_dev before exposing this server"
    );
    println!("development API key: {DEV_KEY} (tenant {DEV_TENANT}, all roles; revoke key_local_dev in production)");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
