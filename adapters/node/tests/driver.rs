//! The driver on real tokio with the in-memory reference store: requests
//! reach the engine and come back after commit, timers fire on time from one
//! wake-up, committed events reach subscribers, an outbox backlog left by a
//! crash is relayed at the next start, and shutdown refuses new work.

use std::sync::Arc;
use std::time::Duration;

use minoots_core::draft::TimerDraft;
use minoots_core::event::EventKind;
use minoots_core::store::{CommitBatch, StoreOp};
use minoots_core::timer::{TimerRecord, TimerStatus};
use minoots_core::{ApiError, Command, Response, TenantId};
use minoots_node::{NodeConfig, NodeHandle, Store, SystemClock, start_node};
use minoots_testkit::conformance::once_timer;
use minoots_testkit::model_store::ModelStore;

fn tenant() -> TenantId {
    TenantId::parse("tenantId", "acme").unwrap()
}

fn start(store: Arc<ModelStore>) -> (NodeHandle, tokio::task::JoinHandle<()>) {
    start_node(NodeConfig::new("node-t", 7), store.clone(), store, Arc::new(SystemClock::new()))
}

async fn schedule(handle: &NodeHandle, duration_ms: u64) -> minoots_core::timer::TimerRecord {
    let draft =
        TimerDraft { tenant_id: Some(tenant()), duration_ms: Some(duration_ms), ..Default::default() };
    match handle.call(Command::Schedule(draft)).await {
        Ok(Response::Scheduled(created)) => created.timer,
        other => panic!("schedule failed: {other:?}"),
    }
}

#[tokio::test]
async fn a_scheduled_timer_fires_once_and_its_events_reach_subscribers() {
    let store = Arc::new(ModelStore::new(Arc::new(SystemClock::new())));
    let (handle, task) = start(store.clone());
    assert!(handle.wait_for_role(minoots_node::NodeRole::Leader).await);
    let mut events = handle.subscribe();
    let timer = schedule(&handle, 50).await;

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("event in time")
            .unwrap();
        if event.timer_id == timer.id {
            kinds.push(event.kind);
        }
    }
    assert_eq!(kinds, vec![EventKind::Scheduled, EventKind::Fired]);
    let fires = store.snapshot().fires().clone();
    assert_eq!(fires.len(), 1);
    let fire = fires.values().next().unwrap();
    assert!(fire.fired_at_ms >= fire.due_ms, "never early");
    assert_eq!(fire.node_id, "node-t");

    let got = handle.call(Command::Get { tenant_id: tenant(), timer_id: timer.id }).await;
    assert!(matches!(got, Ok(Response::Timer(t)) if t.status == TimerStatus::Fired));
    let metrics = handle.metrics().encode();
    assert!(metrics.contains("minoots_timers_fired_total 1"), "{metrics}");
    assert!(metrics.contains("minoots_engine_resyncs_total 1"), "one, for the leadership: {metrics}");
    assert!(metrics.contains("minoots_commits_refused_total 0"), "{metrics}");
    handle.shutdown();
    task.await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_share_commits() {
    let store = Arc::new(ModelStore::new(Arc::new(SystemClock::new())));
    store.set_latency_ms(5); // a commit takes time, as on a disk that syncs
    let (handle, task) = start(store.clone());
    let calls: Vec<_> = (0..500)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move { schedule(&handle, 60_000).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(store.snapshot().timers().len(), 500);
    let metrics = handle.metrics().encode();
    let commits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("minoots_store_commit_batch_size_count "))
        .and_then(|v| v.trim().parse().ok())
        .expect("commit count");
    assert!(commits < 500.0, "500 requests took {commits} commits: no group commit");
    handle.shutdown();
    task.await.unwrap();
}

#[tokio::test]
async fn the_outbox_backlog_of_a_crashed_run_is_relayed_at_the_next_start() {
    let store = Arc::new(ModelStore::new(Arc::new(SystemClock::new())));
    // A run that committed a timer and crashed before its relay ran: the row is unpublished.
    let timer = unrelayed_timer();
    store.execute(StoreOp::Open { node_id: "crashed".into() }).await.unwrap();
    let batch = CommitBatch {
        epoch: 1,
        node_id: "crashed".into(),
        creates: vec![timer.clone()],
        ..Default::default()
    };
    store.execute(StoreOp::Commit(batch)).await.unwrap();
    let backlog = store.outbox_unpublished(0, 100).await.unwrap();
    assert_eq!(backlog.len(), 1);

    // A subscriber of the restarted node sees it, then the row is marked published.
    let (handle, task) = start(store.clone());
    let mut events = handle.subscribe();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("relayed").unwrap();
    assert_eq!((event.timer_id, event.kind), (timer.id, EventKind::Scheduled));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(store.outbox_unpublished(0, 100).await.unwrap().is_empty(), "marked published after relay");
    handle.shutdown();
    task.await.unwrap();
}

fn unrelayed_timer() -> TimerRecord {
    let id = minoots_core::ids::IdGenerator::from_seed(3).next_id(0);
    once_timer(id, &tenant(), 0, i64::MAX / 2)
}

#[tokio::test]
async fn a_store_outage_is_reported_and_recovered_from() {
    let store = Arc::new(ModelStore::new(Arc::new(SystemClock::new())));
    let (handle, task) = start(store.clone());
    assert!(handle.wait_for_role(minoots_node::NodeRole::Leader).await);
    store.set_failing(true);
    let draft = TimerDraft { tenant_id: Some(tenant()), duration_ms: Some(100), ..Default::default() };
    let refused = handle.call(Command::Schedule(draft)).await;
    assert!(matches!(refused, Err(ApiError::Unavailable { .. })), "got {refused:?}");
    store.set_failing(false);
    let timer = schedule(&handle, 100).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store.snapshot().fires().contains_key(&(timer.id, 1)));
    handle.shutdown();
    task.await.unwrap();
}

#[tokio::test]
async fn after_shutdown_calls_are_refused_with_a_retry_hint() {
    let store = Arc::new(ModelStore::new(Arc::new(SystemClock::new())));
    let (handle, task) = start(store);
    assert!(handle.wait_for_role(minoots_node::NodeRole::Leader).await);
    handle.shutdown();
    task.await.unwrap();
    let draft = TimerDraft { tenant_id: Some(tenant()), duration_ms: Some(100), ..Default::default() };
    let refused = handle.call(Command::Schedule(draft)).await;
    assert!(matches!(refused, Err(ApiError::Unavailable { retry_after_ms, .. }) if retry_after_ms > 0));
    assert_eq!(handle.status().role, minoots_node::NodeRole::Stopped);
}
