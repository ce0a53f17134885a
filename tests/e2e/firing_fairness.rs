//! Fair firing across tenants, with a real server: tenant-local schedules
//! 10,000 timers due in one millisecond, more than one commit fires, and
//! tenant-b schedules one timer due in that same millisecond after them
//! (so it is last in the global due order). Tenant-b's timer fires in the
//! first commit of that millisecond — with the same `firedAt` as the
//! earliest of tenant-local's — instead of waiting for every commit before it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    DEV_KEY, Server, create_batch_as, create_key, data_dir, eventually, get_json, iso_ms, unix_ms,
};

/// More than one commit's worth of fires (the engine fires at most 4,096 per commit).
const BURST: usize = 10_000;

/// Every fired timer of the key's tenant, page by page.
async fn fired_timers(server: &Server, api_key: &str) -> Vec<Value> {
    let mut timers = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..(BURST / 1_000 + 2) {
        let mut url = format!("{}/api/timers?status=fired&limit=1000", server.rest);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = get_json(url, api_key).await;
        timers.extend(page["timers"].as_array().expect("timers").iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return timers,
        }
    }
    panic!("more pages of fired timers than timers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_burst_in_the_same_millisecond_does_not_hold_back_a_fire() {
    let dir = data_dir();
    let path = dir.path().to_string_lossy().into_owned();
    let server = Server::start_with(&["--data-dir", &path], &[]);
    let tenant_b = create_key(dir.path(), "tenant-b", "timer.read,timer.write");

    let due_ms = unix_ms() + 10_000;
    let fire_at = chrono::DateTime::from_timestamp_millis(due_ms).expect("instant").to_rfc3339();
    for _ in 0..BURST / 1_000 {
        create_batch_as(&server, DEV_KEY, vec![json!({"fireAt": fire_at}); 1_000]).await;
    }
    create_batch_as(&server, &tenant_b, vec![json!({"fireAt": fire_at})]).await;
    assert!(
        unix_ms() < due_ms,
        "the burst took longer to schedule than the 10 s lead: the scenario did not run"
    );

    let quiet = eventually(Duration::from_secs(60), "tenant-b's timer fires", || async {
        fired_timers(&server, &tenant_b).await.into_iter().next()
    })
    .await;
    let noisy = eventually(Duration::from_secs(60), "every tenant-local timer fires", || async {
        let fired = fired_timers(&server, DEV_KEY).await;
        (fired.len() == BURST).then_some(fired)
    })
    .await;

    let fired_at = |t: &Value| iso_ms(t["firedAt"].as_str().expect("firedAt"));
    let quiet_fired_ms = fired_at(&quiet);
    let noisy_fired: Vec<i64> = noisy.iter().map(fired_at).collect();
    let first_ms = *noisy_fired.iter().min().expect("fires");
    let last_ms = *noisy_fired.iter().max().expect("fires");
    let noisy_before = noisy_fired.iter().filter(|ms| **ms < quiet_fired_ms).count();
    println!(
        "{BURST} tenant-local timers due in one ms fired {}..{} ms after due; tenant-b's {} ms after due, {noisy_before} before it",
        first_ms - due_ms,
        last_ms - due_ms,
        quiet_fired_ms - due_ms,
    );
    assert!(last_ms > first_ms, "the burst fired in one commit: the scenario did not need fairness");
    assert_eq!(noisy_before, 0, "tenant-b's fire waited behind commits of tenant-local's burst");
}
