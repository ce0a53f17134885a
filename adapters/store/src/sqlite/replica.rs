//! The SQLite state of a node in Raft mode: every node keeps the same timers,
//! fires, outbox, tenants and keys as a standalone store, changed only by
//! applying the replicated log in order. This module owns that application
//! and the consistent copies (snapshots) that stand for a prefix of the log:
//!
//! - **One transaction per applied batch.** [`SqliteStore::apply_replicated`]
//!   applies a batch of committed writes *and* records the applied mark (the
//!   caller's encoding of the last applied log position) in one write
//!   transaction: after a crash the state and the mark agree, so no entry is
//!   applied twice or skipped.
//! - **Deterministic.** Every write carries what it needs from the proposer
//!   (the leader's clock reading, `stamp_ms`): applying the same writes gives
//!   the same state on every node. A commit's decisions are
//!   `minoots_core::commit::decide`'s, as in every store, so a replayed or
//!   duplicated entry is re-checked against the state (an occurrence is
//!   recorded at most once) and a deposed leader's entry is fenced out by the
//!   term recorded by [`ReplicatedWrite::Lead`].
//! - **Failures by cause.** A write the state refuses (a stale term, a batch
//!   the engine could never send) is a reply, the same on every node; a
//!   database failure aborts the whole batch, so a node never diverges by
//!   skipping an entry another applied.
//! - **Copies.** [`SqliteStore::copy_replica_to`] writes a consistent copy of
//!   the database (`VACUUM INTO`); [`SqliteStore::install_replica_from`]
//!   replaces every replicated table with a copy's, in one transaction.

use std::path::Path;

use minoots_core::lease::{Lease, LeaseHolder};
use minoots_core::quota::QuotaLimits;
use minoots_core::store::{CommitBatch, LEASE_SHARD, StoreReply};
use minoots_core::{StoreFailure, TenantId, WallMs};
use minoots_node::keys::ApiKeyRecord;
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::SqliteStore;
use super::rows::db_failure;

/// One replicated change of the state, as the log carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicatedWrite {
    /// A leader's barrier: `node_id` leads from `term` on (the fencing epoch).
    Lead {
        /// The leader's node id (what its commits carry).
        node_id: String,
        /// Where clients reach it (the hint followers give out).
        address: String,
        /// Its Raft term.
        term: u64,
    },
    /// One group commit, decided at the leader's clock reading `stamp_ms`.
    Commit {
        /// The proposer's wall clock when it proposed (the store clock of this commit).
        stamp_ms: WallMs,
        /// The batch.
        batch: CommitBatch,
    },
    /// The relay delivered the outbox through `up_to_seq`.
    MarkPublished {
        /// Last delivered sequence number.
        up_to_seq: u64,
        /// The proposer's wall clock (the outbox retention's now).
        stamp_ms: WallMs,
    },
    /// Store an API key (its hash), creating its tenant if needed.
    InsertKey {
        /// The key.
        record: ApiKeyRecord,
        /// Its SHA-256 hash.
        key_hash: String,
    },
    /// Revoke a key.
    RevokeKey {
        /// Its id.
        key_id: String,
        /// When (wall ms).
        now_ms: i64,
    },
    /// Replace a tenant's own quota limits.
    SetTenantQuota {
        /// The tenant.
        tenant_id: TenantId,
        /// Its limits.
        limits: QuotaLimits,
        /// When (wall ms).
        now_ms: i64,
    },
}

/// What applying one [`ReplicatedWrite`] (or an entry without one) gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplicatedReply {
    /// Applied; nothing to report (barriers, marks, key writes, empty entries).
    Applied,
    /// A commit's reply (boxed: the other replies are small).
    Committed(Box<StoreReply>),
    /// The state refused the write as a whole (`StoreFailure::Refused`).
    Refused(String),
    /// Whether a revocation found an active key.
    Revoked(bool),
}

/// The applied mark lives in a replicated table like the others, so a copy
/// carries the mark of the state it holds.
const READ_MARK: &str = "SELECT mark FROM replica_applied WHERE id = 1";
const WRITE_MARK: &str = "INSERT INTO replica_applied (id, mark) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET mark = excluded.mark";
/// The tables a copy replaces: every table but SQLite's and the migrations' own.
const REPLICATED_TABLES: &str = "SELECT name FROM main.sqlite_master WHERE type = 'table' \
     AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name";

impl SqliteStore {
    /// The applied mark of the last [`SqliteStore::apply_replicated`] (or of
    /// the installed copy); `None` on a fresh database.
    pub async fn replica_mark(&self) -> Result<Option<String>, StoreFailure> {
        let row = sqlx::query(READ_MARK)
            .fetch_optional(self.readers())
            .await
            .map_err(|e| db_failure("reading the applied mark", e))?;
        row.map(|r| r.try_get::<String, _>(0).map_err(|e| db_failure("reading the applied mark", e)))
            .transpose()
    }

    /// The leader whose barrier was applied last ([`ReplicatedWrite::Lead`]):
    /// the hint a follower gives out.
    pub async fn replica_leader(&self) -> Result<Option<LeaseHolder>, StoreFailure> {
        let mut conn = self.readers().acquire().await.map_err(|e| db_failure("reading the leader", e))?;
        Ok(super::lease::read(&mut conn, LEASE_SHARD).await?.map(|lease| lease.holder))
    }

