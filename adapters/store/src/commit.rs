//! One `StoreOp::Commit` inside one SQLite write transaction, with the
//! semantics of `minoots_core::model::StoreModel` (the reference).
//!
//! The commit works in three phases so that a batch of thousands of items
//! costs a handful of statements, not several round trips per item:
//! 1. **Read**: the outbox counter, the lease, the timers the batch's
//!    idempotency keys name, and (when the writer holds the lease) the timers
//!    its cancels and fires name — one statement each, with the keys or ids
//!    passed as one JSON array.
//! 2. **Decide** in memory, item by item in batch order (creates, then
//!    cancels, then fires), on a working copy of those timers, exactly as the
//!    model does: idempotency, fencing (lease holder, epoch and expiry),
//!    compare-and-set, never-early.
//! 3. **Write** the final state of every new or changed timer, the fire
//!    records and the outbox rows with multi-row inserts, and the counters.
//!
//! The caller runs this inside `BEGIN IMMEDIATE … COMMIT`, so the reads and
//! writes are one serialisable transaction; any error leaves nothing applied.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use minoots_core::event::{EventKind, OutboxEvent};
use minoots_core::store::{
    AfterFire, CommitBatch, CommitOutcome, Created, FireOp, Fired, LEASE_SHARD, StoreReply,
};
use minoots_core::timer::{FireRecord, TimerRecord, TimerStatus};
use minoots_core::{StoreFailure, StoreReject, TenantId, TimerId, WallMs};
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row};

use crate::rows::{
    bind_event, bind_fire, bind_timer, db_failure, event_json, id_hex, seq_from_sql, seq_to_sql,
    timer_from_row,
};
use crate::sql::{READ_META, Sql, WRITE_META};

/// Where a timer of the working set comes from, and so how it is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Created by this batch: inserted.
    New,
    /// Read from the database: written back only if changed.
    Stored { changed: bool },
}

/// A timer as this commit sees it. New timers borrow the batch's record until
/// a cancel or fire in the same batch changes them (most never are).
#[derive(Debug)]
struct Working<'b> {
    record: Cow<'b, TimerRecord>,
    origin: Origin,
}

/// The in-memory state of one commit between its reads and its writes.
struct Commit<'b> {
    now: WallMs,
    batch: &'b CommitBatch,
    last_seq: u64,
    pending_delta: i64,
    timers: BTreeMap<TimerId, Working<'b>>,
    /// Ids of new timers, in creation order.
    created: Vec<TimerId>,
    fires: Vec<FireRecord>,
    events: Vec<OutboxEvent>,
}

/// Runs `batch` on `conn` (already inside a write transaction) at store time `now`.
pub(crate) async fn commit(
    conn: &mut SqliteConnection,
    sql: &Sql,
    now: WallMs,
    batch: &CommitBatch,
) -> Result<StoreReply, StoreFailure> {
    let meta =
        sqlx::query(READ_META).fetch_one(&mut *conn).await.map_err(|e| db_failure("reading meta", e))?;
    let last_seq = seq_from_sql(meta.try_get(0).map_err(|e| db_failure("reading outbox seq", e))?)?;
    let lease = crate::lease::read(conn, LEASE_SHARD).await?;
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

    // Creates: idempotency keys are looked up in one statement.
    if fenced {
        let mut by_key = state.load_keyed(conn, sql).await?;
        for record in &batch.creates {
            let result = state.create(record, &mut by_key)?;
            outcome.creates.push(result);
        }
    } else {
        outcome.creates.extend(batch.creates.iter().map(|_| Err(stale.clone())));
    }

    if fenced {
        let wanted: BTreeSet<TimerId> =
            batch.cancels.iter().map(|c| c.timer_id).chain(batch.fires.iter().map(|f| f.timer_id)).collect();
        state.load_ids(conn, sql, wanted).await?;
    }
    for cancel in &batch.cancels {
        let result = if fenced { state.cancel(cancel) } else { Err(stale.clone()) };
        outcome.cancels.push(result);
    }
    for fire in &batch.fires {
        let result = if fenced { state.fire(fire)? } else { Err(stale.clone()) };
        outcome.fires.push(result);
    }

    state.write(conn, sql).await?;
    Ok(StoreReply::Committed { outcome, events: state.events })
}

