//! Starting, killing and talking to real `minoots serve` processes.

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

/// Parses an RFC 3339 instant to Unix milliseconds.
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
