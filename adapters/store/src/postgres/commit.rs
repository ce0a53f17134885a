//! One `StoreOp::Commit` inside one PostgreSQL transaction, with the
//! semantics of `minoots_core::model::StoreModel` (the reference).
//!
//! Like the SQLite store, the commit reads, decides in memory, then writes,
//! so a batch of thousands of items costs a fixed handful of statements:
//! 1. **Lock and read.** The lease row of `LEASE_SHARD` is read
//!    `FOR KEY SHARE` (a takeover, which locks it `FOR UPDATE`, waits for
//!    this transaction, and this transaction waits for a takeover under
//!    way). Then the meta row is locked (commits serialise on it, so outbox
//!    numbers follow commit order) and the store clock is read, after both
//!    locks. If the writer does not hold the lease at its epoch, unexpired,
//!    every item is refused (`StaleEpoch`, creates included) and nothing is
//!    written. Otherwise the timers the batch's idempotency keys name and the
//!    timers its cancels and fires name are read: one statement each, keys
//!    and ids bound as arrays.
//! 2. **Decide** item by item in batch order (creates, cancels, fires) on a
//!    working copy, exactly as the model does: idempotency, fencing (holder,
//!    epoch, expiry by the store clock), compare-and-set, never-early.
//! 3. **Write** new timers, changed timers, fires and outbox rows with one
//!    `UNNEST` statement each, then the counters. A fire and its outbox row
//!    commit together or not at all.
//!
//! The caller commits the transaction; any error rolls all of it back.

use std::collections::{BTreeMap, BTreeSet};

use minoots_core::event::{EventKind, OutboxEvent};
use minoots_core::store::{
    AfterFire, CancelOp, CommitBatch, CommitOutcome, Created, FireOp, Fired, LEASE_SHARD, StoreReply,
};
use minoots_core::timer::{FireRecord, TimerRecord, TimerStatus};
use minoots_core::{StoreFailure, StoreReject, TenantId, TimerId, WallMs};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};

use crate::postgres::lease::{self, Lock};
use crate::postgres::rows::{
    FireColumns, OutboxColumns, TimerChanges, TimerColumns, cancel_has_nul, pg_failure, timer_from_row,
    timer_has_nul,
};
use crate::postgres::sql::{
    INSERT_FIRES, INSERT_OUTBOX, INSERT_TIMERS, LOCK_META, TIMERS_BY_ID, TIMERS_BY_KEY, UPDATE_TIMERS,
    WRITE_META,
};
use crate::rows::{seq_from_sql, seq_to_sql};

/// Where a timer of the working set comes from, and so how it is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Created by this batch: inserted.
    New,
    /// Read from the database: written back only if changed.
    Stored { changed: bool },
}

#[derive(Debug)]
struct Working {
    record: TimerRecord,
    origin: Origin,
}

/// The in-memory state of one commit between its reads and its writes.
struct Commit<'b> {
    now: WallMs,
    batch: &'b CommitBatch,
    last_seq: u64,
    pending_delta: i64,
    timers: BTreeMap<TimerId, Working>,
    /// Ids of new timers, in creation order.
    created: Vec<TimerId>,
    fires: Vec<FireRecord>,
    events: Vec<OutboxEvent>,
}