impl<'b> Commit<'b> {
    /// Loads the stored timers named by the creates' idempotency keys.
    async fn load_keyed(
        &mut self,
        conn: &mut SqliteConnection,
        sql: &Sql,
    ) -> Result<BTreeMap<(TenantId, String), TimerId>, StoreFailure> {
        let keys: BTreeSet<(&str, &str)> = self
            .batch
            .creates
            .iter()
            .filter_map(|r| r.idempotency_key.as_deref().map(|k| (r.tenant_id.as_str(), k)))
            .collect();
        let mut by_key = BTreeMap::new();
        if keys.is_empty() {
            return Ok(by_key);
        }
        let keys = serde_json::to_string(&keys)
            .map_err(|e| StoreFailure(format!("encoding idempotency keys: {e}")))?;
        let rows = sqlx::query(AssertSqlSafe(sql.timers_by_key.clone()))
            .bind(keys)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_failure("looking up idempotency keys", e))?;
        for row in &rows {
            let record = timer_from_row(row)?;
            if let Some(key) = &record.idempotency_key {
                by_key.insert((record.tenant_id.clone(), key.clone()), record.id);
            }
            self.timers.insert(
                record.id,
                Working { record: Cow::Owned(record), origin: Origin::Stored { changed: false } },
            );
        }
        Ok(by_key)
    }

    /// Loads the stored timers among `ids` that the working set lacks.
    async fn load_ids(
        &mut self,
        conn: &mut SqliteConnection,
        sql: &Sql,
        ids: BTreeSet<TimerId>,
    ) -> Result<(), StoreFailure> {
        let missing: Vec<String> =
            ids.into_iter().filter(|id| !self.timers.contains_key(id)).map(|id| id_hex(&id)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let ids =
            serde_json::to_string(&missing).map_err(|e| StoreFailure(format!("encoding timer ids: {e}")))?;
        let rows = sqlx::query(AssertSqlSafe(sql.timers_by_id.clone()))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_failure("loading timers", e))?;
        for row in &rows {
            let record = timer_from_row(row)?;
            self.timers.insert(
                record.id,
                Working { record: Cow::Owned(record), origin: Origin::Stored { changed: false } },
            );
        }
        Ok(())
    }

    fn create(
        &mut self,
        record: &'b TimerRecord,
        by_key: &mut BTreeMap<(TenantId, String), TimerId>,
    ) -> Result<Result<Created, StoreReject>, StoreFailure> {
        if let Some(key) = &record.idempotency_key {
            let slot = (record.tenant_id.clone(), key.clone());
            if let Some(existing) = by_key.get(&slot) {
                let timer =
                    self.timers.get(existing).map(|w| w.record.clone().into_owned()).ok_or_else(|| {
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
        self.timers.insert(record.id, Working { record: Cow::Borrowed(record), origin: Origin::New });
        self.created.push(record.id);
        if record.status == TimerStatus::Scheduled {
            self.pending_delta += 1;
        }
        self.push_event(EventKind::Scheduled, record.clone(), None);
        Ok(Ok(Created { timer: record.clone(), created: true }))
    }

    fn cancel(&mut self, op: &minoots_core::store::CancelOp) -> Result<TimerRecord, StoreReject> {
        let now = self.now;
        let Some(working) = self.timers.get_mut(&op.timer_id).filter(|w| w.record.tenant_id == op.tenant_id)
        else {
            return Err(StoreReject::NotFound);
        };
        if working.record.status != TimerStatus::Scheduled {
            return Ok(working.record.clone().into_owned());
        }
        let timer = working.record.to_mut();
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
        let timer = working.record.to_mut();
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
    async fn write(&self, conn: &mut SqliteConnection, sql: &Sql) -> Result<(), StoreFailure> {
        let new: Vec<&TimerRecord> =
            self.created.iter().filter_map(|id| self.timers.get(id)).map(|w| &*w.record).collect();
        sql.insert_timers.run(conn, "inserting timers", new, bind_timer).await?;
        let changed: Vec<&TimerRecord> = self
            .timers
            .values()
            .filter(|w| w.origin == Origin::Stored { changed: true })
            .map(|w| &*w.record)
            .collect();
        sql.update_timers.run(conn, "updating timers", changed, bind_timer).await?;
        sql.insert_fires.run(conn, "recording fires", self.fires.iter().collect(), bind_fire).await?;
        let rows =
            self.events.iter().map(|e| Ok((e, event_json(e)?))).collect::<Result<Vec<_>, StoreFailure>>()?;
        sql.insert_outbox.run(conn, "writing the outbox", rows, bind_event).await?;
        if !self.events.is_empty() || self.pending_delta != 0 {
            sqlx::query(WRITE_META)
                .bind(seq_to_sql(self.last_seq)?)
                .bind(self.pending_delta)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_failure("updating meta", e))?;
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
