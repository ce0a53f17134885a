//! What a durable store keeps across reopening and what its outbox pruning
//! deletes: the scenarios that need the same data opened twice, or the
//! store's retention settings, so they cannot run on the in-memory model.
//! Each durable store runs them ([`run_durability_suite`]) with an `open`
//! function that opens the data named by a place (a file, a schema) — a
//! second call with the same place reopens it — configured with
//! [`RETENTION`]. (That a failed commit applies nothing is the conformance
//! suite's `impossible_items`, on every store.)

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use minoots_core::ids::IdGenerator;
use minoots_core::store::{AfterFire, CancelOp, CommitBatch, StoreOp, StoreReply};
use minoots_core::timer::TimerRecord;
use minoots_core::{Now, StoreFailure, StoreReject};
use minoots_node::clock::ManualClock;
use minoots_node::keys::{ApiKeyRecord, KeyStore, hash_api_key};
use minoots_node::store::Store;

use crate::conformance::{Check, Failure, Outcome, START_MS, fire, tenant};

/// The outbox retention every store under this suite is opened with.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Published rows beyond the last this many are pruned.
    pub keep_published_rows: u64,
    /// Published rows older than this are pruned.
    pub keep_ms: i64,
    /// Every this many marks prune by themselves.
    pub prune_every: u64,
}

/// The retention [`run_durability_suite`] expects its stores opened with.
pub const RETENTION: Retention = Retention { keep_published_rows: 5, keep_ms: 60_000, prune_every: 3 };

/// Runs the durability scenarios. `open(place, clock)` opens (or reopens)
/// the store at `place` with store clock `clock` and [`RETENTION`];
/// `prune` runs the store's outbox pruning once, returning the rows deleted.
pub async fn run_durability_suite<S, Open, Opened>(
    mut open: Open,
    prune: fn(&S) -> BoxFuture<'_, Result<u64, StoreFailure>>,
) -> Result<(), Vec<Failure>>
where
    S: Store + KeyStore,
    Open: FnMut(String, Arc<ManualClock>) -> Opened,
    Opened: Future<Output = S>,
{
    let mut failures = Vec::new();
    let name = "reopen_keeps_committed_state";
    if let Err(message) = reopen_keeps_committed_state(&mut open, name).await {
        failures.push(Failure { scenario: name.into(), message });
    }
    let name = "published_outbox_rows_are_pruned";
    if let Err(message) = published_outbox_rows_are_pruned(&mut open, prune, name).await {
        failures.push(Failure { scenario: name.into(), message });
    }
    if failures.is_empty() { Ok(()) } else { Err(failures) }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Now::new(START_MS, 1_000)))
}

fn failed(doing: &str) -> impl Fn(StoreFailure) -> String + '_ {
    move |e| format!("{doing}: {e:?}")
}

async fn execute<S: Store>(store: &S, op: StoreOp) -> Result<StoreReply, String> {
    store.execute(op).await.map_err(failed("a store operation"))
}

async fn open_epoch<S: Store>(store: &S) -> Result<u64, String> {
    match execute(store, StoreOp::Open { node_id: "n1".into() }).await? {
        StoreReply::Opened { epoch } => Ok(epoch),
        other => Err(format!("Open answered {other:?}")),
    }
}

