//! The store conformance suite: checks that a [`Store`] (and a [`KeyStore`])
//! implementation has the reference semantics of
//! [`minoots_core::model::StoreModel`], so that every store — the in-memory
//! [`ModelStore`], SQLite, PostgreSQL — behaves the same for the engine.
//!
//! Each scenario gets a fresh, empty store whose store clock is a
//! [`ManualClock`], applies a sequence of operations to it **and** to a fresh
//! `StoreModel` at the same store time, and requires equal replies (whole
//! records, outbox events with their sequence numbers, paging flags). The
//! scenarios also assert the expected outcome itself (a stale epoch is
//! rejected, a second fire is refused, ...), so the suite checks the model as
//! much as the store. The outbox calls and the pending count are compared
//! with what [`ModelStore`] would answer.
//!
//! Scenarios: Open and epochs; leases (acquire, hold, renew, expiry by the
//! store clock, takeover, Open over a lease, the one-day clamp); create, get
//! and list (paging, status and label filters, tenant isolation); idempotent
//! create (retries, mismatches, per-tenant keys, repeats within one batch);
//! cancel; fires (never early, at most once, fencing by holder, epoch and
//! expiry, recurring advance, `fire_all` chains, skipped ops); LoadDue and
//! ListFires paging; the outbox (numbering, backlog, published marks); a
//! seeded random sequence of a few hundred operations per seed; API keys.
//!
//! Entry points: [`run_all`] (store and key store), [`run_store_suite`],
//! [`run_key_suite`]. They return every failing scenario instead of
//! panicking, so a test can also prove that a deliberately broken store is
//! caught. [`Check`] is the harness, usable for a store's own extra tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use minoots_core::StoreFailure;
use minoots_core::auth::Role;
use minoots_core::event::{EventKind, OutboxEvent};
use minoots_core::ids::IdGenerator;
use minoots_core::lease::LeaseHolder;
use minoots_core::model::StoreModel;
use minoots_core::quota::QuotaLimits;
use minoots_core::store::{
    AfterFire, CancelOp, CommitBatch, CommitOutcome, DueKey, DueTimer, FireOp, LEASE_SHARD, LeaseReply,
    ListQuery, StoreOp, StoreReply,
};
use minoots_core::timer::{FireRecord, MisfirePolicy, Schedule, TimerRecord, TimerStatus};
use minoots_core::{Now, StoreReject, TenantId, TimerId, WallMs};

use crate::model_store::ModelStore;
use crate::rng::SeededRng;
use minoots_node::clock::{Clock, ManualClock};
use minoots_node::keys::{ApiKeyRecord, KeyStore, hash_api_key};
use minoots_node::store::Store;

/// The store clock's reading when each scenario starts.
pub const START_MS: WallMs = 1_700_000_000_000;

/// Seeds of the randomized scenario.
pub const RANDOM_SEEDS: [u64; 4] = [1, 2, 3, 0x5eed_cafe];

/// Operations per randomized run.
pub const RANDOM_STEPS: usize = 300;

/// The node that opens the store in the scenarios (and so writes their fires).
const NODE: &str = "node-conformance";

/// Another node, for lease contention.
const OTHER: &str = "node-other";
/// The tenure id the suite's nodes ask in unless a scenario says otherwise.
const TENURE: u64 = 7 << 20;

/// One failing scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which scenario.
    pub scenario: String,
    /// What differed or broke, with the operation and both replies.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.scenario, self.message)
    }
}

/// Formats failures for a panic message.
pub fn report(failures: &[Failure]) -> String {
    let mut text = format!("{} conformance scenario(s) failed:\n", failures.len());
    for failure in failures {
        text.push_str(&format!("{failure}\n\n"));
    }
    text
}

/// What a scenario returns: `Err` describes the first violation.
pub type Outcome = Result<(), String>;

pub(crate) fn tenant(name: &str) -> TenantId {
    TenantId::parse("tenantId", name).expect("the suite's tenant ids are valid")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The harness: a store under test, the reference model, and the clock they share.
pub struct Check<'s, S: ?Sized> {
    store: &'s S,
    clock: Arc<ManualClock>,
    model: StoreModel,
    published_through: u64,
    step: u32,
    ids: IdGenerator,
    serial: u64,
}

impl<'s, S: Store + ?Sized> Check<'s, S> {
    /// A harness over an empty `store` whose store clock is `clock`.
    pub fn new(store: &'s S, clock: Arc<ManualClock>) -> Self {
        Self {
            store,
            clock,
            model: StoreModel::new(),
            published_through: 0,
            step: 0,
            ids: IdGenerator::from_seed(0xc0ff_ee00),
            serial: 0,
        }
    }

    /// The reference model's state.
    pub fn model(&self) -> &StoreModel {
        &self.model
    }

    /// The store clock (wall ms).
    pub fn now(&self) -> WallMs {
        self.clock.now().wall_ms
    }

    /// Moves the store clock's wall reading by `delta_ms` (either direction).
    pub fn shift(&self, delta_ms: i64) {
        let now = self.clock.now();
        self.clock.set(Now::new(now.wall_ms + delta_ms, now.mono_ms + delta_ms.unsigned_abs()));
    }

    /// Applies `op` to the store and to the model at the same store time;
    /// fails unless the replies are equal.
    pub async fn apply(&mut self, op: StoreOp) -> Result<StoreReply, String> {
        self.step += 1;
        let now = self.now();
        let expected = self.model.apply(now, &op).map_err(|e| {
            format!("step {}: the reference model refused the op: {e}\n  op: {op:?}", self.step)
        })?;
        let actual = self
            .store
            .execute(op.clone())
            .await
            .map_err(|e| format!("step {}: the store failed: {e}\n  op: {op:?}", self.step))?;
        if actual != expected {
            return Err(format!(
                "step {}: the reply differs from the reference model\n  op: {op:?}\n  store clock: {now}\n  \
                 expected: {expected:?}\n  actual:   {actual:?}",
                self.step
            ));
        }
        Ok(actual)
    }

    /// Applies `op`, which the model refuses as a whole, to the store too;
    /// fails unless the store refuses it as well, with nothing of it applied
    /// (the next operations compare sequence numbers and state). The
    /// failures' wording may differ: a SQL store meets a reused id at its
    /// primary key.
    pub async fn refused(&mut self, op: StoreOp) -> Result<StoreFailure, String> {
        self.step += 1;
        let now = self.now();
        let Err(expected) = self.model.apply(now, &op) else {
            return Err(format!("step {}: the reference model applied the op\n  op: {op:?}", self.step));
        };
        match self.store.execute(op.clone()).await {
            Err(actual) => Ok(actual),
            other => Err(format!(
                "step {}: the store does not refuse like the reference model\n  op: {op:?}\n  \
                 expected: {expected:?}\n  actual:   {other:?}",
                self.step
            )),
        }
    }

    /// `Open`: returns the new epoch.
    pub async fn open(&mut self) -> Result<u64, String> {
        match self.apply(StoreOp::Open { node_id: NODE.into() }).await? {
            StoreReply::Opened { epoch } => Ok(epoch),
            other => Err(format!("Open answered {other:?}")),
        }
    }

    /// `AcquireLease` in the node's usual tenure (`TENURE`).
    pub async fn acquire(&mut self, shard: u32, node_id: &str, ttl_ms: u64) -> Result<LeaseReply, String> {
        self.acquire_in(shard, node_id, TENURE, ttl_ms).await
    }

    /// `AcquireLease` in tenure `tenure`.
    pub async fn acquire_in(
        &mut self,
        shard: u32,
        node_id: &str,
        tenure: u64,
        ttl_ms: u64,
    ) -> Result<LeaseReply, String> {
        let op = StoreOp::AcquireLease {
            shard,
            node_id: node_id.into(),
            tenure,
            address: lease_address(node_id),
            ttl_ms,
        };
        match self.apply(op).await? {
            StoreReply::Lease(reply) => Ok(reply),
            other => Err(format!("AcquireLease answered {other:?}")),
        }
    }

    /// `RenewLease`.
    pub async fn renew(
        &mut self,
        shard: u32,
        node_id: &str,
        epoch: u64,
        ttl_ms: u64,
    ) -> Result<LeaseReply, String> {
        let op = StoreOp::RenewLease { shard, node_id: node_id.into(), epoch, ttl_ms };
        match self.apply(op).await? {
            StoreReply::Lease(reply) => Ok(reply),
            other => Err(format!("RenewLease answered {other:?}")),
        }
    }

    /// `Commit`: returns the outcome and the events.
    pub async fn commit(&mut self, batch: CommitBatch) -> Result<(CommitOutcome, Vec<OutboxEvent>), String> {
        match self.apply(StoreOp::Commit(batch)).await? {
            StoreReply::Committed { outcome, events } => Ok((outcome, events)),
            other => Err(format!("Commit answered {other:?}")),
        }
    }

    /// `Get`.
    pub async fn get(
        &mut self,
        tenant_id: &TenantId,
        timer_id: TimerId,
    ) -> Result<Option<TimerRecord>, String> {
        match self.apply(StoreOp::Get { tenant_id: tenant_id.clone(), timer_id }).await? {
            StoreReply::Timer(timer) => Ok(timer),
            other => Err(format!("Get answered {other:?}")),
        }
    }

    /// `List`.
    pub async fn list(&mut self, query: ListQuery) -> Result<(Vec<TimerRecord>, bool), String> {
        match self.apply(StoreOp::List(query)).await? {
            StoreReply::Timers { timers, more } => Ok((timers, more)),
            other => Err(format!("List answered {other:?}")),
        }
    }

    /// `LoadDue`.
    pub async fn load_due(
        &mut self,
        after: Option<DueKey>,
        until_ms: WallMs,
        limit: u32,
    ) -> Result<(Vec<DueTimer>, bool), String> {
        match self.apply(StoreOp::LoadDue { after, until_ms, limit }).await? {
            StoreReply::Loaded { timers, more } => Ok((timers, more)),
            other => Err(format!("LoadDue answered {other:?}")),
        }
    }

    /// `ListFires`.
    pub async fn fires(
        &mut self,
        tenant_id: &TenantId,
        timer_id: TimerId,
        after_occurrence: u32,
        limit: u32,
    ) -> Result<Option<Vec<FireRecord>>, String> {
        let op = StoreOp::ListFires { tenant_id: tenant_id.clone(), timer_id, after_occurrence, limit };
        match self.apply(op).await? {
            StoreReply::Fires(fires) => Ok(fires),
            other => Err(format!("ListFires answered {other:?}")),
        }
    }

