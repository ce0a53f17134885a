//! The Raft mode's SQLite state (`sqlite::replica`): replicated writes
//! applied at the proposer's stamp with the applied mark in one
//! transaction, fenced by the Raft term, and consistent copies that another
//! node installs whole.
#![cfg(not(madsim))]

use std::path::Path;
use std::sync::Arc;

use minoots_core::error::StoreReject;
use minoots_core::store::{AfterFire, CommitBatch, FireOp, StoreOp, StoreReply};
use minoots_core::{Now, TenantId, TimerId};
use minoots_node::clock::{Clock, ManualClock};
use minoots_node::keys::{ApiKeyRecord, KeyStore};
use minoots_node::store::Store;
use minoots_store::SqliteStore;
use minoots_store::sqlite::replica::{ReplicatedReply, ReplicatedWrite};
use minoots_testkit::conformance::{START_MS, once_timer};

async fn open(path: &Path) -> SqliteStore {
    // The clock never matters: every replicated write carries its own stamp.
    let clock = Arc::new(ManualClock::new(Now::new(0, 0)));
    SqliteStore::open(path, clock as Arc<dyn Clock>).await.expect("open the store")
}

fn tenant() -> TenantId {
    TenantId::parse("tenantId", "acme").expect("tenant")
}

fn lead(node: &str, term: u64) -> ReplicatedWrite {
    ReplicatedWrite::Lead { node_id: node.into(), address: format!("rest=http://{node}"), term }
}

fn commit(stamp_ms: i64, node: &str, term: u64, build: impl FnOnce(&mut CommitBatch)) -> ReplicatedWrite {
    let mut batch = CommitBatch { epoch: term, node_id: node.into(), ..Default::default() };
    build(&mut batch);
    ReplicatedWrite::Commit { stamp_ms, batch }
}

fn fire(id: TimerId, due_ms: i64) -> FireOp {
    FireOp { timer_id: id, occurrence: 1, due_ms, then: AfterFire::Finished, skipped: false }
}

fn outcome(reply: &ReplicatedReply) -> &minoots_core::store::CommitOutcome {
    match reply {
        ReplicatedReply::Committed(reply) => match &**reply {
            StoreReply::Committed { outcome, .. } => outcome,
            other => panic!("not a commit reply: {other:?}"),
        },
        other => panic!("not a commit reply: {other:?}"),
    }
}

async fn fires(store: &SqliteStore, id: TimerId) -> usize {
    let op = StoreOp::ListFires { tenant_id: tenant(), timer_id: id, after_occurrence: 0, limit: 10 };
    match store.execute(op).await.expect("list fires") {
        StoreReply::Fires(Some(fires)) => fires.len(),
        other => panic!("fires: {other:?}"),
    }
}

#[tokio::test]
async fn replicated_writes_apply_at_the_stamp_fenced_by_the_term() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("state.db")).await;
    let id = TimerId(uuid::Uuid::from_u128(7));
    let due = START_MS + 1_000;
    let writes = vec![
        lead("n1", 2),
        commit(START_MS, "n1", 2, |b| b.creates.push(once_timer(id, &tenant(), START_MS, due))),
        // Proposed before its due time by the leader's clock: refused, never early.
        commit(due - 1, "n1", 2, |b| b.fires.push(fire(id, due))),
    ];
    let replies = store.apply_replicated(&writes, "mark-1").await.expect("apply");
    assert_eq!(replies[0], ReplicatedReply::Applied);
    assert!(outcome(&replies[1]).creates[0].is_ok(), "{:?}", replies[1]);
    assert!(matches!(outcome(&replies[2]).fires[0], Err(StoreReject::TooEarly { .. })), "{:?}", replies[2]);
    assert_eq!(store.replica_mark().await.expect("mark"), Some("mark-1".to_owned()));
    assert_eq!(fires(&store, id).await, 0);

    // A newer term takes over; the deposed leader's late fire applies nothing,
    // and a replayed barrier of the old term changes nothing.
    let writes = vec![
        lead("n2", 3),
        commit(due, "n1", 2, |b| b.fires.push(fire(id, due))),
        lead("n1", 2),
        commit(due, "n2", 3, |b| b.fires.push(fire(id, due))),
        // The same fire replayed: recorded once.
        commit(due + 5, "n2", 3, |b| b.fires.push(fire(id, due))),
    ];
    let replies = store.apply_replicated(&writes, "mark-2").await.expect("apply");
    assert!(matches!(outcome(&replies[1]).fires[0], Err(StoreReject::StaleEpoch { .. })), "{:?}", replies[1]);
    assert!(outcome(&replies[3]).fires[0].is_ok(), "{:?}", replies[3]);
    assert!(outcome(&replies[4]).fires[0].is_err(), "a replay is re-checked: {:?}", replies[4]);
    assert_eq!(fires(&store, id).await, 1);
    let leader = store.replica_leader().await.expect("leader").expect("a leader");
    assert_eq!((leader.node_id.as_str(), leader.epoch), ("n2", 3));
}

#[tokio::test]
async fn a_copy_installs_whole_on_another_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = open(&dir.path().join("a.db")).await;
    let id = TimerId(uuid::Uuid::from_u128(9));
    let due = START_MS + 10;
    let key = ApiKeyRecord {
        id: "key_1".into(),
        tenant_id: tenant(),
        roles: Default::default(),
        label: "l".into(),
        created_at_ms: START_MS,
        revoked_at_ms: None,
    };
    let writes = vec![
        lead("n1", 1),
        ReplicatedWrite::InsertKey { record: key.clone(), key_hash: "h1".into() },
        commit(START_MS, "n1", 1, |b| b.creates.push(once_timer(id, &tenant(), START_MS, due))),
        commit(due, "n1", 1, |b| b.fires.push(fire(id, due))),
    ];
    source.apply_replicated(&writes, "at-4").await.expect("apply");
    let copy = dir.path().join("copy.db");
    assert_eq!(source.copy_replica_to(&copy).await.expect("copy"), Some("at-4".to_owned()));

    // The target holds other state first: all of it is replaced.
    let target = open(&dir.path().join("b.db")).await;
    let other = TimerId(uuid::Uuid::from_u128(10));
    let stale = vec![
        lead("n9", 1),
        commit(START_MS, "n9", 1, |b| b.creates.push(once_timer(other, &tenant(), START_MS, due))),
    ];
    target.apply_replicated(&stale, "stale").await.expect("apply");
    target.install_replica_from(&copy).await.expect("install");
    assert_eq!(target.replica_mark().await.expect("mark"), Some("at-4".to_owned()));
    assert_eq!(fires(&target, id).await, 1);
    let get = |timer_id| StoreOp::Get { tenant_id: tenant(), timer_id };
    assert!(matches!(target.execute(get(other)).await, Ok(StoreReply::Timer(None))), "the old state is gone");
    assert_eq!(target.find_key("h1").await.expect("key"), Some(key));
    let leader = target.replica_leader().await.expect("leader").expect("a leader");
    assert_eq!(leader.node_id, "n1");
}
