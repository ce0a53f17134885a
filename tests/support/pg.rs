//! A private PostgreSQL server for tests: `initdb` in a temporary directory,
//! `postgres` on a free port of 127.0.0.1 with its socket in that directory,
//! `fsync=on`, trust authentication for the `postgres` user. Stopped (and its
//! files removed) when dropped. It can be crashed (immediate shutdown: no
//! checkpoint, crash recovery at the next start) and restarted on the same
//! port, for chaos tests.
//!
//! Binaries: the newest `/usr/lib/postgresql/<version>/bin` (Debian and
//! Ubuntu packages), else the directory `pg_config --bindir` names, else
//! `PATH`. As root, every server command runs as the `postgres` OS user
//! (`initdb` and `postgres` refuse root), and the directory is given to it.
//!
//! If the server cannot be started, [`PgServer::start`] panics with the
//! reason: tests that need PostgreSQL fail loudly, they are never skipped.
//!
//! Shared by the store's tests (`adapters/store/tests`) and the end-to-end
//! tests (`tests/e2e`) through `#[path]`; it uses only `std` and `tempfile`.
#![allow(dead_code)] // Each test crate uses a different part.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The superuser the tests connect as.
pub const PG_USER: &str = "postgres";

/// A running private PostgreSQL server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres_user: bool,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    running: bool,
}

impl PgServer {
    /// Initialises a cluster and starts it; panics (with the server's log) if it cannot.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let as_postgres_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("minoots-pg-")
            .tempdir()
            .expect("creating a temp dir for PostgreSQL");
        if as_postgres_user {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .unwrap_or_else(|e| panic!("PostgreSQL for tests: cannot run chown: {e}"));
            check(&out, "chown the test directory to the postgres user");
        }
        let mut server = PgServer { dir, bin, as_postgres_user, port: free_port(), running: false };
        let data = server.data_dir();
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", PG_USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("PostgreSQL for tests: cannot run initdb: {e}"));
        check(&out, "initdb");
        std::fs::create_dir_all(server.socket_dir()).ok();
        if as_postgres_user {
            let out = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(server.socket_dir())
                .output()
                .unwrap_or_else(|e| panic!("PostgreSQL for tests: cannot run chown: {e}"));
            check(&out, "chown the socket directory");
        }
        server.boot();
        server
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A server program, run as the postgres OS user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null()).current_dir(self.dir.path());
        cmd
    }

    fn boot(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c max_connections=300 -c shared_buffers=128MB -c log_min_messages=warning",
            self.port,
            self.socket_dir().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .unwrap_or_else(|e| panic!("PostgreSQL for tests: cannot run pg_ctl start: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            panic!(
                "PostgreSQL for tests did not start on 127.0.0.1:{}: {}\n{}\nserver log:\n{log}",
                self.port,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .unwrap_or_else(|e| panic!("PostgreSQL for tests: cannot run pg_ctl stop: {e}"));
        check(&out, "pg_ctl stop");
        self.running = false;
    }

    /// Crashes the server: immediate shutdown (every backend dies at once, no
    /// checkpoint; the next start runs crash recovery). Returns when it is down.
    pub fn crash(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    /// Starts the server again on the same port and data (after [`PgServer::crash`]).
    pub fn restart(&mut self) {
        assert!(!self.running, "restart a crashed server only");
        self.boot();
    }

    /// Turns TLS on with this certificate chain and key (PEM): written into the
    /// data directory for the server's user (the key 0600), `ssl = on`,
    /// reloaded. Plain connections stay allowed; clients choose with `sslmode`.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, text).expect("write a TLS file for PostgreSQL");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if self.as_postgres_user {
                let out = Command::new("chown").arg("postgres:postgres").arg(&path).output().expect("chown");
                check(&out, "chown a TLS file");
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str("\nssl = on\n");
        std::fs::write(&conf, text).expect("write postgresql.conf");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("reload")
            .output()
            .unwrap_or_else(|e| panic!("PostgreSQL for tests: cannot run pg_ctl reload: {e}"));
        check(&out, "pg_ctl reload");
        // The reload is asynchronous: wait until the server says TLS is on.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl").trim() == "on" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("PostgreSQL for tests: ssl did not turn on after a reload");
    }

    /// `postgres://postgres@127.0.0.1:PORT/database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL with `psql` on `database`; panics on error. Returns stdout.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", PG_USER])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        check(&out, &format!("psql {sql}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "PostgreSQL for tests: {what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The directory holding `initdb`, `pg_ctl`, `postgres` and `psql`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if bin.join("initdb").exists() {
            return bin;
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).find(|d| Path::new(d).join("initdb").exists()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL for tests: no initdb found (looked in /usr/lib/postgresql/*/bin, \
             `pg_config --bindir` and PATH); install the PostgreSQL server package"
        )
    })
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}
