//! The action runner: turns fire events into queued deliveries (intake),
//! then claims due deliveries, runs them, and records every attempt with
//! what follows it (delivered, retry after backoff, dead-lettered).
//!
//! Intake comes from the outbox in standalone mode ([`OutboxIntake`], an
//! [`EventSink`] the relay hands rows to before it marks them published) or
//! from a JetStream durable consumer (`crate::nats`). Either way a delivery
//! is queued before its source is acknowledged, and queueing is idempotent
//! (keyed by `{timer_id}:{occurrence}:{action_id}`), so a repeated event
//! never queues a second delivery. Fresh deliveries reach the runner of the
//! same process through its [`Inbox`], already claimed; the runner also
//! claims due deliveries from the store (retries, deferrals, what the inbox
//! could not take, what a dead incarnation left).
//!
//! A delivery never starts before its fire is recorded: only `timer.fired`
//! events, which the store writes in the fire's own transaction, queue work.
//!
//! Slots are shared fairly among tenants ([`crate::fair_slots`]): one
//! tenant runs at most `concurrency_per_tenant` deliveries at once, so a
//! receiver that never answers holds that many slots, never all of them.
//!
//! Each [`Runner`] is one *incarnation* of its runner id (a fresh id per
//! process start, see [`crate::claims`]): it registers before claiming
//! anything (releasing a previous incarnation's claims), renews its
//! heartbeat every `heartbeat_ms` while it runs — releasing, each time, the
//! void claims of runners that died or attempts that overran their bound,
//! so that any runner claims those deliveries next — and releases its claims
//! when it stops cleanly. Every attempt is bounded by `attempt_timeout_ms`
//! and recorded through the [`Recorder`] (group commits).
//! An attempt its destination's circuit breaker refuses is deferred: the
//! delivery is put back for the breaker's probe time, no attempt recorded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use minoots_core::action::{Action, ActionPolicy, RetryPolicy, parse_bundle};
use minoots_core::command::CommandPolicy;
use minoots_core::destination::DestinationPolicy;
use minoots_core::event::{EventKind, OutboxEvent};
use minoots_node::EventSink;
use minoots_node::metrics::Metrics;
use minoots_node::views::EventEnvelope;
use tokio::sync::{mpsc, watch};

use crate::circuits::Deferral;
use crate::claims::ClaimTerms;
use crate::execute::{Executor, Failure, Undelivered};
use crate::fair_slots::{FairSlots, Slot, Started};
use crate::inbox::Inbox;
use crate::recorder::{RecordFailed, Recorder};
use crate::store::{ActionStore, AttemptOutcome, AttemptRecord, ClaimedDelivery, NewDelivery, NextStep};
use crate::tenant_keys::TenantKeys;

/// A claim outlives its attempt's bound by this much (time to record the attempt).
const CLAIM_MARGIN_MS: u64 = 30_000;
/// Incarnations that have not beaten for this long are forgotten (their claims were void long before).
const FORGET_LAPSED_AFTER_MS: i64 = 3_600_000;
/// Forgetting lapsed incarnations runs every this many heartbeats.
const FORGET_EVERY_BEATS: u64 = 600;
/// Tries to record an attempt (or a deferral) before giving up on it (the claim then lapses).
const RECORD_TRIES: u32 = 20;
/// With every slot busy, look at the store again after this long.
const BUSY_LOOK_MS: u64 = 5;
/// When the only due deliveries in the store are those of tenants already
/// stocked ([`FairSlots::stocked`]), look again after this long, and let no
/// wake-up (an overflowing inbox) bring the look forward: each look would
/// scan past those tenants' backlog for nothing. One of them running low
/// brings it forward ([`FairSlots::any_restocking`]).
const SKIPPING_LOOK_MS: u64 = 50;

