//! Throughput of the SQLite store on this machine: durable creates in
//! batches (group commit), then durable fires in batches, each batch one
//! transaction with `synchronous=FULL`. Prints numbers; asserts nothing.
//!
//! `cargo bench -p minoots-store --bench sqlite_throughput [-- TIMERS BATCH CHECKPOINT_MS]`
//! (`CHECKPOINT_MS` 0 turns the background checkpointer off: SQLite then
//! checkpoints inside commits, every 4,000 pages).

fn main() {
    // The store is real-tokio only: under the simulator this bench is empty.
    #[cfg(not(madsim))]
    bench::main();
}

#[cfg(not(madsim))]
mod bench {
    use std::sync::Arc;
    use std::time::Duration;

    use minoots_core::ids::IdGenerator;
    use minoots_core::store::{AfterFire, CommitBatch, FireOp, StoreOp, StoreReply};
    use minoots_core::timer::{MisfirePolicy, Schedule, TimerRecord, TimerStatus};
    use minoots_core::{StoreFailure, TenantId};
    use minoots_node::clock::{Clock, SystemClock};
    use minoots_node::store::Store;
    use minoots_store::{SqliteConfig, SqliteStore};

    fn record(ids: &mut IdGenerator, tenant_id: &TenantId, now_ms: i64, n: u64) -> TimerRecord {
        let id = ids.next_id(now_ms);
        TimerRecord {
            id,
            tenant_id: tenant_id.clone(),
            requested_by: "bench".into(),
            name: Some(format!("bench-{n}")),
            status: TimerStatus::Scheduled,
            created_at_ms: now_ms,
            schedule: Schedule::Once { fire_at_ms: now_ms - 1, duration_ms: None },
            misfire: MisfirePolicy::FireOnce,
            next_due_ms: now_ms - 1,
            next_occurrence: 1,
            last_fired_at_ms: None,
            cancelled_at_ms: None,
            cancelled_by: None,
            cancel_reason: None,
            labels: [("team".to_owned(), "bench".to_owned()), ("env".to_owned(), "perf".to_owned())].into(),
            metadata: Some(serde_json::json!({ "n": n, "note": "throughput run" })),
            action_bundle: Some(serde_json::json!({
                "actions": [{ "kind": "webhook", "url": "https://hook.invalid/timers", "method": "POST" }]
            })),
            agent_binding: None,
            idempotency_key: n.is_multiple_of(2).then(|| format!("bench-key-{n}")),
            request_fingerprint: n,
            shard: id.shard(),
        }
    }

    async fn run(timers: usize, batch_size: usize, checkpoint_ms: u64) -> Result<(), StoreFailure> {
        let dir = tempfile::tempdir().map_err(|e| StoreFailure::Unknown(e.to_string()))?;
        let path = dir.path().join("bench.db");
        let clock = Arc::new(SystemClock::new());
        let config = if checkpoint_ms == 0 {
            SqliteConfig {
                checkpoint_interval_ms: 0,
                wal_autocheckpoint_pages: 4_000,
                ..SqliteConfig::default()
            }
        } else {
            SqliteConfig { checkpoint_interval_ms: checkpoint_ms, ..SqliteConfig::default() }
        };
        let store = SqliteStore::open_with(&path, clock.clone() as Arc<dyn Clock>, config)
            .await
            .map_err(|e| StoreFailure::Unknown(e.to_string()))?;
        let StoreReply::Opened { epoch } = store.execute(StoreOp::Open { node_id: "bench".into() }).await?
        else {
            return Err(StoreFailure::Unknown("open".into()));
        };
        let tenant_id =
            TenantId::parse("tenantId", "bench").map_err(|e| StoreFailure::Unknown(e.to_string()))?;
        let mut ids = IdGenerator::from_seed(1);

        let mut batches = Vec::new();
        for start in (0..timers).step_by(batch_size) {
            let now_ms = clock.now().wall_ms;
            let creates = (start..(start + batch_size).min(timers))
                .map(|n| record(&mut ids, &tenant_id, now_ms, n as u64))
                .collect::<Vec<_>>();
            batches.push(CommitBatch { epoch, node_id: "bench".into(), creates, ..CommitBatch::default() });
        }
        let mut latencies = Vec::with_capacity(batches.len());
        let created = elapsed(async {
            for batch in batches {
                let took = elapsed(async { store.execute(StoreOp::Commit(batch)).await.map(drop) }).await?;
                latencies.push(took);
            }
            Ok(())
        })
        .await?;
        report("durable creates", timers, created);
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!("  commit latency ms: p50 {:.2} p99 {:.2} max {:.2}", at(0.5), at(0.99), at(1.0));

        let mut due = Vec::new();
        let mut after = None;
        loop {
            let op = StoreOp::LoadDue { after, until_ms: clock.now().wall_ms, limit: 10_000 };
            let StoreReply::Loaded { timers, more } = store.execute(op).await? else {
                return Err(StoreFailure::Unknown("load".into()));
            };
            after = timers.last().map(|t| (t.due_ms, t.timer_id));
            due.extend(timers);
            if !more {
                break;
            }
        }
        let fired = elapsed(async {
            for chunk in due.chunks(batch_size) {
                let fires = chunk
                    .iter()
                    .map(|t| FireOp {
                        timer_id: t.timer_id,
                        occurrence: t.occurrence,
                        due_ms: t.due_ms,
                        then: AfterFire::Finished,
                        skipped: false,
                    })
                    .collect();
                let batch = CommitBatch { epoch, node_id: "bench".into(), fires, ..CommitBatch::default() };
                store.execute(StoreOp::Commit(batch)).await?;
            }
            Ok(())
        })
        .await?;
        report("durable fires", due.len(), fired);
        store.close().await;
        Ok(())
    }

    #[allow(clippy::disallowed_methods)] // A benchmark measures wall time.
    async fn elapsed(
        work: impl std::future::Future<Output = Result<(), StoreFailure>>,
    ) -> Result<Duration, StoreFailure> {
        let start = std::time::Instant::now();
        work.await?;
        Ok(start.elapsed())
    }

    fn report(what: &str, count: usize, took: Duration) {
        let rate = count as f64 / took.as_secs_f64().max(1e-9);
        println!("{what}: {count} in {:.3} s = {rate:.0}/s", took.as_secs_f64());
    }

    pub fn main() {
        let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
        let timers = args.first().copied().unwrap_or(100_000);
        let batch_size = args.get(1).copied().unwrap_or(2_000).max(1);
        let checkpoint_ms = args.get(2).copied().unwrap_or(200) as u64;
        let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("tokio runtime: {e}");
                std::process::exit(1);
            }
        };
        println!(
            "SQLite store: {timers} timers in batches of {batch_size}, checkpoint every {checkpoint_ms} ms"
        );
        if let Err(e) = runtime.block_on(run(timers, batch_size, checkpoint_ms)) {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
