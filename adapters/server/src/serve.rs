//! `minoots serve`: opens the store, seeds the development key on an empty
//! store, starts the node, and serves REST, gRPC and metrics until SIGINT or
//! SIGTERM; then shuts down gracefully (queued writes commit first).
//!
//! Standalone (`--store sqlite`, the default): a SQLite file in the data
//! directory; the node is always the leader. Cluster (`--store postgres`):
//! several nodes share one PostgreSQL database and lead by lease
//! (`LeadershipMode::Lease`); every node answers reads, followers refuse
//! writes with the leader's address. A cluster node started while its
//! database is unreachable retries (with backoff, logging each failure)
//! instead of exiting; once running, the engine backs off and retries by
//! itself through database outages.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use minoots_core::auth::Role;
use minoots_core::engine::{EngineConfig, LeadershipMode};
use minoots_core::lease::LeaseConfig;
use minoots_core::quota::QuotaLimits;
use minoots_node::driver::start_node_with;
use minoots_node::subscription::StreamLimits;
use minoots_node::{ApiKeyRecord, KeyStore, NodeConfig, Store, SystemClock, hash_api_key};
use minoots_store::{PostgresStore, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::actions_setup::{ActionPlace, Actions};
use crate::config::{ServeArgs, StoreKind, init_logging};
use crate::listen::ListenConfig;

/// The tenant created on an empty store.
pub const DEV_TENANT: &str = "tenant-local";
/// The API key created for it (printed at start-up).
pub const DEV_KEY: &str = "local-dev-key";

/// Runs the server until a shutdown signal.
pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn Error>> {
    init_logging(&args.log_level, args.log_format);
    let clock = Arc::new(SystemClock::new());
    let store_kind = args.store_kind()?;
    let tls = args.tls_cert.clone().zip(args.tls_key.clone());
    let rest_tls =
        tls.as_ref().map(|(cert, key)| crate::listen::tls_config(cert, key, &[b"http/1.1"])).transpose()?;
    let grpc_tls =
        crate::grpc_server::grpc_tls(tls.as_ref(), args.tls_client_ca.as_deref(), args.header_timeout_ms)?;
    let http = TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("REST address {}: {e}", args.http_addr))?;
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .map_err(|e| format!("gRPC address {}: {e}", args.grpc_addr))?;
    let metrics = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("metrics address {}: {e}", args.metrics_addr))?;
    let (http_addr, grpc_addr, metrics_addr) =
        (http.local_addr()?, grpc.local_addr()?, metrics.local_addr()?);

    let client_address = leader_hint(args.cluster.advertise_addr.as_deref(), http_addr, grpc_addr);
    let opened = match store_kind {
        StoreKind::Sqlite => open_sqlite(&args, clock.clone()).await?,
        StoreKind::Postgres => match open_postgres(&args).await? {
            Some(opened) => opened,
            None => return Ok(()), // a shutdown signal while waiting for the database
        },
        StoreKind::Raft => open_raft(&args, clock.clone(), client_address.clone()).await?,
    };
    match (store_kind, args.no_dev_key) {
        (_, true) => {}
        (StoreKind::Sqlite, false) => seed_dev_key(&*opened.keys, &clock).await?,
        // Another node seeds it, or this node does at its next start.
        (StoreKind::Postgres, false) => {
            if let Err(e) = seed_dev_key(&*opened.keys, &clock).await {
                tracing::warn!(error = %e, "could not seed the development key");
            }
        }
        // Only a leader can write: whichever node leads first seeds it.
        (StoreKind::Raft, false) => {
            if let Some(raft) = &opened.raft {
                tokio::spawn(seed_dev_key_when_leading(
                    opened.keys.clone(),
                    clock.clone(),
                    raft.leadership.clone(),
                ));
            }
        }
    }

    let place = match store_kind {
        StoreKind::Sqlite | StoreKind::Raft => ActionPlace::Sqlite(args.data_dir.clone()),
        StoreKind::Postgres => {
            ActionPlace::Postgres { url: args.cluster.url()?, schema: args.cluster.database_schema.clone() }
        }
    };
    let actions = Actions::prepare(&args.actions, place, clock.clone(), &args.node_id).await?;

    let seed: u64 = rand::random();
    let mut node_config = NodeConfig::new(args.node_id.clone(), seed);
    node_config.event_sink = actions.sink.clone();
    node_config.default_quotas = QuotaLimits {
        pending_timers: args.quota_pending_timers,
        daily_creates: args.quota_daily_creates,
        requests_per_second: args.quota_requests_per_second,
    };
    if let Some(key) = &args.jwt_public_key {
        let verifier =
            crate::jwt::JwtVerifier::new(key, args.jwt_audience.as_deref(), args.jwt_issuer.as_deref())?;
        tracing::info!(audience = ?args.jwt_audience, issuer = ?args.jwt_issuer, "bearer tokens (JWT) accepted beside API keys");
        node_config.token_verifier = Some(Arc::new(verifier));
    }
    node_config.stream_limits = StreamLimits {
        buffer_events: usize::try_from(args.stream_buffer_events).unwrap_or(usize::MAX),
        per_tenant: usize::try_from(args.max_streams_per_tenant).unwrap_or(usize::MAX),
    };
    let mut engine = EngineConfig::new(args.node_id.clone(), seed);
    engine.actions = actions.policy.clone();
    engine.past_fire_tolerance_ms = args.past_fire_tolerance_ms;
    if let Some(lease) = opened.lease {
        engine.mode = LeadershipMode::Lease(lease);
        engine.address = client_address.clone();
        tracing::info!(node_id = %args.node_id, advertise = %engine.address, "cluster mode: leading by lease");
    }
    if let Some(raft) = &opened.raft {
        engine.mode = LeadershipMode::External;
        engine.address = client_address.clone();
        node_config.leadership = Some(raft.leadership.clone());
        node_config.consensus = Some(raft.consensus.clone());
        tracing::info!(node_id = %args.node_id, advertise = %engine.address, "Raft mode: leading by election");
    }
    let (handle, node_task) =
        start_node_with(engine, node_config, opened.store.clone(), opened.keys.clone(), clock.clone());
    let (runner_stop_tx, runner_stop_rx) = watch::channel(false);
    let runner_tasks = actions.start(handle.metrics_arc(), clock, runner_stop_rx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_config = minoots_http::HttpConfig {
        max_body_bytes: args.max_body_bytes,
        actions: Some(actions.store.clone()),
        signing_keys: Some(actions.keys.clone()),
        action_kinds: actions.policy.accepted_kinds(),
        ..Default::default()
    };
    let api = minoots_http::api_router(handle.clone(), http_config).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(Duration::from_millis(args.body_timeout_ms)),
    );
    let listen = ListenConfig {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_timeout_ms: args.header_timeout_ms,
        tls: rest_tls,
    };
    let http_task = tokio::spawn(crate::listen::serve_http(http, api, listen, stopped(stop_rx.clone())));
    let metrics_task = tokio::spawn(
        axum::serve(metrics, minoots_http::metrics_router(handle.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let grpc_limits = crate::grpc_server::GrpcLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        max_streams_per_connection: args.grpc_max_streams_per_connection,
        opening_timeout_ms: args.header_timeout_ms,
        tls: grpc_tls,
    };
    let grpc_task = tokio::spawn(crate::grpc_server::serve_grpc_listener(
        grpc,
        handle.clone(),
        grpc_limits,
        stopped(stop_rx.clone()),
    ));

    match store_kind {
        StoreKind::Sqlite => {
            handle.wait_for_role(minoots_node::NodeRole::Leader).await;
        }
        StoreKind::Postgres => wait_for_first_lease_round(&handle).await,
        // Serving at once: followers answer reads and point writers to the leader.
        StoreKind::Raft => {}
    }
    let status = handle.status();
    tracing::info!(node_id = %args.node_id, store = %opened.description, role = status.role.as_str(), "minoots is serving");
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "minoots ready: rest={scheme}://{http_addr} grpc={scheme}://{grpc_addr} metrics=http://{metrics_addr}/metrics"
    );
    println!("store: {}", opened.description);
    if store_kind != StoreKind::Sqlite {
        println!(
            "cluster: node {} is {}{}",
            args.node_id,
            status.role.as_str(),
            status.leader.map(|l| format!(" (leader: {l})")).unwrap_or_default()
        );
    }

    wait_for_signal().await;
    tracing::info!("shutting down: refusing new requests, committing queued writes");
    handle.shutdown();
    let _ = node_task.await;
    if let Some(raft) = opened.raft {
        raft.shutdown().await;
    }
    let _ = runner_stop_tx.send(true);
    for task in runner_tasks {
        let _ = task.await;
    }
    let _ = stop_tx.send(true);
    let _ = http_task.await;
    let _ = metrics_task.await;
    let _ = grpc_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// An opened store, as the node sees it.
struct Opened {
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyStore>,
    /// Lease timing in cluster mode; `None` standalone.
    lease: Option<LeaseConfig>,
    /// For logs and the start-up banner.
    description: String,
    /// The Raft node in Raft mode.
    raft: Option<minoots_raft::RaftMode>,
}

async fn open_sqlite(args: &ServeArgs, clock: Arc<SystemClock>) -> Result<Opened, Box<dyn Error>> {
    crate::secrets::private_data_dir(&args.data_dir)
        .map_err(|e| format!("cannot create a private data directory {}: {e}", args.data_dir.display()))?;
    let db_path = args.data_dir.join("minoots.db");
    let store = Arc::new(SqliteStore::open(&db_path, clock).await?);
    Ok(Opened {
        store: store.clone(),
        keys: store,
        lease: None,
        description: format!("sqlite {}", db_path.display()),
        raft: None,
    })
}

/// Starts this node's Raft replica: its state and log in the data directory.
async fn open_raft(
    args: &ServeArgs,
    clock: Arc<SystemClock>,
    client_address: String,
) -> Result<Opened, Box<dyn Error>> {
    crate::secrets::private_data_dir(&args.data_dir)
        .map_err(|e| format!("cannot create a private data directory {}: {e}", args.data_dir.display()))?;
    let config = args.raft.node_config(&args.node_id, client_address)?;
    let description = format!(
        "raft node {} of {} ({}), data in {}",
        config.node_id,
        config.peers.len(),
        config.listen_addr,
        args.data_dir.display()
    );
    let raft = minoots_raft::start(config, &args.data_dir, clock).await?;
    Ok(Opened {
        store: raft.store.clone(),
        keys: raft.store.clone(),
        lease: None,
        description,
        raft: Some(raft),
    })
}

/// First delay between attempts to reach the database at start-up; doubles up to [`CONNECT_BACKOFF_MAX_MS`].
const CONNECT_BACKOFF_MIN_MS: u64 = 250;
/// Longest delay between attempts to reach the database at start-up.
const CONNECT_BACKOFF_MAX_MS: u64 = 5_000;

/// Connects to and migrates the cluster database, retrying with backoff
/// while it is unreachable (a node started before its database does not
/// crash-loop). `None` when a shutdown signal came first.
async fn open_postgres(args: &ServeArgs) -> Result<Option<Opened>, Box<dyn Error>> {
    let config = args.cluster.postgres_config()?;
    let lease = args.cluster.lease_config()?;
    let description = format!("postgres {}", crate::secrets::redact_urls(&config.url));
    let mut backoff_ms = CONNECT_BACKOFF_MIN_MS;
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let store = loop {
        match PostgresStore::open(config.clone()).await {
            Ok(store) => break store,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in_ms = backoff_ms, database = %description, "database unreachable at start-up; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    _ = &mut signal => return Ok(None),
                }
                backoff_ms = (backoff_ms * 2).min(CONNECT_BACKOFF_MAX_MS);
            }
            Err(e) => return Err(e.into()),
        }
    };
    let store = Arc::new(store);
    Ok(Some(Opened { store: store.clone(), keys: store, lease: Some(lease), description, raft: None }))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
