//! `PostgresStore` against a private PostgreSQL server (started by the test:
//! initdb in a temp dir, its own port on 127.0.0.1, `fsync=on`):
//! - the conformance suite (same replies as the reference model), with the
//!   suite's manual clock injected as the store clock;
//! - what only the database clock can show, with real short lease TTLs:
//!   lease expiry and takeover, fencing of a deposed holder, never early;
//! - the locking: a takeover waits for a commit's lease check, a renewal
//!   does not, and a stalled transaction cannot block a takeover for longer
//!   than `idle_in_transaction_session_timeout`;
//! - durability across reopening and outbox pruning (the suite of
//!   `minoots_testkit::durability`);
//! - the due scan: an index range scan that finds nothing among 200,000
//!   timers due beyond the horizon, and a node on that store keeps none of
//!   them in memory.
//!
//! If PostgreSQL cannot be started, these tests fail (never skip).
#![cfg(not(madsim))]

#[path = "../../../tests/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use minoots_core::engine::{EngineConfig, LeadershipMode};
use minoots_core::lease::{LeaseConfig, LeaseHolder};
use minoots_core::store::{
    AfterFire, CancelOp, CommitBatch, FireOp, LEASE_SHARD, LeaseReply, StoreOp, StoreReply,
};
use minoots_core::timer::TimerRecord;
use minoots_core::{StoreReject, TenantId, TimerId};
use minoots_node::clock::{Clock, ManualClock, SystemClock};
use minoots_node::store::Store;
use minoots_node::{NodeConfig, driver::start_node_with};
use minoots_store::{ClockSource, PostgresConfig, PostgresStore};
use minoots_testkit::conformance::{once_timer, report, run_all};
use minoots_testkit::durability::{RETENTION, run_durability_suite};
use pg::PgServer;

fn config(server: &PgServer, schema: &str, clock: ClockSource) -> PostgresConfig {
    PostgresConfig { schema: Some(schema.into()), clock, ..PostgresConfig::new(server.url("postgres")) }
}

async fn open(server: &PgServer, schema: &str, clock: ClockSource) -> PostgresStore {
    PostgresStore::open(config(server, schema, clock)).await.expect("open the PostgreSQL store")
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse("tenantId", name).expect("valid tenant")
}

fn timer(n: u128, tenant_id: &TenantId, created_ms: i64, due_ms: i64) -> TimerRecord {
    let id = TimerId(uuid::Uuid::from_u128((u128::from(created_ms as u64) << 80) | n));
    TimerRecord {
        labels: [("k".to_owned(), "v".to_owned())].into(),
        metadata: Some(
            serde_json::json!({ "pi": std::f64::consts::PI, "big": 1e16, "tiny": 1e-300, "nul": "a\u{0}b" }),
        ),
        idempotency_key: Some(format!("idem-{n}")),
        request_fingerprint: u64::MAX - n as u64,
        ..once_timer(id, tenant_id, created_ms, due_ms)
    }
}

async fn execute(store: &PostgresStore, op: StoreOp) -> StoreReply {
    store.execute(op).await.expect("store operation")
}

async fn acquire(store: &PostgresStore, node: &str, ttl_ms: u64) -> LeaseReply {
    let op = StoreOp::AcquireLease {
        shard: LEASE_SHARD,
        node_id: node.into(),
        tenure: 0,
        address: format!("{node}:1"),
        ttl_ms,
    };
    match execute(store, op).await {
        StoreReply::Lease(reply) => reply,
        other => panic!("AcquireLease answered {other:?}"),
    }
}

async fn renew(store: &PostgresStore, node: &str, epoch: u64, ttl_ms: u64) -> LeaseReply {
    let op = StoreOp::RenewLease { shard: LEASE_SHARD, node_id: node.into(), epoch, ttl_ms };
    match execute(store, op).await {
        StoreReply::Lease(reply) => reply,
        other => panic!("RenewLease answered {other:?}"),
    }
}

async fn commit(store: &PostgresStore, batch: CommitBatch) -> (minoots_core::store::CommitOutcome, usize) {
    match execute(store, StoreOp::Commit(batch)).await {
        StoreReply::Committed { outcome, events } => (outcome, events.len()),
        other => panic!("Commit answered {other:?}"),
    }
}

