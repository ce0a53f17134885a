//! `SqliteStore` against the conformance suite (same replies as the reference
//! model) and the durability suite (what only a real file can show:
//! reopening, outbox pruning), and its migrations.
#![cfg(not(madsim))]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minoots_core::Now;
use minoots_core::store::{StoreOp, StoreReply};
use minoots_node::clock::{Clock, ManualClock};
use minoots_node::store::Store;
use minoots_store::{SqliteConfig, SqliteStore};
use minoots_testkit::conformance::{START_MS, report, run_all};
use minoots_testkit::durability::{RETENTION, run_durability_suite};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Now::new(START_MS, 0)))
}

async fn open(path: &Path, clock: Arc<ManualClock>) -> SqliteStore {
    SqliteStore::open(path, clock as Arc<dyn Clock>).await.expect("open the store")
}

async fn execute(store: &SqliteStore, op: StoreOp) -> StoreReply {
    store.execute(op).await.expect("store operation")
}

async fn open_epoch(store: &SqliteStore) -> u64 {
    match execute(store, StoreOp::Open { node_id: "n1".into() }).await {
        StoreReply::Opened { epoch } => epoch,
        other => panic!("Open answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut n = 0;
    let result = run_all(|clock: Arc<ManualClock>| {
        n += 1;
        let path = dir.path().join(format!("conformance-{n}.db"));
        async move { open(&path, clock).await }
    })
    .await;
    if let Err(failures) = result {
        panic!("{}", report(&failures));
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    // A nested directory: open creates it.
    dir.path().join("data").join("minoots.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_is_durable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SqliteConfig {
        outbox_keep_published_rows: RETENTION.keep_published_rows,
        outbox_keep_ms: RETENTION.keep_ms,
        outbox_prune_every: RETENTION.prune_every,
        ..SqliteConfig::default()
    };
    let result = run_durability_suite(
        |place: String, clock: Arc<ManualClock>| {
            // A nested directory: open creates it.
            let path = dir.path().join(place).join("minoots.db");
            let config = config.clone();
            async move { SqliteStore::open_with(&path, clock as Arc<dyn Clock>, config).await.expect("open") }
        },
        |store: &SqliteStore| Box::pin(store.prune_outbox()),
    )
    .await;
    if let Err(failures) = result {
        panic!("{}", report(&failures));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_file_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    minoots_store::migrate(&path).await.expect("first migrate");
    assert!(path.exists());
    minoots_store::migrate(&path).await.expect("second migrate");
    let store = open(&path, clock()).await;
    assert_eq!(open_epoch(&store).await, 1);
    store.close().await;
}