/// The leader hint this node advertises: its REST and gRPC URLs on the
/// advertised host (default: the REST listener's IP, or 127.0.0.1 when it
/// listens on every interface).
fn leader_hint(advertise: Option<&str>, http: SocketAddr, grpc: SocketAddr) -> String {
    let host = match advertise {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ if http.ip().is_unspecified() => {
            tracing::warn!(
                "the REST address listens on every interface: set --advertise-addr so followers can point callers here"
            );
            "127.0.0.1".to_owned()
        }
        _ => http.ip().to_string(),
    };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    format!("rest=http://{host}:{} grpc=http://{host}:{}", http.port(), grpc.port())
}

/// Waits until the node has either taken the lease or learnt that another node holds it.
async fn wait_for_first_lease_round(handle: &minoots_node::NodeHandle) {
    loop {
        let role = handle.status().role;
        if role != minoots_node::NodeRole::Opening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates tenant `tenant-local` with key `local-dev-key` (every tenant role,
/// not `operator`) when the store has no key yet.
async fn seed_dev_key(keys: &dyn KeyStore, clock: &SystemClock) -> Result<(), Box<dyn Error>> {
    if keys.count_keys().await? > 0 {
        return Ok(());
    }
    let record = ApiKeyRecord {
        id: "key_local_dev".into(),
        tenant_id: minoots_core::TenantId::parse("tenant", DEV_TENANT)?,
        roles: Role::TENANT.into_iter().collect(),
        label: "development key created on an empty store".into(),
        created_at_ms: minoots_node::Clock::now(clock).wall_ms,
        revoked_at_ms: None,
    };
    keys.insert_key(record, hash_api_key(DEV_KEY)).await?;
    tracing::warn!(
        tenant = DEV_TENANT,
        api_key = DEV_KEY,
        "empty store: created development tenant and API key with every tenant role; \
         create real keys with `minoots keys create` and revoke key_local_dev before exposing this server"
    );
    println!(
        "development API key: {DEV_KEY} (tenant {DEV_TENANT}, every tenant role; revoke key_local_dev in production)"
    );
    Ok(())
}

/// Raft mode: seeds the development key once this node leads (a no-op if
/// the replicated state already holds a key).
async fn seed_dev_key_when_leading(
    keys: Arc<dyn KeyStore>,
    clock: Arc<SystemClock>,
    mut leadership: watch::Receiver<Option<minoots_core::engine::LeadershipChange>>,
) {
    use minoots_core::engine::LeadershipChange;
    loop {
        let leads = matches!(*leadership.borrow_and_update(), Some(LeadershipChange::Leading { .. }));
        if leads {
            match seed_dev_key(&*keys, &clock).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "development key not seeded yet"),
            }
        }
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

pub(crate) async fn wait_for_signal() {
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