    /// `outbox_unpublished`, compared with what the reference answers, and
    /// `outbox_unpublished_seqs`, compared with its rows' sequence numbers.
    pub async fn unpublished(&mut self, after_seq: u64, limit: u32) -> Result<Vec<OutboxEvent>, String> {
        self.step += 1;
        let from = after_seq.max(self.published_through);
        let expected: Vec<OutboxEvent> =
            self.model.outbox().iter().filter(|e| e.seq > from).take(limit as usize).cloned().collect();
        let actual = self.store.outbox_unpublished(after_seq, limit).await.map_err(|e| {
            format!("step {}: outbox_unpublished({after_seq}, {limit}) failed: {e}", self.step)
        })?;
        ensure!(
            actual == expected,
            "step {}: outbox_unpublished({after_seq}, {limit}) differs\n  expected: {expected:?}\n  actual:   {actual:?}",
            self.step
        );
        let seqs = self.store.outbox_unpublished_seqs(after_seq, limit).await.map_err(|e| {
            format!("step {}: outbox_unpublished_seqs({after_seq}, {limit}) failed: {e}", self.step)
        })?;
        let expected_seqs: Vec<u64> = expected.iter().map(|e| e.seq).collect();
        ensure!(
            seqs == expected_seqs,
            "step {}: outbox_unpublished_seqs({after_seq}, {limit}) = {seqs:?}, expected {expected_seqs:?}",
            self.step
        );
        Ok(actual)
    }

    /// `outbox_mark_published`.
    pub async fn mark(&mut self, up_to_seq: u64) -> Outcome {
        self.step += 1;
        self.published_through = self.published_through.max(up_to_seq);
        self.store
            .outbox_mark_published(up_to_seq)
            .await
            .map_err(|e| format!("step {}: outbox_mark_published({up_to_seq}) failed: {e}", self.step))
    }

    /// `count_pending`, compared with the model's scheduled timers.
    pub async fn pending(&mut self) -> Result<u64, String> {
        self.step += 1;
        let expected =
            self.model.timers().values().filter(|t| t.status == TimerStatus::Scheduled).count() as u64;
        let actual = self
            .store
            .count_pending()
            .await
            .map_err(|e| format!("step {}: count_pending failed: {e}", self.step))?;
        ensure!(actual == expected, "step {}: count_pending: expected {expected}, got {actual}", self.step);
        Ok(actual)
    }

    /// `tenant_usage` of `tenant_id` since `day_start_ms`, compared with the model's.
    pub async fn usage(&mut self, tenant_id: &TenantId, day_start_ms: WallMs) -> Outcome {
        self.step += 1;
        let expected = self.model.tenant_usage(tenant_id, day_start_ms);
        let actual = self
            .store
            .tenant_usage(tenant_id, day_start_ms)
            .await
            .map_err(|e| format!("step {}: tenant_usage failed: {e}", self.step))?;
        ensure!(
            actual == expected,
            "step {}: tenant_usage: expected {expected:?}, got {actual:?}",
            self.step
        );
        Ok(())
    }

    /// A new once timer of `tenant_id`, due at `due_ms`, with a name, metadata and an action bundle.
    pub fn timer(&mut self, tenant_id: &TenantId, due_ms: WallMs) -> TimerRecord {
        self.serial += 1;
        let n = self.serial;
        let id = self.ids.next_id(self.now());
        TimerRecord {
            requested_by: "conformance".into(),
            name: Some(format!("timer-{n}")),
            schedule: Schedule::Once { fire_at_ms: due_ms, duration_ms: Some(n * 10) },
            metadata: Some(serde_json::json!({ "n": n, "ratio": 0.1 * n as f64, "tags": ["x", "ü"] })),
            action_bundle: Some(
                serde_json::json!({ "actions": [{ "kind": "webhook", "url": "https://hook.invalid/" }] }),
            ),
            request_fingerprint: n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ..once_timer(id, tenant_id, self.now(), due_ms)
        }
    }

    /// A new interval timer, first due at `due_ms`, every `every_ms`.
    pub fn interval(
        &mut self,
        tenant_id: &TenantId,
        due_ms: WallMs,
        every_ms: u64,
        misfire: MisfirePolicy,
    ) -> TimerRecord {
        let schedule =
            Schedule::Interval { every_ms, start_at_ms: due_ms, end_at_ms: None, max_occurrences: None };
        TimerRecord {
            schedule,
            misfire,
            agent_binding: Some(serde_json::json!({ "agent": "a-1" })),
            ..self.timer(tenant_id, due_ms)
        }
    }

    /// An empty batch from the current lease holder (or `NODE`), at its epoch.
    pub fn batch(&self) -> CommitBatch {
        let node_id = self.model.leases().get(&LEASE_SHARD).map_or(NODE, |l| l.holder.node_id.as_str());
        CommitBatch { epoch: self.model.epoch(), node_id: node_id.into(), ..CommitBatch::default() }
    }

    /// Commits `creates` at the current epoch; fails unless each is created.
    pub async fn create_all(&mut self, creates: Vec<TimerRecord>) -> Outcome {
        let count = creates.len();
        let (outcome, events) = self.commit(CommitBatch { creates, ..self.batch() }).await?;
        ensure!(
            outcome.creates.iter().all(|r| matches!(r, Ok(c) if c.created)),
            "creates were not all created: {outcome:?}"
        );
        ensure_eq!(events.len(), count, "events of the creates");
        Ok(())
    }
}

/// The plainest stored timer: `id` of `tenant_id`, created at `created_ms`,
/// once, due at `due_ms`, nothing optional set. Tests build the record they
/// need from it (`TimerRecord { labels, ..once_timer(…) }`).
pub fn once_timer(id: TimerId, tenant_id: &TenantId, created_ms: WallMs, due_ms: WallMs) -> TimerRecord {
    TimerRecord {
        id,
        tenant_id: tenant_id.clone(),
        requested_by: "test".into(),
        name: None,
        status: TimerStatus::Scheduled,
        created_at_ms: created_ms,
        schedule: Schedule::Once { fire_at_ms: due_ms, duration_ms: None },
        misfire: MisfirePolicy::FireOnce,
        next_due_ms: due_ms,
        next_occurrence: 1,
        last_fired_at_ms: None,
        cancelled_at_ms: None,
        cancelled_by: None,
        cancel_reason: None,
        labels: BTreeMap::new(),
        metadata: None,
        action_bundle: None,
        agent_binding: None,
        idempotency_key: None,
        request_fingerprint: 0,
        shard: id.shard(),
    }
}

/// A cancel of `timer` by `who`.
pub(crate) fn cancel(timer: &TimerRecord, who: &str) -> CancelOp {
    CancelOp {
        tenant_id: timer.tenant_id.clone(),
        timer_id: timer.id,
        cancelled_by: who.into(),
        reason: None,
    }
}

/// The fire of `timer`'s next occurrence.
pub(crate) fn fire(timer: &TimerRecord, then: AfterFire) -> FireOp {
    FireOp {
        timer_id: timer.id,
        occurrence: timer.next_occurrence,
        due_ms: timer.next_due_ms,
        then,
        skipped: false,
    }
}

fn fire_at(timer_id: TimerId, occurrence: u32, due_ms: WallMs, then: AfterFire) -> FireOp {
    FireOp { timer_id, occurrence, due_ms, then, skipped: false }
}

fn fired(
    result: &Result<minoots_core::store::Fired, StoreReject>,
) -> Result<(Option<FireRecord>, TimerRecord), String> {
    match result {
        Ok(f) => Ok((f.fire.clone(), f.timer.clone())),
        Err(e) => Err(format!("fire rejected: {e}")),
    }
}

fn query(tenant_id: &TenantId, limit: u32) -> ListQuery {
    ListQuery {
        tenant_id: tenant_id.clone(),
        statuses: Vec::new(),
        labels: BTreeMap::new(),
        after: None,
        limit,
    }
}

/// Pages through a listing with `limit`; checks the paging flags and returns every id.
async fn list_all<S: Store + ?Sized>(c: &mut Check<'_, S>, mut q: ListQuery) -> Result<Vec<TimerId>, String> {
    let mut ids = Vec::new();
    loop {
        let (page, more) = c.list(q.clone()).await?;
        ensure!(page.len() <= q.limit as usize, "a page longer than its limit");
        ensure!(!more || page.len() == q.limit as usize, "more = true on a short page");
        ids.extend(page.iter().map(|t| t.id));
        match page.last() {
            Some(last) if more => q.after = Some(last.id),
            _ => break,
        }
    }
    ensure!(ids.windows(2).all(|w| w[0] < w[1]), "listing not in id order: {ids:?}");
    Ok(ids)
}

