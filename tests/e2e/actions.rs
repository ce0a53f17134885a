//! Events and actions end to end: a real `minoots serve`, a real HTTP
//! receiver (axum, on a free port) and, for JetStream, a private
//! `nats-server` started by the test on a free port and a temp directory.
//!
//! - webhooks: every delivery arrives, signed, each idempotency key once;
//!   a `command` action without an allow-list is a 400 at schedule time;
//! - `503` + `Retry-After: 1` three times then `200`: exactly four attempts,
//!   about a second apart, all in the history; `500` forever: dead-lettered
//!   after `maxAttempts`, then `minoots dlq replay` delivers it (same key);
//! - the server killed mid-delivery: every action delivered at least once
//!   afterwards, repeats carrying the same key;
//! - nats-server killed and restarted mid-run: the stream holds exactly one
//!   event per fire (counted by `Nats-Msg-Id`), none lost.

#![allow(clippy::disallowed_methods)] // The test measures real time, as a receiver would.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{
    DEV_KEY, NatsServer, Server, create_batch_as, data_dir, eventually, get_json, http, iso_ms, minoots_bin,
    stream_message_ids, unix_ms,
};

/// HTTPS webhooks and the destination policy.
mod destinations;
/// Noisy neighbours: one tenant's stalled receiver holds only its share of the runner.
mod fairness;
/// Deliveries under faults: crash recovery of claims, circuit breakers.
mod faults;
/// Each tenant signs with its own key; rotation.
mod signing;

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Received {
    route: String,
    key: String,
    tenant: String,
    signature: String,
    authorization: String,
    body: Vec<u8>,
    at: Instant,
    at_unix_ms: i64,
}

