//! Delivery promises under faults, with real processes:
//!
//! - a PostgreSQL-mode server SIGKILLed with webhooks in flight (a receiver
//!   that holds its requests) and restarted: its new incarnation
//!   releases the dead one's claims at start, every key is delivered, and the
//!   test prints restart → delivery (p50/p99/max);
//! - the same node killed for good while a second node (another node id)
//!   runs: the second takes the dead runner's claims over once its heartbeat
//!   lapses, and the test prints kill → delivery;
//! - a receiver process killed (listener and every connection dropped at
//!   once) and restarted ~200 ms later, three times, during a steady stream
//!   of webhooks: the destination's circuit breaker opens, defers attempts
//!   without spending their retry budget, probes and closes; nothing is
//!   dead-lettered or lost, and the test prints the worst due → receipt.
//!
//! Knobs: `MINOOTS_E2E_CRASH_DELIVERIES` (default 100),
//! `MINOOTS_E2E_OUTAGE_RATE` (webhooks due per second, default 250),
//! `MINOOTS_E2E_OUTAGE_SECONDS` (length of the stream, default 5),
//! `MINOOTS_E2E_OUTAGE_MS` (default 200), `MINOOTS_E2E_OUTAGE_SPACING_MS`
//! (between the starts of two outages, default 1500: with the default 1 s
//! recovery timeout, outages closer than about 1.2 s chain — a destination
//! that fails again as its backlog is released stays deferred for another
//! recovery period).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{percentile, unix_ms, webhook_bundle};
use crate::pg::PgServer;
use crate::support::{DEV_KEY, Server, data_dir, eventually, get_json, http, iso_ms};

/// How long the receiver holds requests in the crash tests
/// (longer than the tests wait for the redelivery, so only a redelivery can complete).
const HOLD_FIRST_MS: u64 = 120_000;
/// The signing key of the PostgreSQL-mode servers.
const SIGNING_KEY: &str = "faults-test-signing-key-0123456789";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Receipt {
    key: String,
    at: Instant,
    at_unix_ms: i64,
}

/// A webhook receiver that records every request; while `holding`, it holds
/// each request for [`HOLD_FIRST_MS`] (a slow receiver: the crash tests turn
/// it off when they kill the server, so only requests of the dead process
/// are held), else it answers at once.
#[derive(Default)]
struct Log {
    receipts: Mutex<Vec<Receipt>>,
    holding: AtomicBool,
}

impl Log {
    fn receipts(&self) -> Vec<Receipt> {
        self.receipts.lock().expect("lock").clone()
    }

    fn keys(&self) -> BTreeSet<String> {
        self.receipts.lock().expect("lock").iter().map(|r| r.key.clone()).collect()
    }
}

async fn receive(State(log): State<Arc<Log>>, headers: HeaderMap) -> StatusCode {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    log.receipts.lock().expect("lock").push(Receipt { key, at: Instant::now(), at_unix_ms: unix_ms() });
    if log.holding.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(HOLD_FIRST_MS)).await;
    }
    StatusCode::OK
}

