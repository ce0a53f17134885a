//! The webhook receiver of `minoots bench --webhook`: an HTTP server on a
//! free loopback port that the bench's timers deliver to, recording when
//! each delivery *arrives* — the lateness a user of webhooks feels, beside
//! the fire record's.
//!
//! Each delivery's body is the fire's event envelope; the receiver reads
//! the run and phase from its timer's labels and the due time from its
//! fire, and counts a delivery by its `Idempotency-Key` (a repeat is a
//! duplicate delivery, which at-least-once allows; the report shows them).
//! Deliveries of other runs are answered and ignored. An *outage* (from
//! `--webhook-outage`) makes it answer 503 to every delivery for a while,
//! as a receiver being redeployed would: those deliveries are retried by
//! the server and counted when they finally arrive.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::serve::ListenerExt;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::measure::{MODE_LABEL, Percentiles, RUN_LABEL, WallClock, lock, new_histogram, summarize_us};
use crate::client::parse_instant_ms;

/// Deliveries of one phase.
struct PhaseDeliveries {
    keys: HashSet<String>,
    refused_in_outage: u64,
    duplicates: u64,
    before_due: u64,
    lateness_us: Histogram<u64>,
    first_receipt_us: Option<i64>,
    last_receipt_us: Option<i64>,
}

impl PhaseDeliveries {
    fn new() -> Self {
        Self {
            keys: HashSet::new(),
            refused_in_outage: 0,
            duplicates: 0,
            before_due: 0,
            lateness_us: new_histogram(),
            first_receipt_us: None,
            last_receipt_us: None,
        }
    }
}

/// What the receiver saw of one phase.
#[derive(Debug, Serialize)]
pub struct WebhookReport {
    /// Distinct deliveries (idempotency keys) received.
    pub received: u64,
    /// Deliveries received again with a key already seen.
    pub duplicates: u64,
    /// Expected deliveries (acknowledged timers) never received.
    pub missing: u64,
    /// Received before their due time (a broken promise).
    pub received_before_due: u64,
    /// Receipt (local clock) − due time.
    pub receipt_lateness_ms: Option<Percentiles>,
    /// Deliveries per second between the first and the last receipt.
    pub delivered_per_s: f64,
    /// Last receipt − last due time of the phase (how far delivery fell behind at the end), ms.
    pub last_receipt_after_last_due_ms: Option<f64>,
    /// Deliveries of this run so far whose body was not a fire envelope (every phase).
    pub malformed: u64,
    /// Deliveries answered 503 during the outage (each is retried by the server).
    pub refused_in_outage: u64,
}

struct Shared {
    run_id: String,
    clock: WallClock,
    /// While the local clock (µs) is in `[start, end)`, every delivery is answered 503.
    outage_us: Mutex<Option<(i64, i64)>>,
    phases: Mutex<HashMap<String, PhaseDeliveries>>,
    malformed: Mutex<u64>,
}

/// A running receiver.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver for run `run_id` on a free loopback port.
    pub async fn start(run_id: &str, clock: WallClock) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            run_id: run_id.to_owned(),
            clock,
            outage_us: Mutex::new(None),
            phases: Mutex::new(HashMap::new()),
            malformed: Mutex::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            // No Nagle: answer each delivery at once, as a fast receiver would.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: the webhook receiver stopped: {e}");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The action bundle that delivers to this receiver.
    pub fn action_bundle(&self) -> String {
        serde_json::json!({
            "actions": [{"id": "bench", "kind": "webhook", "parameters": {"url": format!("http://{}/hook", self.addr)}}]
        })
        .to_string()
    }

    /// Starts counting deliveries of timers labelled `bench-mode=<mode>`.
    pub fn register(&self, mode: &str) {
        lock(&self.shared.phases).insert(mode.to_owned(), PhaseDeliveries::new());
    }

    /// Answers 503 to every delivery from `start_ms` (local wall clock) for `duration_ms`.
    pub fn plan_outage(&self, start_ms: i64, duration_ms: u64) {
        let start_us = start_ms.saturating_mul(1000);
        let end_us =
            start_us.saturating_add(i64::try_from(duration_ms).unwrap_or(i64::MAX).saturating_mul(1000));
        *lock(&self.shared.outage_us) = Some((start_us, end_us));
    }

    /// Distinct deliveries of a phase so far.
    pub fn unique(&self, mode: &str) -> u64 {
        lock(&self.shared.phases).get(mode).map_or(0, |p| p.keys.len() as u64)
    }

    /// Stops counting a phase and reports it; `expected` deliveries were
    /// acknowledged, the last one due at `last_due_ms`.
    pub fn take(&self, mode: &str, expected: u64, last_due_ms: i64) -> WebhookReport {
        let phase = lock(&self.shared.phases).remove(mode).unwrap_or_else(PhaseDeliveries::new);
        let received = phase.keys.len() as u64;
        let delivered_per_s = match (phase.first_receipt_us, phase.last_receipt_us) {
            (Some(first), Some(last)) if last > first => received as f64 * 1e6 / (last - first) as f64,
            _ => 0.0,
        };
        WebhookReport {
            received,
            duplicates: phase.duplicates,
            missing: expected.saturating_sub(received),
            received_before_due: phase.before_due,
            receipt_lateness_ms: summarize_us(&phase.lateness_us),
            delivered_per_s,
            last_receipt_after_last_due_ms: phase
                .last_receipt_us
                .map(|last| (last - last_due_ms.saturating_mul(1000)) as f64 / 1000.0),
            malformed: *lock(&self.shared.malformed),
            refused_in_outage: phase.refused_in_outage,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records one delivery and answers 200 at once.
async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let received_us = shared.clock.now_us();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let timer = &envelope["event"]["timer"];
    if timer["labels"][RUN_LABEL].as_str() != Some(shared.run_id.as_str()) {
        return StatusCode::OK;
    }
    let (Some(mode), Ok(due_ms)) = (
        timer["labels"][MODE_LABEL].as_str(),
        parse_instant_ms(envelope["event"]["fire"]["dueAt"].as_str().unwrap_or_default()),
    ) else {
        *lock(&shared.malformed) += 1;
        return StatusCode::OK;
    };
    let in_outage = lock(&shared.outage_us).is_some_and(|(start, end)| (start..end).contains(&received_us));
    let mut phases = lock(&shared.phases);
    let Some(phase) = phases.get_mut(mode) else { return StatusCode::OK };
    if in_outage {
        phase.refused_in_outage += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if key.is_empty() || !phase.keys.insert(key) {
        phase.duplicates += 1;
        return StatusCode::OK;
    }
    let lateness_us = received_us - due_ms.saturating_mul(1000);
    if lateness_us < 0 {
        phase.before_due += 1;
    }
    phase.lateness_us.saturating_record(u64::try_from(lateness_us.max(0)).unwrap_or(0));
    phase.first_receipt_us = Some(phase.first_receipt_us.map_or(received_us, |f| f.min(received_us)));
    phase.last_receipt_us = Some(phase.last_receipt_us.map_or(received_us, |l| l.max(received_us)));
    StatusCode::OK
}
