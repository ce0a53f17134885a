//! The Raft log of one node: its entries, its vote, the committed position
//! and the last purged position, in a SQLite file of their own in the data
//! directory (`raft-log.db`), apart from the state so that appending never
//! waits behind applying.
//!
//! Durability: WAL with `synchronous=FULL`; one append of many entries is one
//! transaction, so one fsync, and openraft is told the entries are flushed
//! only after it commits. A vote is durable before `save_vote` returns. The
//! committed position is not persisted (openraft's option).
//! Entries are kept as JSON (`serde`), one row per index.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::types::{LogEntry, LogId, StorageError, TypeConfig, storage_error};

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS raft_log (log_index INTEGER PRIMARY KEY, entry TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS raft_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
];
const READ_META: &str = "SELECT value FROM raft_meta WHERE name = $1";
const WRITE_META: &str = "INSERT INTO raft_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value";
const META_VOTE: &str = "vote";
const META_PURGED: &str = "purged";

/// The log of one node. Cheap to clone (a pool handle); clones share it.
#[derive(Clone)]
pub struct LogStore {
    pool: SqlitePool,
    /// The last committed index openraft reported (for status and metrics).
    committed: Arc<AtomicU64>,
}

fn log_error(verb: ErrorVerb, what: impl std::fmt::Display) -> StorageError {
    storage_error(ErrorSubject::Logs, verb, what)
}

fn encode<T: Serialize>(value: &T) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|e| log_error(ErrorVerb::Write, format!("encoding: {e}")))
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, StorageError> {
    serde_json::from_str(text).map_err(|e| log_error(ErrorVerb::Read, format!("decoding: {e}")))
}

fn index_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl LogStore {
    /// Opens (creating if needed) the log at `path`.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        // One connection: appends, truncations and reads of the log serialise.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(Self { pool, committed: Arc::default() })
    }

    /// The last log index openraft reported committed (0 before any).
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Whether this node has ever voted or logged anything: a node with
    /// state rejoins its cluster, never bootstraps a new one.
    pub async fn has_state(&self) -> Result<bool, StorageError> {
        let vote: Option<Vote<u64>> = self.read_meta(META_VOTE).await?;
        let logged: Option<i64> = sqlx::query_scalar("SELECT log_index FROM raft_log LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| log_error(ErrorVerb::Read, e))?;
        let purged: Option<LogId> = self.read_meta(META_PURGED).await?;
        Ok(vote.is_some() || logged.is_some() || purged.is_some())
    }

    async fn read_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        let text: Option<String> = sqlx::query_scalar(READ_META)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| log_error(ErrorVerb::Read, e))?;
        text.as_deref().map(decode).transpose()
    }

    async fn write_meta<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StorageError> {
        sqlx::query(WRITE_META)
            .bind(name)
            .bind(encode(value)?)
            .execute(&self.pool)
            .await
            .map_err(|e| log_error(ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn last_entry(&self) -> Result<Option<LogEntry>, StorageError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT entry FROM raft_log ORDER BY log_index DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| log_error(ErrorVerb::Read, e))?;
        text.as_deref().map(decode).transpose()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(i) => index_of(*i),
            Bound::Excluded(i) => index_of(*i).saturating_add(1),
            Bound::Unbounded => 0,
        };
        let until = match range.end_bound() {
            Bound::Included(i) => index_of(*i).saturating_add(1),
            Bound::Excluded(i) => index_of(*i),
            Bound::Unbounded => i64::MAX,
        };
        let rows = sqlx::query(
            "SELECT entry FROM raft_log WHERE log_index >= $1 AND log_index < $2 ORDER BY log_index",
        )
        .bind(from)
        .bind(until)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| log_error(ErrorVerb::Read, e))?;
        rows.iter()
            .map(|row| decode(&row.try_get::<String, _>(0).map_err(|e| log_error(ErrorVerb::Read, e))?))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(META_PURGED).await?;
        let last_log_id = self.last_entry().await?.map(|e| e.log_id).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.write_meta(META_VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_meta(META_VOTE).await
    }

    // The committed position is kept in memory only (for status and
    // metrics): persisting it would cost a sync per commit on every node,
    // and a restarted node learns it again from the leader before it
    // applies more (its applied position is durable with its state).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed.store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = |e| log_error(ErrorVerb::Write, e);
        let mut tx = self.pool.begin().await.map_err(write)?;
        for entry in entries {
            sqlx::query("INSERT OR REPLACE INTO raft_log (log_index, entry) VALUES ($1, $2)")
                .bind(index_of(entry.log_id.index))
                .bind(encode(&entry)?)
                .execute(&mut *tx)
                .await
                .map_err(write)?;
        }
        tx.commit().await.map_err(write)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM raft_log WHERE log_index >= $1")
            .bind(index_of(log_id.index))
            .execute(&self.pool)
            .await
            .map_err(|e| log_error(ErrorVerb::Delete, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let delete = |e| log_error(ErrorVerb::Delete, e);
        let mut tx = self.pool.begin().await.map_err(delete)?;
        sqlx::query(WRITE_META)
            .bind(META_PURGED)
            .bind(encode(&log_id)?)
            .execute(&mut *tx)
            .await
            .map_err(delete)?;
        sqlx::query("DELETE FROM raft_log WHERE log_index <= $1")
            .bind(index_of(log_id.index))
            .execute(&mut *tx)
            .await
            .map_err(delete)?;
        tx.commit().await.map_err(delete)
    }
}