/// A receiver that can be killed like a process: its listener and every
/// open connection are dropped at once (clients see refused and reset
/// connections), and restarted on the same port.
struct KillableReceiver {
    log: Arc<Log>,
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl KillableReceiver {
    async fn start(holding: bool) -> Self {
        let log = Arc::new(Log { holding: AtomicBool::new(holding), ..Log::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let mut receiver = KillableReceiver { log, addr, task: None };
        receiver.task = Some(tokio::spawn(Self::serve(listener, receiver.log.clone())));
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Accepts connections and serves each in a task of one set: aborting
    /// this task drops the listener and the set, which aborts every connection.
    async fn serve(listener: tokio::net::TcpListener, log: Arc<Log>) {
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(log);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let service = hyper_util::service::TowerToHyperService::new(app.clone());
                    connections.spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    /// Kills the receiver: nothing listens on its port any more, open connections are reset.
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts it again on the same port.
    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebinding the receiver on {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        self.task = Some(tokio::spawn(Self::serve(listener, self.log.clone())));
    }
}

impl Drop for KillableReceiver {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts a PostgreSQL-mode server (node `node_id`) off the async workers.
async fn start_pg_node(url: &str, node_id: &str) -> Server {
    let (url, node_id) = (url.to_owned(), node_id.to_owned());
    tokio::task::spawn_blocking(move || {
        Server::start_with(
            &["--store", "postgres", "--database-url", &url, "--node-id", &node_id],
            &[("MINOOTS_SIGNING_KEY", SIGNING_KEY)],
        )
    })
    .await
    .expect("start server")
}

/// Creates `timers` once the node leads (a follower or a node still opening answers 503).
async fn create_when_leading(server: &Server, timers: &[Value]) -> Vec<Value> {
    let mut created = Vec::new();
    for chunk in timers.chunks(500) {
        let body = eventually(Duration::from_secs(30), "the node to accept the batch", || async {
            let response = http()
                .post(format!("{}/api/timers/batch", server.rest))
                .header("x-api-key", DEV_KEY)
                .json(&json!({"timers": chunk}))
                .send()
                .await
                .ok()?;
            let status = response.status();
            let body: Value = response.json().await.ok()?;
            assert!(status.is_success() || status == 503, "batch create failed: {status} {body}");
            status.is_success().then_some(body)
        })
        .await;
        for item in body["results"].as_array().expect("results") {
            assert_eq!(item["created"], true, "{item}");
            created.push(item["timer"].clone());
        }
    }
    created
}

fn delivery_key(timer: &Value) -> String {
    format!("{}:1:hook", timer["id"].as_str().expect("id"))
}

/// A counter's value on a server (0 when absent).
async fn counter(server: &Server, line_prefix: &str) -> f64 {
    let Ok(response) = http().get(&server.metrics).send().await else { return 0.0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

const WEBHOOKS_SUCCEEDED: &str = "minoots_action_attempt_total{kind=\"webhook\",outcome=\"succeeded\"}";

/// p50 / p99 / max of `values` (sorted here), for the report lines.
fn summary(values: &mut [i64]) -> String {
    values.sort_unstable();
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        percentile(values, 0.5),
        percentile(values, 0.99),
        values[values.len() - 1]
    )
}

/// For each key, the first receipt at or after `since`, as ms after it.
fn first_after(receipts: &[Receipt], since: Instant) -> BTreeMap<String, i64> {
    let mut first = BTreeMap::new();
    for r in receipts.iter().filter(|r| r.at >= since) {
        first.entry(r.key.clone()).or_insert_with(|| (r.at - since).as_millis() as i64);
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_webhooks_in_flight_at_a_sigkill_are_delivered_promptly_after_the_restart() {
    let count = env_u64("MINOOTS_E2E_CRASH_DELIVERIES", 100) as usize;
    let pg = PgServer::start();
    let url = pg.create_database("minoots_crash_deliveries");
    let receiver = KillableReceiver::start(true).await;
    let server = start_pg_node(&url, "node-1").await;
    let timers: Vec<Value> = (0..count)
        .map(|i| json!({"duration": 1_000 + (i as u64 * 200) / count as u64, "actionBundle": webhook_bundle(&receiver.url(), Value::Null)}))
        .collect();
    let created = create_when_leading(&server, &timers).await;
    let expected: BTreeSet<String> = created.iter().map(delivery_key).collect();
    // The runner runs 64 of one tenant's deliveries at once (ACTION_RUNNER_CONCURRENCY_PER_TENANT):
    // wait until that many are held in flight.
    let in_flight_target = count.min(64);
    eventually(Duration::from_secs(30), "webhooks in flight", || {
        let n = receiver.log.keys().len();
        async move { (n >= in_flight_target).then_some(()) }
    })
    .await;
    let in_flight = receiver.log.keys();
    server.kill9(); // none of the held requests was answered: none is recorded as delivered
    receiver.log.holding.store(false, Ordering::SeqCst);

    let restarted = Instant::now();
    let server = start_pg_node(&url, "node-1").await;
    let ready_ms = restarted.elapsed().as_millis();
    eventually(Duration::from_secs(60), "every key delivered after the restart", || {
        let n = first_after(&receiver.log.receipts(), restarted).len();
        async move { (n >= count).then_some(()) }
    })
    .await;
    let after = first_after(&receiver.log.receipts(), restarted);
    assert_eq!(after.keys().cloned().collect::<BTreeSet<_>>(), expected, "every key, under its own key");
    assert_eq!(receiver.log.keys(), expected, "no key the fires did not make");
    eventually(Duration::from_secs(30), "every delivery recorded as succeeded", || async {
        (counter(&server, WEBHOOKS_SUCCEEDED).await >= count as f64).then_some(())
    })
    .await;
    let mut redelivered: Vec<i64> = in_flight.iter().map(|k| after[k]).collect();
    let mut all: Vec<i64> = after.values().copied().collect();
    println!(
        "postgres SIGKILL with {} webhooks in flight ({count} due): restart → ready {ready_ms} ms; \
         restart → redelivery of those in flight: {}; restart → delivery, all {count}: {}",
        in_flight.len(),
        summary(&mut redelivered),
        summary(&mut all)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_of_a_runner_that_never_returns_are_taken_over_by_another_node() {
    let count = 20usize;
    let pg = PgServer::start();
    let url = pg.create_database("minoots_runner_takeover");
    let receiver = KillableReceiver::start(true).await;
    let first = start_pg_node(&url, "node-1").await;
    let timers: Vec<Value> = (0..count)
        .map(|i| json!({"duration": 1_000 + i as u64 * 10, "actionBundle": webhook_bundle(&receiver.url(), Value::Null)}))
        .collect();
    let created = create_when_leading(&first, &timers).await;
    let expected: BTreeSet<String> = created.iter().map(delivery_key).collect();
    eventually(Duration::from_secs(30), "every webhook in flight at node-1", || {
        let n = receiver.log.keys().len();
        async move { (n >= count).then_some(()) }
    })
    .await;
    // Every delivery is claimed by node-1's runner, its requests held by the receiver.
    let second = start_pg_node(&url, "node-2").await;
    let killed = Instant::now();
    first.kill9(); // node-1 never comes back; node-2 has a different node id
    receiver.log.holding.store(false, Ordering::SeqCst);

    eventually(Duration::from_secs(60), "node-2 delivers every key", || {
        let n = first_after(&receiver.log.receipts(), killed).len();
        async move { (n >= count).then_some(()) }
    })
    .await;
    let after = first_after(&receiver.log.receipts(), killed);
    assert_eq!(after.keys().cloned().collect::<BTreeSet<_>>(), expected);
    eventually(Duration::from_secs(30), "node-2 recorded every delivery", || async {
        (counter(&second, WEBHOOKS_SUCCEEDED).await >= count as f64).then_some(())
    })
    .await;
    let mut delays: Vec<i64> = after.values().copied().collect();
    println!(
        "node-1 killed for good holding {count} claims: node-2 took them over after its heartbeat lapsed \
         (ACTION_RUNNER_HEARTBEAT_LAPSE_MS, default 5000); kill → redelivery {}",
        summary(&mut delays)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_restarts_are_ridden_out_by_the_breaker_with_nothing_dead_lettered() {
    let rate = env_u64("MINOOTS_E2E_OUTAGE_RATE", 250).max(1);
    let seconds = env_u64("MINOOTS_E2E_OUTAGE_SECONDS", 5).max(1);
    let outage_ms = env_u64("MINOOTS_E2E_OUTAGE_MS", 200);
    let spacing_ms = env_u64("MINOOTS_E2E_OUTAGE_SPACING_MS", 1_500);
    assert!(
        1_000 + 2 * spacing_ms + outage_ms < seconds * 1_000,
        "the stream ({seconds} s) must outlast the three outages (1 s in, {spacing_ms} ms apart)"
    );
    let count = (rate * seconds) as usize;
    let mut receiver = KillableReceiver::start(false).await;
    let dir = data_dir();
    let data = dir.path().to_string_lossy().into_owned();
    let server = tokio::task::spawn_blocking(move || Server::start_with(&["--data-dir", &data], &[]))
        .await
        .expect("start server");
    let lead_ms = 2_000u64;
    // The default retry policy (5 attempts, backoff from 1 s): what a user gets.
    let timers: Vec<Value> = (0..count as u64)
        .map(|i| json!({"duration": lead_ms + i * 1_000 / rate, "actionBundle": webhook_bundle(&receiver.url(), Value::Null)}))
        .collect();
    let created = create_when_leading(&server, &timers).await;
    let due_ms: BTreeMap<String, i64> =
        created.iter().map(|t| (delivery_key(t), iso_ms(t["fireAt"].as_str().expect("fireAt")))).collect();
    let first_due = *due_ms.values().min().expect("timers");
    let last_due = *due_ms.values().max().expect("timers");

    // Three outages: 1 s into the stream, then every `spacing_ms`.
    assert!(last_due > first_due + 1_000 + 2 * spacing_ms as i64, "the stream outlasts the outages");
    let mut outages = Vec::new();
    for n in 0..3i64 {
        let at = first_due + 1_000 + n * spacing_ms as i64;
        let wait = at - unix_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let killed_ms = unix_ms();
        receiver.kill().await;
        tokio::time::sleep(Duration::from_millis(outage_ms)).await;
        receiver.restart().await;
        outages.push((killed_ms, unix_ms()));
    }

    eventually(Duration::from_secs(90), "every webhook delivered", || {
        let n = receiver.log.keys().len();
        async move { (n >= count).then_some(()) }
    })
    .await;
    eventually(Duration::from_secs(30), "every delivery recorded as succeeded", || async {
        (counter(&server, WEBHOOKS_SUCCEEDED).await >= count as f64).then_some(())
    })
    .await;
    let receipts = receiver.log.receipts();
    assert_eq!(receiver.log.keys(), due_ms.keys().cloned().collect::<BTreeSet<_>>(), "none lost");
    let dead: Value = get_json(format!("{}/api/dlq", server.rest), DEV_KEY).await;
    assert_eq!(dead["deadLetters"], json!([]), "nothing dead-lettered");
    assert_eq!(counter(&server, "minoots_action_dead_lettered_total").await, 0.0);
    let deferred = counter(&server, "minoots_action_deferred_total").await;
    assert!(deferred > 0.0, "the breaker opened and deferred attempts (it was exercised)");

    // Lateness: due → receipt. The last receipt of a key is the one that was
    // answered (an earlier one may have been cut by a kill): an upper bound.
    let mut first_receipt: BTreeMap<&str, i64> = BTreeMap::new();
    let mut last_receipt: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &receipts {
        first_receipt.entry(r.key.as_str()).or_insert(r.at_unix_ms);
        last_receipt.insert(r.key.as_str(), r.at_unix_ms);
    }
    let mut late_first: Vec<i64> = first_receipt.iter().map(|(k, at)| at - due_ms[*k]).collect();
    let mut late_last: Vec<i64> = last_receipt.iter().map(|(k, at)| at - due_ms[*k]).collect();
    assert!(late_first.iter().all(|l| *l >= 0), "no webhook before its due time");
    let failed = counter(&server, "minoots_action_attempt_total{kind=\"webhook\",outcome=\"retry\"}").await;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for timer in &created {
        let history: Value = get_json(
            format!("{}/api/timers/{}/deliveries", server.rest, timer["id"].as_str().expect("id")),
            DEV_KEY,
        )
        .await;
        for attempt in history["deliveries"].as_array().expect("deliveries") {
            if let Some(error) = attempt["error"].as_str() {
                *errors.entry(error.chars().take(160).collect()).or_insert(0) += 1;
            }
        }
    }
    println!("failed attempts by error: {errors:#?}");
    println!(
        "outages (kill → listening again, ms after the first due time): {:?}",
        outages.iter().map(|(k, r)| (k - first_due, r - first_due)).collect::<Vec<_>>()
    );
    println!(
        "receiver killed {} times for {outage_ms} ms, {spacing_ms} ms apart, during {count} webhooks ({rate}/s over {seconds} s): \
         {} requests, {failed} failed attempts retried, {deferred} attempts deferred by the breaker, 0 dead-lettered; \
         due → answered receipt {}; due → first receipt {}",
        outages.len(),
        receipts.len(),
        summary(&mut late_last),
        summary(&mut late_first)
    );
}
