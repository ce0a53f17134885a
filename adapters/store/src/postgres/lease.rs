//! Leases on PostgreSQL: who may cancel and fire (the fencing token is the
//! lease's epoch), judged by the store clock (the database clock in
//! production). Every decision mirrors `minoots_core::model::StoreModel`, as
//! the SQLite store's `lease` module does; what differs is the locking:
//!
//! | operation | lock on the lease row | waits for |
//! |---|---|---|
//! | `AcquireLease`, `Open` (takeover) | `FOR UPDATE` | commits checking the lease, other takeovers |
//! | `RenewLease` (holder only) | `FOR NO KEY UPDATE` | other renewals and takeovers, never a commit |
//! | a commit that cancels or fires | `FOR KEY SHARE` | takeovers |
//!
//! Each operation reads the store clock *after* its lock is held, so the
//! clock is never older than the row it judges. A shard that was never
//! granted has a placeholder row (epoch 0, empty holder, expired since
//! forever) so that two first acquisitions lock the same row; it reads as "no
//! lease".

use minoots_core::lease::{Lease, LeaseAsker, LeaseHolder};
use minoots_core::store::StoreReply;
use minoots_core::{StoreFailure, WallMs};
use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::postgres::rows::pg_failure;
use crate::postgres::sql::{
    EXTEND_LEASE, LEASE_FOR_COMMIT, LEASE_FOR_RENEWAL, LEASE_FOR_TAKEOVER, LEASE_PLACEHOLDER, STORE_NOW,
    WRITE_LEASE,
};
use crate::rows::{epoch_from_sql, epoch_to_sql};

/// How a lease operation locks the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// A commit's fencing check.
    Commit,
    /// A takeover (`AcquireLease`, `Open`).
    Takeover,
    /// The holder's renewal.
    Renewal,
}

/// Reads (and locks) the lease of `shard`; `None` if it was never granted.
pub(crate) async fn read(
    conn: &mut PgConnection,
    shard: u32,
    lock: Lock,
) -> Result<Option<Lease>, StoreFailure> {
    let sql = match lock {
        Lock::Commit => LEASE_FOR_COMMIT,
        Lock::Takeover => LEASE_FOR_TAKEOVER,
        Lock::Renewal => LEASE_FOR_RENEWAL,
    };
    let row = sqlx::query(sql)
        .bind(i64::from(shard))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| pg_failure("reading a lease", e))?;
    let Some(row) = row else { return Ok(None) };
    let get_err = |e| pg_failure("reading a lease", e);
    let epoch = epoch_from_sql(row.try_get(2).map_err(get_err)?)?;
    if epoch == 0 {
        return Ok(None); // the placeholder: never granted
    }
    Ok(Some(Lease {
        holder: LeaseHolder {
            node_id: row.try_get(0).map_err(get_err)?,
            address: row.try_get(1).map_err(get_err)?,
            epoch,
            tenure: row.try_get::<i64, _>(4).map_err(get_err)? as u64,
        },
        expires_at_ms: row.try_get(3).map_err(get_err)?,
    }))
}

/// Reads the store clock (`injected` when given, else the database clock).
pub(crate) async fn store_now(
    conn: &mut PgConnection,
    injected: Option<WallMs>,
) -> Result<WallMs, StoreFailure> {
    sqlx::query_scalar(STORE_NOW)
        .bind(injected)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg_failure("reading the database clock", e))
}

/// Locks the lease row of `shard` for a takeover, creating the placeholder first if needed.
async fn lock_for_takeover(conn: &mut PgConnection, shard: u32) -> Result<Option<Lease>, StoreFailure> {
    let exists = sqlx::query(LEASE_FOR_TAKEOVER)
        .bind(i64::from(shard))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| pg_failure("locking a lease", e))?
        .is_some();
    if !exists {
        sqlx::query(LEASE_PLACEHOLDER)
            .bind(i64::from(shard))
            .execute(&mut *conn)
            .await
            .map_err(|e| pg_failure("creating a lease row", e))?;
    }
    read(conn, shard, Lock::Takeover).await
}

async fn write(conn: &mut PgConnection, shard: u32, lease: &Lease) -> Result<(), StoreFailure> {
    sqlx::query(WRITE_LEASE)
        .bind(i64::from(shard))
        .bind(lease.holder.node_id.clone())
        .bind(lease.holder.address.clone())
        .bind(epoch_to_sql(lease.holder.epoch)?)
        .bind(lease.expires_at_ms)
        .bind(lease.holder.tenure as i64)
        .execute(&mut *conn)
        .await
        .map_err(|e| pg_failure("writing a lease", e))?;
    Ok(())
}

/// `Open`: take the lease of `shard` forever, bumping its epoch.
pub(crate) async fn open(
    conn: &mut PgConnection,
    shard: u32,
    node_id: &str,
) -> Result<StoreReply, StoreFailure> {
    let lease = Lease::open(lock_for_takeover(conn, shard).await?.as_ref(), node_id);
    write(conn, shard, &lease).await?;
    Ok(StoreReply::Opened { epoch: lease.holder.epoch })
}

/// `AcquireLease`.
pub(crate) async fn acquire(
    conn: &mut PgConnection,
    injected_now: Option<WallMs>,
    shard: u32,
    asker: &LeaseAsker<'_>,
    ttl_ms: u64,
) -> Result<StoreReply, StoreFailure> {
    let current = lock_for_takeover(conn, shard).await?;
    let now = store_now(conn, injected_now).await?;
    let (row, reply) = Lease::acquire(current.as_ref(), now, asker, ttl_ms);
    if let Some(row) = row {
        write(conn, shard, &row).await?;
    }
    Ok(StoreReply::Lease(reply))
}

/// `RenewLease`.
pub(crate) async fn renew(
    conn: &mut PgConnection,
    injected_now: Option<WallMs>,
    shard: u32,
    node_id: &str,
    epoch: u64,
    ttl_ms: u64,
) -> Result<StoreReply, StoreFailure> {
    let current = read(conn, shard, Lock::Renewal).await?;
    let now = store_now(conn, injected_now).await?;
    let (row, reply) = Lease::renew(current.as_ref(), now, node_id, epoch, ttl_ms);
    if let Some(row) = row {
        sqlx::query(EXTEND_LEASE)
            .bind(i64::from(shard))
            .bind(row.expires_at_ms)
            .execute(&mut *conn)
            .await
            .map_err(|e| pg_failure("extending a lease", e))?;
    }
    Ok(StoreReply::Lease(reply))
}