/// How the receiver answers, per route.
#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<Received>>,
    /// `/down` answers 500 while true.
    down: Mutex<bool>,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    UrlPath(route): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let key = header("idempotency-key");
    let earlier = {
        let mut seen = receiver.seen.lock().expect("lock");
        let earlier = seen.iter().filter(|r| r.route == route && r.key == key).count();
        seen.push(Received {
            route: route.clone(),
            key,
            tenant: header("minoots-tenant-id"),
            signature: header("minoots-signature"),
            authorization: header("authorization"),
            body: body.to_vec(),
            at: Instant::now(),
            at_unix_ms: unix_ms(),
        });
        earlier
    };
    match route.as_str() {
        "flaky" if earlier < 3 => {
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response()
        }
        "down" if *receiver.down.lock().expect("lock") => {
            (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response()
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

async fn start_receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let app =
        axum::Router::new().route("/hook/{route}", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (receiver, format!("http://{addr}/hook"))
}

fn webhook_bundle(url: &str, retry: Value) -> Value {
    json!({"actions": [{"id": "hook", "kind": "webhook", "parameters": {"url": url}}], "retryPolicy": retry})
}

async fn create_batch(server: &Server, timers: Vec<Value>) -> Vec<Value> {
    create_batch_as(server, DEV_KEY, timers).await
}

/// The signing keys of `api_key`'s tenant, as `GET /api/signing-keys` shows them.
async fn signing_keys(server: &Server, api_key: &str) -> Value {
    let response = http()
        .get(format!("{}/api/signing-keys", server.rest))
        .header("x-api-key", api_key)
        .send()
        .await
        .expect("signing keys request");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// The current signing key of `api_key`'s tenant (generated on first use).
async fn signing_key(server: &Server, api_key: &str) -> String {
    let keys = signing_keys(server, api_key).await;
    assert_eq!(keys["source"], "generated", "{keys}");
    keys["current"].as_str().expect("current key").to_owned()
}

/// Whether `r` verifies under `key` as the signed tenant and message say.
fn verifies(r: &Received, key: &str) -> bool {
    minoots_actions::signing::verify(&r.signature, key, &r.tenant, &r.key, &r.body).is_some()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_and_once_and_commands_need_an_allow_list() {
    let count: usize = std::env::var("MINOOTS_E2E_WEBHOOKS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let spread_ms: u64 =
        std::env::var("MINOOTS_E2E_WEBHOOK_SPREAD_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let (receiver, base) = start_receiver().await;
    let dir = data_dir();
    let server = Server::start(dir.path());

    // A command action with no allow-list configured: refused, naming the field.
    let refused = http()
        .post(format!("{}/api/timers", server.rest))
        .header("x-api-key", DEV_KEY)
        .json(&json!({"duration": "1s", "actionBundle": {"actions": [{"kind": "command", "parameters": {"program": "/bin/true"}}]}}))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.expect("json");
    assert_eq!(error["error"]["field"], "actionBundle.actions[0].kind", "{error}");
    assert!(error["error"]["message"].as_str().unwrap_or("").contains("allow-list"), "{error}");

    let url = format!("{base}/ok");
    let timers: Vec<Value> = (0..count)
        .map(|i| json!({"duration": 1_000 + (i as u64 * spread_ms) / count as u64, "actionBundle": webhook_bundle(&url, Value::Null)}))
        .collect();
    let created = create_batch(&server, timers).await;
    let expected: BTreeSet<String> =
        created.iter().map(|t| format!("{}:1:hook", t["id"].as_str().expect("id"))).collect();
    let due_ms: BTreeMap<String, i64> = created
        .iter()
        .map(|t| {
            (
                format!("{}:1:hook", t["id"].as_str().expect("id")),
                iso_ms(t["fireAt"].as_str().expect("fireAt")),
            )
        })
        .collect();

    eventually(Duration::from_secs(60), "every webhook delivered", || {
        let receiver = receiver.clone();
        let expected = expected.len();
        async move {
            let seen = receiver.seen.lock().expect("lock");
            (seen.iter().map(|r| &r.key).collect::<BTreeSet<_>>().len() >= expected).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // room for a stray repeat to show up
    let seen = receiver.seen.lock().expect("lock").clone();
    let key = signing_key(&server, DEV_KEY).await;
    let keys: Vec<&String> = seen.iter().map(|r| &r.key).collect();
    assert_eq!(
        keys.iter().copied().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the keys are the fires' keys"
    );
    assert_eq!(keys.len(), expected.len(), "each idempotency key arrives once when nothing fails");
    let mut lateness: Vec<i64> = Vec::new();
    for r in &seen {
        assert!(verifies(r, &key), "signature verifies: {}", r.signature);
        assert_eq!(r.tenant, "tenant-local");
        let envelope: Value = serde_json::from_slice(&r.body).expect("body is the envelope");
        assert_eq!(envelope["event"]["type"], "timer.fired");
        let due = due_ms[&r.key];
        assert!(r.at_unix_ms >= due, "delivered before due");
        lateness.push(r.at_unix_ms - due);
    }
    lateness.sort_unstable();
    println!(
        "webhooks: {} delivered; due → received p50 {} ms, p99 {} ms, max {} ms",
        lateness.len(),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness[lateness.len() - 1]
    );

    let one = created[0]["id"].as_str().expect("id");
    let history: Value = get_json(format!("{}/api/timers/{one}/deliveries", server.rest), DEV_KEY).await;
    assert_eq!(history["deliveries"].as_array().map(Vec::len), Some(1), "{history}");
    assert_eq!(history["deliveries"][0]["outcome"], "succeeded");
    assert_eq!(history["deliveries"][0]["statusCode"], 200);
    let metrics = http().get(&server.metrics).send().await.expect("metrics").text().await.expect("text");
    let line =
        format!("minoots_action_attempt_total{{kind=\"webhook\",outcome=\"succeeded\"}} {}", expected.len());
    assert!(metrics.contains(&line), "metrics lack {line}");
}

/// Webhook headers are write-only: sent to the receiver, shown to nobody —
/// not in the timer's views (REST, gRPC), not on the event stream, not in
/// the envelope the webhook itself carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_headers_are_sent_but_never_shown() {
    let (receiver, base) = start_receiver().await;
    let dir = data_dir();
    let server = Server::start(dir.path());
    let secret = "Bearer s3cret-credential";
    let mut events = http()
        .get(format!("{}/api/timers/stream", server.rest))
        .header("x-api-key", DEV_KEY)
        .send()
        .await
        .expect("stream")
        .bytes_stream();
    let bundle = json!({"actions": [{"id": "hook", "kind": "webhook", "parameters": {"url": format!("{base}/secret"), "headers": {"Authorization": secret}}}]});
    let created = create_batch(&server, vec![json!({"duration": 300, "actionBundle": bundle})]).await;
    let id = created[0]["id"].as_str().expect("id").to_owned();
    let key = format!("{id}:1:hook");
    let got = eventually(Duration::from_secs(20), "the webhook arrived", || {
        let found = receiver.seen.lock().expect("lock").iter().find(|r| r.key == key).cloned();
        async move { found }
    })
    .await;
    assert_eq!(got.authorization, secret, "the receiver gets the header");
    let body = String::from_utf8_lossy(&got.body).into_owned();
    assert!(!body.contains("s3cret"), "the envelope the webhook carries shows no header value: {body}");
    assert!(body.contains("[redacted]"), "{body}");

    let shown = http()
        .get(format!("{}/api/timers/{id}", server.rest))
        .header("x-api-key", DEV_KEY)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(!shown.contains("s3cret") && shown.contains("Authorization"), "{shown}");
    assert!(!created[0].to_string().contains("s3cret"), "nor the create answer");
    let out = Command::new(minoots_bin())
        .args(["timers", "get", &id, "--json", "--server", &server.grpc, "--api-key", DEV_KEY])
        .output()
        .expect("minoots timers get");
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"), "nor gRPC");

    let mut seen = String::new();
    let fired = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(chunk)) = events.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("timer.fired") && seen.contains(&id) {
                return;
            }
        }
    })
    .await;
    assert!(fired.is_ok(), "the fired event streamed: {seen}");
    assert!(!seen.contains("s3cret"), "nor the event stream");
}

fn history_of(server: &Server, id: &str) -> Value {
    let out = Command::new(minoots_bin())
        .args(["timers", "deliveries", id, "--json", "--api-url", &server.rest, "--api-key", DEV_KEY])
        .output()
        .expect("run minoots timers deliveries");
    assert!(out.status.success(), "timers deliveries failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn dlq(server: &Server, args: &[&str]) -> Value {
    let out = Command::new(minoots_bin())
        .arg("dlq")
        .args(args)
        .args(["--json", "--api-url", &server.rest, "--api-key", DEV_KEY])
        .output()
        .expect("run minoots dlq");
    assert!(out.status.success(), "dlq {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_dead_letters_replay() {
    // Two destinations: the failing one must not open the flaky one's circuit breaker.
    let (flaky_receiver, flaky_base) = start_receiver().await;
    let (receiver, base) = start_receiver().await;
    *receiver.down.lock().expect("lock") = true;
    let dir = data_dir();
    let server = Server::start(dir.path());
    let quick = json!({"maxAttempts": 6, "backoffInitialMs": 50, "backoffMaxMs": 100});
    let created = create_batch(
        &server,
        vec![
            json!({"duration": 300, "actionBundle": webhook_bundle(&format!("{flaky_base}/flaky"), quick)}),
            json!({"duration": 300, "actionBundle": webhook_bundle(&format!("{base}/down"), json!({"maxAttempts": 3, "backoffInitialMs": 100, "backoffMaxMs": 200}))}),
        ],
    )
    .await;
    let (flaky, down) = (
        created[0]["id"].as_str().expect("id").to_owned(),
        created[1]["id"].as_str().expect("id").to_owned(),
    );

    // 503 + Retry-After: 1 three times, then 200: four attempts, ~1 s apart (not the 50-100 ms backoff).
    let history = eventually(Duration::from_secs(30), "four flaky attempts recorded", || {
        let h = history_of(&server, &flaky);
        let done = h["deliveries"].as_array().is_some_and(|d| d.iter().any(|a| a["outcome"] == "succeeded"));
        async move { done.then_some(h) }
    })
    .await;
    let attempts = history["deliveries"].as_array().expect("deliveries");
    let outcomes: Vec<&str> = attempts.iter().map(|a| a["outcome"].as_str().unwrap_or("")).collect();
    assert_eq!(outcomes, ["retry", "retry", "retry", "succeeded"], "{history}");
    assert!(attempts[..3].iter().all(|a| a["statusCode"] == 503));
    let arrivals: Vec<Instant> = flaky_receiver
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.route == "flaky")
        .map(|r| r.at)
        .collect();
    assert_eq!(arrivals.len(), 4, "exactly four requests");
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(950) && gap < Duration::from_secs(5),
            "gap {gap:?} honours Retry-After: 1"
        );
    }

    // 500 forever: dead-lettered after maxAttempts = 3.
    let listed = eventually(Duration::from_secs(30), "a dead letter", || {
        let list = dlq(&server, &["list"]);
        let found = list["deadLetters"].as_array().is_some_and(|d| !d.is_empty());
        async move { found.then_some(list) }
    })
    .await;
    let dead = &listed["deadLetters"][0];
    assert_eq!(dead["timerId"], down.as_str());
    assert_eq!(dead["attempts"], 3);
    let id = dead["id"].as_i64().expect("id").to_string();
    let shown = dlq(&server, &["show", &id]);
    assert_eq!(shown["history"].as_array().map(Vec::len), Some(3), "{shown}");
    assert_eq!(shown["attempts"], 3);
    let requests_before = receiver.seen.lock().expect("lock").iter().filter(|r| r.route == "down").count();
    assert_eq!(requests_before, 3);

    // The receiver recovers; a replay delivers it once, with the same key.
    *receiver.down.lock().expect("lock") = false;
    let replayed = dlq(&server, &["replay", &id]);
    assert_eq!(replayed["replayed"], json!([id.parse::<i64>().expect("number")]));
    eventually(Duration::from_secs(15), "the replayed delivery", || {
        let h = history_of(&server, &down);
        let ok = h["deliveries"].as_array().is_some_and(|d| d.len() == 4 && d[3]["outcome"] == "succeeded");
        async move { ok.then_some(()) }
    })
    .await;
    let keys: Vec<String> = receiver
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.route == "down")
        .map(|r| r.key.clone())
        .collect();
    assert_eq!(keys.len(), 4);
    assert!(
        keys.iter().all(|k| *k == format!("{down}:1:hook")),
        "a replay keeps the idempotency key: {keys:?}"
    );
    assert_eq!(dlq(&server, &["list"])["deadLetters"], json!([]), "a replayed letter leaves the list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_delivery_delivers_again_with_the_same_key() {
    let (receiver, base) = start_receiver().await;
    let dir = data_dir();
    let server = Server::start(dir.path());
    let url = format!("{base}/slow");
    let timers: Vec<Value> = (0..20)
        .map(|i| json!({"duration": 500 + i * 20, "actionBundle": webhook_bundle(&url, Value::Null)}))
        .collect();
    let created = create_batch(&server, timers).await;
    let expected: BTreeSet<String> =
        created.iter().map(|t| format!("{}:1:hook", t["id"].as_str().expect("id"))).collect();
    eventually(Duration::from_secs(20), "deliveries in flight", || {
        let n = receiver.seen.lock().expect("lock").len();
        async move { (n >= 5).then_some(()) }
    })
    .await;
    server.kill9(); // the receiver is still holding those requests: none was recorded as delivered
    let in_flight = receiver.seen.lock().expect("lock").len();
    let server = Server::start(dir.path());
    eventually(Duration::from_secs(60), "every action delivered and recorded", || {
        let all = created.iter().all(|t| {
            let h = history_of(&server, t["id"].as_str().expect("id"));
            h["deliveries"].as_array().is_some_and(|d| d.iter().any(|a| a["outcome"] == "succeeded"))
        });
        async move { all.then_some(()) }
    })
    .await;
    let seen = receiver.seen.lock().expect("lock").clone();
    let keys: BTreeSet<String> = seen.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, expected, "every action arrived, under its own key");
    let repeats = seen.len() - keys.len();
    assert!(repeats >= 1 && in_flight >= 1, "the killed deliveries ran again ({repeats} repeats)");
    println!(
        "runner killed with {in_flight} requests in flight: {repeats} repeated deliveries, all with their key"
    );
}

async fn nats_client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("connect to nats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_holds_one_event_per_fire_through_a_nats_restart() {
    let outage_ms: u64 =
        std::env::var("MINOOTS_E2E_NATS_OUTAGE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let count: usize =
        std::env::var("MINOOTS_E2E_NATS_TIMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let mut nats = NatsServer::start();
    let (receiver, base) = start_receiver().await;
    let dir = data_dir();
    let data = dir.path().to_string_lossy().into_owned();
    let server = Server::start_with(&["--data-dir", &data], &[("NATS_URL", &nats.url())]);
    let url = format!("{base}/ok");
    // Fires spread over 1-5 s from now; nats-server dies at ~1.5 s.
    let timers: Vec<Value> = (0..count)
        .map(|i| json!({"duration": 1_000 + (i as u64 * 4_000) / count as u64, "actionBundle": webhook_bundle(&url, Value::Null)}))
        .collect();
    let created = create_batch(&server, timers).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    nats.kill9();
    tokio::time::sleep(Duration::from_millis(outage_ms)).await;
    let restarted = Instant::now();
    nats.restart();

    // Every timer fired (the timer store does not need NATS).
    let fired_ids: BTreeSet<String> =
        created.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect();
    eventually(Duration::from_secs(60), "one fired event per timer in JetStream", || {
        let url = nats.url();
        let count = fired_ids.len();
        async move {
            let ids = stream_message_ids(nats_client(&url).await).await;
            (ids.keys().filter(|k| k.ends_with(":fired")).count() >= count).then_some(())
        }
    })
    .await;
    let drained_in = restarted.elapsed();
    let ids = stream_message_ids(nats_client(&nats.url()).await).await;
    for id in &fired_ids {
        assert_eq!(ids.get(&format!("{id}:1:fired")), Some(&1), "exactly one fired event for {id}");
        assert_eq!(ids.get(&format!("{id}:1:scheduled")), Some(&1), "exactly one scheduled event for {id}");
    }
    assert!(ids.values().all(|n| *n == 1), "no message id twice");
    println!(
        "nats outage {outage_ms} ms: {} events in the stream, drained {drained_in:?} after the restart",
        ids.len()
    );

    // The runner consumed the fires from JetStream and delivered every webhook.
    eventually(Duration::from_secs(60), "every webhook delivered via JetStream", || {
        let n =
            receiver.seen.lock().expect("lock").iter().map(|r| r.key.clone()).collect::<BTreeSet<_>>().len();
        let want = fired_ids.len();
        async move { (n >= want).then_some(()) }
    })
    .await;
    // The relay marks what the sink accepted at its next scan (every 200 ms while busy).
    eventually(Duration::from_secs(10), "the outbox drained", || async {
        let metrics = http().get(&server.metrics).send().await.ok()?.text().await.ok()?;
        (metrics.contains("minoots_outbox_publish_lag_seconds_count")
            && metrics.contains("minoots_outbox_pending 0"))
        .then_some(())
    })
    .await;
}

/// A standalone server killed with SIGKILL and restarted at once: the timers
/// that come due around the kill, during the restart and just after it all
/// reach their webhook (at least once; repeats are counted). The relay hands a new leader's live rows to
/// the action intake as soon as it has caught up on the backlog, not at its
/// next scan tick (200 ms); the test prints the due → receipt lateness of the
/// timers due in the first second after the restarted server was ready (the
/// measure of that), and of those that came due while it was down.
/// `MINOOTS_E2E_RESTART_TIMERS` (default 400, due from 0.1 s to 2.1 s after
/// they are created; the kill follows at once) sets how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_due_just_after_a_restart_arrive_once_each() {
    let count: i64 =
        std::env::var("MINOOTS_E2E_RESTART_TIMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let spread_ms = 2_000;
    let (receiver, base) = start_receiver().await;
    let dir = data_dir();
    let server = Server::start(dir.path());
    let url = format!("{base}/restart");
    let timers: Vec<Value> = (0..count)
        .map(|i| json!({"duration": 100 + i * spread_ms / count, "actionBundle": webhook_bundle(&url, Value::Null)}))
        .collect();
    let created = create_batch(&server, timers).await;
    let due_ms: BTreeMap<String, i64> = created
        .iter()
        .map(|t| {
            (
                format!("{}:1:hook", t["id"].as_str().expect("id")),
                iso_ms(t["fireAt"].as_str().expect("fireAt")),
            )
        })
        .collect();
    let killed_ms = unix_ms();
    server.kill9();
    let server = Server::start(dir.path());
    let ready_ms = unix_ms();

    eventually(Duration::from_secs(60), "every webhook delivered after the restart", || {
        let n =
            receiver.seen.lock().expect("lock").iter().map(|r| r.key.clone()).collect::<BTreeSet<_>>().len();
        let want = due_ms.len();
        async move { (n >= want).then_some(()) }
    })
    .await;
    let seen = receiver.seen.lock().expect("lock").clone();
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &seen {
        first.entry(r.key.as_str()).or_insert(r.at_unix_ms);
    }
    assert_eq!(
        first.keys().map(|k| k.to_string()).collect::<BTreeSet<_>>(),
        due_ms.keys().cloned().collect()
    );
    let (mut while_down, mut first_second) = (Vec::new(), Vec::new());
    for (key, due) in &due_ms {
        let received = first[key.as_str()];
        assert!(received >= *due, "{key} delivered before due");
        if *due < ready_ms {
            while_down.push(received - ready_ms.max(*due));
        } else if *due < ready_ms + 1_000 {
            first_second.push(received - due);
        }
    }
    while_down.sort_unstable();
    first_second.sort_unstable();
    let summary = |l: &[i64]| {
        if l.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "{}: p50 {} ms, p99 {} ms, max {} ms",
                l.len(),
                percentile(l, 0.5),
                percentile(l, 0.99),
                l[l.len() - 1]
            )
        }
    };
    println!(
        "restart took {} ms (kill → ready); due in the first second after ready, due → received {}; \
         came due while down, ready → received {}; {} repeats",
        ready_ms - killed_ms,
        summary(&first_second),
        summary(&while_down),
        seen.len() - first.len()
    );
    drop(server);
}
