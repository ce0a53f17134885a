//! The action store: deliveries (a durable work queue keyed by idempotency
//! key), every attempt (the delivery history) and the dead-letter queue.
//! One SQL text serves SQLite (its own file, `actions.db`, so delivery
//! bookkeeping never waits on timer commits) and PostgreSQL (the cluster
//! database, migrated with the timer store): the [`on_pool!`] macro expands
//! each statement once per driver.
//!
//! Claims (who may run a delivery now) live in [`crate::claims`]: a claim
//! belongs to one runner incarnation and is void once that incarnation is
//! known dead; the delivery then runs again with the same idempotency key
//! (at least once).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::dialect::Placeholders;

/// The SQLite migrations (PostgreSQL's live with the timer store's).
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite-actions");

/// Why the action store failed (the operator's database, not the client).
#[derive(Debug, thiserror::Error)]
#[error("action store: {context}: {source}")]
pub struct StoreError {
    context: &'static str,
    #[source]
    source: sqlx::Error,
}

pub(crate) fn failed(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError { context, source }
}

/// A delivery to queue: one action of one fired occurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// `{timer_id}:{occurrence}:{action_id}`.
    pub idempotency_key: String,
    /// Owner.
    pub tenant_id: String,
    /// Which timer.
    pub timer_id: String,
    /// Which occurrence.
    pub occurrence: u32,
    /// The action's id in its bundle.
    pub action_id: String,
    /// The action kind's wire name.
    pub kind: String,
    /// The action, as JSON.
    pub action: String,
    /// The bundle's retry policy, as JSON.
    pub retry_policy: String,
    /// The fire's event envelope, as JSON.
    pub envelope: String,
}

/// A claimed delivery, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    /// What was queued.
    pub delivery: NewDelivery,
    /// Attempts made in all so far.
    pub attempts: u32,
    /// Attempts made since it was queued or last replayed.
    pub round_attempts: u32,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Delivered.
    Succeeded,
    /// Failed; another attempt follows.
    Retry,
    /// Failed; no attempt follows (the delivery is dead-lettered).
    Failed,
}

impl AttemptOutcome {
    /// The stored and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retry => "retry",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "succeeded" => Self::Succeeded,
            "retry" => Self::Retry,
            _ => Self::Failed,
        }
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// The delivery's idempotency key.
    pub idempotency_key: String,
    /// 1-based, across replays.
    pub attempt: u32,
    /// Which timer.
    pub timer_id: String,
    /// Which occurrence.
    pub occurrence: u32,
    /// Which action.
    pub action_id: String,
    /// The action kind.
    pub kind: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The HTTP status (webhooks) or exit code (commands).
    pub status_code: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Response body or program output (tail).
    pub output: Option<String>,
    /// The runner that made it.
    pub runner: String,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Done.
    Delivered,
    /// Try again at this time (ms since the epoch).
    RetryAt(i64),
    /// Move it to the dead-letter queue.
    DeadLetter,
}

/// One attempt to record with what follows it (see [`ActionStore::record_attempts`]).
#[derive(Debug, Clone, Copy)]
pub struct AttemptToRecord<'a> {
    /// The delivery attempted.
    pub delivery: &'a NewDelivery,
    /// The attempt.
    pub attempt: &'a AttemptRecord,
    /// What follows it.
    pub next: NextStep,
    /// The recorder's wall clock (ms since the epoch).
    pub now_ms: i64,
}

/// The claim the first deliveries of a queueing get for a local runner.
#[derive(Debug, Clone, Copy)]
pub struct ClaimAtQueueing<'a> {
    /// The runner incarnation they are claimed for.
    pub incarnation: &'a str,
    /// The claim's attempt bound (ms since the epoch).
    pub claimed_until_ms: i64,
    /// How many of the deliveries, from the first, are claimed (the rest are queued unclaimed).
    pub first: usize,
}

/// A dead-lettered delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// DLQ id.
    pub id: i64,
    /// The delivery's idempotency key (kept by a replay).
    pub idempotency_key: String,
    /// Owner.
    pub tenant_id: String,
    /// Which timer.
    pub timer_id: String,
    /// Which occurrence.
    pub occurrence: u32,
    /// Which action.
    pub action_id: String,
    /// The action kind.
    pub kind: String,
    /// When it was dead-lettered.
    pub dead_at_ms: i64,
    /// Attempts made when it was dead-lettered.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When it was replayed, if it was.
    pub replayed_at_ms: Option<i64>,
}

