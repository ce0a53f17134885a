//! What the server does with the connections clients open:
//!
//! - with the operator's certificate, REST and gRPC speak TLS (a client
//!   trusting the operator's CA schedules a timer and checks gRPC health;
//!   plain HTTP to the port gets nothing; a client that never starts its
//!   handshake is disconnected on both listeners);
//! - the node speaks TLS to PostgreSQL as the URL asks, and to a NATS server
//!   that requires it with the operator's CA and a client certificate;
//! - a REST client that sends half a request's headers, or nothing at all,
//!   is disconnected after the header timeout; one that stalls its body,
//!   after the body timeout; a gRPC client that sends nothing or part of
//!   the HTTP/2 preface, after the header timeout too;
//! - past the connection cap a new connection is closed at once, and once
//!   the idle ones are gone requests are served again.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{DEV_KEY, NatsServer, Server, TestCa, data_dir, eventually, http, stream_message_ids};

/// A CA, and a certificate it issued for `localhost` and 127.0.0.1: `(ca, cert, key)` PEM.
fn certificates() -> (String, String, String) {
    let ca = TestCa::new();
    let server = ca.issue(&["localhost", "127.0.0.1"]);
    (ca.pem(), server.cert.pem(), server.key.serialize_pem())
}

/// Reads until the server closes the connection (or resets it); `None` if it stays open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return, // reset: closed too
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok().map(|()| got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_speak_tls_with_the_operators_certificate() {
    let (ca, cert, key) = certificates();
    let dir = data_dir();
    for (name, text) in [("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let data = dir.path().join("data");
    let server = Server::start_with(
        &["--data-dir", &data.to_string_lossy()],
        &[
            ("MINOOTS_TLS_CERT", &dir.path().join("cert.pem").to_string_lossy()),
            ("MINOOTS_TLS_KEY", &dir.path().join("key.pem").to_string_lossy()),
            ("MINOOTS_HEADER_TIMEOUT_MS", "1000"),
        ],
    );
    assert!(server.rest.starts_with("https://") && server.grpc.starts_with("https://"), "{}", server.rest);

    // A client that connects and never starts its handshake is let go on both listeners.
    for url in [&server.rest, &server.grpc] {
        let mut silent = TcpStream::connect(url.trim_start_matches("https://")).await.expect("connect");
        assert!(
            closed_within(&mut silent, Duration::from_secs(10)).await.is_some(),
            "a silent TLS client of {url} is disconnected after the header timeout"
        );
    }

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let created = trusting
        .post(format!("{}/api/timers", server.rest))
        .header("x-api-key", DEV_KEY)
        .json(&json!({"duration": "1m"}))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(created.status(), 201);
    let plain = server.rest.replace("https://", "http://");
    assert!(http().get(format!("{plain}/healthz")).send().await.is_err(), "plain HTTP gets no answer");

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(server.grpc.clone())
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("gRPC over TLS");
    let reply = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health over TLS");
    assert_eq!(
        reply.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_excess_rest_connections_are_closed() {
    let dir = data_dir();
    let server = Server::start_with(
        &["--data-dir", &dir.path().to_string_lossy()],
        &[
            ("MINOOTS_HEADER_TIMEOUT_MS", "500"),
            ("MINOOTS_BODY_TIMEOUT_MS", "500"),
            ("MINOOTS_MAX_CONNECTIONS", "6"),
        ],
    );
    let addr = server.rest.trim_start_matches("http://").to_owned();
    let patience = Duration::from_secs(10);

    // Half the headers, then silence: disconnected.
    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    assert!(closed_within(&mut slow, patience).await.is_some(), "a half-sent request is cut off");
    // Nothing at all: disconnected too.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    assert!(closed_within(&mut idle, patience).await.is_some(), "an idle connection is closed");
    // Headers, then a stalled body: answered or closed, not held.
    let mut stalled = TcpStream::connect(&addr).await.expect("connect");
    stalled
        .write_all(b"POST /api/timers HTTP/1.1\r\nHost: x\r\nx-api-key: local-dev-key\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .expect("write");
    assert!(closed_within(&mut stalled, patience).await.is_some(), "a stalled body is cut off");

    // Six idle connections fill the cap: a seventh is closed at once, with no answer.
    let mut hogs = Vec::new();
    for _ in 0..6 {
        hogs.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(&addr).await.expect("connect");
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = closed_within(&mut extra, Duration::from_millis(400)).await;
    assert_eq!(answer.as_deref(), Some(&b""[..]), "past the cap a connection is closed unanswered");
    // The idle ones are closed after the header timeout; then requests are served again.
    for hog in &mut hogs {
        assert!(closed_within(hog, patience).await.is_some(), "an idle connection holding a slot is closed");
    }
    let status = http().get(format!("{}/healthz", server.rest)).send().await.expect("served").status();
    assert_eq!(status, 200);

    // gRPC: a client that connects and sends nothing, or only part of the
    // HTTP/2 preface, is disconnected after the same timeout.
    let grpc = server.grpc.trim_start_matches("http://").to_owned();
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut silent = TcpStream::connect(&grpc).await.expect("connect");
        silent.write_all(opening).await.expect("write");
        assert!(
            closed_within(&mut silent, patience).await.is_some(),
            "a gRPC connection that sent {} opening bytes is closed",
            opening.len()
        );
    }
}

/// Guessing keys is throttled per source address, on REST and gRPC alike:
/// after 20 failures the address is refused (429 with `Retry-After`, gRPC
/// RESOURCE_EXHAUSTED) without its key being looked up, valid or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_throttled_per_source() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let client = http();
    for i in 0..20 {
        let response = client
            .get(format!("{}/api/timers", server.rest))
            .header("x-api-key", format!("guess-{i}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 401, "guess {i}");
    }
    let throttled = client
        .get(format!("{}/api/timers", server.rest))
        .header("x-api-key", DEV_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(throttled.status(), 429, "the source is throttled, whatever key it sends now");
    assert!(throttled.headers().contains_key("retry-after"));
    let body: serde_json::Value = throttled.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_requests", "{body}");

    let out = std::process::Command::new(crate::support::minoots_bin())
        .args(["timers", "list", "--server", &server.grpc, "--api-key", DEV_KEY])
        .output()
        .expect("minoots timers list");
    assert!(!out.status.success(), "gRPC from the same source is throttled too");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("too many failed authentications"), "{stderr}");
}

/// A node reaches PostgreSQL over TLS when its URL asks (`sslmode`), here
/// verifying the server's certificate against the operator's CA
/// (`verify-full`, `sslrootcert`); every connection of the node is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_when_the_url_asks() {
    let (ca, cert, key) = certificates();
    let pg = crate::pg::PgServer::start();
    pg.enable_tls(&cert, &key);
    let dir = data_dir();
    let ca_file = dir.path().join("pg-ca.pem");
    std::fs::write(&ca_file, &ca).expect("write CA");
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.create_database("minoots_tls"),
        ca_file.display()
    );
    let server =
        Server::start_with(&["--store", "postgres", "--database-url", &url, "--node-id", "tls-1"], &[]);
    let created = http()
        .post(format!("{}/api/timers", server.rest))
        .header("x-api-key", DEV_KEY)
        .json(&json!({"duration": "1m"}))
        .send()
        .await
        .expect("request");
    assert_eq!(created.status(), 201);
    let count = |encrypted: bool| {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = 'minoots_tls' AND s.ssl = {encrypted}"
        );
        pg.psql("postgres", &sql).trim().parse::<u32>().expect("a count")
    };
    assert!(count(true) > 0, "the node's connections are encrypted");
    assert_eq!(count(false), 0, "and none is plain");
}

/// A node reaches a NATS server that speaks only TLS and requires client
/// certificates, trusting the operator's CA (`NATS_TLS_CA_FILE`, not among
/// the system's roots) and presenting its own certificate
/// (`NATS_TLS_CERT`/`NATS_TLS_KEY`): its events arrive in JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_the_operators_ca_and_a_client_certificate() {
    let ca = TestCa::new();
    let nats = NatsServer::start_tls(&ca, &ca.issue(&["localhost", "127.0.0.1"]));
    assert!(nats.url().starts_with("tls://"));
    let node = ca.issue(&["minoots-node"]);
    let dir = data_dir();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.pem", ca.pem()),
        write("node.pem", node.cert.pem()),
        write("node-key.pem", node.key.serialize_pem()),
    );
    let data = dir.path().join("data");
    let server = Server::start_with(
        &["--data-dir", &data.to_string_lossy()],
        &[
            ("NATS_URL", &nats.url()),
            ("NATS_TLS_CA_FILE", &ca_file),
            ("NATS_TLS_CERT", &cert_file),
            ("NATS_TLS_KEY", &key_file),
        ],
    );
    let created: serde_json::Value = http()
        .post(format!("{}/api/timers/batch", server.rest))
        .header("x-api-key", DEV_KEY)
        .json(&json!({"timers": vec![json!({"duration": "100ms"}); 3]}))
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    let ids: Vec<String> = created["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["timer"]["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3);

    let reader = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca_file.into())
        .add_client_certificate(cert_file.into(), key_file.into())
        .connect(nats.url())
        .await
        .expect("a TLS client of the test's NATS server");
    eventually(Duration::from_secs(30), "every fire's event in JetStream over TLS", || {
        let (reader, ids) = (reader.clone(), ids.clone());
        async move {
            let seen = stream_message_ids(reader).await;
            ids.iter().all(|id| seen.get(&format!("{id}:1:fired")) == Some(&1)).then_some(())
        }
    })
    .await;
}
