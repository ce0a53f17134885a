//! The README's quick start, as a user would run it: a fresh server, the CLI
//! creates a timer `--in 2s`, and the fire shows up in `timers get`, in
//! `/api/timers/{id}/fires`, on the SSE stream and in `/metrics`. Then key
//! management: a key made with `minoots keys create` for another tenant sees
//! none of the first tenant's timers, and stops working once revoked.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::support::{DEV_KEY, Server, data_dir, eventually, http, iso_ms, minoots_bin};

/// The data directory is the server user's alone: 0700, its databases
/// (with their WAL and shared-memory files) 0600.
fn data_files_are_private(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "data directory");
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

fn cli(server: &Server, args: &[&str]) -> Value {
    let out = Command::new(minoots_bin())
        .arg("timers")
        .args(args)
        .args(["--json", "--server", &server.grpc, "--api-key", DEV_KEY])
        .output()
        .expect("run minoots timers");
    assert!(out.status.success(), "minoots timers {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Reads SSE frames until `want` returns true for one; returns it.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    want: impl Fn(&str, &Value) -> bool,
) -> Value {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let event = frame.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim).unwrap_or("");
            let data = frame.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
            if let Some(data) = data {
                let value: Value = serde_json::from_str(data).expect("SSE data is JSON");
                if want(event, &value) {
                    return value;
                }
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .expect("an SSE frame within 15 s")
            .expect("stream open")
            .expect("stream chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_timer_fires_and_is_visible_everywhere() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let client = http();
    data_files_are_private(dir.path());

    let sse = reqwest::Client::new()
        .get(format!("{}/api/timers/stream", server.rest))
        .header("x-api-key", DEV_KEY)
        .send()
        .await
        .expect("SSE connect");
    assert_eq!(sse.status(), 200);
    let mut stream = sse.bytes_stream();
    let mut buffer = String::new();

    let created = cli(&server, &["create", "--in", "2s", "--name", "hello", "--label", "team=ops"]);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "scheduled");

    let fired = next_event(&mut stream, &mut buffer, |event, v| {
        event == "timer.fired" && v["event"]["timer"]["id"] == id.as_str()
    })
    .await;
    assert_eq!(fired["event"]["type"], "timer.fired");
    assert_eq!(fired["tenantId"], "tenant-local");

    let got = cli(&server, &["get", &id]);
    assert_eq!(got["status"], "fired");
    assert_eq!(got["labels"]["team"], "ops");

    let fires: Value = client
        .get(format!("{}/api/timers/{id}/fires", server.rest))
        .header("x-api-key", DEV_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fires = fires["fires"].as_array().expect("fires array");
    assert_eq!(fires.len(), 1);
    let due = iso_ms(fires[0]["dueAt"].as_str().unwrap());
    let fired_at = iso_ms(fires[0]["firedAt"].as_str().unwrap());
    assert!(fired_at >= due, "never early");
    assert_eq!(due - iso_ms(created["createdAt"].as_str().unwrap()), 2_000, "due 2 s after creation");

    let listed = cli(&server, &["list"]);
    assert!(listed.to_string().contains(&id), "timers list shows it: {listed}");

    let metrics = eventually(Duration::from_secs(10), "the fire in /metrics", || {
        let client = client.clone();
        let url = server.metrics.clone();
        async move {
            let text = client.get(&url).send().await.ok()?.text().await.ok()?;
            text.lines().any(|l| l.starts_with("minoots_timers_fired_total 1")).then_some(text)
        }
    })
    .await;
    assert!(metrics.contains("minoots_fire_lateness_seconds_count 1"), "lateness observed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_by_the_cli_are_tenant_scoped_and_revocable() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let client = http();
    let created = cli(&server, &["create", "--in", "1h"]);
    let id = created["id"].as_str().unwrap().to_owned();

    let out = Command::new(minoots_bin())
        .args(["keys", "create", "--tenant", "tenant-b", "--roles", "timer.read,timer.cancel"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("keys create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned()).expect("key field")
    };
    let (key_id, secret) = (field("id:"), field("secret:"));

    // Tenant B sees nothing of tenant-local, and cannot cancel its timer.
    let get = client
        .get(format!("{}/api/timers/{id}", server.rest))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
    let cancel = client
        .post(format!("{}/api/timers/{id}/cancel", server.rest))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
    let list: Value = client
        .get(format!("{}/api/timers", server.rest))
        .header("x-api-key", &secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["timers"].as_array().map(Vec::len), Some(0));
    // Its roles exclude timer.write.
    let create = client
        .post(format!("{}/api/timers", server.rest))
        .header("x-api-key", &secret)
        .json(&serde_json::json!({"duration": "1m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403);

    let out = Command::new(minoots_bin())
        .args(["keys", "revoke", &key_id])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("keys revoke");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after =
        client.get(format!("{}/api/timers", server.rest)).header("x-api-key", &secret).send().await.unwrap();
    assert_eq!(after.status(), 401, "a revoked key stops working at once");
    let metrics = client.get(&server.metrics).send().await.unwrap().text().await.unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("minoots_auth_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("minoots_auth_failures_total is exported");
    assert!(failures >= 1, "the refused key was counted: {failures}");
}

fn tenants_cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(minoots_bin())
        .arg("tenants")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run minoots tenants");
    assert!(
        out.status.success(),
        "minoots tenants {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The operator's default daily quota refuses with 429 `limitType: daily`;
/// `minoots tenants quota` raises one tenant's own limit on the running
/// server, and `default` puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_default_from_a_flag_and_a_tenants_own_set_by_the_cli() {
    let dir = data_dir();
    let path = dir.path().to_string_lossy().into_owned();
    let server = Server::start_with(&["--data-dir", &path], &[("MINOOTS_QUOTA_DAILY_CREATES", "2")]);
    let client = http();
    let create = || async {
        let response = client
            .post(format!("{}/api/timers", server.rest))
            .header("x-api-key", DEV_KEY)
            .json(&serde_json::json!({"duration": "1h"}))
            .send()
            .await
            .expect("create sent");
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").is_some();
        (status, retry_after, response.json::<Value>().await.expect("JSON"))
    };
    assert_eq!(create().await.0, 201);
    assert_eq!(create().await.0, 201);
    let (status, retry_after, body) = create().await;
    assert_eq!((status, retry_after), (429, true), "{body}");
    assert_eq!(body["error"]["limitType"], "daily", "{body}");

    let shown = tenants_cli(dir.path(), &["quota", "--tenant", "tenant-local", "--daily-creates", "3"]);
    assert!(shown.contains("daily creates:       3"), "{shown}");
    assert!(shown.contains("pending timers:      default"), "{shown}");
    // The running server takes the tenant's own limit within seconds.
    eventually(Duration::from_secs(15), "the raised quota applies", || async {
        (create().await.0 == 201).then_some(())
    })
    .await;
    assert_eq!(create().await.0, 429);
    let shown = tenants_cli(dir.path(), &["quota", "--tenant", "tenant-local", "--daily-creates", "default"]);
    assert!(shown.contains("daily creates:       default"), "{shown}");
    assert_eq!(tenants_cli(dir.path(), &["show", "--tenant", "tenant-local"]), shown);

    // A data directory the CLI creates is as private as one the server creates.
    let fresh = data_dir();
    let created = fresh.path().join("made-by-the-cli");
    tenants_cli(&created, &["show", "--tenant", "acme"]);
    data_files_are_private(&created);
}
