//! Noisy neighbours on the action runner, with a real server and receivers:
//! tenant-local schedules more webhooks than the runner has slots, all to a
//! receiver that never answers (each attempt gives up after its timeout);
//! tenant-b's webhook, due just after them, still arrives while every one
//! of tenant-local's attempts is hanging, and the stalled receiver never
//! holds more of tenant-local's requests at once than its per-tenant share.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{DEV_KEY, Server, create_batch_as, create_key, data_dir, eventually, iso_ms};

/// What the stalled receiver saw.
#[derive(Default)]
struct Stalled {
    /// Requests open now (until the server notices the sender gave up).
    open: usize,
    /// Requests that ended, in all.
    ended: usize,
    /// When each request arrived.
    arrivals: Vec<Instant>,
}

/// Counts a request as open until the sender gives up and the handler is dropped.
struct OpenRequest(Arc<Mutex<Stalled>>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let mut stalled = self.0.lock().expect("lock");
        stalled.open -= 1;
        stalled.ended += 1;
    }
}

async fn never_answer(State(stalled): State<Arc<Mutex<Stalled>>>) -> StatusCode {
    let _open = {
        let mut s = stalled.lock().expect("lock");
        s.open += 1;
        s.arrivals.push(Instant::now());
        OpenRequest(stalled.clone())
    };
    tokio::time::sleep(Duration::from_secs(600)).await;
    StatusCode::OK
}

/// Arrivals at the healthy receiver: when, and the stalled receiver's
/// requests given up and open at that moment.
type Arrivals = Arc<Mutex<Vec<(Instant, usize, usize)>>>;

/// The healthy receiver: records each arrival.
async fn answer(State((arrivals, stalled)): State<(Arrivals, Arc<Mutex<Stalled>>)>) -> StatusCode {
    let (ended, open) = {
        let s = stalled.lock().expect("lock");
        (s.ended, s.open)
    };
    arrivals.lock().expect("lock").push((Instant::now(), ended, open));
    StatusCode::OK
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    format!("http://{addr}/hook")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_holds_only_its_tenants_share_of_the_runner() {
    let stalled = Arc::new(Mutex::new(Stalled::default()));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let stalled_url = serve(
        axum::Router::new().route("/hook", axum::routing::post(never_answer)).with_state(stalled.clone()),
    )
    .await;
    let healthy_url = serve(
        axum::Router::new()
            .route("/hook", axum::routing::post(answer))
            .with_state((arrivals.clone(), stalled.clone())),
    )
    .await;
    let dir = data_dir();
    let path = dir.path().to_string_lossy().into_owned();
    let server = Server::start_with(
        &["--data-dir", &path],
        &[("ACTION_RUNNER_CONCURRENCY", "4"), ("ACTION_RUNNER_CONCURRENCY_PER_TENANT", "2")],
    );
    let tenant_b = create_key(dir.path(), "tenant-b", "timer.read,timer.write");

    // Twelve webhooks from tenant-local, each attempt given up after 3 s, no retry.
    let hook = |url: &str, timeout_ms: u64| {
        json!({
            "actions": [{"id": "hook", "kind": "webhook", "parameters": {"url": url, "timeoutMs": timeout_ms}}],
            "retryPolicy": {"maxAttempts": 1}
        })
    };
    let noisy: Vec<Value> =
        (0..12).map(|_| json!({"duration": "1s", "actionBundle": hook(&stalled_url, 3_000)})).collect();
    create_batch_as(&server, DEV_KEY, noisy).await;
    // Tenant-b's webhook, due once tenant-local's attempts hang.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let quiet = create_batch_as(
        &server,
        &tenant_b,
        vec![json!({"duration": "100ms", "actionBundle": hook(&healthy_url, 3_000)})],
    )
    .await;
    let due_ms = iso_ms(quiet[0]["fireAt"].as_str().expect("fireAt"));

    let (arrived, ended, open) =
        eventually(Duration::from_secs(30), "tenant-b's webhook arrives", || async {
            arrivals.lock().expect("lock").first().copied()
        })
        .await;
    let lateness_ms = super::unix_ms() - due_ms - arrived.elapsed().as_millis() as i64;
    println!(
        "tenant-b due → receipt with tenant-local's receiver stalled: {lateness_ms} ms ({open} of tenant-local's requests hanging, {ended} given up)"
    );
    assert_eq!(ended, 0, "tenant-b's webhook waited for a tenant-local attempt to give up");
    assert!(open >= 1, "tenant-local's attempts were hanging when tenant-b's arrived");
    // The rest of tenant-local's webhooks go out two at a time as their attempts give up.
    eventually(Duration::from_secs(60), "every tenant-local attempt is made", || async {
        (stalled.lock().expect("lock").ended >= 12).then_some(())
    })
    .await;
    // Each attempt holds its slot for its 3 s timeout, so the requests that
    // arrive within any 2 s are those running at once: the tenant's share.
    // (Counting open requests instead would include ones the receiver has
    // not yet seen abandoned.)
    let arrivals = stalled.lock().expect("lock").arrivals.clone();
    let most_at_once = arrivals
        .iter()
        .map(|start| {
            arrivals.iter().filter(|a| **a >= *start && **a - *start < Duration::from_secs(2)).count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(most_at_once, 2, "tenant-local held exactly its share of the runner's four slots");
}