    /// Applies `writes` in order and records `mark`, in one transaction;
    /// one reply per write. A database failure applies nothing.
    pub async fn apply_replicated(
        &self,
        writes: &[ReplicatedWrite],
        mark: &str,
    ) -> Result<Vec<ReplicatedReply>, StoreFailure> {
        let mut tx = self.begin_write().await?;
        let mut replies = Vec::with_capacity(writes.len());
        for write in writes {
            replies.push(self.apply_one(&mut tx, write).await?);
        }
        sqlx::query(WRITE_MARK)
            .bind(mark.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_failure("recording the applied mark", e))?;
        tx.commit().await.map_err(|e| db_failure("committing applied entries", e))?;
        Ok(replies)
    }

    async fn apply_one(
        &self,
        conn: &mut sqlx::SqliteConnection,
        write: &ReplicatedWrite,
    ) -> Result<ReplicatedReply, StoreFailure> {
        Ok(match write {
            ReplicatedWrite::Lead { node_id, address, term } => {
                let current = super::lease::read(conn, LEASE_SHARD).await?;
                if let Some(row) = Lease::raft_term(current.as_ref(), node_id, address, *term) {
                    super::lease::write(conn, LEASE_SHARD, &row).await?;
                }
                ReplicatedReply::Applied
            }
            ReplicatedWrite::Commit { stamp_ms, batch } => {
                match super::commit::commit(conn, &self.sql, *stamp_ms, batch).await {
                    Ok(reply) => ReplicatedReply::Committed(Box::new(reply)),
                    Err(StoreFailure::Refused(why)) => ReplicatedReply::Refused(why),
                    Err(other) => return Err(other),
                }
            }
            ReplicatedWrite::MarkPublished { up_to_seq, stamp_ms } => {
                self.mark_published_in(conn, *up_to_seq, *stamp_ms).await?;
                ReplicatedReply::Applied
            }
            ReplicatedWrite::InsertKey { record, key_hash } => {
                Self::insert_key_in(conn, record, key_hash).await?;
                ReplicatedReply::Applied
            }
            ReplicatedWrite::RevokeKey { key_id, now_ms } => {
                ReplicatedReply::Revoked(Self::revoke_key_in(conn, key_id, *now_ms).await?)
            }
            ReplicatedWrite::SetTenantQuota { tenant_id, limits, now_ms } => {
                Self::set_tenant_quota_in(conn, tenant_id, *limits, *now_ms).await?;
                ReplicatedReply::Applied
            }
        })
    }

    /// Writes a consistent copy of the whole database to `path` (which must
    /// not exist), without blocking writes. Returns the applied mark the copy
    /// holds: the log position it stands for.
    pub async fn copy_replica_to(&self, path: &Path) -> Result<Option<String>, StoreFailure> {
        let target = path
            .to_str()
            .ok_or_else(|| StoreFailure::Unknown(format!("snapshot path {} is not UTF-8", path.display())))?;
        let mut conn = self.own_connection().await.map_err(|e| db_failure("copying the state", e))?;
        let copied = sqlx::query("VACUUM INTO $1").bind(target.to_owned()).execute(&mut conn).await;
        let _ = conn.close().await;
        copied.map_err(|e| db_failure("copying the state", e))?;
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
        let mut copy = sqlx::SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| db_failure("reading the copy's applied mark", e))?;
        let mark: Option<String> = sqlx::query_scalar(READ_MARK)
            .fetch_optional(&mut copy)
            .await
            .map_err(|e| db_failure("reading the copy's applied mark", e))?;
        let _ = copy.close().await;
        Ok(mark)
    }

    /// Replaces every replicated table (and the applied mark) with the copy
    /// at `path`, in one transaction.
    pub async fn install_replica_from(&self, path: &Path) -> Result<(), StoreFailure> {
        let source = path
            .to_str()
            .ok_or_else(|| StoreFailure::Unknown(format!("snapshot path {} is not UTF-8", path.display())))?;
        let fail = |e| db_failure("installing a snapshot", e);
        let mut conn = self.writer.acquire().await.map_err(fail)?;
        // Tables are replaced one by one, so references are checked once, on
        // the result (`foreign_key_check`), not row by row: SQLite's own
        // deferred checking miscounts bulk copies between attached databases.
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await.map_err(fail)?;
        sqlx::query("ATTACH DATABASE $1 AS incoming")
            .bind(source.to_owned())
            .execute(&mut *conn)
            .await
            .map_err(fail)?;
        let installed = async {
            let tables: Vec<String> =
                sqlx::query_scalar(REPLICATED_TABLES).fetch_all(&mut *conn).await.map_err(fail)?;
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.map_err(fail)?;
            let copied = async {
                for table in &tables {
                    // Names come from this database's own schema, never from the copy.
                    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
                    sqlx::query(AssertSqlSafe(format!("DELETE FROM main.{quoted}")))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO main.{quoted} SELECT * FROM incoming.{quoted}"
                    )))
                    .execute(&mut *conn)
                    .await?;
                }
                sqlx::query("PRAGMA main.foreign_key_check").fetch_optional(&mut *conn).await
            }
            .await;
            match copied {
                Ok(None) => {
                    sqlx::query("COMMIT").execute(&mut *conn).await.map_err(fail)?;
                    Ok(())
                }
                Ok(Some(_)) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    Err(StoreFailure::Unknown(
                        "installing a snapshot: the copy breaks a reference".to_owned(),
                    ))
                }
                Err(e) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    Err(fail(e))
                }
            }
        }
        .await;
        let detached = sqlx::query("DETACH DATABASE incoming").execute(&mut *conn).await.map_err(fail);
        let restored = sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await.map_err(fail);
        installed.and(detached).and(restored.map(|_| ()))
    }
}
