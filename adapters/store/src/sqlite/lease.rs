//! Leases: who may cancel and fire (the fencing token is the lease's epoch).
//! `Open` takes the lease of `LEASE_SHARD` forever (standalone mode);
//! `AcquireLease` / `RenewLease` grant and extend it for a time of the
//! store's clock (lease mode). The decisions are `minoots_core::lease::Lease`'s,
//! as in every store; this module reads and writes the row. It is a twin of
//! the PostgreSQL store's because locking differs: here each operation runs
//! in one `BEGIN IMMEDIATE` transaction of the single writer, and so does a
//! commit's read of the lease, so a takeover and a commit serialise without
//! row locks.

use minoots_core::StoreFailure;
use minoots_core::WallMs;
use minoots_core::lease::{Lease, LeaseAsker, LeaseHolder};
use minoots_core::store::StoreReply;
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::rows::db_failure;
use crate::rows::{epoch_from_sql, epoch_to_sql};

const READ_LEASE: &str = "SELECT node_id, address, epoch, expires_at_ms, tenure FROM leases WHERE shard = ?1";

const WRITE_LEASE: &str = "INSERT INTO leases (shard, node_id, address, epoch, expires_at_ms, tenure) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (shard) DO UPDATE SET node_id = excluded.node_id, address = excluded.address, \
     epoch = excluded.epoch, expires_at_ms = excluded.expires_at_ms, tenure = excluded.tenure";

const EXTEND_LEASE: &str = "UPDATE leases SET expires_at_ms = ?2 WHERE shard = ?1";

/// Reads the lease of `shard`.
pub(crate) async fn read(conn: &mut SqliteConnection, shard: u32) -> Result<Option<Lease>, StoreFailure> {
    let row = sqlx::query(READ_LEASE)
        .bind(i64::from(shard))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_failure("reading a lease", e))?;
    let Some(row) = row else { return Ok(None) };
    let get_err = |e| db_failure("reading a lease", e);
    Ok(Some(Lease {
        holder: LeaseHolder {
            node_id: row.try_get(0).map_err(get_err)?,
            address: row.try_get(1).map_err(get_err)?,
            epoch: epoch_from_sql(row.try_get(2).map_err(get_err)?)?,
            tenure: row.try_get::<i64, _>(4).map_err(get_err)? as u64,
        },
        expires_at_ms: row.try_get(3).map_err(get_err)?,
    }))
}

pub(crate) async fn write(
    conn: &mut SqliteConnection,
    shard: u32,
    lease: &Lease,
) -> Result<(), StoreFailure> {
    sqlx::query(WRITE_LEASE)
        .bind(i64::from(shard))
        .bind(lease.holder.node_id.clone())
        .bind(lease.holder.address.clone())
        .bind(epoch_to_sql(lease.holder.epoch)?)
        .bind(lease.expires_at_ms)
        .bind(lease.holder.tenure as i64)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_failure("writing a lease", e))?;
    Ok(())
}

/// `Open`: take the lease of `shard` forever, bumping its epoch.
pub(crate) async fn open(
    conn: &mut SqliteConnection,
    shard: u32,
    node_id: &str,
) -> Result<StoreReply, StoreFailure> {
    let lease = Lease::open(read(conn, shard).await?.as_ref(), node_id);
    write(conn, shard, &lease).await?;
    Ok(StoreReply::Opened { epoch: lease.holder.epoch })
}

/// `AcquireLease` at store time `now`.
pub(crate) async fn acquire(
    conn: &mut SqliteConnection,
    now: WallMs,
    shard: u32,
    asker: &LeaseAsker<'_>,
    ttl_ms: u64,
) -> Result<StoreReply, StoreFailure> {
    let current = read(conn, shard).await?;
    let (row, reply) = Lease::acquire(current.as_ref(), now, asker, ttl_ms);
    if let Some(row) = row {
        write(conn, shard, &row).await?;
    }
    Ok(StoreReply::Lease(reply))
}

/// `RenewLease` at store time `now`.
pub(crate) async fn renew(
    conn: &mut SqliteConnection,
    now: WallMs,
    shard: u32,
    node_id: &str,
    epoch: u64,
    ttl_ms: u64,
) -> Result<StoreReply, StoreFailure> {
    let current = read(conn, shard).await?;
    let (row, reply) = Lease::renew(current.as_ref(), now, node_id, epoch, ttl_ms);
    if let Some(row) = row {
        sqlx::query(EXTEND_LEASE)
            .bind(i64::from(shard))
            .bind(row.expires_at_ms)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_failure("extending a lease", e))?;
    }
    Ok(StoreReply::Lease(reply))
}