/// The database behind the store.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to whichever pool the store has (and, in
/// the second form, `$sql` to its [`crate::dialect::Dialect`]).
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
    ($pool:expr, $p:ident, $sql:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => {
                let $sql = &crate::dialect::SQLITE;
                $body
            }
            Pool::Postgres($p) => {
                let $sql = &crate::dialect::PG;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// Deliveries, attempts and dead letters.
#[derive(Debug, Clone)]
pub struct ActionStore {
    pub(crate) pool: Pool,
}

// Queueing and recording write many rows per statement (one driver round
// trip for a whole group: on SQLite each statement is a hop to the
// connection's thread and back). The texts are built for a row count and a
// dialect by [`MultiRow::text`]; every parameter appears once, in binding order.

/// Rows per multi-row statement, largest first: rows are written in pieces
/// of these sizes ([`in_pieces`]), so each statement has only these few
/// texts, each prepared once per connection and kept (a text for every row
/// count was prepared afresh each time: a tenth of the server's time under
/// load). 32 rows already make the round trips rare.
const PIECE_SIZES: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// The most rows one statement writes.
const ROWS_PER_STATEMENT: usize = PIECE_SIZES[0];

/// `rows` cut into consecutive pieces of the [`PIECE_SIZES`], largest first.
fn in_pieces<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = PIECE_SIZES.iter().copied().find(|size| *size <= rows.len())?;
        let (piece, rest) = rows.split_at(size);
        rows = rest;
        Some(piece)
    })
}

/// Queues rows: identity, action, retry policy, envelope, now, claimed by,
/// claimed until, now, now; 14 per row.
const ENQUEUE: MultiRow = MultiRow {
    head: "INSERT INTO deliveries (idempotency_key, tenant_id, timer_id, occurrence, action_id, kind, \
           action, retry_policy, envelope, status, attempts, round_attempts, next_attempt_at_ms, claimed_by, \
           claimed_until_ms, created_at_ms, updated_at_ms) VALUES ",
    row: &["", "", "", "", "", "", "", "", "", "'pending'", "0", "0", "", "", "", "", ""],
    tail: " ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key",
};

/// Counts attempts and sets what follows them: key, status, next attempt at, now, error per row.
/// (VALUES columns are `column1…` in both dialects.)
const BUMP_ATTEMPTS: MultiRow = MultiRow {
    head: "UPDATE deliveries SET attempts = attempts + 1, round_attempts = round_attempts + 1, \
           status = b.column2, next_attempt_at_ms = b.column3, claimed_by = NULL, claimed_until_ms = 0, \
           updated_at_ms = b.column4, last_error = b.column5 FROM (VALUES ",
    row: &["", "", "CAST(# AS BIGINT)", "CAST(# AS BIGINT)", ""],
    tail: ") AS b WHERE deliveries.idempotency_key = b.column1 AND deliveries.status = 'pending' \
           RETURNING idempotency_key, attempts",
};

/// History rows: 14 per row.
const INSERT_ATTEMPTS: MultiRow = MultiRow {
    head: "INSERT INTO delivery_attempts (idempotency_key, tenant_id, timer_id, occurrence, action_id, kind, \
           attempt, started_at_ms, duration_ms, outcome, status_code, error, output, runner) VALUES ",
    row: &["", "", "", "", "", "", "", "", "", "", "", "", "", ""],
    tail: "",
};

/// Dead letters: 9 per row.
const INSERT_DEAD: MultiRow = MultiRow {
    head: "INSERT INTO dead_letters (idempotency_key, tenant_id, timer_id, occurrence, action_id, kind, \
           dead_at_ms, attempts, last_error) VALUES ",
    row: &["", "", "", "", "", "", "", "", ""],
    tail: "",
};

/// Binds a delivery's identity — key, tenant, timer, occurrence, action,
/// kind — the first six columns of every row [`ENQUEUE`], [`INSERT_ATTEMPTS`]
/// and [`INSERT_DEAD`] write.
macro_rules! bind_identity {
    ($query:expr, $delivery:expr) => {
        $query
            .bind(&$delivery.idempotency_key)
            .bind(&$delivery.tenant_id)
            .bind(&$delivery.timer_id)
            .bind(i64::from($delivery.occurrence))
            .bind(&$delivery.action_id)
            .bind(&$delivery.kind)
    };
}