fn granted(reply: LeaseReply) -> u64 {
    match reply {
        LeaseReply::Granted { epoch } => epoch,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let server = PgServer::start();
    let mut n = 0;
    let result = run_all(|clock: Arc<ManualClock>| {
        n += 1;
        let schema = format!("conformance_{n}");
        let server = &server;
        async move { open(server, &schema, ClockSource::Injected(clock)).await }
    })
    .await;
    if let Err(failures) = result {
        panic!("{}", report(&failures));
    }
}

/// Lease expiry, takeover and fencing judged by the database clock, with a
/// real 400 ms lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_clock_leases_expire_and_fence_the_deposed_holder() {
    let server = PgServer::start();
    let store = open(&server, "dbclock_leases", ClockSource::Database).await;
    let a = tenant("tenant-a");
    let now = store.store_now().await.expect("database clock");

    let epoch_a = granted(acquire(&store, "node-a", 400).await);
    assert_eq!(epoch_a, 1);
    let held = acquire(&store, "node-b", 400).await;
    assert_eq!(
        held,
        LeaseReply::Held {
            holder: LeaseHolder { node_id: "node-a".into(), address: "node-a:1".into(), epoch: 1, tenure: 0 }
        }
    );
    assert_eq!(renew(&store, "node-a", epoch_a, 400).await, LeaseReply::Renewed);
    let due = timer(1, &a, now, now - 5);
    let batch = CommitBatch {
        epoch: epoch_a,
        node_id: "node-a".into(),
        creates: vec![due.clone()],
        ..Default::default()
    };
    let (outcome, events) = commit(&store, batch).await;
    assert!(matches!(&outcome.creates[0], Ok(c) if c.created), "{outcome:?}");
    assert_eq!(events, 1);

    // node-a stops renewing: 400 ms of database time later its lease is over.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let epoch_b = granted(acquire(&store, "node-b", 2_000).await);
    assert_eq!(epoch_b, 2, "a takeover bumps the epoch");
    assert_eq!(
        renew(&store, "node-a", epoch_a, 400).await,
        LeaseReply::Lost {
            holder: Some(LeaseHolder {
                node_id: "node-b".into(),
                address: "node-b:1".into(),
                epoch: 2,
                tenure: 0
            })
        },
        "the deposed holder cannot renew"
    );

    // The deposed holder's fire, cancel and create are all refused by fencing.
    let fire = FireOp {
        timer_id: due.id,
        occurrence: 1,
        due_ms: due.next_due_ms,
        then: AfterFire::Finished,
        skipped: false,
    };
    let stale = CommitBatch {
        epoch: epoch_a,
        node_id: "node-a".into(),
        creates: vec![timer(2, &a, now, now + 60_000)],
        cancels: vec![CancelOp {
            tenant_id: a.clone(),
            timer_id: due.id,
            cancelled_by: "old".into(),
            reason: None,
        }],
        fires: vec![fire.clone()],
        ..Default::default()
    };
    let (outcome, events) = commit(&store, stale).await;
    let rejected = StoreReject::StaleEpoch { current_epoch: 2 };
    assert_eq!(outcome.creates, vec![Err(rejected.clone())]);
    assert_eq!(outcome.cancels, vec![Err(rejected.clone())]);
    assert_eq!(outcome.fires, vec![Err(rejected)]);
    assert_eq!(events, 0, "a fenced-out commit writes nothing");

    // The new holder fires it, once.
    let batch = CommitBatch {
        epoch: epoch_b,
        node_id: "node-b".into(),
        fires: vec![fire.clone()],
        ..Default::default()
    };
    let (outcome, _) = commit(&store, batch.clone()).await;
    let fired = outcome.fires[0].clone().expect("the new leader fires");
    let record = fired.fire.expect("a fire record");
    assert_eq!((record.epoch, record.node_id.as_str()), (2, "node-b"));
    assert!(record.fired_at_ms >= due.next_due_ms);
    let (outcome, _) = commit(&store, batch).await;
    assert_eq!(outcome.fires, vec![Err(StoreReject::StateChanged)], "an occurrence is recorded once");
    store.close().await;
}