/// Runs the [`Store`] scenarios, each on a fresh store from `make`.
pub async fn run_store_suite<S, F, Fut>(mut make: F) -> Result<(), Vec<Failure>>
where
    S: Store,
    F: FnMut(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = S>,
{
    let mut failures = Vec::new();
    macro_rules! scenario {
        ($name:expr, $run:expr) => {{
            let clock = Arc::new(ManualClock::new(Now::new(START_MS, 1_000)));
            let store = make(clock.clone()).await;
            let check = Check::new(&store, clock);
            if let Err(message) = ($run)(check).await {
                failures.push(Failure { scenario: $name.to_string(), message });
            }
        }};
    }
    scenario!("open_bumps_epoch", open_bumps_epoch);
    scenario!("create_get_list", create_get_list);
    scenario!("idempotent_create", idempotent_create);
    scenario!("cancel", cancel_scenario);
    scenario!("fire_never_early_and_once", fire_never_early_and_once);
    scenario!("fire_fencing", fire_fencing);
    scenario!("leases", leases);
    scenario!("lease_tenures", lease_tenures);
    scenario!("fire_recurring", fire_recurring);
    scenario!("fire_chain_and_skip", fire_chain_and_skip);
    scenario!("load_due_paging", load_due_paging);
    scenario!("list_fires_paging", list_fires_paging);
    scenario!("outbox", outbox);
    scenario!("impossible_items", impossible_items);
    for seed in RANDOM_SEEDS {
        scenario!(format!("randomized(seed {seed})"), |c| randomized(c, seed, RANDOM_STEPS));
    }
    if failures.is_empty() { Ok(()) } else { Err(failures) }
}

/// Runs the [`KeyStore`] scenario on a fresh store from `make`, against a [`ModelStore`].
pub async fn run_key_suite<S, F, Fut>(mut make: F) -> Result<(), Vec<Failure>>
where
    S: KeyStore,
    F: FnMut(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = S>,
{
    let clock = Arc::new(ManualClock::new(Now::new(START_MS, 1_000)));
    let store = make(clock.clone()).await;
    let reference = ModelStore::new(clock);
    keys(&store, &reference).await.map_err(|message| vec![Failure { scenario: "keys".into(), message }])
}

/// Runs every scenario: [`run_store_suite`] then [`run_key_suite`].
pub async fn run_all<S, F, Fut>(mut make: F) -> Result<(), Vec<Failure>>
where
    S: Store + KeyStore,
    F: FnMut(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = S>,
{
    let mut failures = run_store_suite(&mut make).await.err().unwrap_or_default();
    failures.extend(run_key_suite(&mut make).await.err().unwrap_or_default());
    if failures.is_empty() { Ok(()) } else { Err(failures) }
}

async fn open_bumps_epoch<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    ensure_eq!(c.model().epoch(), 0, "a new store is at epoch 0");
    ensure_eq!(c.open().await?, 1, "first Open");
    ensure_eq!(c.open().await?, 2, "second Open");
    let a = tenant("tenant-a");
    let t = c.timer(&a, c.now() - 10);
    let batch = CommitBatch {
        epoch: 1,
        creates: vec![t.clone()],
        cancels: vec![cancel(&t, "x")],
        fires: vec![fire(&t, AfterFire::Finished)],
        ..c.batch()
    };
    let (outcome, events) = c.commit(batch).await?;
    let stale = StoreReject::StaleEpoch { current_epoch: 2 };
    ensure_eq!(&outcome.creates[0], &Err(stale.clone()), "create with the epoch before the last Open");
    ensure_eq!(&outcome.cancels[0], &Err(stale.clone()), "cancel with the epoch before the last Open");
    ensure_eq!(&outcome.fires[0], &Err(stale), "fire with the epoch before the last Open");
    ensure_eq!(events.len(), 0, "a fenced-out batch writes no event");
    ensure_eq!(c.open().await?, 3, "third Open");
    Ok(())
}

async fn create_get_list<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let now = c.now();
    let mut mine = Vec::new();
    for i in 0..7i64 {
        let team = if i % 2 == 0 { "a" } else { "b" };
        let mut tags =
            if i % 3 == 0 { labels(&[("team", team), ("env", "prod")]) } else { labels(&[("team", team)]) };
        if i == 4 {
            // Keys and values that need quoting in SQL or JSON paths.
            tags.insert("a.b \"c\"['$']".into(), "x y'z".into());
        }
        // Timer 1 is already due so that it can be fired below.
        let due = if i == 1 { now - 5 } else { now + 1_000 * (i + 1) };
        mine.push(TimerRecord { labels: tags, ..c.timer(&a, due) });
        c.shift(1);
    }
    let theirs =
        vec![c.timer(&b, now + 500), TimerRecord { labels: labels(&[("team", "a")]), ..c.timer(&b, now) }];
    let mut creates = mine.clone();
    creates.extend(theirs.clone());
    let (outcome, events) = c.commit(CommitBatch { creates, ..c.batch() }).await?;
    ensure!(outcome.creates.iter().all(|r| matches!(r, Ok(c) if c.created)), "all created: {outcome:?}");
    ensure_eq!(events.len(), 9, "one scheduled event per create");
    ensure!(events.iter().all(|e| e.kind == EventKind::Scheduled), "scheduled events");
    for t in &mine {
        ensure_eq!(c.get(&a, t.id).await?, Some(t.clone()), "get in the owner tenant");
        ensure_eq!(c.get(&b, t.id).await?, None, "get from another tenant");
    }
    let unknown = c.timer(&a, now);
    ensure_eq!(c.get(&a, unknown.id).await?, None, "get of an unknown id");

    let mut sorted: Vec<TimerId> = mine.iter().map(|t| t.id).collect();
    sorted.sort();
    for limit in [1, 3, 6, 7, 8, 1000] {
        ensure_eq!(
            list_all(&mut c, query(&a, limit)).await?,
            sorted.clone(),
            format!("paged listing, limit {limit}")
        );
    }
    let (page, more) = c.list(query(&a, 7)).await?;
    ensure!(page.len() == 7 && !more, "a page holding exactly everything has more = false");
    let (page, more) = c.list(query(&a, 6)).await?;
    ensure!(page.len() == 6 && more, "a page one short has more = true");
    let (page, more) = c.list(ListQuery { after: sorted.last().copied(), ..query(&a, 10) }).await?;
    ensure!(page.is_empty() && !more, "after the last id: nothing");
    let theirs_listed = list_all(&mut c, query(&b, 1)).await?;
    ensure_eq!(theirs_listed.len(), 2, "tenant b sees only its own timers");
    ensure!(theirs_listed.iter().all(|id| !sorted.contains(id)), "tenant b sees none of tenant a's");

    // One cancelled, one fired: status filters.
    let batch = CommitBatch {
        cancels: vec![cancel(&mine[0], "alice")],
        fires: vec![fire(&mine[1], AfterFire::Finished)],
        ..c.batch()
    };
    let (outcome, _) = c.commit(batch).await?;
    ensure!(outcome.cancels[0].is_ok() && outcome.fires[0].is_ok(), "cancel and fire applied: {outcome:?}");
    let statuses = |s: &[TimerStatus]| ListQuery { statuses: s.to_vec(), ..query(&a, 2) };
    ensure_eq!(
        list_all(&mut c, statuses(&[TimerStatus::Cancelled])).await?,
        vec![mine[0].id],
        "cancelled only"
    );
    ensure_eq!(list_all(&mut c, statuses(&[TimerStatus::Fired])).await?, vec![mine[1].id], "fired only");
    let live = list_all(&mut c, statuses(&[TimerStatus::Scheduled, TimerStatus::Fired])).await?;
    ensure_eq!(live.len(), 6, "scheduled or fired");
    ensure!(!live.contains(&mine[0].id), "the cancelled timer is not scheduled or fired");

    // Label filters (every label must match), with paging.
    let by_labels = |pairs: &[(&str, &str)], limit| ListQuery { labels: labels(pairs), ..query(&a, limit) };
    ensure_eq!(list_all(&mut c, by_labels(&[("team", "a")], 1)).await?.len(), 4, "team=a");
    ensure_eq!(
        list_all(&mut c, by_labels(&[("team", "a"), ("env", "prod")], 1)).await?.len(),
        2,
        "team=a, env=prod"
    );
    ensure_eq!(
        list_all(&mut c, by_labels(&[("team", "b"), ("env", "prod")], 2)).await?.len(),
        1,
        "team=b, env=prod"
    );
    ensure_eq!(list_all(&mut c, by_labels(&[("team", "c")], 5)).await?.len(), 0, "team=c");
    ensure_eq!(list_all(&mut c, by_labels(&[("owner", "a")], 5)).await?.len(), 0, "an absent label key");
    let odd = by_labels(&[("a.b \"c\"['$']", "x y'z"), ("team", "a")], 1);
    ensure_eq!(list_all(&mut c, odd).await?, vec![mine[4].id], "a label key with quotes and dots");
    let odd = by_labels(&[("a.b \"c\"['$']", "x y")], 1);
    ensure_eq!(list_all(&mut c, odd).await?.len(), 0, "label values match exactly");
    let both = ListQuery { statuses: vec![TimerStatus::Scheduled], ..by_labels(&[("team", "a")], 1) };
    ensure_eq!(list_all(&mut c, both).await?.len(), 3, "team=a and scheduled");
    ensure_eq!(list_all(&mut c, by_labels(&[("team", "a")], 3)).await?.len(), 4, "team=a, limit 3");

    // Tenant isolation for cancel and fires.
    let foreign = CancelOp { tenant_id: b.clone(), ..cancel(&mine[2], "mallory") };
    let (outcome, events) = c.commit(CommitBatch { cancels: vec![foreign], ..c.batch() }).await?;
    ensure_eq!(&outcome.cancels[0], &Err(StoreReject::NotFound), "cancel from another tenant");
    ensure!(events.is_empty(), "a refused cancel writes no event");
    ensure_eq!(
        c.get(&a, mine[2].id).await?.map(|t| t.status),
        Some(TimerStatus::Scheduled),
        "still scheduled"
    );
    ensure_eq!(c.fires(&b, mine[1].id, 0, 10).await?, None, "fires from another tenant");
    ensure_eq!(c.fires(&a, mine[1].id, 0, 10).await?.map(|f| f.len()), Some(1), "fires in the owner tenant");
    c.pending().await?;
    Ok(())
}

async fn idempotent_create<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let due = c.now() + 60_000;
    let keyed = |c: &mut Check<'_, S>, t: &TenantId, key: &str, fingerprint: u64| TimerRecord {
        idempotency_key: Some(key.to_owned()),
        request_fingerprint: fingerprint,
        ..c.timer(t, due)
    };
    let first = keyed(&mut c, &a, "key-1", 11);
    let (outcome, events) = c.commit(CommitBatch { creates: vec![first.clone()], ..c.batch() }).await?;
    ensure!(
        matches!(&outcome.creates[0], Ok(r) if r.created && r.timer == first),
        "first create: {outcome:?}"
    );
    ensure_eq!(events.len(), 1, "events of the first create");

    c.shift(10);
    let retry = keyed(&mut c, &a, "key-1", 11);
    let (outcome, events) = c.commit(CommitBatch { creates: vec![retry.clone()], ..c.batch() }).await?;
    ensure!(
        matches!(&outcome.creates[0], Ok(r) if !r.created && r.timer == first),
        "a retry returns the existing timer: {outcome:?}"
    );
    ensure!(events.is_empty(), "a retry writes no event");
    ensure_eq!(c.get(&a, retry.id).await?, None, "the retry's own id was not stored");

    let other = keyed(&mut c, &a, "key-1", 12);
    let (outcome, _) = c.commit(CommitBatch { creates: vec![other], ..c.batch() }).await?;
    ensure_eq!(&outcome.creates[0], &Err(StoreReject::IdempotencyMismatch), "same key, other request");

    let elsewhere = keyed(&mut c, &b, "key-1", 12);
    let (outcome, _) = c.commit(CommitBatch { creates: vec![elsewhere.clone()], ..c.batch() }).await?;
    ensure!(
        matches!(&outcome.creates[0], Ok(r) if r.created && r.timer == elsewhere),
        "the same key in another tenant is independent: {outcome:?}"
    );

    // Several creates with one key in one batch: the first wins.
    let one = keyed(&mut c, &a, "key-2", 1);
    let two = keyed(&mut c, &a, "key-2", 1);
    let three = keyed(&mut c, &a, "key-2", 2);
    let four = keyed(&mut c, &a, "key-3", 1);
    let plain = c.timer(&a, due);
    let creates = vec![one.clone(), two, three, four.clone(), plain.clone()];
    let (outcome, events) = c.commit(CommitBatch { creates, ..c.batch() }).await?;
    ensure!(
        matches!(&outcome.creates[0], Ok(r) if r.created && r.timer == one),
        "first of the batch: {outcome:?}"
    );
    ensure!(
        matches!(&outcome.creates[1], Ok(r) if !r.created && r.timer == one),
        "second of the batch: {outcome:?}"
    );
    ensure_eq!(&outcome.creates[2], &Err(StoreReject::IdempotencyMismatch), "third of the batch");
    ensure!(matches!(&outcome.creates[3], Ok(r) if r.created), "another key in the batch: {outcome:?}");
    ensure!(matches!(&outcome.creates[4], Ok(r) if r.created), "no key: {outcome:?}");
    ensure_eq!(events.len(), 3, "events: one per created timer");

    // A retry after a cancel returns the cancelled timer.
    let (outcome, _) = c.commit(CommitBatch { cancels: vec![cancel(&first, "alice")], ..c.batch() }).await?;
    let cancelled = outcome.cancels[0].clone().map_err(|e| format!("cancel rejected: {e}"))?;
    let late = keyed(&mut c, &a, "key-1", 11);
    let (outcome, _) = c.commit(CommitBatch { creates: vec![late], ..c.batch() }).await?;
    ensure!(
        matches!(&outcome.creates[0], Ok(r) if !r.created && r.timer == cancelled),
        "a retry after a cancel: {outcome:?}"
    );
    // A retry in the same batch as a cancel of the original: creates come first.
    let again = keyed(&mut c, &a, "key-3", 1);
    let batch = CommitBatch { creates: vec![again], cancels: vec![cancel(&four, "bob")], ..c.batch() };
    let (outcome, _) = c.commit(batch).await?;
    ensure!(
        matches!(&outcome.creates[0], Ok(r) if !r.created && r.timer.status == TimerStatus::Scheduled),
        "creates apply before cancels: {outcome:?}"
    );
    c.pending().await?;
    Ok(())
}

