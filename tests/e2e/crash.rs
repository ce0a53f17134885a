//! Crash safety with real processes: hundreds of timers under load, the
//! server killed with SIGKILL several times and restarted on the same data
//! directory. Every acknowledged timer must fire exactly once, never before
//! its due time, including those that came due while the server was down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::support::{DEV_KEY, Server, data_dir, eventually, http, iso_ms};

const TIMERS: usize = 400;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_under_load_loses_and_duplicates_nothing() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let base = Arc::new(RwLock::new(server.rest.clone()));
    let client = http();

    // Producer: TIMERS creates, each with an idempotency key, retried until acknowledged.
    let producer = {
        let base = base.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked: BTreeMap<String, String> = BTreeMap::new(); // key -> id
            for i in 0..TIMERS {
                let key = format!("crash-{i}");
                // Due times spread from 0.3 s to 6 s out.
                let body = json!({ "duration": 300 + (i as u64 * 37) % 5_700, "idempotencyKey": key, "labels": {"suite": "crash"} });
                let id = loop {
                    let url = format!("{}/api/timers", base.read().await);
                    match client.post(&url).header("x-api-key", DEV_KEY).json(&body).send().await {
                        Ok(resp) if resp.status().is_success() => {
                            let v: Value = resp.json().await.expect("timer JSON");
                            break v["id"].as_str().expect("id").to_owned();
                        }
                        // Server down or restarting: retry with the same key.
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                acked.insert(key, id);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            acked
        })
    };

    // Killer: SIGKILL and restart on the same data directory, KILLS times.
    let mut server = server;
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(700)).await; // down long enough for timers to come due
        server = Server::start(dir.path());
        *base.write().await = server.rest.clone();
    }
    let acked = producer.await.expect("producer");
    assert_eq!(acked.len(), TIMERS);
    let distinct: std::collections::BTreeSet<_> = acked.values().collect();
    assert_eq!(distinct.len(), TIMERS, "idempotent retries never created a second timer");

    // Every acknowledged timer fires exactly once, never early.
    let rest = server.rest.clone();
    let mut lost = 0;
    for id in acked.values() {
        let fires = eventually(Duration::from_secs(30), "the timer's fire", || {
            let client = client.clone();
            let url = format!("{rest}/api/timers/{id}/fires");
            async move {
                let resp = client.get(&url).header("x-api-key", DEV_KEY).send().await.ok()?;
                let v: Value = resp.json().await.ok()?;
                let fires = v["fires"].as_array()?.clone();
                (!fires.is_empty()).then_some(fires)
            }
        })
        .await;
        if fires.is_empty() {
            lost += 1;
        }
        assert_eq!(fires.len(), 1, "timer {id} fired {} times: {fires:?}", fires.len());
        let fire = &fires[0];
        assert_eq!(fire["occurrence"], 1);
        let (due, fired) =
            (iso_ms(fire["dueAt"].as_str().unwrap()), iso_ms(fire["firedAt"].as_str().unwrap()));
        assert!(fired >= due, "timer {id} fired {} ms early", due - fired);
    }
    assert_eq!(lost, 0);

    // The store agrees: nothing of this suite is still scheduled.
    let url = format!("{rest}/api/timers?label=suite=crash&status=scheduled&limit=1000");
    let v: Value = client.get(&url).header("x-api-key", DEV_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["timers"].as_array().map(Vec::len), Some(0), "no timer left unfired: {v}");
}