/// Tunables of a runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The runner id (the node id): recorded with every attempt; a new
    /// incarnation of the same id releases the claims of the previous ones.
    pub runner_id: String,
    /// Deliveries running at once.
    pub concurrency: usize,
    /// Deliveries of one tenant running at once (at most `concurrency`).
    pub concurrency_per_tenant: usize,
    /// Longest one attempt may run (webhook timeouts are ≤ 5 min); a claim lasts this plus a margin.
    pub attempt_timeout_ms: u64,
    /// How often the incarnation's heartbeat is renewed.
    pub heartbeat_ms: u64,
    /// Another incarnation's claims are void once its heartbeat is this old (database clock).
    pub heartbeat_lapse_ms: u64,
    /// Longest sleep when nothing is due.
    pub idle_poll_ms: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            runner_id: "runner".into(),
            concurrency: 256,
            concurrency_per_tenant: 64,
            attempt_timeout_ms: 330_000,
            heartbeat_ms: 1_000,
            heartbeat_lapse_ms: 5_000,
            idle_poll_ms: 1_000,
        }
    }
}

/// Something interested in finished deliveries (the JetStream `delivered`
/// and `dead` events, the DLQ stream).
pub trait DeliveryObserver: Send + Sync + 'static {
    /// A delivery succeeded, or was dead-lettered (`delivered = false`).
    fn finished<'a>(
        &'a self,
        delivery: &'a NewDelivery,
        attempt: &'a AttemptRecord,
        delivered: bool,
    ) -> BoxFuture<'a, ()>;
}

/// The deliveries a fire event asks for (none for other events or timers
/// without actions). `shown` is the envelope as tenants see it (header values
/// redacted), which each delivery carries and its action sends; `bundle` is
/// the timer's action bundle as stored, secrets included.
pub fn deliveries_of(shown: &EventEnvelope, bundle: Option<&serde_json::Value>) -> Vec<NewDelivery> {
    if shown.event.kind != minoots_node::views::event_type(EventKind::Fired) {
        return Vec::new();
    }
    let Some(bundle_value) = bundle.filter(|b| !b.is_null()) else {
        return Vec::new();
    };
    let Some(fire) = &shown.event.fire else { return Vec::new() };
    // Structure only: kinds and destinations the operator turned off since are refused when run.
    let everything = ActionPolicy {
        commands: CommandPolicy::Any,
        files_allowed: true,
        agent_endpoint: true,
        webhook_destinations: DestinationPolicy::allow_all(),
    };
    let bundle = match parse_bundle(bundle_value, &everything) {
        Ok(bundle) => bundle,
        Err(e) => {
            tracing::warn!(timer = %shown.event.timer.id, error = %e.message, field = %e.field, "a fired timer's action bundle does not parse; no delivery queued");
            return Vec::new();
        }
    };
    let retry_policy = serde_json::to_string(&bundle.retry_policy).unwrap_or_default();
    let shown_json = serde_json::to_string(shown).unwrap_or_default();
    bundle
        .actions
        .iter()
        .map(|action| NewDelivery {
            idempotency_key: format!("{}:{}:{}", shown.event.timer.id, fire.occurrence, action.id),
            tenant_id: shown.tenant_id.clone(),
            timer_id: shown.event.timer.id.clone(),
            occurrence: fire.occurrence,
            action_id: action.id.clone(),
            kind: action.kind.name().to_owned(),
            action: serde_json::to_string(action).unwrap_or_default(),
            retry_policy: retry_policy.clone(),
            envelope: shown_json.clone(),
        })
        .collect()
}

/// The standalone intake: the relay's sink, queueing deliveries in the
/// action store and handing them to the local runner.
pub struct OutboxIntake {
    store: ActionStore,
    inbox: Arc<Inbox>,
    clock: Arc<dyn minoots_node::Clock>,
    keys: Arc<TenantKeys>,
}

impl std::fmt::Debug for OutboxIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxIntake").finish_non_exhaustive()
    }
}

impl OutboxIntake {
    /// Queues into `store` and hands fresh deliveries to the runner reading
    /// `inbox`; warms the signing `keys` of tenants scheduling timers with actions.
    pub fn new(
        store: ActionStore,
        inbox: Arc<Inbox>,
        clock: Arc<dyn minoots_node::Clock>,
        keys: Arc<TenantKeys>,
    ) -> Self {
        Self { store, inbox, clock, keys }
    }
}