async fn cancel_scenario<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let now = c.now();
    let later = c.timer(&a, now + 60_000);
    let due = c.timer(&a, now - 1);
    let theirs = c.timer(&b, now + 60_000);
    c.create_all(vec![later.clone(), due.clone(), theirs.clone()]).await?;
    ensure_eq!(c.pending().await?, 3, "pending after creates");
    for day_start_ms in [0, now, now + 1] {
        c.usage(&a, day_start_ms).await?;
    }

    c.shift(5);
    let op = CancelOp { reason: Some("not needed".into()), ..cancel(&later, "alice") };
    let (outcome, events) = c.commit(CommitBatch { cancels: vec![op], ..c.batch() }).await?;
    let cancelled = outcome.cancels[0].clone().map_err(|e| format!("cancel rejected: {e}"))?;
    ensure_eq!(cancelled.status, TimerStatus::Cancelled, "status after cancel");
    ensure_eq!(cancelled.cancelled_at_ms, Some(c.now()), "cancelled_at is the store clock");
    ensure_eq!(cancelled.cancelled_by.as_deref(), Some("alice"), "cancelled_by");
    ensure_eq!(cancelled.cancel_reason.as_deref(), Some("not needed"), "cancel reason");
    ensure!(events.len() == 1 && events[0].kind == EventKind::Cancelled, "one cancelled event: {events:?}");
    ensure_eq!(c.pending().await?, 2, "pending after a cancel");
    c.usage(&a, 0).await?;
    c.usage(&b, 0).await?;

    c.shift(5);
    let (outcome, events) =
        c.commit(CommitBatch { cancels: vec![cancel(&later, "bob")], ..c.batch() }).await?;
    ensure_eq!(&outcome.cancels[0], &Ok(cancelled.clone()), "a second cancel returns the timer unchanged");
    ensure!(events.is_empty(), "a second cancel writes no event");

    let (outcome, _) =
        c.commit(CommitBatch { fires: vec![fire(&due, AfterFire::Finished)], ..c.batch() }).await?;
    let (_, after_fire) = fired(&outcome.fires[0])?;
    c.usage(&a, now).await?;
    c.usage(&tenant("tenant-z"), 0).await?;
    let (outcome, events) =
        c.commit(CommitBatch { cancels: vec![cancel(&due, "alice")], ..c.batch() }).await?;
    ensure_eq!(&outcome.cancels[0], &Ok(after_fire), "cancel of a fired timer returns it as is");
    ensure!(events.is_empty(), "cancel of a fired timer writes no event");

    let foreign = CancelOp { tenant_id: a.clone(), ..cancel(&theirs, "mallory") };
    let ghost = c.timer(&a, now);
    let (outcome, events) =
        c.commit(CommitBatch { cancels: vec![foreign, cancel(&ghost, "alice")], ..c.batch() }).await?;
    ensure_eq!(
        outcome.cancels,
        vec![Err(StoreReject::NotFound), Err(StoreReject::NotFound)],
        "unknown timers"
    );
    ensure!(events.is_empty(), "no events");

    // Created and cancelled in one batch; the same timer cancelled twice in one batch.
    let fresh = c.timer(&a, now + 1_000);
    let batch = CommitBatch {
        creates: vec![fresh.clone()],
        cancels: vec![cancel(&fresh, "alice"), cancel(&fresh, "bob")],
        ..c.batch()
    };
    let (outcome, events) = c.commit(batch).await?;
    let first = outcome.cancels[0].clone().map_err(|e| format!("cancel rejected: {e}"))?;
    ensure_eq!(&outcome.cancels[1], &Ok(first.clone()), "the second cancel in a batch sees the first");
    ensure_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Scheduled, EventKind::Cancelled],
        "events"
    );
    ensure_eq!(c.get(&a, fresh.id).await?, Some(first), "stored after create + cancel");
    ensure_eq!(c.pending().await?, 1, "pending at the end");
    Ok(())
}

async fn fire_never_early_and_once<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    let epoch = c.open().await?;
    let a = tenant("tenant-a");
    let due_ms = c.now() + 1_000;
    let t = c.timer(&a, due_ms);
    let other = c.timer(&a, due_ms);
    c.create_all(vec![t.clone(), other.clone()]).await?;

    let op = fire(&t, AfterFire::Finished);
    let (outcome, events) = c.commit(CommitBatch { fires: vec![op.clone()], ..c.batch() }).await?;
    ensure_eq!(&outcome.fires[0], &Err(StoreReject::TooEarly { store_now_ms: c.now() }), "fire before due");
    ensure!(events.is_empty(), "a refused fire writes no event");
    c.shift(999);
    let (outcome, _) = c.commit(CommitBatch { fires: vec![op.clone()], ..c.batch() }).await?;
    ensure_eq!(
        &outcome.fires[0],
        &Err(StoreReject::TooEarly { store_now_ms: due_ms - 1 }),
        "fire 1 ms early"
    );
    let wrong = FireOp { occurrence: 2, ..op.clone() };
    let (outcome, _) = c.commit(CommitBatch { fires: vec![wrong], ..c.batch() }).await?;
    ensure_eq!(
        &outcome.fires[0],
        &Err(StoreReject::StateChanged),
        "the state check comes before the time check"
    );

    c.shift(1);
    let (outcome, events) = c.commit(CommitBatch { fires: vec![op.clone()], ..c.batch() }).await?;
    let (record, timer) = fired(&outcome.fires[0])?;
    let expected = FireRecord {
        timer_id: t.id,
        occurrence: 1,
        due_ms,
        fired_at_ms: due_ms,
        epoch,
        node_id: NODE.into(),
    };
    ensure_eq!(record, Some(expected.clone()), "the fire record");
    ensure_eq!(timer.status, TimerStatus::Fired, "a finished timer is fired");
    ensure_eq!(timer.last_fired_at_ms, Some(due_ms), "last_fired_at");
    ensure_eq!(timer.next_occurrence, 2, "next_occurrence counts fires");
    ensure!(
        events.len() == 1 && events[0].kind == EventKind::Fired && events[0].fire == Some(expected),
        "one fired event: {events:?}"
    );

    c.shift(1_000);
    let (outcome, events) = c.commit(CommitBatch { fires: vec![op.clone(), op], ..c.batch() }).await?;
    ensure_eq!(
        outcome.fires,
        vec![Err(StoreReject::StateChanged), Err(StoreReject::StateChanged)],
        "fire again"
    );
    ensure!(events.is_empty(), "no events");

    let ghost = c.timer(&a, due_ms);
    let (outcome, _) =
        c.commit(CommitBatch { fires: vec![fire(&ghost, AfterFire::Finished)], ..c.batch() }).await?;
    ensure_eq!(&outcome.fires[0], &Err(StoreReject::NotFound), "fire of an unknown timer");

    let batch = CommitBatch {
        cancels: vec![cancel(&other, "alice")],
        fires: vec![fire(&other, AfterFire::Finished)],
        ..c.batch()
    };
    let (outcome, _) = c.commit(batch).await?;
    ensure_eq!(&outcome.fires[0], &Err(StoreReject::StateChanged), "fire after a cancel in the same batch");
    ensure_eq!(c.fires(&a, t.id, 0, 10).await?.map(|f| f.len()), Some(1), "one fire recorded");
    ensure_eq!(c.pending().await?, 0, "pending");
    Ok(())
}

