//! Each tenant's webhook signing keys (part of [`ActionStore`]), and what
//! the executor signs with.
//!
//! A tenant's pair lives in `tenant_signing_keys` — the cluster database, or
//! `actions.db` standalone — so every node signs its requests with the same
//! key and a restart keeps it. It is generated on first use (the tenant's
//! first webhook, or its first look at its keys): an insert that does nothing
//! when a row exists, then a read, so two nodes racing agree on one key. A
//! rotation sets a next key (requests then carry both signatures) and a
//! promotion makes it current.
//!
//! [`TenantKeys`] answers "which pair signs this tenant's request": the
//! operator's configured keys when they cover the tenant, else the stored
//! pair, cached for [`KEY_CACHE_MS`] so a rotation made through any node is
//! honoured within that long.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use minoots_node::Clock;
use sqlx::Row;

use crate::signing::{KeyPair, SigningKeys, generate_key};
use crate::store::{ActionStore, Pool, StoreError, failed, on_pool};

/// How long the executor trusts a stored pair before reading it again.
pub const KEY_CACHE_MS: u64 = 2_000;

/// Most tenants whose pairs the executor keeps in memory.
const KEY_CACHE_TENANTS_MAX: usize = 10_000;

/// `$1` tenant, `$2` a fresh key, `$3` now: creates the tenant's row unless it exists.
const INSERT_IF_ABSENT: &str = "INSERT INTO tenant_signing_keys (tenant_id, current_key, next_key, created_at_ms, updated_at_ms) \
     VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (tenant_id) DO NOTHING";

fn pair_from_row<R: Row>(row: &R) -> Result<KeyPair, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(KeyPair { current: row.try_get("current_key")?, next: row.try_get("next_key")? })
}

impl ActionStore {
    /// `tenant_id`'s pair, generated now if it has none.
    pub async fn tenant_key_pair(&self, tenant_id: &str, now_ms: i64) -> Result<KeyPair, StoreError> {
        let fresh = generate_key();
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(failed("reading a tenant's signing keys"))?;
            sqlx::query(INSERT_IF_ABSENT)
                .bind(tenant_id)
                .bind(&fresh)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(failed("generating a tenant's signing key"))?;
            let row = sqlx::query("SELECT current_key, next_key FROM tenant_signing_keys WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(failed("reading a tenant's signing keys"))?;
            let pair = pair_from_row(&row).map_err(failed("reading a tenant's signing keys"))?;
            tx.commit().await.map_err(failed("reading a tenant's signing keys"))?;
            Ok(pair)
        })
    }

    /// Starts a rotation of `tenant_id`'s key: a next key is generated (an
    /// existing one is kept) and signs every request beside the current one.
    pub async fn rotate_tenant_key(&self, tenant_id: &str, now_ms: i64) -> Result<KeyPair, StoreError> {
        let (fresh_current, fresh_next) = (generate_key(), generate_key());
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(failed("rotating a tenant's signing key"))?;
            sqlx::query(INSERT_IF_ABSENT)
                .bind(tenant_id)
                .bind(&fresh_current)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(failed("rotating a tenant's signing key"))?;
            let row = sqlx::query(
                "UPDATE tenant_signing_keys SET next_key = COALESCE(next_key, $2), updated_at_ms = $3 \
                 WHERE tenant_id = $1 RETURNING current_key, next_key",
            )
            .bind(tenant_id)
            .bind(&fresh_next)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(failed("rotating a tenant's signing key"))?;
            let pair = pair_from_row(&row).map_err(failed("rotating a tenant's signing key"))?;
            tx.commit().await.map_err(failed("rotating a tenant's signing key"))?;
            Ok(pair)
        })
    }

    /// Ends a rotation: the next key becomes the only one. `None` when no
    /// rotation was under way (nothing changes).
    pub async fn promote_tenant_key(
        &self,
        tenant_id: &str,
        now_ms: i64,
    ) -> Result<Option<KeyPair>, StoreError> {
        on_pool!(&self.pool, p => {
            let row = sqlx::query(
                "UPDATE tenant_signing_keys SET current_key = next_key, next_key = NULL, updated_at_ms = $2 \
                 WHERE tenant_id = $1 AND next_key IS NOT NULL RETURNING current_key, next_key",
            )
            .bind(tenant_id)
            .bind(now_ms)
            .fetch_optional(p)
            .await
            .map_err(failed("promoting a tenant's next signing key"))?;
            row.as_ref().map(pair_from_row).transpose().map_err(failed("promoting a tenant's next signing key"))
        })
    }
}

/// Whose keys sign a tenant's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The operator configured them (`MINOOTS_SIGNING_KEY`, the keys file): not shown to tenants.
    Operator,
    /// Generated for the tenant and kept in the action store.
    Generated(KeyPair),
}

/// The pair that signs each tenant's requests.
pub struct TenantKeys {
    configured: SigningKeys,
    store: ActionStore,
    clock: Arc<dyn Clock>,
    /// Stored pairs read recently: tenant → (pair, monotonic ms when read).
    cache: Mutex<BTreeMap<String, (KeyPair, u64)>>,
}

impl std::fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TenantKeys").finish_non_exhaustive()
    }
}

impl TenantKeys {
    /// Keys from `configured` where they apply, from `store` otherwise.
    pub fn new(configured: SigningKeys, store: ActionStore, clock: Arc<dyn Clock>) -> Self {
        Self { configured, store, clock, cache: Mutex::new(BTreeMap::new()) }
    }

    /// Where `tenant_id`'s keys come from, generating the tenant's pair if needed.
    pub async fn source(&self, tenant_id: &str) -> Result<KeySource, StoreError> {
        if self.configured.for_tenant(tenant_id).is_some() {
            return Ok(KeySource::Operator);
        }
        Ok(KeySource::Generated(self.store.tenant_key_pair(tenant_id, self.clock.now().wall_ms).await?))
    }

    /// The pair that signs `tenant_id`'s requests now.
    pub async fn pair(&self, tenant_id: &str) -> Result<KeyPair, StoreError> {
        if let Some(pair) = self.configured.for_tenant(tenant_id) {
            return Ok(pair.clone());
        }
        let now = self.clock.now();
        let fresh = |(_, read_at): &&(KeyPair, u64)| now.mono_ms.saturating_sub(*read_at) < KEY_CACHE_MS;
        if let Some((pair, _)) = self.cache.lock().expect("key cache").get(tenant_id).filter(fresh) {
            return Ok(pair.clone());
        }
        let pair = self.store.tenant_key_pair(tenant_id, now.wall_ms).await?;
        let mut cache = self.cache.lock().expect("key cache");
        if cache.len() >= KEY_CACHE_TENANTS_MAX {
            cache.retain(|_, (_, read_at)| now.mono_ms.saturating_sub(*read_at) < KEY_CACHE_MS);
            if cache.len() >= KEY_CACHE_TENANTS_MAX {
                cache.clear();
            }
        }
        cache.insert(tenant_id.to_owned(), (pair.clone(), now.mono_ms));
        Ok(pair)
    }

    /// Forgets `tenant_id`'s cached pair (after a rotation through this node).
    pub fn forget(&self, tenant_id: &str) {
        self.cache.lock().expect("key cache").remove(tenant_id);
    }
}
