//! One `StoreOp::Commit` inside one SQLite write transaction. The decisions
//! are `minoots_core::commit::decide`'s, as in every store; this module only
//! reads what it needs and writes what it decided, so a batch of thousands of
//! items costs a handful of statements, not several round trips per item:
//! 1. **Read** the outbox counter and the lease; if the batch applies, the
//!    timers its idempotency keys name and the timers its cancels and fires
//!    name — one statement each, keys or ids passed as one JSON array.
//! 2. **Decide** (`decide`, pure).
//! 3. **Write** new timers, changed timers, fire records and outbox rows with
//!    multi-row statements, then the counters.
//!
//! The caller runs this inside `BEGIN IMMEDIATE … COMMIT`, so the reads and
//! writes are one serialisable transaction; any error leaves nothing applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minoots_core::commit::{CommitInput, Decision, Fencing, decide};
use minoots_core::store::{CommitBatch, LEASE_SHARD, StoreReply};
use minoots_core::timer::TimerRecord;
use minoots_core::{StoreFailure, TenantId, TimerId, WallMs};
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row};

use super::rows::{bind_event, bind_fire, bind_timer, db_failure, id_hex};
use super::sql::{READ_META, Sql};
use crate::rows::{event_json, seq_from_sql, seq_to_sql, timer_from_row};
use crate::sql::WRITE_META;

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
    let lease = super::lease::read(conn, LEASE_SHARD).await?;
    let input = CommitInput::new(now, batch, lease.as_ref(), last_seq);
    let mut stored = BTreeMap::new();
    if input.fencing() == Fencing::Applies {
        load_keyed(conn, sql, batch.idempotency_keys(), &mut stored).await?;
        load_ids(conn, sql, batch.named_timer_ids(), &mut stored).await?;
    }
    let Decision { outcome, events, writes } = decide(input, stored).map_err(StoreFailure::from)?;

    sql.insert_timers
        .run(conn, "inserting timers", writes.inserted.iter().map(|t| &**t).collect(), bind_timer)
        .await?;
    sql.update_timers.run(conn, "updating timers", writes.updated.iter().collect(), bind_timer).await?;
    sql.insert_fires.run(conn, "recording fires", writes.fires.iter().collect(), bind_fire).await?;
    let rows = events.iter().map(|e| Ok((e, event_json(e)?))).collect::<Result<Vec<_>, StoreFailure>>()?;
    sql.insert_outbox.run(conn, "writing the outbox", rows, bind_event).await?;
    if writes.counters_moved(&events) {
        sqlx::query(WRITE_META)
            .bind(seq_to_sql(writes.last_seq)?)
            .bind(writes.pending_delta)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_failure("updating meta", e))?;
    }
    Ok(StoreReply::Committed { outcome, events })
}

/// Reads the stored timers holding one of `keys` into `stored`.
async fn load_keyed(
    conn: &mut SqliteConnection,
    sql: &Sql,
    keys: BTreeSet<(&TenantId, &str)>,
    stored: &mut BTreeMap<TimerId, TimerRecord>,
) -> Result<(), StoreFailure> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<(&str, &str)> = keys.into_iter().map(|(tenant, key)| (tenant.as_str(), key)).collect();
    let keys = serde_json::to_string(&keys)
        .map_err(|e| StoreFailure::Unknown(format!("encoding idempotency keys: {e}")))?;
    load(conn, &sql.timers_by_key, keys, "looking up idempotency keys", stored).await
}

/// Reads the stored timers with one of `ids` into `stored` (absent ones are absent).
async fn load_ids(
    conn: &mut SqliteConnection,
    sql: &Sql,
    ids: BTreeSet<TimerId>,
    stored: &mut BTreeMap<TimerId, TimerRecord>,
) -> Result<(), StoreFailure> {
    let missing: Vec<String> =
        ids.into_iter().filter(|id| !stored.contains_key(id)).map(|id| id_hex(&id)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(&missing)
        .map_err(|e| StoreFailure::Unknown(format!("encoding timer ids: {e}")))?;
    load(conn, &sql.timers_by_id, ids, "loading timers", stored).await
}

async fn load(
    conn: &mut SqliteConnection,
    text: &Arc<str>,
    json_array: String,
    what: &'static str,
    stored: &mut BTreeMap<TimerId, TimerRecord>,
) -> Result<(), StoreFailure> {
    let rows = sqlx::query(AssertSqlSafe(text.clone()))
        .bind(json_array)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_failure(what, e))?;
    for row in &rows {
        let record = timer_from_row(row)?;
        stored.insert(record.id, record);
    }
    Ok(())
}
