//! The outbox relay on paused tokio time (so every assertion is about scan
//! ticks and backoffs, never about how fast the machine is): after a node
//! becomes leader, its backlog and its live rows reach the sink before the
//! next scan tick, in `seq` order and once each; while the sink backs off
//! after a failure, or the store fails, live rows do not start scans (the
//! tick retries).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_core::ids::IdGenerator;
use minoots_core::store::{CommitBatch, StoreOp, StoreReply};
use minoots_core::timer::TimerRecord;
use minoots_core::{StoreFailure, TenantId};
use minoots_node::metrics::Metrics;
use minoots_node::relay::{self, RelayOutputs, RelaySignals, SCAN_EVERY_MS, SINK_RETRY_MIN_MS};
use minoots_node::{EventSink, Store, SystemClock};
use minoots_testkit::conformance::once_timer;
use minoots_testkit::model_store::ModelStore;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::time::Instant;

/// A sink that records when (paused-time ms since the test began) it accepted which row.
#[derive(Debug)]
struct RecordingSink {
    origin: Instant,
    accepted: Mutex<Vec<(u64, u64)>>,
    calls: AtomicUsize,
    failing: AtomicBool,
}

impl RecordingSink {
    fn new(origin: Instant) -> Arc<Self> {
        Arc::new(Self {
            origin,
            accepted: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        })
    }

    fn accepted(&self) -> Vec<(u64, u64)> {
        self.accepted.lock().unwrap().clone()
    }

    fn seqs(&self) -> Vec<u64> {
        self.accepted().into_iter().map(|(seq, _)| seq).collect()
    }
}

impl EventSink for RecordingSink {
    fn publish<'a>(&'a self, rows: &'a [OutboxEvent]) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return 0;
            }
            let at_ms = self.origin.elapsed().as_millis() as u64;
            self.accepted.lock().unwrap().extend(rows.iter().map(|r| (r.seq, at_ms)));
            rows.len()
        })
    }
}

/// The reference store, counting the relay's scans (first pages of `outbox_unpublished_seqs`).
struct CountingStore {
    inner: ModelStore,
    scans: AtomicUsize,
    /// Rows read as events (`outbox_unpublished`).
    rows_read: AtomicUsize,
}

impl Store for CountingStore {
    fn execute(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>> {
        self.inner.execute(op)
    }

    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>> {
        Box::pin(async move {
            let rows = self.inner.outbox_unpublished(after_seq, limit).await?;
            self.rows_read.fetch_add(rows.len(), Ordering::SeqCst);
            Ok(rows)
        })
    }

    fn outbox_unpublished_seqs(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreFailure>> {
        if after_seq == 0 {
            self.scans.fetch_add(1, Ordering::SeqCst); // a scan's first page
        }
        self.inner.outbox_unpublished_seqs(after_seq, limit)
    }

    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>> {
        self.inner.outbox_mark_published(up_to_seq)
    }

    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        self.inner.count_pending()
    }

    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a minoots_core::TenantId,
        day_start_ms: minoots_core::WallMs,
    ) -> BoxFuture<'a, Result<minoots_core::quota::TenantUsage, StoreFailure>> {
        self.inner.tenant_usage(tenant, day_start_ms)
    }
}

struct Harness {
    origin: Instant,
    store: Arc<CountingStore>,
    sink: Arc<RecordingSink>,
    ids: IdGenerator,
    leader: watch::Sender<bool>,
    committed: Option<mpsc::UnboundedSender<Vec<OutboxEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A relay with a sink, not leading yet, over a store whose outbox holds
    /// `backlog` unpublished rows (a crashed leader's).
    async fn start(backlog: usize, leading: bool) -> Self {
        let origin = Instant::now();
        let clock = Arc::new(SystemClock::new());
        let store = Arc::new(CountingStore {
            inner: ModelStore::new(clock.clone()),
            scans: AtomicUsize::new(0),
            rows_read: AtomicUsize::new(0),
        });
        store.execute(StoreOp::Open { node_id: "crashed".into() }).await.unwrap();
        let sink = RecordingSink::new(origin);
        let (leader, leader_rx) = watch::channel(leading);
        let (committed, committed_rx) = mpsc::unbounded_channel();
        let signals = RelaySignals { leader: leader_rx, rescan: Arc::new(Notify::new()) };
        let outputs = RelayOutputs {
            subscribers: broadcast::channel(1_024).0,
            sink: Some(sink.clone() as Arc<dyn EventSink>),
            metrics: Arc::new(Metrics::new()),
            clock,
        };
        let mut harness = Harness {
            origin,
            store: store.clone(),
            sink,
            ids: IdGenerator::from_seed(11),
            leader,
            committed: Some(committed),
            task: tokio::spawn(relay::run(store, committed_rx, signals, outputs)),
        };
        harness.commit(backlog).await;
        harness
    }