async fn fire_fencing<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let epoch = c.open().await?;
    let a = tenant("tenant-a");
    let now = c.now();
    let target = c.timer(&a, now - 100);
    let victim = c.timer(&a, now + 100);
    c.create_all(vec![target.clone(), victim.clone()]).await?;

    for (stale_epoch, node) in [(epoch - 1, NODE), (0, NODE), (epoch + 1, NODE), (epoch, OTHER)] {
        let newcomer = c.timer(&a, now);
        let batch = CommitBatch {
            epoch: stale_epoch,
            node_id: node.into(),
            creates: vec![newcomer.clone()],
            cancels: vec![cancel(&victim, "old-leader")],
            fires: vec![fire(&target, AfterFire::Finished)],
            send_before_mono: None,
        };
        let (outcome, events) = c.commit(batch).await?;
        let stale = StoreReject::StaleEpoch { current_epoch: epoch };
        ensure_eq!(
            &outcome.creates[0],
            &Err(stale.clone()),
            format!("create by {node} at epoch {stale_epoch}")
        );
        ensure_eq!(
            &outcome.cancels[0],
            &Err(stale.clone()),
            format!("cancel by {node} at epoch {stale_epoch}")
        );
        ensure_eq!(&outcome.fires[0], &Err(stale), format!("fire by {node} at epoch {stale_epoch}"));
        ensure_eq!(events.len(), 0, "a fenced-out batch writes no event");
        ensure_eq!(c.get(&a, newcomer.id).await?, None, "the fenced-out create was not stored");
    }
    ensure_eq!(c.get(&a, target.id).await?.map(|t| t.status), Some(TimerStatus::Scheduled), "target unfired");
    ensure_eq!(
        c.get(&a, victim.id).await?.map(|t| t.status),
        Some(TimerStatus::Scheduled),
        "victim uncancelled"
    );
    ensure_eq!(c.fires(&a, target.id, 0, 10).await?, Some(Vec::new()), "no fire recorded");

    let (outcome, _) =
        c.commit(CommitBatch { fires: vec![fire(&target, AfterFire::Finished)], ..c.batch() }).await?;
    let (record, _) = fired(&outcome.fires[0])?;
    ensure_eq!(record.map(|r| r.epoch), Some(epoch), "the current epoch fires, and is recorded");
    // A new Open fences the previous holder at once.
    c.open().await?;
    let batch = CommitBatch { epoch, cancels: vec![cancel(&victim, "old-leader")], ..c.batch() };
    let (outcome, _) = c.commit(batch).await?;
    ensure_eq!(
        &outcome.cancels[0],
        &Err(StoreReject::StaleEpoch { current_epoch: epoch + 1 }),
        "after reopen"
    );
    Ok(())
}

async fn leases<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    let a = tenant("tenant-a");
    let t = c.timer(&a, c.now() - 10);
    let u = c.timer(&a, c.now() + 100_000);
    // No lease yet: creates, cancels and fires are all fenced.
    let batch =
        CommitBatch { creates: vec![t.clone(), u.clone()], cancels: vec![cancel(&u, "x")], ..c.batch() };
    let (outcome, _) = c.commit(batch.clone()).await?;
    let unleased = StoreReject::StaleEpoch { current_epoch: 0 };
    ensure!(
        outcome.creates.iter().all(|r| r.as_ref().err() == Some(&unleased)),
        "creates without a lease: {outcome:?}"
    );
    ensure_eq!(&outcome.cancels[0], &Err(unleased), "cancel without a lease");

    let holder = |node: &str, epoch| lease_holder(node, epoch, TENURE);
    ensure_eq!(c.acquire(LEASE_SHARD, NODE, 2_000).await?, LeaseReply::Granted { epoch: 1 }, "a free lease");
    let (outcome, _) = c.commit(CommitBatch { creates: vec![t.clone(), u.clone()], ..c.batch() }).await?;
    ensure!(outcome.creates.iter().all(|r| matches!(r, Ok(r) if r.created)), "creates by the holder");
    ensure_eq!(
        c.acquire(LEASE_SHARD, OTHER, 2_000).await?,
        LeaseReply::Held { holder: holder(NODE, 1) },
        "held"
    );
    c.shift(500);
    ensure_eq!(c.renew(LEASE_SHARD, NODE, 1, 2_000).await?, LeaseReply::Renewed, "renewal by the holder");
    let lost = LeaseReply::Lost { holder: Some(holder(NODE, 1)) };
    ensure_eq!(c.renew(LEASE_SHARD, NODE, 2, 2_000).await?, lost.clone(), "renewal at another epoch");
    ensure_eq!(c.renew(LEASE_SHARD, OTHER, 1, 2_000).await?, lost, "renewal by another node");
    ensure_eq!(c.renew(LEASE_SHARD, NODE, 1, 0).await?, LeaseReply::Renewed, "a renewal never shortens");

    let (outcome, _) =
        c.commit(CommitBatch { fires: vec![fire(&t, AfterFire::Finished)], ..c.batch() }).await?;
    ensure!(fired(&outcome.fires[0])?.0.is_some_and(|f| f.epoch == 1 && f.node_id == NODE), "holder fires");
    let impostor = CommitBatch { node_id: OTHER.into(), cancels: vec![cancel(&u, "x")], ..c.batch() };
    let (outcome, _) = c.commit(impostor).await?;
    ensure_eq!(
        &outcome.cancels[0],
        &Err(StoreReject::StaleEpoch { current_epoch: 1 }),
        "right epoch, other node"
    );

    // Granted at START + 500 for 2 s: valid until START + 2_499.
    c.shift(1_999);
    ensure_eq!(
        c.acquire(LEASE_SHARD, OTHER, 2_000).await?,
        LeaseReply::Held { holder: holder(NODE, 1) },
        "1 ms left"
    );
    let probe = c.timer(&a, c.now() + 100_000);
    let batch = CommitBatch { creates: vec![probe.clone()], cancels: vec![cancel(&probe, "x")], ..c.batch() };
    let (outcome, _) = c.commit(batch).await?;
    ensure!(outcome.cancels[0].is_ok(), "the lease fences until its last millisecond: {outcome:?}");
    c.shift(1);
    let (outcome, _) = c.commit(CommitBatch { cancels: vec![cancel(&u, "x")], ..c.batch() }).await?;
    ensure_eq!(&outcome.cancels[0], &Err(StoreReject::StaleEpoch { current_epoch: 1 }), "an expired lease");
    ensure_eq!(
        c.renew(LEASE_SHARD, NODE, 1, 2_000).await?,
        LeaseReply::Lost { holder: None },
        "renew too late"
    );

    ensure_eq!(c.acquire(LEASE_SHARD, OTHER, 2_000).await?, LeaseReply::Granted { epoch: 2 }, "takeover");
    let old = CommitBatch { node_id: NODE.into(), epoch: 1, cancels: vec![cancel(&u, "x")], ..c.batch() };
    let (outcome, _) = c.commit(old).await?;
    ensure_eq!(&outcome.cancels[0], &Err(StoreReject::StaleEpoch { current_epoch: 2 }), "the deposed holder");
    ensure_eq!(
        c.acquire(LEASE_SHARD, OTHER, 2_000).await?,
        LeaseReply::Granted { epoch: 2 },
        "re-acquire by the holder: the same tenure, extended"
    );
    ensure_eq!(c.acquire(7, NODE, 2_000).await?, LeaseReply::Granted { epoch: 1 }, "another shard");
    let (outcome, _) = c.commit(CommitBatch { cancels: vec![cancel(&u, "alice")], ..c.batch() }).await?;
    ensure!(outcome.cancels[0].is_ok(), "the new holder cancels: {outcome:?}");

    // Open takes over even an unexpired lease, forever.
    ensure_eq!(c.open().await?, 3, "Open bumps the epoch of shard 0");
    ensure_eq!(c.batch().node_id, NODE, "the opener holds the lease");
    c.shift(10 * 86_400_000);
    let late = c.timer(&a, c.now() - 1);
    let batch = CommitBatch {
        creates: vec![late.clone()],
        fires: vec![fire(&late, AfterFire::Finished)],
        ..c.batch()
    };
    let (outcome, _) = c.commit(batch).await?;
    ensure!(outcome.fires[0].is_ok(), "an opened lease never expires: {outcome:?}");
    let opened = LeaseHolder { node_id: NODE.into(), address: String::new(), epoch: 3, tenure: 0 };
    ensure_eq!(
        c.acquire(LEASE_SHARD, OTHER, 2_000).await?,
        LeaseReply::Held { holder: opened },
        "opened lease"
    );
    ensure_eq!(c.renew(LEASE_SHARD, NODE, 3, 1_000).await?, LeaseReply::Renewed, "renewing an opened lease");

    // Grants are clamped to one day.
    ensure_eq!(c.acquire(9, NODE, u64::MAX).await?, LeaseReply::Granted { epoch: 1 }, "a huge ttl");
    c.shift(86_400_000 - 1);
    ensure_eq!(c.acquire(9, OTHER, 1).await?, LeaseReply::Held { holder: holder(NODE, 1) }, "within a day");
    c.shift(1);
    ensure_eq!(c.acquire(9, OTHER, 1).await?, LeaseReply::Granted { epoch: 2 }, "after a day");
    Ok(())
}

/// The address `Check::acquire_in` gives for `node`.
fn lease_address(node: &str) -> String {
    format!("{node}.test:7000")
}

/// The holder `Check::acquire_in` makes of `node` at `epoch` in `tenure`.
fn lease_holder(node: &str, epoch: u64, tenure: u64) -> LeaseHolder {
    LeaseHolder { node_id: node.into(), address: lease_address(node), epoch, tenure }
}

/// Tenures: a newer tenure of the holder takes over at once at a new epoch
/// and fences the old one out; the same tenure keeps its epoch; an older one
/// never takes the lease back.
async fn lease_tenures<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    let a = tenant("tenant-a");
    let t = c.timer(&a, c.now() + 100_000);
    let old = TENURE;
    let new = TENURE + 1;
    ensure_eq!(c.acquire_in(LEASE_SHARD, NODE, old, 2_000).await?, LeaseReply::Granted { epoch: 1 }, "first");
    ensure_eq!(
        c.acquire_in(LEASE_SHARD, NODE, old, 2_000).await?,
        LeaseReply::Granted { epoch: 1 },
        "the same tenure again: extended at its epoch"
    );
    c.shift(100);
    ensure_eq!(
        c.acquire_in(LEASE_SHARD, NODE, new, 2_000).await?,
        LeaseReply::Granted { epoch: 2 },
        "a newer tenure of the holder, lease unexpired: taken over at once"
    );
    let stale = CommitBatch { epoch: 1, creates: vec![t.clone()], ..c.batch() };
    let (outcome, _) = c.commit(stale).await?;
    ensure_eq!(
        &outcome.creates[0],
        &Err(StoreReject::StaleEpoch { current_epoch: 2 }),
        "the old tenure's late create is fenced out"
    );
    ensure_eq!(
        c.renew(LEASE_SHARD, NODE, 1, 2_000).await?,
        LeaseReply::Lost { holder: Some(lease_holder(NODE, 2, new)) },
        "the old tenure cannot renew"
    );
    let held = c.acquire_in(LEASE_SHARD, NODE, old, 2_000).await?;
    ensure!(
        matches!(&held, LeaseReply::Held { holder } if holder.epoch == 2 && holder.tenure == new),
        "an older tenure never takes the lease back: {held:?}"
    );
    let (outcome, _) = c.commit(CommitBatch { epoch: 2, creates: vec![t], ..c.batch() }).await?;
    ensure!(matches!(&outcome.creates[0], Ok(r) if r.created), "the new tenure writes: {outcome:?}");
    ensure_eq!(
        c.acquire_in(LEASE_SHARD, OTHER, new + 1, 2_000).await?,
        LeaseReply::Held { holder: lease_holder(NODE, 2, new) },
        "another node's tenure id never matters while the lease is held"
    );
    c.shift(2_000);
    ensure_eq!(
        c.acquire_in(LEASE_SHARD, NODE, old, 2_000).await?,
        LeaseReply::Granted { epoch: 3 },
        "an expired lease goes to any asker at a new epoch, an older tenure too"
    );
    Ok(())
}

