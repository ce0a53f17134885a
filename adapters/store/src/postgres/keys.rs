//! The [`KeyStore`] half of [`PostgresStore`]: tenants and API keys (their
//! SHA-256 hashes, never the secrets). Writes go through the writer pool in
//! one transaction each; lookups through the read pool. Semantics mirror
//! `minoots_testkit::model_store::ModelStore` (keys listed by id; inserting an
//! existing id replaces that key), as the SQLite store's do.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use minoots_core::auth::Role;
use minoots_core::quota::QuotaLimits;
use minoots_core::{StoreFailure, TenantId};
use minoots_node::keys::{ApiKeyRecord, KeyStore};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::postgres::PostgresStore;
use crate::postgres::rows::pg_failure;
use crate::rows::{QuotaColumns, corrupt, quota_from_columns, quota_to_columns, tenant_from_text};
use crate::sql::{SET_TENANT_QUOTA, TENANT_QUOTA};

const FIND_KEY: &str = "SELECT id, tenant_id, roles::text, label, created_at_ms, revoked_at_ms FROM api_keys \
     WHERE key_hash = $1 AND revoked_at_ms IS NULL ORDER BY id LIMIT 1";

const LIST_KEYS: &str = "SELECT id, tenant_id, roles::text, label, created_at_ms, revoked_at_ms FROM api_keys \
     WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY id";

const INSERT_TENANT: &str =
    "INSERT INTO tenants (id, created_at_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

const UPSERT_KEY: &str = "INSERT INTO api_keys (id, tenant_id, key_hash, roles, label, created_at_ms, revoked_at_ms) \
     VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7) \
     ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, key_hash = excluded.key_hash, \
     roles = excluded.roles, label = excluded.label, created_at_ms = excluded.created_at_ms, \
     revoked_at_ms = excluded.revoked_at_ms";

const REVOKE_KEY: &str = "UPDATE api_keys SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL";

const COUNT_KEYS: &str = "SELECT count(*) FROM api_keys";

fn key_from_row(row: &PgRow) -> Result<ApiKeyRecord, StoreFailure> {
    let get_err = |e| pg_failure("reading an API key", e);
    let roles: String = row.try_get(2).map_err(get_err)?;
    Ok(ApiKeyRecord {
        id: row.try_get(0).map_err(get_err)?,
        tenant_id: tenant_from_text(row.try_get(1).map_err(get_err)?)?,
        roles: serde_json::from_str::<BTreeSet<Role>>(&roles).map_err(|e| corrupt("API key roles", e))?,
        label: row.try_get(3).map_err(get_err)?,
        created_at_ms: row.try_get(4).map_err(get_err)?,
        revoked_at_ms: row.try_get(5).map_err(get_err)?,
    })
}

impl PostgresStore {
    async fn find_key_row(&self, key_hash: String) -> Result<Option<ApiKeyRecord>, StoreFailure> {
        let row = sqlx::query(FIND_KEY)
            .bind(key_hash)
            .fetch_optional(self.readers())
            .await
            .map_err(|e| pg_failure("looking up an API key", e))?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn insert_key_row(&self, record: ApiKeyRecord, key_hash: String) -> Result<(), StoreFailure> {
        let roles = serde_json::to_string(&record.roles)
            .map_err(|e| StoreFailure::Unknown(format!("encoding API key roles: {e}")))?;
        let mut tx = self.writer().begin().await.map_err(|e| pg_failure("starting a key write", e))?;
        sqlx::query(INSERT_TENANT)
            .bind(record.tenant_id.as_str())
            .bind(record.created_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_failure("storing a tenant", e))?;
        sqlx::query(UPSERT_KEY)
            .bind(record.id)
            .bind(record.tenant_id.as_str())
            .bind(key_hash)
            .bind(roles)
            .bind(record.label)
            .bind(record.created_at_ms)
            .bind(record.revoked_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_failure("storing an API key", e))?;
        tx.commit().await.map_err(|e| pg_failure("committing an API key", e))
    }

    async fn list_key_rows(&self, tenant_id: Option<TenantId>) -> Result<Vec<ApiKeyRecord>, StoreFailure> {
        let rows = sqlx::query(LIST_KEYS)
            .bind(tenant_id.map(|t| t.as_str().to_owned()))
            .fetch_all(self.readers())
            .await
            .map_err(|e| pg_failure("listing API keys", e))?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key_row(&self, key_id: String, now_ms: i64) -> Result<bool, StoreFailure> {
        let result = sqlx::query(REVOKE_KEY)
            .bind(key_id)
            .bind(now_ms)
            .execute(self.writer())
            .await
            .map_err(|e| pg_failure("revoking an API key", e))?;
        Ok(result.rows_affected() == 1)
    }

    async fn count_key_rows(&self) -> Result<u64, StoreFailure> {
        let count: i64 = sqlx::query_scalar(COUNT_KEYS)
            .fetch_one(self.readers())
            .await
            .map_err(|e| pg_failure("counting API keys", e))?;
        u64::try_from(count).map_err(|e| corrupt("key count", e))
    }

    async fn tenant_quota_row(&self, tenant_id: &TenantId) -> Result<QuotaLimits, StoreFailure> {
        let columns: Option<QuotaColumns> = sqlx::query_as(TENANT_QUOTA)
            .bind(tenant_id.as_str())
            .fetch_optional(self.readers())
            .await
            .map_err(|e| pg_failure("reading a tenant's quota", e))?;
        columns.map(quota_from_columns).transpose().map(Option::unwrap_or_default)
    }

    async fn set_tenant_quota_row(
        &self,
        tenant_id: TenantId,
        limits: QuotaLimits,
        now_ms: i64,
    ) -> Result<(), StoreFailure> {
        let (pending, daily, rate) = quota_to_columns(limits);
        let mut tx = self.writer().begin().await.map_err(|e| pg_failure("starting a quota write", e))?;
        sqlx::query(SET_TENANT_QUOTA)
            .bind(tenant_id.as_str())
            .bind(now_ms)
            .bind(pending)
            .bind(daily)
            .bind(rate)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_failure("storing a tenant's quota", e))?;
        tx.commit().await.map_err(|e| pg_failure("committing a tenant's quota", e))
    }
}

impl KeyStore for PostgresStore {
    fn find_key(&self, key_hash: &str) -> BoxFuture<'_, Result<Option<ApiKeyRecord>, StoreFailure>> {
        Box::pin(self.find_key_row(key_hash.to_owned()))
    }

    fn insert_key(&self, record: ApiKeyRecord, key_hash: String) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(self.insert_key_row(record, key_hash))
    }

    fn list_keys(
        &self,
        tenant_id: Option<TenantId>,
    ) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreFailure>> {
        Box::pin(self.list_key_rows(tenant_id))
    }

    fn revoke_key(&self, key_id: String, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreFailure>> {
        Box::pin(self.revoke_key_row(key_id, now_ms))
    }

    fn count_keys(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        Box::pin(self.count_key_rows())
    }

    fn tenant_quota<'a>(
        &'a self,
        tenant_id: &'a TenantId,
    ) -> BoxFuture<'a, Result<QuotaLimits, StoreFailure>> {
        Box::pin(self.tenant_quota_row(tenant_id))
    }

    fn set_tenant_quota(
        &self,
        tenant_id: TenantId,
        limits: QuotaLimits,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreFailure>> {
        Box::pin(self.set_tenant_quota_row(tenant_id, limits, now_ms))
    }
}
