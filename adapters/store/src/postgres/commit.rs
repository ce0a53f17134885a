//! One `StoreOp::Commit` inside one PostgreSQL transaction. The decisions
//! are `minoots_core::commit::decide`'s, as in every store; what is
//! PostgreSQL's own is the locking and the write path (arrays, `UNNEST`), so
//! a batch of thousands of items costs a fixed handful of statements:
//! 1. **Lock and read.** The lease row of `LEASE_SHARD` is read
//!    `FOR KEY SHARE` (a takeover, which locks it `FOR UPDATE`, waits for
//!    this transaction, and this transaction waits for a takeover under
//!    way). Then the meta row is locked (commits serialise on it, so outbox
//!    numbers follow commit order) and the store clock is read, after both
//!    locks. If the batch applies, the timers its idempotency keys name and
//!    the timers its cancels and fires name are read: one statement each,
//!    keys and ids bound as arrays. A stale batch reads and writes nothing.
//! 2. **Decide** (`decide`, pure).
//! 3. **Write** new timers, changed timers, fires and outbox rows with one
//!    `UNNEST` statement each, then the counters. A fire and its outbox row
//!    commit together or not at all.
//!
//! The caller commits the transaction; any error rolls all of it back.

use std::collections::{BTreeMap, BTreeSet};

use minoots_core::commit::{CommitInput, CommitWrites, Decision, Fencing, decide};
use minoots_core::event::OutboxEvent;
use minoots_core::store::{CommitBatch, LEASE_SHARD, StoreReply};
use minoots_core::timer::TimerRecord;
use minoots_core::{StoreFailure, TenantId, TimerId, WallMs};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Row};

use crate::postgres::lease::{self, Lock};
use crate::postgres::rows::{FireColumns, OutboxColumns, TimerChanges, TimerColumns, pg_failure};
use crate::postgres::sql::{
    INSERT_FIRES, INSERT_OUTBOX, INSERT_TIMERS, LOCK_META, TIMERS_BY_ID, TIMERS_BY_KEY, UPDATE_TIMERS,
};
use crate::rows::{seq_from_sql, seq_to_sql, timer_from_row};
use crate::sql::WRITE_META;

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
    let input = CommitInput::new(now, batch, lease.as_ref(), last_seq);
    let mut stored = BTreeMap::new();
    if input.fencing() == Fencing::Applies {
        load_keyed(conn, batch.idempotency_keys(), &mut stored).await?;
        load_ids(conn, batch.named_timer_ids(), &mut stored).await?;
    }
    let Decision { outcome, events, writes } = decide(input, stored).map_err(StoreFailure::from)?;
    write(conn, &writes, &events).await?;
    Ok(StoreReply::Committed { outcome, events })
}

/// Reads the stored timers holding one of `keys` into `stored`. A key with
/// U+0000 cannot be stored (and cannot be bound): it matches nothing.
async fn load_keyed(
    conn: &mut PgConnection,
    keys: BTreeSet<(&TenantId, &str)>,
    stored: &mut BTreeMap<TimerId, TimerRecord>,
) -> Result<(), StoreFailure> {
    let (tenants, keys): (Vec<&str>, Vec<&str>) = keys
        .into_iter()
        .map(|(tenant, key)| (tenant.as_str(), key))
        .filter(|(_, key)| !key.contains('\0'))
        .unzip();
    if keys.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(AssertSqlSafe(TIMERS_BY_KEY.as_str()))
        .bind(tenants)
        .bind(keys)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| pg_failure("looking up idempotency keys", e))?;
    keep(&rows, stored)
}

/// Reads the stored timers with one of `ids` into `stored` (absent ones are absent).
async fn load_ids(
    conn: &mut PgConnection,
    ids: BTreeSet<TimerId>,
    stored: &mut BTreeMap<TimerId, TimerRecord>,
) -> Result<(), StoreFailure> {
    let missing: Vec<uuid::Uuid> =
        ids.into_iter().filter(|id| !stored.contains_key(id)).map(|id| id.0).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(AssertSqlSafe(TIMERS_BY_ID.as_str()))
        .bind(missing)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| pg_failure("loading timers", e))?;
    keep(&rows, stored)
}

/// Decodes the timer `rows` read into `stored`.
fn keep(rows: &[PgRow], stored: &mut BTreeMap<TimerId, TimerRecord>) -> Result<(), StoreFailure> {
    for row in rows {
        let record = timer_from_row(row)?;
        stored.insert(record.id, record);
    }
    Ok(())
}

/// Writes every new and changed timer, the fires, the outbox rows and the counters.
async fn write(
    conn: &mut PgConnection,
    writes: &CommitWrites<'_>,
    events: &[OutboxEvent],
) -> Result<(), StoreFailure> {
    let mut new = TimerColumns::default();
    for record in &writes.inserted {
        new.push(record)?;
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
    for record in &writes.updated {
        changed.push(record);
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
    if !writes.fires.is_empty() {
        let mut fires = FireColumns::default();
        for fire in &writes.fires {
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
    if !events.is_empty() {
        let mut rows = OutboxColumns::default();
        for event in events {
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
    if writes.counters_moved(events) {
        sqlx::query(WRITE_META)
            .bind(seq_to_sql(writes.last_seq)?)
            .bind(writes.pending_delta)
            .execute(&mut *conn)
            .await
            .map_err(|e| pg_failure("updating meta", e))?;
    }
    Ok(())
}