/// A statement over many rows: `head`, then one `(…)` per row, then `tail`.
/// Each row cell is a fixed expression (`'pending'`), or a fresh parameter
/// when empty, or a fresh parameter put in place of `#`.
struct MultiRow {
    head: &'static str,
    row: &'static [&'static str],
    tail: &'static str,
}

impl MultiRow {
    /// The text for `rows` rows, its parameters written as `placeholders`.
    fn text(&self, placeholders: Placeholders, rows: usize) -> String {
        let mut text = String::with_capacity(self.head.len() + self.tail.len() + rows * self.row.len() * 8);
        text.push_str(self.head);
        let mut next = 0;
        for r in 0..rows {
            text.push_str(if r == 0 { "(" } else { ", (" });
            for (c, cell) in self.row.iter().enumerate() {
                if c > 0 {
                    text.push_str(", ");
                }
                if cell.is_empty() || cell.contains('#') {
                    next += 1;
                    let parameter = match placeholders {
                        Placeholders::Numbered => format!("${next}"),
                        Placeholders::Anonymous => "?".to_owned(),
                    };
                    if cell.is_empty() {
                        text.push_str(&parameter);
                    } else {
                        text.push_str(&cell.replace('#', &parameter));
                    }
                } else {
                    text.push_str(cell);
                }
            }
            text.push(')');
        }
        text.push_str(self.tail);
        text
    }
}

const LIST_ATTEMPTS: &str = "SELECT idempotency_key, attempt, timer_id, occurrence, action_id, kind, started_at_ms, \
     duration_ms, outcome, status_code, error, output, runner FROM delivery_attempts \
     WHERE tenant_id = $1 AND timer_id = $2 ORDER BY started_at_ms, idempotency_key, attempt LIMIT $3";

const DEAD_COLUMNS: &str = "id, idempotency_key, tenant_id, timer_id, occurrence, action_id, kind, dead_at_ms, \
     attempts, last_error, replayed_at_ms";

const DELIVERY_COUNTS: &str = "SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY status";

