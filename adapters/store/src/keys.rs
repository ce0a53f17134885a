//! The [`KeyStore`] half of both stores: tenants, their quota limits and API
//! keys (their SHA-256 hashes, never the secrets). One body for SQLite and
//! PostgreSQL ([`key_store!`]), over the texts of [`crate::sql`]: writes go
//! through the store's writer in one transaction each, lookups through its
//! read pool. Semantics mirror `minoots_testkit::model_store::ModelStore`
//! (keys listed by id; inserting an existing id replaces that key).

use futures::future::BoxFuture;
use minoots_core::quota::QuotaLimits;
use minoots_core::{StoreFailure, TenantId};
use minoots_node::keys::{ApiKeyRecord, KeyStore};
use sqlx::AssertSqlSafe;

use crate::postgres::PostgresStore;
use crate::postgres::rows::pg_failure;
use crate::rows::{QuotaColumns, corrupt, key_from_row, quota_from_columns, quota_to_columns, to_json};
use crate::sql::{
    COUNT_KEYS, FIND_KEY, INSERT_TENANT, LIST_KEYS, REVOKE_KEY, SET_TENANT_QUOTA, TENANT_QUOTA,
    UPSERT_KEY_POSTGRES, UPSERT_KEY_SQLITE,
};
use crate::sqlite::SqliteStore;
use crate::sqlite::rows::db_failure;

/// `impl KeyStore for $store`, whose database errors become failures with
/// `$failure`, whose connections are `$conn` and whose key upsert is `$upsert`. The store provides
/// `readers()` (its read pool) and `begin_write()` (a write transaction).
macro_rules! key_store {
    ($store:ty, $conn:ty, $failure:path, $upsert:expr) => {
        impl KeyStore for $store {
            fn find_key(&self, key_hash: &str) -> BoxFuture<'_, Result<Option<ApiKeyRecord>, StoreFailure>> {
                let key_hash = key_hash.to_owned();
                Box::pin(async move {
                    let row = sqlx::query(AssertSqlSafe(FIND_KEY.as_str()))
                        .bind(key_hash)
                        .fetch_optional(self.readers())
                        .await
                        .map_err(|e| $failure("looking up an API key", e))?;
                    row.as_ref().map(key_from_row).transpose()
                })
            }

            fn insert_key(
                &self,
                record: ApiKeyRecord,
                key_hash: String,
            ) -> BoxFuture<'_, Result<(), StoreFailure>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    Self::insert_key_in(&mut tx, &record, &key_hash).await?;
                    tx.commit().await.map_err(|e| $failure("committing an API key", e))
                })
            }

            fn list_keys(
                &self,
                tenant_id: Option<TenantId>,
            ) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreFailure>> {
                Box::pin(async move {
                    let rows = sqlx::query(AssertSqlSafe(LIST_KEYS.as_str()))
                        .bind(tenant_id.map(|t| t.as_str().to_owned()))
                        .fetch_all(self.readers())
                        .await
                        .map_err(|e| $failure("listing API keys", e))?;
                    rows.iter().map(key_from_row).collect()
                })
            }

            fn revoke_key(&self, key_id: String, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreFailure>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    let revoked = Self::revoke_key_in(&mut tx, &key_id, now_ms).await?;
                    tx.commit().await.map_err(|e| $failure("committing a key revocation", e))?;
                    Ok(revoked)
                })
            }

            fn count_keys(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
                Box::pin(async move {
                    let count: i64 = sqlx::query_scalar(COUNT_KEYS)
                        .fetch_one(self.readers())
                        .await
                        .map_err(|e| $failure("counting API keys", e))?;
                    u64::try_from(count).map_err(|e| corrupt("key count", e))
                })
            }

            fn tenant_quota<'a>(
                &'a self,
                tenant_id: &'a TenantId,
            ) -> BoxFuture<'a, Result<QuotaLimits, StoreFailure>> {
                Box::pin(async move {
                    let columns: Option<QuotaColumns> = sqlx::query_as(TENANT_QUOTA)
                        .bind(tenant_id.as_str())
                        .fetch_optional(self.readers())
                        .await
                        .map_err(|e| $failure("reading a tenant's quota", e))?;
                    columns.map(quota_from_columns).transpose().map(Option::unwrap_or_default)
                })
            }

            fn set_tenant_quota(
                &self,
                tenant_id: TenantId,
                limits: QuotaLimits,
                now_ms: i64,
            ) -> BoxFuture<'_, Result<(), StoreFailure>> {
                Box::pin(async move {
                    let mut tx = self.begin_write().await?;
                    Self::set_tenant_quota_in(&mut tx, &tenant_id, limits, now_ms).await?;
                    tx.commit().await.map_err(|e| $failure("committing a tenant's quota", e))
                })
            }
        }

        /// The key writes on a connection inside a write transaction: what
        /// the `KeyStore` methods run, and what a replicated log entry applies.
        impl $store {
            pub(crate) async fn insert_key_in(
                conn: &mut $conn,
                record: &ApiKeyRecord,
                key_hash: &str,
            ) -> Result<(), StoreFailure> {
                let roles = to_json("API key roles", &record.roles)?;
                sqlx::query(INSERT_TENANT)
                    .bind(record.tenant_id.as_str().to_owned())
                    .bind(record.created_at_ms)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| $failure("storing a tenant", e))?;
                sqlx::query($upsert)
                    .bind(record.id.clone())
                    .bind(record.tenant_id.as_str().to_owned())
                    .bind(key_hash.to_owned())
                    .bind(roles)
                    .bind(record.label.clone())
                    .bind(record.created_at_ms)
                    .bind(record.revoked_at_ms)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| $failure("storing an API key", e))?;
                Ok(())
            }

            pub(crate) async fn revoke_key_in(
                conn: &mut $conn,
                key_id: &str,
                now_ms: i64,
            ) -> Result<bool, StoreFailure> {
                let result = sqlx::query(REVOKE_KEY)
                    .bind(key_id.to_owned())
                    .bind(now_ms)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| $failure("revoking an API key", e))?;
                Ok(result.rows_affected() == 1)
            }

            pub(crate) async fn set_tenant_quota_in(
                conn: &mut $conn,
                tenant_id: &TenantId,
                limits: QuotaLimits,
                now_ms: i64,
            ) -> Result<(), StoreFailure> {
                let (pending, daily, rate) = quota_to_columns(limits);
                sqlx::query(SET_TENANT_QUOTA)
                    .bind(tenant_id.as_str().to_owned())
                    .bind(now_ms)
                    .bind(pending)
                    .bind(daily)
                    .bind(rate)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| $failure("storing a tenant's quota", e))?;
                Ok(())
            }
        }
    };
}

key_store!(SqliteStore, sqlx::SqliteConnection, db_failure, UPSERT_KEY_SQLITE);
key_store!(PostgresStore, sqlx::PgConnection, pg_failure, UPSERT_KEY_POSTGRES);
