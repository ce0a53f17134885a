//! Starting, killing and talking to real `minoots serve` processes, and
//! the servers they talk to (nats-server, a test CA).

#![allow(clippy::disallowed_methods)] // Real processes on the real clock: waits and instants are wall time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The development key a fresh standalone store creates.
pub const DEV_KEY: &str = "local-dev-key";

/// A running `minoots serve` process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` of the REST API.
    pub rest: String,
    /// `http://127.0.0.1:PORT` of gRPC.
    pub grpc: String,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics: String,
}

impl Server {
    /// Starts a server on `data_dir` with OS-assigned ports; waits until it is ready.
    pub fn start(data_dir: &Path) -> Server {
        let dir = data_dir.to_string_lossy().into_owned();
        Server::start_with(&["--data-dir", &dir], &[])
    }

    /// Starts `minoots serve` with OS-assigned ports on 127.0.0.1, warn-level
    /// logs, webhooks allowed to loopback (the tests' receivers listen there;
    /// `envs` may say otherwise), and the extra `args` and environment `envs`;
    /// waits until it prints its ready line.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_minoots"))
            .args(["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .env("ACTION_WEBHOOK_ALLOWED_DESTINATIONS", "127.0.0.1")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn minoots serve");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("minoots ready: ") {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        let ready =
            rx.recv_timeout(Duration::from_secs(60)).expect("server printed its ready line within 60 s");
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("ready line lacks {name}: {ready}"))
                .to_owned()
        };
        Server { child, rest: field("rest"), grpc: field("grpc"), metrics: field("metrics") }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh private data directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// An HTTP client with a short timeout.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `timers` as `api_key`'s tenant through `POST /api/timers/batch`
/// (1,000 per request), failing the test unless every one is created;
/// returns the created timers in order.
pub async fn create_batch_as(
    server: &Server,
    api_key: &str,
    timers: Vec<serde_json::Value>,
) -> Vec<serde_json::Value> {
    let mut created = Vec::new();
    for chunk in timers.chunks(1_000) {
        let response = http()
            .post(format!("{}/api/timers/batch", server.rest))
            .header("x-api-key", api_key)
            .json(&serde_json::json!({"timers": chunk}))
            .send()
            .await
            .expect("batch request");
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json");
        assert!(status.is_success(), "batch create failed: {status} {body}");
        for item in body["results"].as_array().expect("results") {
            assert_eq!(item["created"], true, "{item}");
            created.push(item["timer"].clone());
        }
    }
    created
}

/// `GET url` as `api_key`'s tenant, its body as JSON (the test fails if it is not JSON).
pub async fn get_json(url: impl reqwest::IntoUrl, api_key: &str) -> serde_json::Value {
    let url = url.into_url().expect("a URL");
    let response = http().get(url.clone()).header("x-api-key", api_key).send().await.expect("GET request");
    response.json().await.unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// The wall clock, in Unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// Unix milliseconds of an RFC 3339 instant.
pub fn iso_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad instant {text}: {e}"))
        .timestamp_millis()
}

/// The `minoots` binary, for CLI tests.
pub fn minoots_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_minoots"))
}

/// Creates an API key for `tenant` with `roles` in the store in `dir` (the
/// `minoots keys create` command); returns its secret.
pub fn create_key(dir: &Path, tenant: &str, roles: &str) -> String {
    let out = Command::new(minoots_bin())
        .args(["keys", "create", "--tenant", tenant, "--roles", roles, "--data-dir"])
        .arg(dir)
        .output()
        .expect("keys create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines().find_map(|l| l.strip_prefix("secret:")).map(|v| v.trim().to_owned()).expect("secret")
}

/// A certificate authority made for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A certificate a [`TestCa`] issued, with its key.
pub struct Issued {
    /// The certificate.
    pub cert: rcgen::Certificate,
    /// Its private key.
    pub key: rcgen::KeyPair,
}

impl TestCa {
    /// A fresh self-signed CA.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "MINOOTS test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        Issued { cert, key }
    }
}

/// A private `nats-server` with JetStream on a free port, optionally
/// speaking only TLS and requiring client certificates.
pub struct NatsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

impl NatsServer {
    /// Plain NATS.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// TLS only, with the server certificate `server` and clients required
    /// to present a certificate `ca` issued.
    pub fn start_tls(ca: &TestCa, server: &Issued) -> Self {
        Self::start_with(Some((ca, server)))
    }

    fn start_with(tls: Option<(&TestCa, &Issued)>) -> Self {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("jetstream");
        let mut config = format!("listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {store:?} }}\n");
        if let Some((ca, server)) = tls {
            let write = |name: &str, text: String| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).expect("write TLS file");
                path
            };
            let (ca, cert, key) = (
                write("ca.pem", ca.pem()),
                write("cert.pem", server.cert.pem()),
                write("key.pem", server.key.serialize_pem()),
            );
            config.push_str(&format!(
                "tls {{ cert_file: {cert:?}, key_file: {key:?}, ca_file: {ca:?}, verify: true, timeout: 5 }}\n"
            ));
        }
        std::fs::write(dir.path().join("nats.conf"), config).expect("write nats.conf");
        let mut nats = NatsServer { child: Self::spawn(dir.path()), port, dir, tls: tls.is_some() };
        nats.wait_listening();
        nats
    }

    fn spawn(dir: &Path) -> Child {
        Command::new("nats-server")
            .arg("-c")
            .arg(dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (Debian package nats-server) to run this test")
    }

    fn wait_listening(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nats-server exited ({status}) before listening on {}", self.port);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen on {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its URL: `nats://` or, with TLS, `tls://`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills it with SIGKILL (its JetStream store stays).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.dir.path());
        self.wait_listening();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every message id in the event stream with its count, read with an ordered consumer.
pub async fn stream_message_ids(client: async_nats::Client) -> std::collections::BTreeMap<String, usize> {
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("MINOOTS_TIMER").await.expect("stream exists");
    let total = stream.info().await.expect("info").state.messages as usize;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut ids = std::collections::BTreeMap::new();
    for _ in 0..total {
        let message = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut messages))
            .await
            .expect("a message within 10 s")
            .expect("stream open")
            .expect("message");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .expect("every message has a Nats-Msg-Id");
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}
