//! NATS JetStream: the outbox sink (events into stream `MINOOTS_TIMER`), the
//! action intake (a durable pull consumer on its `fired` subjects), and the
//! `delivered` / `dead` events with the dead-letter stream `MINOOTS_DLQ`.
//!
//! Subjects: `{prefix}.{tenant}.{scheduled|fired|cancelled|delivered|dead}`
//! (a `.` inside a tenant id is sent as `~`, since it separates subject
//! tokens); dead letters on `{dlq_prefix}.{tenant}`. Every message carries
//! `Nats-Msg-Id` — `{timer_id}:{occurrence}:{event}` for timer events,
//! `{timer_id}:{occurrence}:{event}:{action_id}` for delivery events — so
//! JetStream drops a re-publish within its duplicate window.
//!
//! The sink pipelines publishes, but never has two events of one timer in
//! flight at once: a window ends before a timer's second event, so a failed
//! publish can never let a later event of the same timer in ahead of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_node::EventSink;
use minoots_node::views::EventEnvelope;
use tokio::sync::watch;

use crate::inbox::Inbox;
use crate::runner::{DeliveryObserver, deliveries_of};
use crate::store::{ActionStore, AttemptRecord, NewDelivery};

/// Most publishes in flight in one window.
const WINDOW_MAX: usize = 256;

/// What to create or check on the server.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`NATS_URL`).
    pub url: String,
    /// The event stream (`NATS_JETSTREAM_STREAM`).
    pub stream: String,
    /// Subject prefix of timer events.
    pub subject_prefix: String,
    /// How long the event stream keeps messages (0: forever).
    pub max_age_ms: u64,
    /// JetStream's duplicate window.
    pub duplicate_window_ms: u64,
    /// The dead-letter stream (`NATS_DLQ_STREAM`).
    pub dlq_stream: String,
    /// Subject prefix of dead letters.
    pub dlq_subject_prefix: String,
    /// The action runner's durable consumer (`NATS_JETSTREAM_CONSUMER`).
    pub consumer: String,
    /// Unacknowledged messages the consumer may hold.
    pub max_ack_pending: i64,
    /// Redelivery after this long without an ack.
    pub ack_wait_ms: u64,
    /// Most deliveries of one message (-1: unlimited).
    pub max_deliver: i64,
    /// How long a publish waits for its ack.
    pub publish_ack_timeout_ms: u64,
    /// TLS to the server: its CA and this client's certificate.
    pub tls: NatsTls,
}

/// TLS to NATS. With none of it set, TLS is used when the URL says
/// `tls://` or the server requires it, verified against the system's roots.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// PEM CA bundle the server's certificate must chain to (instead of the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate chain and key this client presents (servers with `verify: true`).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NatsTls {
    /// Whether any TLS setting is given (then TLS is required).
    pub fn is_configured(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some()
    }
}

impl NatsConfig {
    /// Defaults (MINOOTS's names) for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "MINOOTS_TIMER".into(),
            subject_prefix: "minoots.timer".into(),
            max_age_ms: 7 * 24 * 3_600_000,
            duplicate_window_ms: 120_000,
            dlq_stream: "MINOOTS_DLQ".into(),
            dlq_subject_prefix: "minoots.dlq".into(),
            consumer: "ACTION_ORCHESTRATOR".into(),
            max_ack_pending: 1_000,
            ack_wait_ms: 30_000,
            max_deliver: -1,
            publish_ack_timeout_ms: 2_000,
            tls: NatsTls::default(),
        }
    }

    fn subject(&self, tenant: &str, event: &str) -> String {
        format!("{}.{}.{event}", self.subject_prefix, subject_token(tenant))
    }
}

/// A tenant id as one subject token.
pub fn subject_token(tenant: &str) -> String {
    tenant.replace('.', "~")
}

/// Why NATS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("NATS: {0}")]
pub struct NatsError(pub String);

fn nats_err(context: &str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> NatsError + '_ {
    move |e| NatsError(format!("{context}: {e}"))
}

