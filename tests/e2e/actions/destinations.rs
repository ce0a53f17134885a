//! Where a tenant's webhooks may go, end to end:
//!
//! - HTTPS to a receiver whose certificate comes from the operator's own CA
//!   (`ACTION_WEBHOOK_CA_FILE`): delivered, signed, once each; a certificate
//!   that does not name the host fails (verification is on) and nothing is
//!   sent to it;
//! - with no allow-list, every address form of the SSRF audit (loopback,
//!   `localhost`, unspecified, decimal and hex IPv4, link-local metadata,
//!   private, IPv4-mapped, `metadata.google.internal`), an unparsable URL, an
//!   impossible port and a `Host` override are 400s naming the field.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_rustls::rustls;

use super::{Receiver, create_batch, history_of, receive, signing_key, verifies, webhook_bundle};
use crate::support::{DEV_KEY, Server, TestCa, data_dir, eventually, http};

/// A CA, and an HTTPS receiver for `localhost` with a certificate it issued.
/// Returns the receiver, its address and the CA certificate (PEM).
async fn start_tls_receiver() -> (Arc<Receiver>, SocketAddr, String) {
    let ca = TestCa::new();
    let leaf = ca.issue(&["localhost"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf.key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let receiver = Arc::new(Receiver::default());
    let app =
        axum::Router::new().route("/hook/{route}", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (receiver, addr, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_arrive_through_the_operators_ca_and_a_wrong_name_is_refused() {
    let (receiver, addr, ca_pem) = start_tls_receiver().await;
    let dir = data_dir();
    let ca_file = dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write CA");
    let data = dir.path().join("data");
    let server = Server::start_with(
        &["--data-dir", &data.to_string_lossy()],
        &[
            ("ACTION_WEBHOOK_CA_FILE", &ca_file.to_string_lossy()),
            ("ACTION_WEBHOOK_ALLOWED_DESTINATIONS", "localhost,127.0.0.1"),
        ],
    );
    let port = addr.port();
    let good = format!("https://localhost:{port}/hook/tls");
    let mut timers: Vec<Value> = (0..20)
        .map(|i| json!({"duration": 500 + i * 10, "actionBundle": webhook_bundle(&good, Value::Null)}))
        .collect();
    // The certificate names localhost, not 127.0.0.1: verification must refuse it.
    let wrong_name = format!("https://127.0.0.1:{port}/hook/wrong-name");
    timers.push(
        json!({"duration": 500, "actionBundle": webhook_bundle(&wrong_name, json!({"maxAttempts": 1}))}),
    );
    let created = create_batch(&server, timers).await;
    let expected: std::collections::BTreeSet<String> =
        created[..20].iter().map(|t| format!("{}:1:hook", t["id"].as_str().expect("id"))).collect();

    eventually(Duration::from_secs(30), "every HTTPS webhook delivered", || {
        let receiver = receiver.clone();
        let want = expected.len();
        async move {
            let seen = receiver.seen.lock().expect("lock");
            (seen.iter().filter(|r| r.route == "tls").count() >= want).then_some(())
        }
    })
    .await;
    let wrong_id = created[20]["id"].as_str().expect("id").to_owned();
    let history = eventually(Duration::from_secs(30), "the wrong-name delivery failed", || {
        let h = history_of(&server, &wrong_id);
        let failed = h["deliveries"].as_array().is_some_and(|d| !d.is_empty());
        async move { failed.then_some(h) }
    })
    .await;
    let attempt = &history["deliveries"][0];
    assert_ne!(attempt["outcome"], "succeeded", "{history}");
    assert!(attempt["error"].as_str().unwrap_or("").contains("certificate"), "{history}");

    let seen = receiver.seen.lock().expect("lock").clone();
    assert!(seen.iter().all(|r| r.route == "tls"), "nothing reached the receiver under the wrong name");
    let keys: Vec<&String> = seen.iter().map(|r| &r.key).collect();
    assert_eq!(keys.iter().copied().cloned().collect::<std::collections::BTreeSet<_>>(), expected);
    assert_eq!(keys.len(), expected.len(), "each key once");
    let key = signing_key(&server, DEV_KEY).await;
    for r in &seen {
        assert!(verifies(r, &key), "signed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_the_operators_network_are_refused_when_scheduled() {
    let dir = data_dir();
    let server = Server::start_with(
        &["--data-dir", &dir.path().to_string_lossy()],
        &[("ACTION_WEBHOOK_ALLOWED_DESTINATIONS", "")],
    );
    let refused = |parameters: Value| {
        let rest = server.rest.clone();
        async move {
            let response = http()
                .post(format!("{rest}/api/timers"))
                .header("x-api-key", DEV_KEY)
                .json(&json!({"duration": "1m", "actionBundle": {"actions": [{"kind": "webhook", "parameters": parameters}]}}))
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            (status, body)
        }
    };
    for url in [
        "http://127.0.0.1:9464/metrics",
        "http://[::1]:4000/",
        "http://localhost:4000/api/timers",
        "http://0.0.0.0:4000/",
        "http://2130706433:4000/",
        "http://0x7f000001/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[zz/",
        "http://example.com:99999/",
    ] {
        let (status, body) = refused(json!({"url": url})).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["field"], "actionBundle.actions[0].parameters.url", "{url}: {body}");
    }
    let (status, body) =
        refused(json!({"url": "https://example.com/hook", "headers": {"Host": "127.0.0.1"}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "actionBundle.actions[0].parameters.headers.Host", "{body}");
    let (status, body) = refused(json!({"url": "https://example.com/hook"})).await;
    assert_eq!(status, 201, "a public destination is accepted: {body}");
}
