//! `SqliteStore` against the conformance suite (same replies as the reference
//! model), plus what only a real file can show: durability across reopening,
//! atomic commits, outbox pruning.
#![cfg(not(madsim))]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minoots_core::store::{AfterFire, CommitBatch, FireOp, StoreOp, StoreReply};
use minoots_core::timer::{MisfirePolicy, Schedule, TimerRecord, TimerStatus};
use minoots_core::{Now, StoreFailure, TenantId, TimerId};
use minoots_node::clock::{Clock, ManualClock};
use minoots_node::keys::{ApiKeyRecord, KeyStore, hash_api_key};
use minoots_node::store::Store;
use minoots_store::{SqliteConfig, SqliteStore};
use minoots_testkit::conformance::{START_MS, report, run_all};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Now::new(START_MS, 0)))
}

async fn open(path: &Path, clock: Arc<ManualClock>) -> SqliteStore {
    SqliteStore::open(path, clock as Arc<dyn Clock>).await.expect("open the store")
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse("tenantId", name).expect("valid tenant")
}

fn timer(n: u128, tenant_id: &TenantId, due_ms: i64) -> TimerRecord {
    let id = TimerId(uuid::Uuid::from_u128((u128::from(START_MS as u64) << 80) | n));
    TimerRecord {
        id,
        tenant_id: tenant_id.clone(),
        requested_by: "test".into(),
        name: None,
        status: TimerStatus::Scheduled,
        created_at_ms: START_MS,
        schedule: Schedule::Interval {
            every_ms: 1_000,
            start_at_ms: due_ms,
            end_at_ms: None,
            max_occurrences: Some(3),
        },
        misfire: MisfirePolicy::FireAll,
        next_due_ms: due_ms,
        next_occurrence: 1,
        last_fired_at_ms: None,
        cancelled_at_ms: None,
        cancelled_by: None,
        cancel_reason: None,
        labels: [("k".to_owned(), "v".to_owned())].into(),
        metadata: Some(serde_json::json!({ "pi": std::f64::consts::PI, "tiny": 1e-300, "third": 1.0 / 3.0 })),
        action_bundle: None,
        agent_binding: None,
        idempotency_key: Some(format!("idem-{n}")),
        request_fingerprint: u64::MAX - n as u64,
        shard: id.shard(),
    }
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
async fn committed_state_survives_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db_path(&dir);
    let a = tenant("tenant-a");
    let clock = clock();
    let (t1, t2) = (timer(1, &a, START_MS - 10), timer(2, &a, START_MS + 60_000));
    let (committed, fired_timer) = {
        let store = open(&path, clock.clone()).await;
        assert_eq!(open_epoch(&store).await, 1);
        let batch = CommitBatch {
            epoch: 1,
            node_id: "n1".into(),
            creates: vec![t1.clone(), t2.clone()],
            fires: vec![FireOp {
                timer_id: t1.id,
                occurrence: 1,
                due_ms: t1.next_due_ms,
                then: AfterFire::Next { due_ms: t1.next_due_ms + 1_000 },
                skipped: false,
            }],
            ..CommitBatch::default()
        };
        let StoreReply::Committed { outcome, events } = execute(&store, StoreOp::Commit(batch)).await else {
            panic!("commit reply");
        };
        assert_eq!(events.len(), 3);
        let fired = outcome.fires[0].clone().expect("fired");
        store.outbox_mark_published(1).await.expect("mark");
        store
            .insert_key(
                ApiKeyRecord {
                    id: "key_1".into(),
                    tenant_id: a.clone(),
                    roles: Default::default(),
                    label: "dev".into(),
                    created_at_ms: START_MS,
                    revoked_at_ms: None,
                },
                hash_api_key("secret"),
            )
            .await
            .expect("insert key");
        // Dropped without close: what a crash after the commit leaves.
        (events, fired.timer)
    };

    let store = open(&path, clock.clone()).await;
    let get = |id| StoreOp::Get { tenant_id: a.clone(), timer_id: id };
    assert_eq!(execute(&store, get(t1.id)).await, StoreReply::Timer(Some(fired_timer.clone())));
    assert_eq!(execute(&store, get(t2.id)).await, StoreReply::Timer(Some(t2.clone())));
    let fires = execute(
        &store,
        StoreOp::ListFires { tenant_id: a.clone(), timer_id: t1.id, after_occurrence: 0, limit: 10 },
    )
    .await;
    assert!(matches!(&fires, StoreReply::Fires(Some(f)) if f.len() == 1 && f[0].epoch == 1), "{fires:?}");
    assert_eq!(store.outbox_unpublished(0, 100).await.expect("outbox"), committed[1..].to_vec());
    assert_eq!(store.count_pending().await.expect("pending"), 2);
    assert!(store.find_key(&hash_api_key("secret")).await.expect("find key").is_some());
    assert_eq!(open_epoch(&store).await, 2, "the epoch bumps on the next Open");
    // The old epoch is fenced after the restart.
    let stale = CommitBatch {
        epoch: 1,
        node_id: "n1".into(),
        cancels: vec![minoots_core::store::CancelOp {
            tenant_id: a.clone(),
            timer_id: t2.id,
            cancelled_by: "old".into(),
            reason: None,
        }],
        ..CommitBatch::default()
    };
    let StoreReply::Committed { outcome, events } = execute(&store, StoreOp::Commit(stale)).await else {
        panic!("commit reply");
    };
    assert_eq!(outcome.cancels[0], Err(minoots_core::StoreReject::StaleEpoch { current_epoch: 2 }));
    assert!(events.is_empty());
    store.close().await;

    // A clean close and a third open: sequence numbers continue.
    let store = open(&path, clock.clone()).await;
    assert_eq!(open_epoch(&store).await, 3);
    let batch = CommitBatch {
        epoch: 3,
        node_id: "n1".into(),
        creates: vec![timer(3, &a, START_MS)],
        ..Default::default()
    };
    let StoreReply::Committed { events, .. } = execute(&store, StoreOp::Commit(batch)).await else {
        panic!("commit reply");
    };
    assert_eq!(events[0].seq, 4);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_applies_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&db_path(&dir), clock()).await;
    let a = tenant("tenant-a");
    open_epoch(&store).await;
    let existing = timer(1, &a, START_MS);
    let batch =
        CommitBatch { epoch: 1, node_id: "n1".into(), creates: vec![existing.clone()], ..Default::default() };
    execute(&store, StoreOp::Commit(batch)).await;

    // A new timer, a cancel, and a create reusing an existing id (without an
    // idempotency key): the duplicate fails the whole transaction.
    let fresh = timer(2, &a, START_MS);
    let duplicate = TimerRecord { idempotency_key: None, ..existing.clone() };
    let batch = CommitBatch {
        epoch: 1,
        node_id: "n1".into(),
        creates: vec![fresh.clone(), duplicate],
        cancels: vec![minoots_core::store::CancelOp {
            tenant_id: a.clone(),
            timer_id: existing.id,
            cancelled_by: "x".into(),
            reason: None,
        }],
        ..Default::default()
    };
    let result: Result<StoreReply, StoreFailure> = store.execute(StoreOp::Commit(batch)).await;
    assert!(result.is_err(), "{result:?}");
    let get = |id| StoreOp::Get { tenant_id: a.clone(), timer_id: id };
    assert_eq!(execute(&store, get(fresh.id)).await, StoreReply::Timer(None));
    assert_eq!(execute(&store, get(existing.id)).await, StoreReply::Timer(Some(existing.clone())));
    assert_eq!(store.outbox_unpublished(0, 100).await.expect("outbox").len(), 1);
    assert_eq!(store.count_pending().await.expect("pending"), 1);
    // The next commit numbers its events right after the last applied one.
    let batch = CommitBatch { epoch: 1, node_id: "n1".into(), creates: vec![fresh], ..Default::default() };
    let StoreReply::Committed { events, .. } = execute(&store, StoreOp::Commit(batch)).await else {
        panic!("commit reply");
    };
    assert_eq!(events[0].seq, 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_outbox_rows_are_pruned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = clock();
    let config = SqliteConfig {
        outbox_keep_published_rows: 5,
        outbox_keep_ms: 60_000,
        outbox_prune_every: 3,
        ..SqliteConfig::default()
    };
    let store =
        SqliteStore::open_with(&db_path(&dir), clock.clone() as Arc<dyn Clock>, config).await.expect("open");
    let a = tenant("tenant-a");
    open_epoch(&store).await;
    let creates: Vec<TimerRecord> = (1..=20).map(|n| timer(n, &a, START_MS + 1_000_000)).collect();
    let batch = CommitBatch { epoch: 1, node_id: "n1".into(), creates, ..Default::default() };
    execute(&store, StoreOp::Commit(batch)).await;

    // Publishing 12 of 20 keeps the last 5 published rows.
    store.outbox_mark_published(12).await.expect("mark");
    assert_eq!(store.prune_outbox().await.expect("prune"), 7);
    assert_eq!(store.prune_outbox().await.expect("prune"), 0, "nothing more to prune");
    let backlog = store.outbox_unpublished(0, 100).await.expect("outbox");
    assert_eq!(backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), (13..=20).collect::<Vec<_>>());

    // An hour later every published row is old: all go; unpublished ones stay.
    clock.advance(3_600_000);
    store.outbox_mark_published(15).await.expect("mark");
    assert_eq!(store.prune_outbox().await.expect("prune"), 8, "rows 8..=15");
    let backlog = store.outbox_unpublished(0, 100).await.expect("outbox");
    assert_eq!(backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), (16..=20).collect::<Vec<_>>());

    // Every third mark prunes by itself; numbering continues after pruning
    // everything published.
    store.outbox_mark_published(20).await.expect("mark");
    assert_eq!(store.prune_outbox().await.expect("prune"), 0, "the third mark pruned already");
    let batch = CommitBatch {
        epoch: 1,
        node_id: "n1".into(),
        creates: vec![timer(99, &a, START_MS)],
        ..Default::default()
    };
    let StoreReply::Committed { events, .. } = execute(&store, StoreOp::Commit(batch)).await else {
        panic!("commit reply");
    };
    assert_eq!(events[0].seq, 21);
    store.close().await;
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
