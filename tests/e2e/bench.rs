//! `minoots bench` against a fresh server, as the README runs it: with
//! `--json` its report holds the preload's memory readings (right after and
//! settled) and a phase in which every timer's webhook reached the bench's
//! own receiver exactly as scheduled (`--strict` fails the run otherwise).

use std::process::Command;

use serde_json::Value;

use crate::support::{DEV_KEY, Server, data_dir, minoots_bin};

#[test]
fn the_bench_reports_memory_after_a_preload_and_every_webhook_of_a_rest_phase() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let pid = server.pid().to_string();
    let out = Command::new(minoots_bin())
        .args(["bench", "--server", &server.grpc, "--api-key", DEV_KEY, "--rest-url", &server.rest])
        .args(["--metrics-url", &server.metrics, "--pid", &pid])
        .args(["--preload", "2000", "--api", "rest", "--webhook", "--timers", "300"])
        .args(["--window", "1s", "--lead", "2s", "--grace", "10s", "--strict", "--json"])
        .output()
        .expect("run minoots bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));

    let preload = &report["preload"];
    assert_eq!(preload["schedule"]["scheduled"], 2000, "{preload}");
    assert_eq!(preload["timers_pending"], 2000.0, "{preload}");
    for field in ["rss_before_kb", "rss_after_kb", "rss_settled_kb"] {
        assert!(preload[field].as_u64().is_some_and(|kb| kb > 0), "{field}: {preload}");
    }
    assert!(preload["rss_settled_bytes_per_timer"].is_number(), "{preload}");

    let phase = &report["phases"][0];
    assert_eq!(phase["schedule"]["scheduled"], 300, "{phase}");
    assert_eq!(phase["fires_received"], 300, "{phase}");
    let webhooks = &phase["webhooks"];
    assert_eq!(webhooks["received"], 300, "{webhooks}");
    assert_eq!(webhooks["missing"], 0, "{webhooks}");
    assert_eq!(webhooks["receipt_lateness_ms"]["count"], 300, "{webhooks}");
}