/// Runs `batch` on `conn` (inside a transaction). `injected_now` is the
/// store clock's reading in injected-clock mode, `None` for the database clock.
pub(crate) async fn commit(
    conn: &mut PgConnection,
    injected_now: impl Fn() -> Option<WallMs>,
    batch: &CommitBatch,
) -> Result<StoreReply, StoreFailure> {
    let lease = lease::read(conn, LEASE_SHARD, Lock::Commit).await?;
    let meta = sqlx::query(LOCK_META)
        .bind(injected_now())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg_failure("locking meta", e))?;
    let last_seq = seq_from_sql(meta.try_get(0).map_err(|e| pg_failure("reading the outbox seq", e))?)?;
    let now: WallMs = meta.try_get(1).map_err(|e| pg_failure("reading the database clock", e))?;
    let mut state = Commit {
        now,
        batch,
        last_seq,
        pending_delta: 0,
        timers: BTreeMap::new(),
        created: Vec::new(),
        fires: Vec::new(),
        events: Vec::new(),
    };
    let mut outcome = CommitOutcome::default();

    // Every item is fenced by the writer's lease (creates too).
    let fenced = lease.as_ref().is_some_and(|l| l.fences(batch, now));
    let stale = StoreReject::StaleEpoch { current_epoch: lease.as_ref().map_or(0, |l| l.holder.epoch) };
    if !fenced {
        // Nothing applies: no timer is read, nothing is written.
        outcome.creates = batch.creates.iter().map(|_| Err(stale.clone())).collect();
        outcome.cancels = batch.cancels.iter().map(|_| Err(stale.clone())).collect();
        outcome.fires = batch.fires.iter().map(|_| Err(stale.clone())).collect();
        return Ok(StoreReply::Committed { outcome, events: Vec::new() });
    }

    let mut by_key = state.load_keyed(conn).await?;
    for record in &batch.creates {
        let result = state.create(record, &mut by_key)?;
        outcome.creates.push(result);
    }
    let wanted: BTreeSet<TimerId> =
        batch.cancels.iter().map(|c| c.timer_id).chain(batch.fires.iter().map(|f| f.timer_id)).collect();
    state.load_ids(conn, wanted).await?;
    for cancel in &batch.cancels {
        outcome.cancels.push(state.cancel(cancel));
    }
    for fire in &batch.fires {
        let result = state.fire(fire)?;
        outcome.fires.push(result);
    }

    state.write(conn).await?;
    Ok(StoreReply::Committed { outcome, events: state.events })
}