impl ActionStore {
    /// Opens (creating and migrating if needed) the SQLite action store at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing directory surfaces as the connect error below.
            let _ = std::fs::create_dir_all(dir);
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(failed("opening the SQLite action store"))?;
        SQLITE_MIGRATOR.run(&pool).await.map_err(|e| StoreError {
            context: "migrating the SQLite action store",
            source: sqlx::Error::Migrate(Box::new(e)),
        })?;
        Ok(Self { pool: Pool::Sqlite(pool) })
    }

    /// Connects to the cluster database (already migrated by the timer
    /// store's migrations), in `schema` if given.
    pub async fn connect_postgres(
        url: &str,
        schema: Option<&str>,
        connections: u32,
    ) -> Result<Self, StoreError> {
        let search_path = schema.map(|s| format!("SET search_path TO \"{}\"", s.replace('"', "\"\"")));
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    if let Some(sql) = search_path {
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(url)
            .map_err(failed("connecting to the PostgreSQL action store"))?;
        Ok(Self { pool: Pool::Postgres(pool) })
    }

    /// Queues deliveries (those already queued are left alone); returns how many were new.
    pub async fn enqueue(&self, deliveries: &[NewDelivery], now_ms: i64) -> Result<u64, StoreError> {
        let fresh = self.enqueue_claimed(deliveries, now_ms, None).await?;
        Ok(fresh.iter().filter(|new| **new).count() as u64)
    }

    /// Queues deliveries in one transaction, the first `claim.first` new
    /// ones already claimed under `claim` if given (see [`crate::inbox`]);
    /// those already queued are left alone, whoever holds them. Returns, per
    /// delivery, whether it was new.
    pub async fn enqueue_claimed(
        &self,
        deliveries: &[NewDelivery],
        now_ms: i64,
        claim: Option<ClaimAtQueueing<'_>>,
    ) -> Result<Vec<bool>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let (claimed, unclaimed) = deliveries.split_at(claim.map_or(0, |c| c.first.min(deliveries.len())));
        let mut inserted: HashSet<String> = HashSet::with_capacity(deliveries.len());
        let claimed_by = claim.map(|c| c.incarnation);
        let claimed_until_ms = claim.map_or(0, |c| c.claimed_until_ms);
        let mut chunks: Vec<(&[NewDelivery], Option<&str>, i64)> = Vec::new();
        chunks.extend(in_pieces(claimed).map(|chunk| (chunk, claimed_by, claimed_until_ms)));
        chunks.extend(in_pieces(unclaimed).map(|chunk| (chunk, None, 0)));
        on_pool!(&self.pool, p, sql => {
            let mut tx = p.begin().await.map_err(failed("starting an enqueue"))?;
            for &(chunk, claimed_by, claimed_until_ms) in &chunks {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(ENQUEUE.text(sql.placeholders, chunk.len())));
                for d in chunk {
                    query = bind_identity!(query, d)
                        .bind(&d.action)
                        .bind(&d.retry_policy)
                        .bind(&d.envelope)
                        .bind(now_ms)
                        .bind(claimed_by)
                        .bind(claimed_until_ms)
                        .bind(now_ms)
                        .bind(now_ms);
                }
                let rows = query.fetch_all(&mut *tx).await.map_err(failed("queueing deliveries"))?;
                for row in &rows {
                    inserted.insert(row.try_get::<String, _>(0).map_err(failed("reading queued keys"))?);
                }
            }
            tx.commit().await.map_err(failed("committing an enqueue"))?;
            Ok::<(), StoreError>(())
        })?;
        // A key given twice is new once (the first time).
        Ok(deliveries.iter().map(|d| inserted.remove(&d.idempotency_key)).collect())
    }

    /// Records an attempt and what follows it, in one transaction; a dead
    /// letter is written with the delivery's history. Returns the attempt's
    /// number, or `None` when the delivery was no longer pending (another
    /// runner finished it first; nothing is recorded).
    pub async fn record_attempt(
        &self,
        delivery: &NewDelivery,
        attempt: &AttemptRecord,
        next: NextStep,
        now_ms: i64,
    ) -> Result<Option<u32>, StoreError> {
        let entry = AttemptToRecord { delivery, attempt, next, now_ms };
        Ok(self.record_attempts(&[entry]).await?.pop().flatten())
    }

    /// Records many attempts in one transaction (a group commit), each as
    /// [`ActionStore::record_attempt`] would; returns each one's result in order.
    pub async fn record_attempts(
        &self,
        entries: &[AttemptToRecord<'_>],
    ) -> Result<Vec<Option<u32>>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Each statement below must name a delivery once: a key met again starts a new run.
        let mut runs: Vec<&[AttemptToRecord<'_>]> = Vec::new();
        let mut run_start = 0;
        let mut keys = HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            if i - run_start == ROWS_PER_STATEMENT || !keys.insert(entry.delivery.idempotency_key.as_str()) {
                runs.push(&entries[run_start..i]);
                run_start = i;
                keys.clear();
                keys.insert(entry.delivery.idempotency_key.as_str());
            }
        }
        runs.push(&entries[run_start..]);
        let mut numbers = Vec::with_capacity(entries.len());
        on_pool!(&self.pool, p, sql => {
            let mut tx = p.begin().await.map_err(failed("starting an attempt record"))?;
            for run in runs.into_iter().flat_map(in_pieces) {
                let mut bump = sqlx::query(sqlx::AssertSqlSafe(BUMP_ATTEMPTS.text(sql.placeholders, run.len())));
                for e in run {
                    let (status, next_at) = match e.next {
                        NextStep::Delivered => ("succeeded", e.now_ms),
                        NextStep::RetryAt(at) => ("pending", at),
                        NextStep::DeadLetter => ("dead", e.now_ms),
                    };
                    bump = bump
                        .bind(&e.delivery.idempotency_key)
                        .bind(status)
                        .bind(next_at)
                        .bind(e.now_ms)
                        .bind(&e.attempt.error);
                }
                let mut counted: HashMap<String, i64> = HashMap::with_capacity(run.len());
                for row in bump.fetch_all(&mut *tx).await.map_err(failed("updating deliveries"))? {
                    let key: String = row.try_get(0).map_err(failed("reading updated deliveries"))?;
                    counted.insert(key, row.try_get(1).map_err(failed("reading updated deliveries"))?);
                }
                let recorded: Vec<(&AttemptToRecord<'_>, i64)> = run
                    .iter()
                    .filter_map(|e| counted.get(&e.delivery.idempotency_key).map(|n| (e, *n)))
                    .collect();
                numbers
                    .extend(run.iter().map(|e| counted.get(&e.delivery.idempotency_key).map(|n| to_u32(*n))));
                for piece in in_pieces(&recorded) {
                    let mut history = sqlx::query(sqlx::AssertSqlSafe(INSERT_ATTEMPTS.text(sql.placeholders, piece.len())));
                    for (e, number) in piece {
                        let a = e.attempt;
                        history = bind_identity!(history, e.delivery)
                            .bind(*number)
                            .bind(a.started_at_ms)
                            .bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
                            .bind(a.outcome.as_str())
                            .bind(a.status_code)
                            .bind(&a.error)
                            .bind(&a.output)
                            .bind(&a.runner);
                    }
                    history.execute(&mut *tx).await.map_err(failed("recording attempts"))?;
                }
                let dead: Vec<&(&AttemptToRecord<'_>, i64)> =
                    recorded.iter().filter(|(e, _)| e.next == NextStep::DeadLetter).collect();
                for piece in in_pieces(&dead) {
                    let mut letters = sqlx::query(sqlx::AssertSqlSafe(INSERT_DEAD.text(sql.placeholders, piece.len())));
                    for (e, number) in piece {
                        letters = bind_identity!(letters, e.delivery)
                            .bind(e.now_ms)
                            .bind(*number)
                            .bind(&e.attempt.error);
                    }
                    letters.execute(&mut *tx).await.map_err(failed("dead-lettering deliveries"))?;
                }
            }
            tx.commit().await.map_err(failed("committing an attempt record"))?;
            Ok::<(), StoreError>(())
        })?;
        Ok(numbers)
    }

    /// A timer's attempts, oldest first (at most [`minoots_core::limits::PAGE_SIZE_MAX`]).
    pub async fn attempts_of_timer(
        &self,
        tenant_id: &str,
        timer_id: &str,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(LIST_ATTEMPTS)
                .bind(tenant_id)
                .bind(timer_id)
                .bind(i64::from(minoots_core::limits::PAGE_SIZE_MAX))
                .fetch_all(p)
                .await
                .map_err(failed("listing attempts"))?;
            rows.iter()
                .map(|r| -> Result<AttemptRecord, sqlx::Error> {
                    Ok(AttemptRecord {
                        idempotency_key: r.try_get("idempotency_key")?,
                        attempt: to_u32(r.try_get("attempt")?),
                        timer_id: r.try_get("timer_id")?,
                        occurrence: to_u32(r.try_get("occurrence")?),
                        action_id: r.try_get("action_id")?,
                        kind: r.try_get("kind")?,
                        started_at_ms: r.try_get("started_at_ms")?,
                        duration_ms: u64::try_from(r.try_get::<i64, _>("duration_ms")?).unwrap_or(0),
                        outcome: AttemptOutcome::parse(&r.try_get::<String, _>("outcome")?),
                        status_code: r.try_get("status_code")?,
                        error: r.try_get("error")?,
                        output: r.try_get("output")?,
                        runner: r.try_get("runner")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed("reading attempts"))
        })
    }

    /// Dead letters with `id > after_id`, oldest first; `tenant_id = None`: every tenant.
    /// `include_replayed = false` hides those already replayed.
    pub async fn dead_letters(
        &self,
        tenant_id: Option<&str>,
        after_id: i64,
        limit: u32,
        include_replayed: bool,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT {DEAD_COLUMNS} FROM dead_letters WHERE ($1 IS NULL OR tenant_id = $1) AND id > $2 \
             AND ($3 OR replayed_at_ms IS NULL) ORDER BY id LIMIT $4"
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant_id)
                .bind(after_id)
                .bind(include_replayed)
                .bind(i64::from(limit.min(minoots_core::limits::PAGE_SIZE_MAX)))
                .fetch_all(p)
                .await
                .map_err(failed("listing dead letters"))?;
            rows.iter().map(dead_from_row).collect::<Result<Vec<_>, _>>().map_err(failed("reading dead letters"))
        })
    }

    /// One dead letter (scoped to `tenant_id` unless `None`).
    pub async fn dead_letter(
        &self,
        tenant_id: Option<&str>,
        id: i64,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let sql = format!(
            "SELECT {DEAD_COLUMNS} FROM dead_letters WHERE ($1 IS NULL OR tenant_id = $1) AND id = $2"
        );
        on_pool!(&self.pool, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(p)
                .await
                .map_err(failed("reading a dead letter"))?;
            row.as_ref().map(dead_from_row).transpose().map_err(failed("reading a dead letter"))
        })
    }

    /// Replays a dead letter: its delivery runs again now with a fresh
    /// attempt budget and the same idempotency key. Returns `false` when it
    /// does not exist (in scope) or was already replayed.
    pub async fn replay(&self, tenant_id: Option<&str>, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        Ok(!self.replay_many(tenant_id, &[id], now_ms).await?.is_empty())
    }

    /// Replays dead letters as [`ActionStore::replay`] does, all in one
    /// transaction (one sync, however many); returns the ids it replayed.
    pub async fn replay_many(
        &self,
        tenant_id: Option<&str>,
        ids: &[i64],
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(failed("starting a replay"))?;
            let mut replayed = Vec::with_capacity(ids.len());
            for &id in ids {
                let key: Option<String> = sqlx::query_scalar(
                    "UPDATE dead_letters SET replayed_at_ms = $3 \
                     WHERE id = $2 AND ($1 IS NULL OR tenant_id = $1) AND replayed_at_ms IS NULL \
                     RETURNING idempotency_key",
                )
                .bind(tenant_id)
                .bind(id)
                .bind(now_ms)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed("marking a dead letter replayed"))?;
                let Some(key) = key else { continue };
                sqlx::query(
                    "UPDATE deliveries SET status = 'pending', round_attempts = 0, next_attempt_at_ms = $2, \
                     claimed_by = NULL, claimed_until_ms = 0, updated_at_ms = $2 \
                     WHERE idempotency_key = $1 AND status = 'dead'",
                )
                .bind(&key)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(failed("requeueing a delivery"))?;
                replayed.push(id);
            }
            tx.commit().await.map_err(failed("committing a replay"))?;
            Ok(replayed)
        })
    }

    /// Deliveries by status (`pending`, `succeeded`, `dead`).
    pub async fn delivery_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(DELIVERY_COUNTS).fetch_all(p).await.map_err(failed("counting deliveries"))?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, u64::try_from(r.try_get::<i64, _>(1)?).unwrap_or(0))))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(failed("reading delivery counts"))
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_pool!(&self.pool, p => p.close().await)
    }
}