async fn fire_recurring<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let a = tenant("tenant-a");
    let d = c.now();
    let t = c.interval(&a, d, 1_000, MisfirePolicy::FireOnce);
    c.create_all(vec![t.clone()]).await?;

    let first = fire_at(t.id, 1, d, AfterFire::Next { due_ms: d + 1_000 });
    let (outcome, events) = c.commit(CommitBatch { fires: vec![first.clone()], ..c.batch() }).await?;
    let (record, timer) = fired(&outcome.fires[0])?;
    ensure_eq!(record.map(|r| r.occurrence), Some(1), "first occurrence recorded");
    ensure_eq!(timer.status, TimerStatus::Scheduled, "still scheduled");
    ensure_eq!((timer.next_occurrence, timer.next_due_ms), (2, d + 1_000), "advanced");
    ensure_eq!(timer.last_fired_at_ms, Some(d), "last_fired_at");
    ensure_eq!(events.len(), 1, "one event");
    ensure_eq!(events[0].occurrence, 1, "the event carries the fired occurrence");

    let (outcome, _) = c.commit(CommitBatch { fires: vec![first], ..c.batch() }).await?;
    ensure_eq!(&outcome.fires[0], &Err(StoreReject::StateChanged), "the same occurrence again");
    let wrong_due = fire_at(t.id, 2, d, AfterFire::Next { due_ms: d + 2_000 });
    let (outcome, _) = c.commit(CommitBatch { fires: vec![wrong_due], ..c.batch() }).await?;
    ensure_eq!(&outcome.fires[0], &Err(StoreReject::StateChanged), "a stale due time");
    let second = fire_at(t.id, 2, d + 1_000, AfterFire::Finished);
    let (outcome, _) = c.commit(CommitBatch { fires: vec![second.clone()], ..c.batch() }).await?;
    ensure_eq!(
        &outcome.fires[0],
        &Err(StoreReject::TooEarly { store_now_ms: d }),
        "the next occurrence early"
    );
    ensure_eq!(c.load_due(None, d + 5_000, 10).await?.0.len(), 1, "the advanced timer is due again");

    c.shift(1_000);
    let (outcome, _) = c.commit(CommitBatch { fires: vec![second], ..c.batch() }).await?;
    let (_, timer) = fired(&outcome.fires[0])?;
    ensure_eq!((timer.status, timer.next_occurrence), (TimerStatus::Fired, 3), "finished after two fires");
    let fires = c.fires(&a, t.id, 0, 10).await?.unwrap_or_default();
    ensure_eq!(
        fires.iter().map(|f| (f.occurrence, f.due_ms)).collect::<Vec<_>>(),
        vec![(1, d), (2, d + 1_000)],
        "fires"
    );
    ensure_eq!(c.pending().await?, 0, "pending");
    Ok(())
}

/// What every store refuses alike (`minoots_core::commit` decides it once):
/// text holding U+0000 is refused item by item, naming the field, while the
/// rest of the commit applies; a batch the engine can never send — a
/// recurring fire whose next slot does not advance, an id created twice — is
/// refused as a whole, with nothing of it applied (the next commit numbers
/// its events on from the last applied one).
async fn impossible_items<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let a = tenant("tenant-a");
    let d = c.now();
    let recurring = c.interval(&a, d, 1_000, MisfirePolicy::FireOnce);
    c.create_all(vec![recurring.clone()]).await?;

    let mut named = c.timer(&a, d + 60_000);
    named.name = Some("nul\u{0}name".into());
    let mut labelled = c.timer(&a, d + 60_000);
    labelled.labels = labels(&[("team", "o\u{0}ps")]);
    let good = c.timer(&a, d + 60_000);
    let mut reason = cancel(&recurring, "ops");
    reason.reason = Some("because\u{0}".into());
    let batch =
        CommitBatch { creates: vec![named, labelled, good.clone()], cancels: vec![reason], ..c.batch() };
    let (outcome, events) = c.commit(batch).await?;
    let invalid = |field: &str| {
        StoreReject::Invalid(minoots_core::ValidationError::new(
            field,
            "must not contain the NUL character (\\u0000)",
        ))
    };
    ensure_eq!(&outcome.creates[0], &Err(invalid("name")), "a name holding NUL");
    ensure_eq!(&outcome.creates[1], &Err(invalid("labels")), "a label holding NUL");
    ensure!(matches!(&outcome.creates[2], Ok(c) if c.created), "the rest applies: {outcome:?}");
    ensure_eq!(&outcome.cancels[0], &Err(invalid("reason")), "a cancel reason holding NUL");
    ensure_eq!(events.len(), 1, "only the good create writes an event");

    let stuck = fire_at(recurring.id, 1, d, AfterFire::Next { due_ms: d });
    let stuck = CommitBatch { creates: vec![c.timer(&a, d + 1)], fires: vec![stuck], ..c.batch() };
    c.refused(StoreOp::Commit(stuck)).await?;
    let twice = CommitBatch { creates: vec![c.timer(&a, d + 2), good.clone()], ..c.batch() };
    c.refused(StoreOp::Commit(twice)).await?;

    let first = fire_at(recurring.id, 1, d, AfterFire::Next { due_ms: d + 1_000 });
    let (outcome, events) = c.commit(CommitBatch { fires: vec![first], ..c.batch() }).await?;
    ensure!(outcome.fires[0].is_ok(), "the timer is untouched by the refused commits: {outcome:?}");
    ensure_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3], "numbering continues");
    ensure_eq!(c.pending().await?, 2, "pending: the recurring timer and the good create");
    Ok(())
}

async fn fire_chain_and_skip<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let a = tenant("tenant-a");
    let d = c.now() - 1_000;
    // fire_all: occurrences 1..=5 are due, 6 is not yet, 7 then no longer matches.
    c.shift(-550); // now = d + 450
    let all = c.interval(&a, d, 100, MisfirePolicy::FireAll);
    c.create_all(vec![all.clone()]).await?;
    let chain: Vec<FireOp> = (0..7u32)
        .map(|k| {
            let due = d + 100 * i64::from(k);
            fire_at(all.id, k + 1, due, AfterFire::Next { due_ms: due + 100 })
        })
        .collect();
    let (outcome, events) = c.commit(CommitBatch { fires: chain, ..c.batch() }).await?;
    for (k, result) in outcome.fires.iter().take(5).enumerate() {
        let (record, _) = fired(result)?;
        ensure_eq!(record.map(|r| r.occurrence), Some(k as u32 + 1), "chain link");
    }
    ensure_eq!(
        &outcome.fires[5],
        &Err(StoreReject::TooEarly { store_now_ms: c.now() }),
        "the link not yet due"
    );
    ensure_eq!(&outcome.fires[6], &Err(StoreReject::StateChanged), "the link after a refused one");
    ensure_eq!(events.len(), 5, "five fired events");
    ensure!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1), "consecutive sequence numbers");
    ensure_eq!(c.fires(&a, all.id, 0, 100).await?.map(|f| f.len()), Some(5), "five fires recorded");

    // skip: dropped slots advance the due time but keep the occurrence number.
    let skip = c.interval(&a, d, 100, MisfirePolicy::Skip);
    let once = c.timer(&a, d);
    c.create_all(vec![skip.clone(), once.clone()]).await?;
    let dropped = |due: WallMs| FireOp {
        skipped: true,
        ..fire_at(skip.id, 1, due, AfterFire::Next { due_ms: due + 100 })
    };
    let batch = CommitBatch {
        fires: vec![
            dropped(d),
            dropped(d + 100),
            fire_at(skip.id, 1, d + 200, AfterFire::Next { due_ms: d + 300 }),
            FireOp { skipped: true, ..fire(&once, AfterFire::Finished) },
        ],
        ..c.batch()
    };
    let (outcome, events) = c.commit(batch).await?;
    let (record, timer) = fired(&outcome.fires[0])?;
    ensure!(record.is_none(), "a skipped op records no fire");
    ensure_eq!((timer.next_occurrence, timer.next_due_ms), (1, d + 100), "a skip advances the due time only");
    let (record, timer) = fired(&outcome.fires[2])?;
    ensure_eq!(record.map(|r| (r.occurrence, r.due_ms)), Some((1, d + 200)), "the fire after two skips");
    ensure_eq!((timer.next_occurrence, timer.next_due_ms), (2, d + 300), "after the fire");
    let (record, timer) = fired(&outcome.fires[3])?;
    ensure!(record.is_none(), "a skipped last occurrence records no fire");
    ensure_eq!(
        (timer.status, timer.last_fired_at_ms),
        (TimerStatus::Fired, None),
        "a skipped last occurrence"
    );
    ensure_eq!(events.len(), 1, "only the real fire writes an event");
    ensure_eq!(c.fires(&a, skip.id, 0, 10).await?.map(|f| f.len()), Some(1), "one fire of the skip timer");
    ensure_eq!(c.fires(&a, once.id, 0, 10).await?, Some(Vec::new()), "no fire of the skipped once timer");
    c.pending().await?;
    Ok(())
}