    /// Commits `n` creates; returns their outbox rows.
    async fn commit(&mut self, n: usize) -> Vec<OutboxEvent> {
        let before = self.store.inner.snapshot().outbox().last().map_or(0, |r| r.seq);
        let creates = (0..n).map(|_| timer(self.ids.next_id(0))).collect();
        let batch = CommitBatch { epoch: 1, node_id: "crashed".into(), creates, ..Default::default() };
        self.store.execute(StoreOp::Commit(batch)).await.unwrap();
        let rows: Vec<OutboxEvent> =
            self.store.inner.snapshot().outbox().iter().filter(|r| r.seq > before).cloned().collect();
        assert_eq!(rows.len(), n);
        rows
    }

    /// Commits `n` creates and hands their rows to the relay, as the engine does after a commit.
    async fn commit_live(&mut self, n: usize) -> Vec<u64> {
        let rows = self.commit(n).await;
        let seqs = rows.iter().map(|r| r.seq).collect();
        self.committed.as_ref().unwrap().send(rows).unwrap();
        seqs
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The first scan tick strictly after `at_ms` (the relay's interval starts with the test).
    fn next_tick_after(at_ms: u64) -> u64 {
        (at_ms / SCAN_EVERY_MS + 1) * SCAN_EVERY_MS
    }

    /// Lets paused time run until the sink has accepted `n` rows (at most `limit_ms` of it).
    async fn until_sink_has(&self, n: usize, limit_ms: u64) {
        let deadline = self.now_ms() + limit_ms;
        while self.sink.accepted().len() < n {
            assert!(self.now_ms() < deadline, "sink got {:?}, wanted {n} rows", self.sink.accepted());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn unpublished(&self) -> Vec<u64> {
        self.store.inner.outbox_unpublished(0, 1_000).await.unwrap().iter().map(|r| r.seq).collect()
    }

    async fn stop(mut self) {
        self.committed = None;
        self.task.await.unwrap();
    }
}

fn tenant() -> TenantId {
    TenantId::parse("tenantId", "acme").unwrap()
}

fn timer(id: minoots_core::ids::TimerId) -> TimerRecord {
    TimerRecord { requested_by: String::new(), ..once_timer(id, &tenant(), 0, i64::MAX / 2) }
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_hands_its_backlog_to_the_sink_before_the_next_scan_tick() {
    let h = Harness::start(3, false).await;
    // Between two ticks, this node becomes leader (a restart's store open, or a failover).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let became_leader_ms = h.now_ms();
    h.leader.send(true).unwrap();

    h.until_sink_has(3, 5 * SCAN_EVERY_MS).await;
    let next_tick_ms = Harness::next_tick_after(became_leader_ms);
    for (seq, at_ms) in h.sink.accepted() {
        assert!(
            at_ms < next_tick_ms,
            "backlog row {seq} reached the sink at {at_ms} ms, not before the tick at {next_tick_ms} ms"
        );
    }
    assert_eq!(h.sink.seqs(), vec![1, 2, 3], "in seq order, once each");
    assert!(h.unpublished().await.is_empty(), "the scan marked what the sink accepted");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_failover_live_rows_follow_the_backlog_to_the_sink_at_once_and_in_order() {
    let mut h = Harness::start(3, false).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let became_leader_ms = h.now_ms();
    // The new leader's first fires commit while it takes over.
    h.leader.send(true).unwrap();
    let live = h.commit_live(2).await;
    assert_eq!(live, vec![4, 5]);

    h.until_sink_has(5, 5 * SCAN_EVERY_MS).await;
    let next_tick_ms = Harness::next_tick_after(became_leader_ms);
    for (seq, at_ms) in h.sink.accepted() {
        assert!(
            at_ms < next_tick_ms,
            "row {seq} reached the sink at {at_ms} ms, not before the tick at {next_tick_ms} ms"
        );
    }
    // The sink is live now: later rows go straight to it, behind the others.
    let more = h.commit_live(2).await;
    let sent_ms = h.now_ms();
    h.until_sink_has(7, 5 * SCAN_EVERY_MS).await;
    assert!(h.sink.accepted()[5..].iter().all(|(_, at_ms)| *at_ms < Harness::next_tick_after(sent_ms)));
    assert_eq!(h.sink.seqs(), vec![1, 2, 3, 4, 5, more[0], more[1]], "in seq order, once each");
    // Everything is marked published once a scan has covered it (at the latest, the next tick).
    tokio::time::sleep(Duration::from_millis(2 * SCAN_EVERY_MS)).await;
    assert!(h.unpublished().await.is_empty());
    assert_eq!(h.sink.seqs().len(), 7, "no row offered twice");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn live_rows_after_a_sink_failure_start_the_catch_up_scan_once_the_backoff_ends() {
    let h = Harness::start(2, true).await;
    h.sink.failing.store(true, Ordering::SeqCst);
    // The first tick (at once) scans as leader; the sink refuses: it backs off.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(h.sink.calls.load(Ordering::SeqCst), 1);
    assert!(h.sink.accepted().is_empty());
    h.sink.failing.store(false, Ordering::SeqCst);
    assert!(h.unpublished().await.len() == 2, "nothing marked while the sink refuses");

    // After the backoff, between two ticks, live rows arrive.
    let mut h = h;
    tokio::time::sleep(Duration::from_millis(SINK_RETRY_MIN_MS + 50 - 1)).await;
    let sent_ms = h.now_ms();
    let next_tick_ms = Harness::next_tick_after(sent_ms);
    assert!(sent_ms > SINK_RETRY_MIN_MS && sent_ms % SCAN_EVERY_MS != 0, "between ticks, after the backoff");
    assert!(h.sink.accepted().is_empty(), "no tick scanned since the backoff ended");
    let live = h.commit_live(1).await;

    h.until_sink_has(3, 5 * SCAN_EVERY_MS).await;
    assert_eq!(h.sink.seqs(), vec![1, 2, live[0]], "backlog first, then the live row");
    for (seq, at_ms) in h.sink.accepted() {
        assert!(
            at_ms < next_tick_ms,
            "row {seq} reached the sink at {at_ms} ms, not before the tick at {next_tick_ms} ms"
        );
    }
    assert!(h.unpublished().await.is_empty(), "the catch-up scan marked what the sink accepted");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn while_the_sink_backs_off_live_rows_wait_for_the_tick() {
    let mut h = Harness::start(2, true).await;
    h.sink.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let scans_after_failure = h.store.scans.load(Ordering::SeqCst);
    assert_eq!(scans_after_failure, 1, "the first tick's scan");
    // Live rows every 10 ms inside the backoff (which ends at SINK_RETRY_MIN_MS), before the next tick.
    for _ in 0..10 {
        h.commit_live(1).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.now_ms() < SCAN_EVERY_MS.min(SINK_RETRY_MIN_MS));
    assert_eq!(
        h.store.scans.load(Ordering::SeqCst),
        scans_after_failure,
        "no scan per live batch while backing off"
    );
    assert_eq!(h.sink.calls.load(Ordering::SeqCst), 1, "the sink is not retried inside its backoff");

    // Once the sink recovers, everything arrives in order.
    h.sink.failing.store(false, Ordering::SeqCst);
    h.until_sink_has(12, 10 * SCAN_EVERY_MS).await;
    assert_eq!(h.sink.seqs(), (1..=12).collect::<Vec<_>>());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_failed_scan_live_rows_wait_for_the_tick() {
    let mut h = Harness::start(2, true).await;
    h.store.inner.set_failing(true);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(h.store.scans.load(Ordering::SeqCst), 1, "the first tick's scan, failed");
    // The store is back, but the relay has not scanned since; live rows arrive before the next tick.
    h.store.inner.set_failing(false);
    h.commit_live(1).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.commit_live(1).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(h.now_ms() < SCAN_EVERY_MS);
    assert_eq!(
        h.store.scans.load(Ordering::SeqCst),
        1,
        "a store failure is retried by the tick, not per commit"
    );
    assert!(h.sink.accepted().is_empty());

    // The tick's scan recovers; then rows go to the sink in order.
    h.until_sink_has(4, 5 * SCAN_EVERY_MS).await;
    assert_eq!(h.sink.seqs(), vec![1, 2, 3, 4]);
    assert!(
        h.sink.accepted().iter().all(|(_, at_ms)| *at_ms >= SCAN_EVERY_MS),
        "delivered by the tick's scan"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_scan_marks_rows_sent_live_without_reading_them_again() {
    let mut h = Harness::start(2, true).await;
    h.until_sink_has(2, 5 * SCAN_EVERY_MS).await;
    tokio::time::sleep(Duration::from_millis(SCAN_EVERY_MS)).await;
    assert!(h.unpublished().await.is_empty(), "the backlog is marked");
    let read_for_the_backlog = h.store.rows_read.load(Ordering::SeqCst);
    assert_eq!(read_for_the_backlog, 2, "the backlog was read once, to be sent");

    let live = h.commit_live(5).await;
    h.until_sink_has(7, SCAN_EVERY_MS).await;
    let scans_before = h.store.scans.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2 * SCAN_EVERY_MS)).await;
    assert!(h.store.scans.load(Ordering::SeqCst) > scans_before, "a scan covered the live rows");
    assert!(h.unpublished().await.is_empty(), "and marked them");
    assert_eq!(h.store.rows_read.load(Ordering::SeqCst), read_for_the_backlog, "without reading them");

    // A row committed but never handed to the relay live is still read and sent by a scan (the idle one).
    let missed = h.commit(1).await;
    h.store.rows_read.store(0, Ordering::SeqCst);
    h.until_sink_has(8, 6_000).await;
    tokio::time::sleep(Duration::from_millis(SCAN_EVERY_MS)).await;
    assert_eq!(h.sink.seqs(), [vec![1, 2], live, vec![missed[0].seq]].concat(), "in seq order, once each");
    assert_eq!(h.store.rows_read.load(Ordering::SeqCst), 1, "only the row the relay had not sent");
    assert!(h.unpublished().await.is_empty());
    h.stop().await;
}
