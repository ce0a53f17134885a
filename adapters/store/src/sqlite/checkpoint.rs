//! Background WAL checkpointing. By default SQLite checkpoints inside the
//! commit that pushes the WAL past its threshold, which puts a burst of page
//! writes and an fsync of the database file on that commit's latency (tens
//! of milliseconds: fire lateness). Instead, a task on its own connection runs
//! a `PASSIVE` checkpoint every few hundred milliseconds; passive checkpoints
//! never block the writer or the readers. The writer keeps a large automatic
//! threshold as a safety bound in case this task falls behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The running checkpoint task.
pub(crate) struct Checkpointer {
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts checkpointing through `pool` (one connection) every `interval`.
    pub(crate) fn start(pool: SqlitePool, interval: Duration) -> Self {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(run(pool, stop.clone(), interval));
        Self { stop, task: Mutex::new(Some(task)) }
    }

    /// Stops the task and waits for its connection to close.
    pub(crate) async fn stop(&self) {
        self.stop.notify_one();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            // A task that panicked has nothing left to clean up.
            let _ = task.await;
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The task sees the stored permit at its next wake-up and exits.
        self.stop.notify_one();
    }
}

async fn run(pool: SqlitePool, stop: Arc<Notify>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(error = %e, "background WAL checkpoint failed; retrying at the next interval");
        }
    }
    pool.close().await;
}
