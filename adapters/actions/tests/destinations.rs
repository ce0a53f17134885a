//! The runner's side of the webhook destination rule and of what it keeps
//! from a response, against a real HTTP responder on loopback:
//!
//! - a name that resolves to loopback (`localhost`) is refused at connect
//!   time, for good, and nothing reaches the responder; so are literal
//!   loopback and IPv4-mapped addresses (they skip DNS) — the case of a
//!   timer scheduled under an older, looser policy or a name that rebinds;
//! - the operator's allow-list lets the same destinations through;
//! - a response is read up to a bound (an endless one does not hold the
//!   attempt until its timeout) and only a short excerpt is kept, without
//!   NUL (which PostgreSQL cannot store in text).
#![cfg(not(madsim))]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use minoots_actions::execute::Failure;
use minoots_actions::store::NewDelivery;
use minoots_actions::{ExecConfig, Executor, SigningKeys, TenantKeys, Undelivered};
use minoots_core::action::{Action, ActionKind, WebhookAction};
use minoots_core::destination::{DestinationPolicy, parse_allowed};
use minoots_node::clock::SystemClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 responder answering every request with `body`; counts requests.
/// `endless`: the answer claims a gigabyte, sends `body` and never finishes.
async fn responder(body: Vec<u8>, endless: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = counted.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let length = if endless { 1 << 30 } else { body.len() };
                let answer =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                if endless {
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                }
            });
        }
    });
    (port, requests)
}

/// An executor under `destinations`, its tenants' keys in a store in `dir`.
async fn executor(destinations: DestinationPolicy, dir: &tempfile::TempDir) -> Executor {
    executor_with(ExecConfig { webhook_destinations: destinations, ..ExecConfig::default() }, dir).await
}

async fn executor_with(config: ExecConfig, dir: &tempfile::TempDir) -> Executor {
    let clock = Arc::new(SystemClock::new());
    let keys = TenantKeys::new(SigningKeys::default(), support::sqlite_store(dir).await, clock.clone());
    Executor::new(config, Arc::new(keys), None, clock).expect("executor")
}

fn hook(url: String) -> Action {
    Action {
        id: "hook".into(),
        kind: ActionKind::Webhook(WebhookAction {
            method: "POST".into(),
            url,
            headers: BTreeMap::new(),
            body: None,
            timeout_ms: Some(5_000),
        }),
    }
}

fn delivery() -> NewDelivery {
    delivery_of("tenant")
}

fn delivery_of(tenant: &str) -> NewDelivery {
    NewDelivery { tenant_id: tenant.into(), ..support::delivery(1) }
}

fn refusal(result: Result<minoots_actions::execute::Delivered, Undelivered>) -> Failure {
    match result {
        Err(Undelivered::Failed(failure)) => failure,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn private_destinations_are_refused_at_connect_time_unless_allowed() {
    let (port, requests) = responder(b"ok".to_vec(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let strict = executor(DestinationPolicy::default(), &dir).await;
    for url in [
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        let failure = refusal(strict.run(&delivery(), &hook(url.clone()), 1).await);
        assert!(!failure.retryable, "a refused destination is not retried: {url}");
        assert!(failure.error.starts_with("destination refused: "), "{url}: {}", failure.error);
        assert!(
            failure.error.contains("loopback") || failure.error.contains("IPv4-mapped"),
            "{}",
            failure.error
        );
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0, "nothing reached the refused destination");

    let allowed: DestinationPolicy =
        ["localhost", "127.0.0.1"].into_iter().map(|e| parse_allowed(e).expect("entry")).collect();
    let open = executor(allowed, &dir).await;
    for url in [format!("http://localhost:{port}/hook"), format!("http://127.0.0.1:{port}/hook")] {
        let delivered =
            open.run(&delivery(), &hook(url.clone()), 1).await.expect("allowed destination delivers");
        assert_eq!(delivered.status_code, Some(200), "{url}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_response_is_read_up_to_a_bound_and_kept_as_a_short_excerpt_without_nul() {
    let mut body = b"first\0line ".to_vec();
    body.resize(4 * 1024 * 1024, b'x');
    // A gigabyte announced and never finished: read whole, it would only end at the timeout.
    let (port, _) = responder(body, true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let open = executor(DestinationPolicy::allow_all(), &dir).await;
    let delivered =
        open.run(&delivery(), &hook(format!("http://127.0.0.1:{port}/hook")), 1).await.expect("delivered");
    let output = delivered.output.expect("an excerpt of the body");
    assert!(output.len() <= 2_048, "kept {} bytes", output.len());
    assert!(output.starts_with("first\u{fffd}line "), "{output:.40}");
    assert!(!output.contains('\0'));
}

/// Tenant A's failures open A's breaker for a destination, not tenant B's:
/// B's attempts to the same host are still made.
#[tokio::test]
async fn one_tenants_failures_do_not_open_anothers_breaker() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: every attempt fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = ExecConfig {
        webhook_destinations: DestinationPolicy::allow_all(),
        webhook_breaker: minoots_core::breaker::BreakerConfig { failure_threshold: 2, ..Default::default() },
        ..ExecConfig::default()
    };
    let runner = executor_with(config, &dir).await;
    let url = format!("http://127.0.0.1:{closed}/hook");
    for _ in 0..2 {
        assert!(matches!(
            runner.run(&delivery_of("tenant-a"), &hook(url.clone()), 1).await,
            Err(Undelivered::Failed(_))
        ));
    }
    assert!(
        matches!(
            runner.run(&delivery_of("tenant-a"), &hook(url.clone()), 1).await,
            Err(Undelivered::Deferred(_))
        ),
        "tenant A's breaker is open"
    );
    assert!(
        matches!(
            runner.run(&delivery_of("tenant-b"), &hook(url.clone()), 1).await,
            Err(Undelivered::Failed(_))
        ),
        "tenant B's attempt is still made"
    );
}
