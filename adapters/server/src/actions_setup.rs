//! Wiring of events and actions for `serve` and `orchestrator`: the action
//! store (SQLite `actions.db` beside the timer store, or the cluster's
//! PostgreSQL database), NATS JetStream when `NATS_URL` is set, the relay's
//! sink, and the action runner with its intake (the outbox in standalone
//! mode, the JetStream consumer with NATS).

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use minoots_actions::{
    ActionStore, Executor, Inbox, Nats, NatsObserver, OutboxIntake, Runner, RunnerConfig, TenantKeys,
};
use minoots_core::action::ActionPolicy;
use minoots_node::metrics::Metrics;
use minoots_node::{Clock, EventSink};
use tokio::sync::watch;

use crate::config::ActionArgs;

/// Where the action store lives.
pub enum ActionPlace {
    /// `actions.db` in this data directory.
    Sqlite(PathBuf),
    /// The cluster database.
    Postgres {
        /// URL.
        url: String,
        /// Schema, if any.
        schema: Option<String>,
    },
}

/// Events and actions, prepared before the node starts.
pub struct Actions {
    /// What the relay hands committed rows to.
    pub sink: Option<Arc<dyn EventSink>>,
    /// What schedule-time validation allows.
    pub policy: ActionPolicy,
    /// Deliveries, history and DLQ (for the APIs).
    pub store: ActionStore,
    /// Each tenant's signing keys (the executor signs with them; the API shows and rotates them).
    pub keys: Arc<TenantKeys>,
    runner: Option<(Arc<Executor>, Option<Nats>)>,
    inbox: Arc<Inbox>,
    node_id: String,
    concurrency: usize,
    concurrency_per_tenant: usize,
    /// The runner's heartbeat period and lapse.
    heartbeat_ms: (u64, u64),
}

impl Actions {
    /// Opens the action store, connects to NATS if configured, and builds the sink.
    /// `with_intake`: the runner consumes events (serve's in-process runner or an orchestrator).
    pub async fn prepare(
        args: &ActionArgs,
        place: ActionPlace,
        clock: Arc<dyn Clock>,
        node_id: &str,
    ) -> Result<Self, Box<dyn Error>> {
        let exec = args.exec_config()?;
        let heartbeat_ms = args.runner_heartbeat_ms()?;
        let policy = exec.policy();
        let (store, data_dir) = match &place {
            ActionPlace::Sqlite(dir) => {
                (ActionStore::open_sqlite(&dir.join("actions.db")).await?, Some(dir.clone()))
            }
            ActionPlace::Postgres { url, schema } => {
                (ActionStore::connect_postgres(url, schema.as_deref(), 4).await?, None)
            }
        };
        let nats = match args.nats_config()? {
            Some(config) => {
                tracing::info!(url = %crate::secrets::redact_urls(&config.url), stream = %config.stream, "connecting to NATS JetStream");
                Some(Nats::connect(config).await?)
            }
            None => None,
        };
        let concurrency = args.action_concurrency.max(1);
        let inbox = Arc::new(Inbox::new(concurrency));
        let run_here = !args.no_action_runner;
        let keys =
            Arc::new(TenantKeys::new(args.signing_keys(data_dir.as_deref())?, store.clone(), clock.clone()));
        if let Err(e) = keys.preload().await {
            tracing::warn!(error = %e, "preloading tenants' signing keys failed; each is read at its first use");
        }
        let sink: Option<Arc<dyn EventSink>> = match &nats {
            Some(nats) => Some(nats.sink()),
            None if run_here => {
                Some(Arc::new(OutboxIntake::new(store.clone(), inbox.clone(), clock.clone(), keys.clone())))
            }
            None => None,
        };
        let runner = if run_here {
            let executor =
                Arc::new(Executor::new(exec, keys.clone(), nats.as_ref().map(|n| n.client.clone()), clock)?);
            Some((executor, nats))
        } else {
            None
        };
        Ok(Self {
            sink,
            policy,
            store,
            keys,
            runner,
            inbox,
            node_id: node_id.to_owned(),
            concurrency,
            concurrency_per_tenant: usize::try_from(args.action_concurrency_per_tenant).unwrap_or(usize::MAX),
            heartbeat_ms,
        })
    }

    /// Starts the runner (and, with NATS, its consumer) until `shutdown` turns true.
    pub fn start(
        &self,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some((executor, nats)) = &self.runner else { return Vec::new() };
        let observer = nats
            .clone()
            .map(|n| Arc::new(NatsObserver::new(n)) as Arc<dyn minoots_actions::runner::DeliveryObserver>);
        let config = RunnerConfig {
            runner_id: self.node_id.clone(),
            concurrency: self.concurrency,
            concurrency_per_tenant: self.concurrency_per_tenant,
            heartbeat_ms: self.heartbeat_ms.0,
            heartbeat_lapse_ms: self.heartbeat_ms.1,
            ..RunnerConfig::default()
        };
        let runner = Runner::new(
            self.store.clone(),
            self.inbox.clone(),
            executor.clone(),
            metrics,
            config,
            clock.clone(),
            observer,
        );
        let mut tasks = vec![tokio::spawn(runner.run(shutdown.clone()))];
        if let Some(nats) = nats.clone() {
            let store = self.store.clone();
            let inbox = self.inbox.clone();
            tasks.push(tokio::spawn(async move { nats.consume_into(store, inbox, clock, shutdown).await }));
        }
        tasks
    }
}