impl EventSink for OutboxIntake {
    fn publish<'a>(&'a self, rows: &'a [OutboxEvent]) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            let mut deliveries = Vec::new();
            let scheduling: BTreeSet<&str> = rows
                .iter()
                .filter(|r| r.kind == EventKind::Scheduled && r.timer.action_bundle.is_some())
                .map(|r| r.tenant_id.as_str())
                .collect();
            for tenant in scheduling {
                self.keys.warm(tenant);
            }
            for row in rows.iter().filter(|r| r.kind == EventKind::Fired && r.timer.action_bundle.is_some()) {
                deliveries.extend(deliveries_of(&EventEnvelope::from(row), row.timer.action_bundle.as_ref()));
            }
            if deliveries.is_empty() {
                return rows.len();
            }
            match self.inbox.queue(&self.store, deliveries, self.clock.now().wall_ms).await {
                Ok(_) => rows.len(),
                Err(e) => {
                    tracing::warn!(error = %e, "queueing deliveries failed; the outbox keeps the events");
                    0
                }
            }
        })
    }
}

/// A running runner's shared parts: one incarnation.
pub struct Runner {
    store: ActionStore,
    inbox: Arc<Inbox>,
    recorder: Recorder,
    executor: Arc<Executor>,
    metrics: Arc<Metrics>,
    config: RunnerConfig,
    incarnation: String,
    clock: Arc<dyn minoots_node::Clock>,
    observer: Option<Arc<dyn DeliveryObserver>>,
}

impl Runner {
    /// A runner over `store` reading `inbox`: a new incarnation of
    /// `config.runner_id`. Starts its attempt recorder (call it within a
    /// tokio runtime).
    pub fn new(
        store: ActionStore,
        inbox: Arc<Inbox>,
        executor: Arc<Executor>,
        metrics: Arc<Metrics>,
        config: RunnerConfig,
        clock: Arc<dyn minoots_node::Clock>,
        observer: Option<Arc<dyn DeliveryObserver>>,
    ) -> Arc<Self> {
        let incarnation = format!("{}/{:016x}", config.runner_id, rand::random::<u64>());
        let (recorder, _recording) = Recorder::start(store.clone());
        Arc::new(Self { store, inbox, recorder, executor, metrics, config, incarnation, clock, observer })
    }