impl Commit<'_> {
    /// Loads the stored timers named by the creates' idempotency keys.
    async fn load_keyed(
        &mut self,
        conn: &mut PgConnection,
    ) -> Result<BTreeMap<(TenantId, String), TimerId>, StoreFailure> {
        let keys: BTreeSet<(&str, &str)> = self
            .batch
            .creates
            .iter()
            .filter_map(|r| r.idempotency_key.as_deref().map(|k| (r.tenant_id.as_str(), k)))
            .filter(|(t, k)| !t.contains('\0') && !k.contains('\0'))
            .collect();
        let mut by_key = BTreeMap::new();
        if keys.is_empty() {
            return Ok(by_key);
        }
        let (tenants, keys): (Vec<&str>, Vec<&str>) = keys.into_iter().unzip();
        let rows = sqlx::query(AssertSqlSafe(TIMERS_BY_KEY.as_str()))
            .bind(tenants)
            .bind(keys)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| pg_failure("looking up idempotency keys", e))?;
        for row in &rows {
            let record = timer_from_row(row)?;
            if let Some(key) = &record.idempotency_key {
                by_key.insert((record.tenant_id.clone(), key.clone()), record.id);
            }
            self.timers.insert(record.id, Working { record, origin: Origin::Stored { changed: false } });
        }
        Ok(by_key)
    }

    /// Loads the stored timers among `ids` that the working set lacks.
    async fn load_ids(
        &mut self,
        conn: &mut PgConnection,
        ids: BTreeSet<TimerId>,
    ) -> Result<(), StoreFailure> {
        let missing: Vec<uuid::Uuid> =
            ids.into_iter().filter(|id| !self.timers.contains_key(id)).map(|id| id.0).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(AssertSqlSafe(TIMERS_BY_ID.as_str()))
            .bind(missing)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| pg_failure("loading timers", e))?;
        for row in &rows {
            let record = timer_from_row(row)?;
            self.timers.insert(record.id, Working { record, origin: Origin::Stored { changed: false } });
        }
        Ok(())
    }

    fn create(
        &mut self,
        record: &TimerRecord,
        by_key: &mut BTreeMap<(TenantId, String), TimerId>,
    ) -> Result<Result<Created, StoreReject>, StoreFailure> {
        if timer_has_nul(record) {
            // PostgreSQL text cannot hold U+0000: refuse this create alone
            // rather than fail the whole group commit.
            return Ok(Err(StoreReject::StateChanged));
        }
        if let Some(key) = &record.idempotency_key {
            let slot = (record.tenant_id.clone(), key.clone());
            if let Some(existing) = by_key.get(&slot) {
                let timer = self.timers.get(existing).map(|w| w.record.clone()).ok_or_else(|| {
                    StoreFailure(format!("idempotency key of timer {existing} names no loaded timer"))
                })?;
                if timer.request_fingerprint != record.request_fingerprint {
                    return Ok(Err(StoreReject::IdempotencyMismatch));
                }
                return Ok(Ok(Created { timer, created: false }));
            }
            by_key.insert(slot, record.id);
        }
        if self.timers.contains_key(&record.id) {
            return Err(StoreFailure(format!("timer id {} created twice: ids must be unique", record.id)));
        }
        self.timers.insert(record.id, Working { record: record.clone(), origin: Origin::New });
        self.created.push(record.id);
        if record.status == TimerStatus::Scheduled {
            self.pending_delta += 1;
        }
        self.push_event(EventKind::Scheduled, record.clone(), None);
        Ok(Ok(Created { timer: record.clone(), created: true }))
    }

    fn cancel(&mut self, op: &CancelOp) -> Result<TimerRecord, StoreReject> {
        let now = self.now;
        let Some(working) = self.timers.get_mut(&op.timer_id).filter(|w| w.record.tenant_id == op.tenant_id)
        else {
            return Err(StoreReject::NotFound);
        };
        if working.record.status != TimerStatus::Scheduled {
            return Ok(working.record.clone());
        }
        if cancel_has_nul(op) {
            return Err(StoreReject::StateChanged);
        }
        let timer = &mut working.record;
        timer.status = TimerStatus::Cancelled;
        timer.cancelled_at_ms = Some(now);
        timer.cancelled_by = Some(op.cancelled_by.clone());
        timer.cancel_reason = op.reason.clone();
        let timer = timer.clone();
        working.origin.mark_changed();
        self.pending_delta -= 1;
        self.push_event(EventKind::Cancelled, timer.clone(), None);
        Ok(timer)
    }

    /// The outer error fails the whole commit (an impossible request from the
    /// engine); the inner one rejects this fire only.
    fn fire(&mut self, op: &FireOp) -> Result<Result<Fired, StoreReject>, StoreFailure> {
        let now = self.now;
        let Some(working) = self.timers.get_mut(&op.timer_id) else {
            return Ok(Err(StoreReject::NotFound));
        };
        let current = &working.record;
        if current.status != TimerStatus::Scheduled
            || current.next_occurrence != op.occurrence
            || current.next_due_ms != op.due_ms
        {
            return Ok(Err(StoreReject::StateChanged));
        }
        if op.due_ms > now {
            return Ok(Err(StoreReject::TooEarly { store_now_ms: now }));
        }
        if let AfterFire::Next { due_ms } = op.then
            && due_ms <= op.due_ms
        {
            return Err(StoreFailure(format!(
                "fire of {}:{}: the next occurrence ({due_ms}) must come after this one ({})",
                op.timer_id, op.occurrence, op.due_ms
            )));
        }
        working.origin.mark_changed();
        let timer = &mut working.record;
        match op.then {
            AfterFire::Finished => {
                timer.status = TimerStatus::Fired;
                self.pending_delta -= 1;
            }
            AfterFire::Next { due_ms } => timer.next_due_ms = due_ms,
        }
        if op.skipped {
            return Ok(Ok(Fired { fire: None, timer: timer.clone() }));
        }
        timer.next_occurrence += 1;
        timer.last_fired_at_ms = Some(now);
        let timer = timer.clone();
        let fire = FireRecord {
            timer_id: op.timer_id,
            occurrence: op.occurrence,
            due_ms: op.due_ms,
            fired_at_ms: now,
            epoch: self.batch.epoch,
            node_id: self.batch.node_id.clone(),
        };
        self.fires.push(fire.clone());
        self.push_event(EventKind::Fired, timer.clone(), Some(fire.clone()));
        Ok(Ok(Fired { fire: Some(fire), timer }))
    }

    fn push_event(&mut self, kind: EventKind, timer: TimerRecord, fire: Option<FireRecord>) {
        self.last_seq += 1;
        self.events.push(OutboxEvent {
            seq: self.last_seq,
            kind,
            tenant_id: timer.tenant_id.clone(),
            timer_id: timer.id,
            occurrence: fire.as_ref().map_or(timer.next_occurrence, |f| f.occurrence),
            occurred_at_ms: self.now,
            timer,
            fire,
        });
    }

    /// Writes every new and changed timer, the fires, the outbox rows and the counters.
    async fn write(&self, conn: &mut PgConnection) -> Result<(), StoreFailure> {
        let mut new = TimerColumns::default();
        for working in self.created.iter().filter_map(|id| self.timers.get(id)) {
            new.push(&working.record)?;
        }
        if !new.is_empty() {
            sqlx::query(AssertSqlSafe(INSERT_TIMERS.as_str()))
                .bind(new.id)
                .bind(new.tenant_id)
                .bind(new.requested_by)
                .bind(new.name)
                .bind(new.status)
                .bind(new.created_at_ms)
                .bind(new.schedule)
                .bind(new.misfire)
                .bind(new.next_due_ms)
                .bind(new.next_occurrence)
                .bind(new.last_fired_at_ms)
                .bind(new.cancelled_at_ms)
                .bind(new.cancelled_by)
                .bind(new.cancel_reason)
                .bind(new.labels)
                .bind(new.metadata)
                .bind(new.action_bundle)
                .bind(new.agent_binding)
                .bind(new.idempotency_key)
                .bind(new.request_fingerprint)
                .bind(new.shard)
                .execute(&mut *conn)
                .await
                .map_err(|e| pg_failure("inserting timers", e))?;
        }
        let mut changed = TimerChanges::default();
        for working in self.timers.values().filter(|w| w.origin == Origin::Stored { changed: true }) {
            changed.push(&working.record);
        }
        if !changed.is_empty() {
            sqlx::query(UPDATE_TIMERS)
                .bind(changed.id)
                .bind(changed.status)
                .bind(changed.next_due_ms)
                .bind(changed.next_occurrence)
                .bind(changed.last_fired_at_ms)
                .bind(changed.cancelled_at_ms)
                .bind(changed.cancelled_by)
                .bind(changed.cancel_reason)
                .execute(&mut *conn)
                .await
                .map_err(|e| pg_failure("updating timers", e))?;
        }
        if !self.fires.is_empty() {
            let mut fires = FireColumns::default();
            for fire in &self.fires {
                fires.push(fire)?;
            }
            sqlx::query(INSERT_FIRES)
                .bind(fires.timer_id)
                .bind(fires.occurrence)
                .bind(fires.due_ms)
                .bind(fires.fired_at_ms)
                .bind(fires.epoch)
                .bind(fires.node_id)
                .execute(&mut *conn)
                .await
                .map_err(|e| pg_failure("recording fires", e))?;
        }
        if !self.events.is_empty() {
            let mut rows = OutboxColumns::default();
            for event in &self.events {
                rows.push(event)?;
            }
            sqlx::query(INSERT_OUTBOX)
                .bind(rows.seq)
                .bind(rows.kind)
                .bind(rows.tenant_id)
                .bind(rows.timer_id)
                .bind(rows.occurrence)
                .bind(rows.created_at_ms)
                .bind(rows.event)
                .execute(&mut *conn)
                .await
                .map_err(|e| pg_failure("writing the outbox", e))?;
        }
        if !self.events.is_empty() || self.pending_delta != 0 {
            sqlx::query(WRITE_META)
                .bind(seq_to_sql(self.last_seq)?)
                .bind(self.pending_delta)
                .execute(&mut *conn)
                .await
                .map_err(|e| pg_failure("updating meta", e))?;
        }
        Ok(())
    }
}

impl Origin {
    fn mark_changed(&mut self) {
        if let Origin::Stored { changed } = self {
            *changed = true;
        }
    }
}