fn dead_from_row<R: Row>(r: &R) -> Result<DeadLetter, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DeadLetter {
        id: r.try_get("id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        tenant_id: r.try_get("tenant_id")?,
        timer_id: r.try_get("timer_id")?,
        occurrence: to_u32(r.try_get("occurrence")?),
        action_id: r.try_get("action_id")?,
        kind: r.try_get("kind")?,
        dead_at_ms: r.try_get("dead_at_ms")?,
        attempts: to_u32(r.try_get("attempts")?),
        last_error: r.try_get("last_error")?,
        replayed_at_ms: r.try_get("replayed_at_ms")?,
    })
}

pub(crate) fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_written_in_pieces_of_the_few_prepared_sizes() {
        let sizes = |n: usize| in_pieces(&vec![0u8; n]).map(<[u8]>::len).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(32), [32]);
        assert_eq!(sizes(45), [32, 8, 4, 1]);
        assert_eq!(sizes(95), [32, 32, 16, 8, 4, 2, 1]);
        for n in 0..200 {
            let pieces = sizes(n);
            assert_eq!(pieces.iter().sum::<usize>(), n);
            assert!(pieces.iter().all(|size| PIECE_SIZES.contains(size)), "{n}: {pieces:?}");
        }
    }

    #[test]
    fn multi_row_texts_number_parameters_for_postgres_only() {
        for statement in [&ENQUEUE, &BUMP_ATTEMPTS, &INSERT_ATTEMPTS, &INSERT_DEAD] {
            let fresh = statement.row.iter().filter(|cell| cell.is_empty() || cell.contains('#')).count();
            let sqlite = statement.text(Placeholders::Anonymous, 3);
            assert!(!sqlite.contains('$'), "{sqlite}");
            assert_eq!(sqlite.matches('?').count(), 3 * fresh, "{sqlite}");
            let postgres = statement.text(Placeholders::Numbered, 3);
            assert!(!postgres.contains('?'), "{postgres}");
            let last = format!("${}", 3 * fresh);
            assert!(
                postgres.contains(&last) && !postgres.contains(&format!("${}", 3 * fresh + 1)),
                "{postgres}"
            );
        }
        assert_eq!(
            INSERT_DEAD.text(Placeholders::Numbered, 1),
            "INSERT INTO dead_letters (idempotency_key, tenant_id, timer_id, occurrence, action_id, kind, \
             dead_at_ms, attempts, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
    }
}