    /// This incarnation's id (recorded on its claims).
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// Registers this incarnation, retrying with backoff until it succeeds;
    /// `false` when `shutdown` came first. Nothing may be claimed before:
    /// a claim by an unregistered incarnation is void.
    async fn register(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut wait_ms = 100u64;
        loop {
            match self.store.register_incarnation(&self.config.runner_id, &self.incarnation).await {
                Ok(released) => {
                    if released > 0 {
                        tracing::info!(runner = %self.config.runner_id, released, "released a previous incarnation's claims: those deliveries run again now");
                    }
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = wait_ms, "registering the action runner failed")
                }
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return false,
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            }
            wait_ms = (wait_ms * 2).min(5_000);
        }
    }

    /// Renews the heartbeat every `heartbeat_ms` until `shutdown`, releasing
    /// void claims first; now and then forgets incarnations that lapsed long ago.
    async fn beat(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let period = Duration::from_millis(self.config.heartbeat_ms.max(1));
        let mut failing = false;
        for beat in 1u64.. {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(period) => {}
            }
            self.release_void_claims().await;
            match self.store.heartbeat(&self.config.runner_id, &self.incarnation).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the action runner's heartbeat is renewed again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, lapse_ms = self.config.heartbeat_lapse_ms, "renewing the action runner's heartbeat failed; other runners take over its claims if this lasts");
                }
                Err(_) => {}
            }
            if beat.is_multiple_of(FORGET_EVERY_BEATS)
                && let Err(e) = self.store.forget_lapsed_incarnations(FORGET_LAPSED_AFTER_MS).await
            {
                tracing::debug!(error = %e, "forgetting lapsed runner incarnations failed");
            }
        }
    }

    /// Releases the store's void claims (a dead runner's, or past their
    /// bound); wakes the runner when there are some: they are due now.
    async fn release_void_claims(&self) {
        let lapse_ms = i64::try_from(self.config.heartbeat_lapse_ms).unwrap_or(i64::MAX);
        match self.store.release_void_claims(self.clock.now().wall_ms, lapse_ms).await {
            Ok(0) => {}
            Ok(released) => {
                tracing::info!(released, "released void delivery claims: those deliveries run again now");
                self.inbox.wake.notify_one();
            }
            // A failing store is reported once by the heartbeat, not every beat here.
            Err(e) => tracing::debug!(error = %e, "releasing void delivery claims failed"),
        }
    }

    /// Registers, then runs what its inbox hands it and claims due
    /// deliveries from the store, until `shutdown` turns true. On the way
    /// out, waits (bounded) for running attempts and releases this
    /// incarnation's claims.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if !self.register(&mut shutdown).await {
            return;
        }
        let heartbeat = tokio::spawn(self.clone().beat(shutdown.clone()));
        let concurrency = self.config.concurrency.max(1);
        let slots = FairSlots::new(
            concurrency,
            self.config.concurrency_per_tenant,
            concurrency.saturating_mul(crate::inbox::INBOX_CAPACITY_PER_SLOT),
        );
        let claim_ms =
            i64::try_from(self.config.attempt_timeout_ms.saturating_add(CLAIM_MARGIN_MS)).unwrap_or(i64::MAX);
        let mut inbox = self.inbox.open(&self.incarnation, claim_ms);
        if inbox.is_none() {
            tracing::warn!("another runner already reads this inbox; claiming from the store only");
        }
        let mut failures = 0u32;
        // When to look at the store next (at once: a predecessor may have left work).
        let mut look_at = tokio::time::Instant::now();
        // Wake-ups do not bring a look forward before this.
        let mut quiet_until = look_at;
        // The stocked tenants the last look skipped, while it found nothing else.
        let mut skipped: Vec<String> = Vec::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            for started in slots.take_ready(self.clock.now().wall_ms) {
                self.launch(started, claim_ms).await;
            }
            if tokio::time::Instant::now() >= look_at {
                let next = self.claim_from_store(&slots, claim_ms, &mut failures).await;
                look_at = tokio::time::Instant::now() + Duration::from_millis(next.after_ms);
                if next.quiet {
                    quiet_until = look_at;
                }
                skipped = next.skipped;
                if next.after_ms == 0 {
                    continue;
                }
            }
            // A look at the store that is due goes first: a busy inbox never starves what waits there.
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep_until(look_at) => {}
                _ = self.inbox.wake.notified() => {
                    look_at = look_at.min(tokio::time::Instant::now().max(quiet_until));
                }
                _ = slots.freed.notified() => {
                    // Claim more for a busy tenant before its slots run dry.
                    if !skipped.is_empty() && slots.any_restocking(&skipped) {
                        look_at = tokio::time::Instant::now();
                        quiet_until = look_at;
                        skipped.clear();
                    }
                }
                Some(claimed) = next_handed(&mut inbox), if !slots.waiting_is_full() => {
                    if let Some(started) = slots.offer(claimed, self.clock.now().wall_ms) {
                        self.launch(started, claim_ms).await;
                    }
                }
            }
        }
        // Let running attempts finish (bounded), then hand what is left
        // (waiting deliveries included) to other runners.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while slots.running() > 0 {
                slots.freed.notified().await;
            }
        })
        .await
        .is_ok();
        let _ = heartbeat.await;
        if drained {
            match self.store.retire_incarnation(&self.incarnation).await {
                Ok(released) => tracing::info!(released, "action runner stopped; its claims are released"),
                Err(e) => {
                    tracing::warn!(error = %e, "releasing the action runner's claims failed; they lapse with its heartbeat")
                }
            }
        }
    }

    /// Claims due deliveries from the store for the free slots and starts
    /// them; says when the store is worth another look.
    async fn claim_from_store(
        self: &Arc<Self>,
        slots: &Arc<FairSlots>,
        claim_ms: i64,
        failures: &mut u32,
    ) -> NextLook {
        let free = slots.free();
        if free == 0 || slots.waiting_is_full() {
            return NextLook::after(BUSY_LOOK_MS);
        }
        let now_ms = self.clock.now().wall_ms;
        let skip_tenants = slots.stocked();
        let claimed = self
            .store
            .claim_due(ClaimTerms {
                incarnation: &self.incarnation,
                now_ms,
                claim_until_ms: now_ms.saturating_add(claim_ms),
                limit: free as u32,
                skip_tenants: &skip_tenants,
            })
            .await;
        match claimed {
            Ok(batch) if !batch.is_empty() => {
                *failures = 0;
                for claimed in batch {
                    if let Some(started) = slots.offer(claimed, now_ms) {
                        self.launch(started, claim_ms).await;
                    }
                }
                NextLook::after(0)
            }
            Ok(_) if !skip_tenants.is_empty() => {
                *failures = 0;
                NextLook { after_ms: SKIPPING_LOOK_MS, quiet: true, skipped: skip_tenants }
            }
            Ok(_) => {
                *failures = 0;
                let after_ms = match self.store.next_due_ms().await {
                    Ok(Some(at)) => u64::try_from(at - self.clock.now().wall_ms)
                        .unwrap_or(0)
                        .min(self.config.idle_poll_ms),
                    Ok(None) => self.config.idle_poll_ms,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the next due delivery failed");
                        self.config.idle_poll_ms
                    }
                };
                NextLook::after(after_ms)
            }
            Err(e) => {
                *failures += 1;
                tracing::warn!(error = %e, "claiming deliveries failed");
                NextLook::after((100u64 << (*failures).min(6)).min(5_000))
            }
        }
    }

    /// Starts one attempt in its slot. A delivery that waited for its slot
    /// long enough for its claim to run short first extends the claim (and
    /// is left alone if the claim is no longer this runner's).
    async fn launch(self: &Arc<Self>, started: Started, claim_ms: i64) {
        let Started { claimed, slot, waited_ms } = started;
        if waited_ms > CLAIM_MARGIN_MS as i64 / 2 {
            let until_ms = self.clock.now().wall_ms.saturating_add(claim_ms);
            match self
                .store
                .extend_claim(&claimed.delivery.idempotency_key, &self.incarnation, until_ms)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "extending a waiting delivery's claim failed; it runs once the claim lapses");
                    return;
                }
            }
        }
        let runner = self.clone();
        tokio::spawn(async move { runner.attempt(claimed, slot).await });
    }

    /// One attempt of one claimed delivery, recorded with its next step.
    /// The `slot` is given back as soon as the action has run: concurrency
    /// bounds requests in flight, while recording waits in the recorder's
    /// bounded queue.
    async fn attempt(&self, claimed: ClaimedDelivery, slot: Slot) {
        let delivery = &claimed.delivery;
        let attempt_no = claimed.attempts + 1;
        let round_no = claimed.round_attempts + 1;
        let policy: RetryPolicy = serde_json::from_str(&delivery.retry_policy).unwrap_or_default();
        let started_at_ms = self.clock.now().wall_ms;
        let started = tokio::time::Instant::now();
        let bound = Duration::from_millis(self.config.attempt_timeout_ms.max(1));
        let result = match serde_json::from_str::<Action>(&delivery.action) {
            Ok(action) => {
                match tokio::time::timeout(bound, self.executor.run(delivery, &action, attempt_no)).await {
                    Ok(result) => result,
                    Err(_) => Err(Undelivered::Failed(Failure::transient(format!(
                        "the attempt did not finish within {} ms",
                        self.config.attempt_timeout_ms
                    )))),
                }
            }
            Err(e) => Err(Failure::permanent(format!("the stored action does not parse: {e}")).into()),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        drop(slot);
        let now_ms = self.clock.now().wall_ms;
        let result = match result {
            Ok(done) => Ok(done),
            Err(Undelivered::Failed(failure)) => Err(failure),
            Err(Undelivered::Deferred(deferral)) => return self.defer(delivery, deferral, now_ms).await,
        };
        let (outcome, next, status_code, error, output) = match result {
            Ok(done) => (AttemptOutcome::Succeeded, NextStep::Delivered, done.status_code, None, done.output),
            Err(failure) if failure.retryable && round_no < policy.max_attempts => {
                let delay_ms = policy.retry_delay_ms(round_no, rand::random(), failure.retry_after_ms);
                let at = now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
                (AttemptOutcome::Retry, NextStep::RetryAt(at), failure.status_code, Some(failure.error), None)
            }
            Err(failure) => {
                (AttemptOutcome::Failed, NextStep::DeadLetter, failure.status_code, Some(failure.error), None)
            }
        };
        let kind: &'static str = kind_label(&delivery.kind);
        self.metrics.action_attempts.get_or_create(&[("kind", kind), ("outcome", outcome.as_str())]).inc();
        self.metrics.action_duration.observe(duration_ms as f64 / 1_000.0);
        let record = AttemptRecord {
            idempotency_key: delivery.idempotency_key.clone(),
            attempt: attempt_no,
            timer_id: delivery.timer_id.clone(),
            occurrence: delivery.occurrence,
            action_id: delivery.action_id.clone(),
            kind: delivery.kind.clone(),
            started_at_ms,
            duration_ms,
            outcome,
            status_code,
            error,
            output,
            runner: self.config.runner_id.clone(),
        };
        // The record must land: a lost record would run the delivery again
        // after its claim lapses (still at least once, with the same key).
        let mut wait_ms = 100u64;
        for _ in 0..RECORD_TRIES {
            match self.recorder.record(delivery, &record, next, now_ms).await {
                Ok(Some(number)) => {
                    if next == NextStep::DeadLetter {
                        self.metrics.action_dead_lettered.inc();
                        tracing::warn!(key = %delivery.idempotency_key, attempts = number, error = ?record.error, "delivery dead-lettered");
                    }
                    if let NextStep::RetryAt(_) = next {
                        // The store holds the retry now: look again when it is due.
                        self.inbox.wake.notify_one();
                    }
                    if let (Some(observer), NextStep::Delivered | NextStep::DeadLetter) =
                        (&self.observer, next)
                    {
                        observer.finished(delivery, &record, next == NextStep::Delivered).await;
                    }
                    return;
                }
                Ok(None) => return, // another runner finished it
                // Stopping: the claim is released or lapses, and the delivery runs again.
                Err(RecordFailed::Stopped) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "recording an attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    wait_ms = (wait_ms * 2).min(5_000);
                }
            }
        }
    }
}