/// A connection with the streams created or checked.
#[derive(Clone)]
pub struct Nats {
    /// The core client (also used by `nats` actions).
    pub client: async_nats::Client,
    js: jetstream::Context,
    config: NatsConfig,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Nats {
    /// Connects (retrying in the background if the server is down later)
    /// and creates the streams, or checks that existing ones capture our subjects.
    pub async fn connect(config: NatsConfig) -> Result<Self, NatsError> {
        let mut options = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .name("minoots");
        if config.tls.is_configured() {
            options = options.require_tls(true);
        }
        if let Some(ca_file) = &config.tls.ca_file {
            options = options.add_root_certificates(ca_file.clone());
        }
        if let Some((cert, key)) = &config.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|e| NatsError(format!("connecting to NATS (NATS_URL): {e}")))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .ack_timeout(Duration::from_millis(config.publish_ack_timeout_ms))
            .build(client.clone());
        let nats = Self { client, js, config };
        let wait_for = Duration::from_secs(30);
        tokio::time::timeout(wait_for, nats.ensure_streams())
            .await
            .map_err(|_| NatsError(format!("JetStream did not answer within {wait_for:?}")))??;
        Ok(nats)
    }

    async fn ensure_streams(&self) -> Result<(), NatsError> {
        let c = &self.config;
        for (name, prefix, max_age_ms) in
            [(&c.stream, &c.subject_prefix, c.max_age_ms), (&c.dlq_stream, &c.dlq_subject_prefix, 0)]
        {
            let wanted = format!("{prefix}.>");
            let mut stream = self
                .js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![wanted.clone()],
                    max_age: Duration::from_millis(max_age_ms),
                    duplicate_window: Duration::from_millis(c.duplicate_window_ms),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| NatsError(format!("creating stream {name}: {e}")))?;
            let info = stream.info().await.map_err(|e| NatsError(format!("reading stream {name}: {e}")))?;
            if !info.config.subjects.iter().any(|s| s == &wanted) {
                return Err(NatsError(format!(
                    "stream {name} exists with subjects {:?}, which do not include {wanted}",
                    info.config.subjects
                )));
            }
        }
        Ok(())
    }

    /// The outbox sink.
    pub fn sink(&self) -> Arc<JetStreamSink> {
        Arc::new(JetStreamSink { nats: self.clone() })
    }

    /// Counts messages in the event stream (tests and diagnostics).
    pub async fn stream_messages(&self) -> Result<u64, NatsError> {
        let mut stream =
            self.js.get_stream(&self.config.stream).await.map_err(|e| NatsError(e.to_string()))?;
        Ok(stream.info().await.map_err(|e| NatsError(e.to_string()))?.state.messages)
    }

    /// Consumes `fired` events into `store` until `shutdown` turns true,
    /// handing fresh deliveries to the runner reading `inbox`. A message is
    /// acknowledged only after its deliveries are queued.
    pub async fn consume_into(
        &self,
        store: ActionStore,
        inbox: Arc<Inbox>,
        clock: Arc<dyn minoots_node::Clock>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pause_ms = 250u64;
        while !*shutdown.borrow() {
            match self.consume_once(&store, &inbox, &clock, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "the JetStream action consumer stopped; restarting it");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
                    }
                    pause_ms = (pause_ms * 2).min(5_000);
                }
            }
        }
    }

    async fn consume_once(
        &self,
        store: &ActionStore,
        inbox: &Inbox,
        clock: &Arc<dyn minoots_node::Clock>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), NatsError> {
        let c = &self.config;
        let stream = self
            .js
            .get_stream(&c.stream)
            .await
            .map_err(|e| nats_err("opening the event stream")(e.into()))?;
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &c.consumer,
                consumer::pull::Config {
                    durable_name: Some(c.consumer.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_millis(c.ack_wait_ms),
                    max_deliver: c.max_deliver,
                    max_ack_pending: c.max_ack_pending,
                    filter_subject: format!("{}.*.fired", c.subject_prefix),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| nats_err("creating the action consumer")(e.into()))?;
        let mut messages = consumer.messages().await.map_err(|e| nats_err("pulling messages")(e.into()))?;
        loop {
            let next = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(message) = next else {
                return Err(NatsError("the message stream ended".into()));
            };
            let message = message.map_err(|e| nats_err("receiving a message")(e.into()))?;
            let deliveries = match serde_json::from_slice::<EventEnvelope>(&message.payload) {
                Ok(envelope) => {
                    let (shown, bundle) = envelope.into_shown();
                    deliveries_of(&shown, bundle.as_ref())
                }
                Err(e) => {
                    tracing::warn!(subject = %message.subject, error = %e, "an event that is not an envelope; dropped");
                    Vec::new()
                }
            };
            let mut wait_ms = 100u64;
            loop {
                match inbox.queue(store, deliveries.clone(), clock.now().wall_ms).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "queueing deliveries failed; retrying before the ack");
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                        wait_ms = (wait_ms * 2).min(5_000);
                    }
                }
            }
            if let Err(e) = message.ack().await {
                // Redelivered after the ack wait; queueing is idempotent.
                tracing::warn!(error = %e, "acknowledging an event failed");
            }
        }
    }

    async fn publish_all(&self, messages: Vec<(String, String, Vec<u8>)>) -> usize {
        let mut acks = Vec::with_capacity(messages.len());
        for (subject, id, payload) in messages {
            let publish = jetstream::message::PublishMessage::build().payload(payload.into()).message_id(id);
            match self.js.send_publish(subject, publish).await {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    tracing::debug!(error = %e, "JetStream publish failed");
                    break;
                }
            }
        }
        let mut accepted = 0;
        for ack in acks {
            match ack.await {
                Ok(_) => accepted += 1,
                Err(e) => {
                    tracing::debug!(error = %e, "JetStream publish not acknowledged");
                    break;
                }
            }
        }
        accepted
    }
}