async fn load_due_paging<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let now = c.now();
    let mut creates = Vec::new();
    for (i, offset) in [-300i64, -200, -200, -200, -100, 0, 100, 10_000].into_iter().enumerate() {
        let owner = if i % 2 == 0 { &a } else { &b };
        creates.push(c.timer(owner, now + offset));
    }
    let recurring = c.interval(&a, now - 200, 50, MisfirePolicy::FireAll);
    let cancelled = c.timer(&a, now - 250);
    let finished = c.timer(&b, now - 50);
    creates.extend([recurring.clone(), cancelled.clone(), finished.clone()]);
    let owners: BTreeMap<TimerId, TenantId> = creates.iter().map(|t| (t.id, t.tenant_id.clone())).collect();
    c.create_all(creates).await?;
    let batch = CommitBatch {
        cancels: vec![cancel(&cancelled, "alice")],
        fires: vec![fire(&finished, AfterFire::Finished)],
        ..c.batch()
    };
    c.commit(batch).await?;

    for limit in [1u32, 2, 3, 7, 100] {
        let mut after = None;
        let mut seen: Vec<DueTimer> = Vec::new();
        loop {
            let (page, more) = c.load_due(after, now, limit).await?;
            ensure!(page.len() <= limit as usize, "a page longer than its limit");
            ensure!(!more || page.len() == limit as usize, "more = true on a short page");
            seen.extend(page.iter().cloned());
            match page.last() {
                Some(last) if more => after = Some((last.due_ms, last.timer_id)),
                _ => break,
            }
        }
        ensure_eq!(seen.len(), 7, format!("due timers with limit {limit}"));
        ensure!(
            seen.windows(2).all(|w| (w[0].due_ms, w[0].timer_id) < (w[1].due_ms, w[1].timer_id)),
            "(due, id) order"
        );
        ensure!(seen.iter().all(|t| t.due_ms <= now), "only due timers");
        ensure!(
            !seen.iter().any(|t| t.timer_id == cancelled.id || t.timer_id == finished.id),
            "only scheduled"
        );
        let rec = seen.iter().find(|t| t.timer_id == recurring.id).ok_or("the recurring timer is due")?;
        ensure!(rec.recurrence.is_some(), "a recurring timer carries its recurrence");
        ensure!(
            seen.iter().all(|t| owners.get(&t.timer_id) == Some(&t.tenant_id)),
            "each due timer names its tenant"
        );
    }
    ensure_eq!(c.load_due(None, now + 100, 100).await?.0.len(), 8, "until is inclusive");
    ensure_eq!(c.load_due(None, now - 1_000, 100).await?, (Vec::new(), false), "nothing due that early");
    let (page, more) = c.load_due(None, now, 0).await?;
    ensure!(page.is_empty() && more, "limit 0: nothing, but more");
    // A cursor between equal due times.
    let (page, _) = c.load_due(None, now, 2).await?;
    let (rest, more) = c.load_due(Some((page[1].due_ms, page[1].timer_id)), now - 200, 10).await?;
    ensure!(!more && rest.iter().all(|t| t.due_ms == now - 200), "the rest of the ties: {rest:?}");
    Ok(())
}

async fn list_fires_paging<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let d = c.now() - 1_000;
    let t = c.interval(&a, d, 10, MisfirePolicy::FireAll);
    let idle = c.timer(&a, d + 100_000);
    c.create_all(vec![t.clone(), idle.clone()]).await?;
    let chain = (0..5u32)
        .map(|k| {
            let due = d + 10 * i64::from(k);
            fire_at(t.id, k + 1, due, AfterFire::Next { due_ms: due + 10 })
        })
        .collect();
    c.commit(CommitBatch { fires: chain, ..c.batch() }).await?;
    let occurrences =
        |f: Option<Vec<FireRecord>>| f.map(|f| f.iter().map(|r| r.occurrence).collect::<Vec<_>>());
    ensure_eq!(occurrences(c.fires(&a, t.id, 0, 2).await?), Some(vec![1, 2]), "first page");
    ensure_eq!(occurrences(c.fires(&a, t.id, 2, 2).await?), Some(vec![3, 4]), "second page");
    ensure_eq!(occurrences(c.fires(&a, t.id, 4, 2).await?), Some(vec![5]), "last page");
    ensure_eq!(occurrences(c.fires(&a, t.id, 5, 2).await?), Some(vec![]), "after the last");
    ensure_eq!(occurrences(c.fires(&a, t.id, 0, 0).await?), Some(vec![]), "limit 0");
    ensure_eq!(occurrences(c.fires(&a, t.id, u32::MAX, 10).await?), Some(vec![]), "after u32::MAX");
    ensure_eq!(c.fires(&b, t.id, 0, 10).await?, None, "another tenant");
    let unknown = c.timer(&a, d).id;
    ensure_eq!(c.fires(&a, unknown, 0, 10).await?, None, "an unknown timer");
    ensure_eq!(c.fires(&a, idle.id, 0, 10).await?, Some(Vec::new()), "a timer without fires");
    Ok(())
}

async fn outbox<S: Store + ?Sized>(mut c: Check<'_, S>) -> Outcome {
    c.open().await?;
    let a = tenant("tenant-a");
    let now = c.now();
    ensure!(c.unpublished(0, 100).await?.is_empty(), "an empty outbox");
    let timers = vec![c.timer(&a, now - 1), c.timer(&a, now + 1_000), c.timer(&a, now + 2_000)];
    let (_, mut all) = c.commit(CommitBatch { creates: timers.clone(), ..c.batch() }).await?;
    // A batch whose every item is refused writes nothing and uses no sequence number.
    let stale = CommitBatch { epoch: 0, cancels: vec![cancel(&timers[1], "x")], ..c.batch() };
    let (_, events) = c.commit(stale).await?;
    ensure!(events.is_empty(), "a refused batch writes no event");
    let batch = CommitBatch {
        cancels: vec![cancel(&timers[1], "alice")],
        fires: vec![fire(&timers[0], AfterFire::Finished)],
        ..c.batch()
    };
    let (_, events) = c.commit(batch).await?;
    all.extend(events);
    ensure_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5], "sequence numbers");
    ensure_eq!(
        all.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![
            EventKind::Scheduled,
            EventKind::Scheduled,
            EventKind::Scheduled,
            EventKind::Cancelled,
            EventKind::Fired
        ],
        "event kinds"
    );
    ensure_eq!(c.unpublished(0, 100).await?, all.clone(), "the outbox holds the committed events");
    ensure_eq!(c.unpublished(2, 2).await?, all[2..4].to_vec(), "a page after a sequence number");
    c.mark(3).await?;
    ensure_eq!(c.unpublished(0, 100).await?, all[3..].to_vec(), "after marking 3");
    c.mark(1).await?;
    ensure_eq!(c.unpublished(0, 100).await?, all[3..].to_vec(), "marking never goes back");
    c.mark(5).await?;
    ensure!(c.unpublished(0, 100).await?.is_empty(), "everything published");
    let later = c.timer(&a, now);
    let (_, events) = c.commit(CommitBatch { creates: vec![later], ..c.batch() }).await?;
    ensure_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6], "numbering continues");
    ensure_eq!(c.unpublished(0, 100).await?, events, "the new event is unpublished");
    ensure_eq!(c.pending().await?, 2, "pending");
    Ok(())
}

async fn randomized<S: Store + ?Sized>(mut c: Check<'_, S>, seed: u64, steps: usize) -> Outcome {
    let mut rng = SeededRng::new(seed, 0);
    let tenants = [tenant("tenant-a"), tenant("tenant-b"), tenant("tenant-c")];
    let mut known: Vec<(TimerId, TenantId)> = Vec::new();
    c.open().await?;
    let context = |step: usize| move |e: String| format!("seed {seed}, random step {step}: {e}");
    for step in 0..steps {
        let roll = rng.below(100);
        let result: Outcome = async {
            match roll {
                0..=9 => {
                    let delta =
                        if rng.chance(75) { rng.below(3_000) as i64 } else { -(rng.below(1_000) as i64) };
                    c.shift(delta);
                }
                10..=11 => {
                    c.open().await?;
                }
                12..=15 => random_lease_op(&mut c, &mut rng).await?,
                16..=49 => {
                    let batch = random_batch(&mut c, &mut rng, &tenants, &mut known);
                    c.commit(batch).await?;
                }
                50..=57 => {
                    let (id, owner) = random_target(&mut c, &mut rng, &tenants, &known);
                    c.get(&owner, id).await?;
                }
                58..=67 => {
                    let q = random_query(&mut rng, &tenants, &known);
                    c.list(q).await?;
                }
                68..=75 => {
                    let until_ms = c.now() + rng.range_i64(-2_000, 2_000 + 1);
                    let after = match rng.choose(&known) {
                        Some((id, _)) if rng.chance(30) => {
                            Some((c.now() + rng.range_i64(-2_000, 2_000 + 1), *id))
                        }
                        _ => None,
                    };
                    let limit = rng.below(6) as u32;
                    c.load_due(after, until_ms, limit).await?;
                }
                76..=83 => {
                    let (id, owner) = random_target(&mut c, &mut rng, &tenants, &known);
                    let (after, limit) = (rng.below(3) as u32, rng.below(4) as u32);
                    c.fires(&owner, id, after, limit).await?;
                }
                84..=90 => {
                    let last = c.model().outbox().len() as u64;
                    let (after, limit) = (rng.below(last + 2), 1 + rng.below(10) as u32);
                    c.unpublished(after, limit).await?;
                }
                91..=95 => {
                    let last = c.model().outbox().len() as u64;
                    let up_to = rng.below(last + 1);
                    c.mark(up_to).await?;
                }
                _ => {
                    c.pending().await?;
                }
            }
            Ok(())
        }
        .await;
        result.map_err(context(step))?;
    }
    // Final sweep: everything, everywhere.
    for t in &tenants {
        list_all(&mut c, query(t, 1_000)).await.map_err(context(steps))?;
    }
    c.load_due(None, WallMs::MAX, 100_000).await.map_err(context(steps))?;
    c.unpublished(0, 100_000).await.map_err(context(steps))?;
    c.pending().await.map_err(context(steps))?;
    // The generator must keep exercising the interesting paths.
    let m = c.model();
    let cancelled = m.timers().values().filter(|t| t.status == TimerStatus::Cancelled).count();
    ensure!(
        m.fires().len() >= 10 && cancelled >= 5,
        "seed {seed}: the random run recorded too few fires or cancels"
    );
    Ok(())
}

/// An `AcquireLease` or `RenewLease` by either node, mostly on [`LEASE_SHARD`],
/// mostly at the epoch the store holds.
async fn random_lease_op<S: Store + ?Sized>(c: &mut Check<'_, S>, rng: &mut SeededRng) -> Outcome {
    let shard = if rng.chance(80) { LEASE_SHARD } else { 3 };
    let node = if rng.chance(50) { NODE } else { OTHER };
    let ttl_ms = 500 + rng.below(5_000);
    if rng.chance(50) {
        let tenure = TENURE + rng.below(3);
        c.acquire_in(shard, node, tenure, ttl_ms).await?;
    } else {
        let held = c.model().leases().get(&shard).map_or(0, |l| l.holder.epoch);
        let epoch = if rng.chance(85) { held } else { held + 1 };
        c.renew(shard, node, epoch, ttl_ms).await?;
    }
    Ok(())
}