impl Runner {
    /// Puts a delivery its destination's breaker refused back for the
    /// breaker's probe time: not an attempt (nothing recorded, no retry used).
    async fn defer(&self, delivery: &NewDelivery, deferral: Deferral, now_ms: i64) {
        self.metrics.action_deferred.inc();
        let mut wait_ms = 100u64;
        for _ in 0..RECORD_TRIES {
            match self
                .store
                .defer(delivery, &self.incarnation, deferral.until_ms, &deferral.reason, now_ms)
                .await
            {
                Ok(_) => {
                    // false: no longer ours (taken over or finished); true: look again when it is due.
                    self.inbox.wake.notify_one();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deferring a delivery failed; retrying");
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    wait_ms = (wait_ms * 2).min(5_000);
                }
            }
        }
    }
}

/// When the runner looks at the store next.
#[derive(Debug, Clone)]
struct NextLook {
    /// After this long (0: at once).
    after_ms: u64,
    /// Whether wake-ups may not bring the look forward meanwhile.
    quiet: bool,
    /// The stocked tenants this look skipped (finding nothing else): one
    /// of them running low brings the next look forward.
    skipped: Vec<String>,
}

impl NextLook {
    fn after(after_ms: u64) -> Self {
        Self { after_ms, quiet: false, skipped: Vec::new() }
    }
}

/// The next delivery the inbox hands over; never resolves without an inbox.
async fn next_handed(inbox: &mut Option<mpsc::Receiver<ClaimedDelivery>>) -> Option<ClaimedDelivery> {
    match inbox {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

fn kind_label(kind: &str) -> &'static str {
    match kind {
        "webhook" => "webhook",
        "nats" => "nats",
        "command" => "command",
        "file" => "file",
        "workflow_event" => "workflow_event",
        "agent_prompt" => "agent_prompt",
        _ => "unknown",
    }
}