/// The outbox sink: publishes rows to the event stream.
#[derive(Debug)]
pub struct JetStreamSink {
    nats: Nats,
}

impl EventSink for JetStreamSink {
    fn publish<'a>(&'a self, rows: &'a [OutboxEvent]) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let mut accepted = 0;
            while accepted < rows.len() {
                // A window: no timer twice, at most WINDOW_MAX rows.
                let mut timers = BTreeSet::new();
                let window: Vec<_> = rows[accepted..]
                    .iter()
                    .take(WINDOW_MAX)
                    .take_while(|row| timers.insert(row.timer_id))
                    .map(|row| {
                        // The runner consuming the stream needs the webhook headers.
                        let envelope = EventEnvelope::with_secrets(row);
                        let payload = serde_json::to_vec(&envelope).unwrap_or_default();
                        (
                            self.nats.config.subject(row.tenant_id.as_str(), row.kind.as_str()),
                            row.dedupe_key(),
                            payload,
                        )
                    })
                    .collect();
                let size = window.len();
                let done = self.nats.publish_all(window).await;
                accepted += done;
                if done < size {
                    break;
                }
            }
            accepted
        })
    }
}

/// Publishes `delivered` and `dead` events, and dead letters to the DLQ stream.
#[derive(Debug)]
pub struct NatsObserver {
    nats: Nats,
}

impl NatsObserver {
    /// An observer publishing through `nats`.
    pub fn new(nats: Nats) -> Self {
        Self { nats }
    }
}

impl DeliveryObserver for NatsObserver {
    fn finished<'a>(
        &'a self,
        delivery: &'a NewDelivery,
        attempt: &'a AttemptRecord,
        delivered: bool,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let event = if delivered { "delivered" } else { "dead" };
            let body = serde_json::json!({
                "type": format!("timer.{event}"),
                "tenantId": delivery.tenant_id,
                "timerId": delivery.timer_id,
                "occurrence": delivery.occurrence,
                "actionId": delivery.action_id,
                "kind": delivery.kind,
                "idempotencyKey": delivery.idempotency_key,
                "attempt": attempt,
            });
            let payload = serde_json::to_vec(&body).unwrap_or_default();
            let config = &self.nats.config;
            let id = format!("{}:{}:{event}:{}", delivery.timer_id, delivery.occurrence, delivery.action_id);
            let mut messages =
                vec![(config.subject(&delivery.tenant_id, event), id.clone(), payload.clone())];
            if !delivered {
                let subject = format!("{}.{}", config.dlq_subject_prefix, subject_token(&delivery.tenant_id));
                messages.push((subject, format!("{id}:{}", attempt.attempt), payload));
            }
            let wanted = messages.len();
            if self.nats.publish_all(messages).await < wanted {
                // The store keeps the delivery's history and dead letter either way.
                tracing::warn!(key = %delivery.idempotency_key, event, "publishing a delivery event failed");
            }
        })
    }
}