/// A known timer (or now and then an unknown one), in its tenant most of the time.
fn random_target<S: Store + ?Sized>(
    c: &mut Check<'_, S>,
    rng: &mut SeededRng,
    tenants: &[TenantId],
    known: &[(TimerId, TenantId)],
) -> (TimerId, TenantId) {
    let any_tenant = rng.choose(tenants).cloned().unwrap_or_else(|| tenant("tenant-a"));
    match rng.choose(known) {
        Some((id, owner)) if rng.chance(90) => (*id, if rng.chance(80) { owner.clone() } else { any_tenant }),
        _ => (c.timer(&any_tenant, 0).id, any_tenant),
    }
}

fn random_labels(rng: &mut SeededRng) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if rng.chance(60) {
        out.insert("team".to_owned(), if rng.chance(50) { "a" } else { "b" }.to_owned());
    }
    if rng.chance(40) {
        out.insert("env".to_owned(), if rng.chance(50) { "prod" } else { "dev" }.to_owned());
    }
    out
}

fn random_query(rng: &mut SeededRng, tenants: &[TenantId], known: &[(TimerId, TenantId)]) -> ListQuery {
    let tenant_id = rng.choose(tenants).cloned().unwrap_or_else(|| tenant("tenant-a"));
    let statuses: Vec<TimerStatus> = [TimerStatus::Scheduled, TimerStatus::Fired, TimerStatus::Cancelled]
        .into_iter()
        .filter(|_| rng.chance(30))
        .collect();
    let labels = if rng.chance(40) { random_labels(rng) } else { BTreeMap::new() };
    let after = if rng.chance(30) { rng.choose(known).map(|(id, _)| *id) } else { None };
    ListQuery { tenant_id, statuses, labels, after, limit: 1 + rng.below(6) as u32 }
}

fn random_batch<S: Store + ?Sized>(
    c: &mut Check<'_, S>,
    rng: &mut SeededRng,
    tenants: &[TenantId],
    known: &mut Vec<(TimerId, TenantId)>,
) -> CommitBatch {
    let mut batch = c.batch();
    if rng.chance(12) {
        batch.epoch = if rng.chance(50) { batch.epoch.saturating_sub(1) } else { batch.epoch + 1 };
    }
    if rng.chance(8) {
        batch.node_id = if batch.node_id == NODE { OTHER } else { NODE }.into();
    }
    for _ in 0..rng.below(5) {
        let owner = rng.choose(tenants).cloned().unwrap_or_else(|| tenant("tenant-a"));
        let due = c.now() + rng.range_i64(-3_000, 3_000 + 1);
        let mut record = if rng.chance(40) {
            let misfire = *rng.pick(&[MisfirePolicy::FireOnce, MisfirePolicy::FireAll, MisfirePolicy::Skip]);
            c.interval(&owner, due, 100 + rng.below(2_000), misfire)
        } else {
            c.timer(&owner, due)
        };
        record.labels = random_labels(rng);
        if rng.chance(30) {
            record.idempotency_key = Some(format!("key-{}", rng.below(5)));
            record.request_fingerprint = rng.below(2);
        }
        if rng.chance(20) {
            record.metadata = None;
        }
        known.push((record.id, owner));
        batch.creates.push(record);
    }
    for _ in 0..rng.below(3) {
        let (timer_id, tenant_id) = random_target(c, rng, tenants, known);
        batch.cancels.push(CancelOp {
            tenant_id,
            timer_id,
            cancelled_by: "random".into(),
            reason: Some(format!("r{}", rng.below(3))),
        });
    }
    // Fires follow each timer's state as projected through the batch, so that chains happen.
    let mut projected: BTreeMap<TimerId, (u32, WallMs)> = BTreeMap::new();
    for _ in 0..rng.below(5) {
        let Some((timer_id, _)) = rng.choose(known).cloned() else { break };
        let Some(record) = c.model().timers().get(&timer_id).cloned() else {
            batch.fires.push(fire_at(timer_id, 1, c.now(), AfterFire::Finished));
            continue;
        };
        let (mut occurrence, mut due_ms) =
            projected.get(&timer_id).copied().unwrap_or((record.next_occurrence, record.next_due_ms));
        if rng.chance(10) {
            occurrence += 1;
        } else if rng.chance(10) {
            due_ms -= 1;
        }
        let step = match &record.schedule {
            Schedule::Interval { every_ms, .. } => *every_ms as i64,
            _ => 1 + rng.below(1_000) as i64,
        };
        let then = if record.schedule.is_recurring() && rng.chance(85) {
            AfterFire::Next { due_ms: due_ms + step }
        } else {
            AfterFire::Finished
        };
        let skipped = rng.chance(10);
        if let AfterFire::Next { due_ms: next } = then {
            projected.insert(timer_id, (if skipped { occurrence } else { occurrence + 1 }, next));
        }
        batch.fires.push(FireOp { timer_id, occurrence, due_ms, then, skipped });
    }
    batch
}

async fn keys<S: KeyStore + ?Sized>(store: &S, reference: &ModelStore) -> Outcome {
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let key = |id: &str, t: &TenantId, roles: &[Role], label: &str| ApiKeyRecord {
        id: id.into(),
        tenant_id: t.clone(),
        roles: roles.iter().copied().collect::<BTreeSet<Role>>(),
        label: label.into(),
        created_at_ms: START_MS,
        revoked_at_ms: None,
    };
    let fail = |what: &str, e: minoots_core::StoreFailure| format!("{what} failed: {e}");
    macro_rules! both {
        ($what:expr, |$s:ident| $call:expr) => {{
            let expected = {
                let $s = reference;
                $call.await.map_err(|e| fail($what, e))?
            };
            let actual = {
                let $s = store;
                $call.await.map_err(|e| fail($what, e))?
            };
            ensure!(actual == expected, "{}: expected {:?}, got {:?}", $what, expected, actual);
            actual
        }};
    }
    ensure_eq!(both!("count_keys on an empty store", |s| s.count_keys()), 0, "no keys");
    ensure_eq!(
        both!("find_key on an empty store", |s| s.find_key(&hash_api_key("secret-1"))),
        None,
        "no key"
    );
    let k1 = key("key_1", &a, &[Role::TimerRead, Role::TimerWrite], "ci");
    let k2 = key("key_2", &b, &[Role::TenantAdmin], "admin");
    let k0 = key("key_0", &a, &[Role::TimerRead], "reader");
    both!("insert key_1", |s| s.insert_key(k1.clone(), hash_api_key("secret-1")));
    both!("insert key_2", |s| s.insert_key(k2.clone(), hash_api_key("secret-2")));
    both!("insert key_0", |s| s.insert_key(k0.clone(), hash_api_key("secret-0")));
    ensure_eq!(
        both!("find key_1", |s| s.find_key(&hash_api_key("secret-1"))),
        Some(k1.clone()),
        "find key_1"
    );
    ensure_eq!(both!("find an unknown key", |s| s.find_key(&hash_api_key("nope"))), None, "unknown key");
    let ids = |keys: Vec<ApiKeyRecord>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    ensure_eq!(
        ids(both!("list all keys", |s| s.list_keys(None))),
        vec!["key_0", "key_1", "key_2"],
        "all keys by id"
    );
    ensure_eq!(
        ids(both!("list tenant a", |s| s.list_keys(Some(a.clone())))),
        vec!["key_0", "key_1"],
        "tenant a"
    );
    ensure_eq!(
        both!("list an unknown tenant", |s| s.list_keys(Some(tenant("tenant-z")))),
        Vec::new(),
        "none"
    );
    ensure_eq!(both!("count keys", |s| s.count_keys()), 3, "three keys");

    let revoked_at = START_MS + 5_000;
    ensure!(
        both!("revoke key_1", |s| s.revoke_key("key_1".into(), revoked_at)),
        "the first revocation applies"
    );
    ensure!(!both!("revoke key_1 again", |s| s.revoke_key("key_1".into(), revoked_at + 1)), "only once");
    ensure!(!both!("revoke an unknown key", |s| s.revoke_key("key_9".into(), revoked_at)), "unknown key");
    ensure_eq!(
        both!("find a revoked key", |s| s.find_key(&hash_api_key("secret-1"))),
        None,
        "revoked keys do not authenticate"
    );
    let listed = both!("list tenant a after revoking", |s| s.list_keys(Some(a.clone())));
    ensure_eq!(listed[1].revoked_at_ms, Some(revoked_at), "revocation time kept");
    ensure_eq!(both!("count after revoking", |s| s.count_keys()), 3, "revoked keys still count");

    // Re-inserting an id replaces that key.
    let renamed = ApiKeyRecord { label: "admin (rotated)".into(), ..k2.clone() };
    both!("replace key_2", |s| s.insert_key(renamed.clone(), hash_api_key("secret-2b")));
    ensure_eq!(
        both!("find the replaced key", |s| s.find_key(&hash_api_key("secret-2b"))),
        Some(renamed),
        "new hash"
    );
    ensure_eq!(both!("find the old hash", |s| s.find_key(&hash_api_key("secret-2"))), None, "old hash gone");
    ensure_eq!(both!("count after replacing", |s| s.count_keys()), 3, "still three keys");

    // Quota limits: none until set; replaced whole; a tenant without keys is created.
    let none = QuotaLimits::default();
    ensure_eq!(both!("quota of a new tenant", |s| s.tenant_quota(&a)), none, "unset");
    let own = QuotaLimits { pending_timers: Some(10), daily_creates: None, requests_per_second: Some(5) };
    both!("set a quota", |s| s.set_tenant_quota(a.clone(), own, START_MS));
    ensure_eq!(both!("read it back", |s| s.tenant_quota(&a)), own, "stored");
    ensure_eq!(both!("another tenant's quota", |s| s.tenant_quota(&b)), none, "untouched");
    let big = QuotaLimits {
        pending_timers: None,
        daily_creates: Some(i64::MAX as u64),
        requests_per_second: Some(u32::MAX),
    };
    both!("replace a quota", |s| s.set_tenant_quota(a.clone(), big, START_MS));
    ensure_eq!(both!("read the replacement", |s| s.tenant_quota(&a)), big, "replaced whole");
    let keyless = tenant("tenant-q");
    both!("quota of a tenant without keys", |s| s.set_tenant_quota(keyless.clone(), own, START_MS));
    ensure_eq!(both!("read it", |s| s.tenant_quota(&keyless)), own, "a tenant row is made");
    Ok(())
}