/// Never early by the database clock: a fire due 300 ms from the database's
/// now is refused until then, and recorded at or after its due time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_clock_never_fires_early() {
    let server = PgServer::start();
    let store = open(&server, "dbclock_early", ClockSource::Database).await;
    let a = tenant("tenant-a");
    let epoch = granted(acquire(&store, "node-a", 60_000).await);
    let now = store.store_now().await.expect("database clock");
    let t = timer(1, &a, now, now + 300);
    let batch =
        CommitBatch { epoch, node_id: "node-a".into(), creates: vec![t.clone()], ..Default::default() };
    commit(&store, batch).await;
    let fire = FireOp {
        timer_id: t.id,
        occurrence: 1,
        due_ms: t.next_due_ms,
        then: AfterFire::Finished,
        skipped: false,
    };
    let batch = CommitBatch { epoch, node_id: "node-a".into(), fires: vec![fire], ..Default::default() };
    let (outcome, _) = commit(&store, batch.clone()).await;
    match &outcome.fires[0] {
        Err(StoreReject::TooEarly { store_now_ms }) => assert!(*store_now_ms < t.next_due_ms),
        other => panic!("a fire before its due time must be refused, got {other:?}"),
    }
    let mut tries = 0;
    let record = loop {
        tries += 1;
        assert!(tries < 200, "the fire was never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (outcome, _) = commit(&store, batch.clone()).await;
        match &outcome.fires[0] {
            Ok(fired) => break fired.fire.clone().expect("fire record"),
            Err(StoreReject::TooEarly { store_now_ms }) => assert!(*store_now_ms < t.next_due_ms),
            Err(other) => panic!("unexpected rejection {other:?}"),
        }
    };
    assert!(record.fired_at_ms >= t.next_due_ms, "fired {} ms early", t.next_due_ms - record.fired_at_ms);
    store.close().await;
}

/// The lease row's locks: a commit's fencing check (FOR KEY SHARE) blocks a
/// takeover but not the holder's renewal; a stalled transaction holding it is
/// ended by the server after `idle_in_transaction_timeout_ms`, so a paused
/// leader cannot block a takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_commit_blocks_a_takeover_only_briefly_and_never_a_renewal() {
    let server = PgServer::start();
    let store = open(&server, "locks", ClockSource::Database).await;
    let epoch = granted(acquire(&store, "node-a", 300).await);

    // A "paused leader": a session inside a transaction that holds the
    // commit's lock on the lease row, then goes silent.
    let idle_timeout_ms = store.config().idle_in_transaction_timeout_ms;
    let options: sqlx::postgres::PgConnectOptions =
        server.url("postgres").parse::<sqlx::postgres::PgConnectOptions>().expect("url").options([
            ("search_path", "locks"),
            ("idle_in_transaction_session_timeout", &idle_timeout_ms.to_string()),
        ]);
    let mut paused = sqlx::ConnectOptions::connect(&options).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut paused).await.expect("begin");
    sqlx::query("SELECT epoch FROM leases WHERE shard = 0 FOR KEY SHARE")
        .execute(&mut paused)
        .await
        .expect("lock");

    // The holder's renewal does not wait for it.
    let started = tokio::time::Instant::now();
    assert_eq!(renew(&store, "node-a", epoch, 300).await, LeaseReply::Renewed);
    assert!(
        started.elapsed() < Duration::from_millis(idle_timeout_ms / 2),
        "a renewal waited for a commit's lock"
    );

    // After the lease expires, a takeover waits for the stalled transaction
    // until the server ends it, then succeeds.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let started = tokio::time::Instant::now();
    let epoch_b = granted(acquire(&store, "node-b", 2_000).await);
    assert_eq!(epoch_b, epoch + 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(idle_timeout_ms / 2),
        "the takeover did not wait for the commit's lock ({waited:?})"
    );
    let next = sqlx::query("SELECT 1").execute(&mut paused).await;
    assert!(next.is_err(), "the stalled session was ended by the server");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_is_durable() {
    let server = PgServer::start();
    let result = run_durability_suite(
        |place: String, clock: Arc<ManualClock>| {
            let config = PostgresConfig {
                outbox_keep_published_rows: RETENTION.keep_published_rows,
                outbox_keep_ms: RETENTION.keep_ms,
                outbox_prune_every: RETENTION.prune_every,
                ..config(&server, &place, ClockSource::Injected(clock as Arc<dyn Clock>))
            };
            async move { PostgresStore::open(config).await.expect("open the PostgreSQL store") }
        },
        |store: &PostgresStore| Box::pin(store.prune_outbox()),
    )
    .await;
    if let Err(failures) = result {
        panic!("{}", report(&failures));
    }
}