/// Committed timers, fires, outbox rows, counters and keys survive a crash
/// (dropped without closing) and a reopening; the epoch keeps counting, a
/// commit of the epoch before the restart is fenced, and outbox numbering
/// continues.
async fn reopen_keeps_committed_state<S, Open, Opened>(open: &mut Open, place: &str) -> Outcome
where
    S: Store + KeyStore,
    Open: FnMut(String, Arc<ManualClock>) -> Opened,
    Opened: Future<Output = S>,
{
    let clock = clock();
    let a = tenant("tenant-a");
    let store = open(place.into(), clock.clone()).await;
    let mut c = Check::new(&store, clock.clone());
    ensure_eq!(c.open().await?, 1, "first Open");
    let (t1, t2): (TimerRecord, TimerRecord) = (c.timer(&a, c.now() - 10), c.timer(&a, c.now() + 60_000));
    let batch = CommitBatch {
        creates: vec![t1.clone(), t2.clone()],
        fires: vec![fire(&t1, AfterFire::Finished)],
        ..c.batch()
    };
    let (outcome, events) = c.commit(batch).await?;
    ensure_eq!(events.len(), 3, "two creates and a fire");
    let fired = match &outcome.fires[0] {
        Ok(fired) => fired.clone(),
        Err(e) => return Err(format!("the fire was refused: {e:?}")),
    };
    store.outbox_mark_published(1).await.map_err(failed("marking"))?;
    let key = ApiKeyRecord {
        id: "key_1".into(),
        tenant_id: a.clone(),
        roles: Default::default(),
        label: "dev".into(),
        created_at_ms: START_MS,
        revoked_at_ms: None,
    };
    store.insert_key(key, hash_api_key("secret")).await.map_err(failed("inserting a key"))?;
    drop(c);
    drop(store); // without closing: what a crash after the commit leaves

    let store = open(place.into(), clock.clone()).await;
    let get = |id| StoreOp::Get { tenant_id: a.clone(), timer_id: id };
    ensure_eq!(execute(&store, get(t1.id)).await?, StoreReply::Timer(Some(fired.timer)), "the fired timer");
    ensure_eq!(
        execute(&store, get(t2.id)).await?,
        StoreReply::Timer(Some(t2.clone())),
        "JSON comes back exactly"
    );
    let fires = execute(
        &store,
        StoreOp::ListFires { tenant_id: a.clone(), timer_id: t1.id, after_occurrence: 0, limit: 10 },
    )
    .await?;
    ensure_eq!(fires, StoreReply::Fires(Some(fired.fire.into_iter().collect())), "the fire record");
    let backlog = store.outbox_unpublished(0, 100).await.map_err(failed("reading the outbox"))?;
    ensure_eq!(backlog, events[1..].to_vec(), "the unpublished outbox rows");
    ensure_eq!(store.count_pending().await.map_err(failed("counting"))?, 1, "pending timers");
    let key = store.find_key(&hash_api_key("secret")).await.map_err(failed("finding a key"))?;
    ensure!(key.is_some(), "the API key is kept");
    ensure_eq!(open_epoch(&store).await?, 2, "the epoch bumps on the next Open");
    let stale = CommitBatch {
        epoch: 1,
        node_id: "n1".into(),
        cancels: vec![CancelOp {
            tenant_id: a.clone(),
            timer_id: t2.id,
            cancelled_by: "old".into(),
            reason: None,
        }],
        ..CommitBatch::default()
    };
    let StoreReply::Committed { outcome, events } = execute(&store, StoreOp::Commit(stale)).await? else {
        return Err("a commit answered something else".into());
    };
    ensure_eq!(outcome.cancels[0].clone(), Err(StoreReject::StaleEpoch { current_epoch: 2 }), "fenced");
    ensure!(events.is_empty(), "a fenced commit writes no event: {events:?}");
    drop(store);

    let store = open(place.into(), clock.clone()).await;
    ensure_eq!(open_epoch(&store).await?, 3, "third Open");
    // An id of another generator than the first run's (whose ids t1 and t2 are).
    let id = IdGenerator::from_seed(u64::MAX).next_id(START_MS);
    let fresh = TimerRecord { id, shard: id.shard(), ..t2 };
    let batch =
        CommitBatch { epoch: 3, node_id: "n1".into(), creates: vec![fresh], ..CommitBatch::default() };
    let StoreReply::Committed { events, .. } = execute(&store, StoreOp::Commit(batch)).await? else {
        return Err("a commit answered something else".into());
    };
    ensure_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4], "numbering continues");
    Ok(())
}

/// Published rows go once beyond the last [`RETENTION`] rows or older than
/// its age; unpublished rows never; every `prune_every`-th mark prunes by
/// itself; numbering continues after everything published was pruned.
async fn published_outbox_rows_are_pruned<S, Open, Opened>(
    open: &mut Open,
    prune: fn(&S) -> BoxFuture<'_, Result<u64, StoreFailure>>,
    place: &str,
) -> Outcome
where
    S: Store + KeyStore,
    Open: FnMut(String, Arc<ManualClock>) -> Opened,
    Opened: Future<Output = S>,
{
    let clock = clock();
    let a = tenant("tenant-a");
    let store = open(place.into(), clock.clone()).await;
    let mut c = Check::new(&store, clock.clone());
    c.open().await?;
    let creates = (0..20).map(|_| c.timer(&a, START_MS + 1_000_000)).collect();
    c.create_all(creates).await?;
    let seqs =
        |events: Vec<minoots_core::event::OutboxEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let backlog = || async { store.outbox_unpublished(0, 100).await.map_err(failed("reading the outbox")) };
    let store = &store;
    let mark = |up_to| async move { store.outbox_mark_published(up_to).await.map_err(failed("marking")) };

    // Marks 1 and 2 do not prune by themselves (every third does).
    mark(12).await?;
    ensure_eq!(prune(store).await.map_err(failed("pruning"))?, 7, "publishing 12 of 20 keeps the last 5");
    ensure_eq!(prune(store).await.map_err(failed("pruning"))?, 0, "nothing more to prune");
    ensure_eq!(seqs(backlog().await?), (13..=20).collect::<Vec<_>>(), "the unpublished rows stay");

    clock.advance(3_600_000);
    mark(15).await?;
    ensure_eq!(prune(store).await.map_err(failed("pruning"))?, 8, "an hour later every published row is old");
    ensure_eq!(seqs(backlog().await?), (16..=20).collect::<Vec<_>>(), "the unpublished rows stay");

    mark(20).await?; // the third mark prunes by itself
    ensure_eq!(prune(store).await.map_err(failed("pruning"))?, 0, "the third mark pruned already");
    let fresh = c.timer(&a, START_MS);
    let (_, events) = c.commit(CommitBatch { creates: vec![fresh], ..c.batch() }).await?;
    ensure_eq!(seqs(events), vec![21], "numbering continues after pruning everything published");
    Ok(())
}