/// Horizon loading on PostgreSQL: 200,000 timers due an hour or more from
/// now. The due scan is an index range scan of `timers_due` and finds none
/// of them; a node leading on this store keeps none in memory, and still
/// fires a timer due now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pending_timers_beyond_the_horizon_stay_out_of_memory() {
    const PENDING: u128 = 200_000;
    let server = PgServer::start();
    let store = Arc::new(open(&server, "horizon", ClockSource::Database).await);
    let clock = Arc::new(SystemClock::new());
    let a = tenant("tenant-a");
    let now = store.store_now().await.expect("now");
    let epoch = granted(acquire(&store, "node-h", 60_000).await);
    let started = tokio::time::Instant::now();
    let mut n = 0u128;
    while n < PENDING {
        let creates: Vec<TimerRecord> = (n..(n + 8_192).min(PENDING))
            .map(|i| TimerRecord {
                idempotency_key: None,
                metadata: None,
                ..timer(i, &a, now, now + 3_600_000 + (i as i64 % 3_600_000))
            })
            .collect();
        n += creates.len() as u128;
        let (outcome, _) =
            commit(&store, CommitBatch { epoch, node_id: "node-h".into(), creates, ..Default::default() })
                .await;
        assert!(outcome.creates.iter().all(|c| c.is_ok()));
    }
    println!("inserted {PENDING} pending timers in {:?}", started.elapsed());
    sqlx_analyze(&server).await;

    let plan = store.explain_load_due(now + 60_000, 10_000).await.expect("explain");
    println!("LoadDue plan:\n{plan}");
    assert!(
        plan.contains("Index") && plan.contains("timers_due"),
        "LoadDue is not an index range scan:\n{plan}"
    );
    let started = tokio::time::Instant::now();
    let StoreReply::Loaded { timers, more } =
        execute(&store, StoreOp::LoadDue { after: None, until_ms: now + 60_000, limit: 10_000 }).await
    else {
        panic!("load");
    };
    println!("LoadDue over {PENDING} pending timers beyond the horizon took {:?}", started.elapsed());
    assert!(timers.is_empty() && !more);
    assert_eq!(store.count_pending().await.expect("pending"), PENDING as u64);

    // A node on this store (it takes over its own lease on start).
    let mut engine = EngineConfig::new("node-h", 7);
    engine.mode = LeadershipMode::Lease(LeaseConfig::default());
    let (handle, task) =
        start_node_with(engine, NodeConfig::new("node-h", 7), store.clone(), store.clone(), clock);
    assert!(handle.wait_for_role(minoots_node::NodeRole::Leader).await);
    let draft = minoots_core::draft::TimerDraft {
        tenant_id: Some(a.clone()),
        duration_ms: Some(200),
        ..Default::default()
    };
    let mut events = handle.subscribe();
    let created = handle.call(minoots_core::Command::Schedule(draft)).await.expect("schedule");
    let minoots_core::Response::Scheduled(created) = created else { panic!("{created:?}") };
    let fired = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.expect("event stream");
            if event.timer_id == created.timer.id && event.fire.is_some() {
                break event;
            }
        }
    })
    .await
    .expect("the timer due now fired");
    assert_eq!(fired.occurrence, 1);
    let status = handle.status();
    assert_eq!(status.role, minoots_node::NodeRole::Leader);
    assert_eq!(status.due_index, 0, "nothing beyond the horizon is held in memory");
    handle.shutdown();
    let _ = task.await;
    store.close().await;
}

async fn sqlx_analyze(server: &PgServer) {
    server.psql("postgres", "ANALYZE horizon.timers");
}
