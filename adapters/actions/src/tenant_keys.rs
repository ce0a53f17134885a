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
        // Almost always there: a plain read, no write transaction.
        let existing = on_pool!(&self.pool, p => {
            let row = sqlx::query("SELECT current_key, next_key FROM tenant_signing_keys WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(p)
                .await
                .map_err(failed("reading a tenant's signing keys"))?;
            row.as_ref().map(pair_from_row).transpose().map_err(failed("reading a tenant's signing keys"))?
        });
        if let Some(pair) = existing {
            return Ok(pair);
        }
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

    /// Up to `limit` tenants' pairs (to preload a cache).
    pub async fn tenant_key_pairs(&self, limit: usize) -> Result<Vec<(String, KeyPair)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(&self.pool, p => {
            let rows = sqlx::query("SELECT tenant_id, current_key, next_key FROM tenant_signing_keys ORDER BY tenant_id LIMIT $1")
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(failed("reading tenants' signing keys"))?;
            rows.iter()
                .map(|row| Ok((row.try_get("tenant_id")?, pair_from_row(row)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(failed("reading tenants' signing keys"))
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

/// A stored pair as last read.
#[derive(Debug, Clone)]
struct Cached {
    pair: KeyPair,
    /// Monotonic ms when it was read.
    read_at_ms: u64,
    /// Since when a caller has been reading it again (the others keep signing
    /// with this one meanwhile); a read that never finished is retried after [`KEY_CACHE_MS`].
    refreshing_since_ms: Option<u64>,
}

/// The pair that signs each tenant's requests.
pub struct TenantKeys {
    configured: SigningKeys,
    store: ActionStore,
    clock: Arc<dyn Clock>,
    /// Stored pairs read recently.
    cache: Mutex<BTreeMap<String, Cached>>,
    /// Held while a tenant's first pair is read, so a burst of its first
    /// deliveries makes one read (and at most one insert), not one each.
    first_read: tokio::sync::Mutex<()>,
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
        Self {
            configured,
            store,
            clock,
            cache: Mutex::new(BTreeMap::new()),
            first_read: tokio::sync::Mutex::new(()),
        }
    }

    /// Where `tenant_id`'s keys come from, generating the tenant's pair if needed.
    pub async fn source(&self, tenant_id: &str) -> Result<KeySource, StoreError> {
        if self.configured.for_tenant(tenant_id).is_some() {
            return Ok(KeySource::Operator);
        }
        Ok(KeySource::Generated(self.store.tenant_key_pair(tenant_id, self.clock.now().wall_ms).await?))
    }

    /// The pair that signs `tenant_id`'s requests now. A pair older than
    /// [`KEY_CACHE_MS`] is read again by one caller while the others keep
    /// using it: signing never queues behind the store.
    pub async fn pair(&self, tenant_id: &str) -> Result<KeyPair, StoreError> {
        if let Some(pair) = self.configured.for_tenant(tenant_id) {
            return Ok(pair.clone());
        }
        let now = self.clock.now();
        let cached = self.cached(tenant_id, now.mono_ms);
        if let Some(pair) = cached {
            return Ok(pair);
        }
        let mut _first = None;
        if !self.cache.lock().expect("key cache").contains_key(tenant_id) {
            _first = Some(self.first_read.lock().await);
            // Whoever held it before may have read this tenant's pair.
            if let Some(pair) = self.cached(tenant_id, now.mono_ms) {
                return Ok(pair);
            }
        }
        let read = self.store.tenant_key_pair(tenant_id, now.wall_ms).await;
        let mut cache = self.cache.lock().expect("key cache");
        let pair = match read {
            Ok(pair) => pair,
            Err(e) => {
                // Keep signing with what we have; the next caller tries the store again.
                return match cache.get_mut(tenant_id) {
                    Some(cached) => {
                        cached.refreshing_since_ms = None;
                        Ok(cached.pair.clone())
                    }
                    None => Err(e),
                };
            }
        };
        if cache.len() >= KEY_CACHE_TENANTS_MAX && !cache.contains_key(tenant_id) {
            cache.retain(|_, c| now.mono_ms.saturating_sub(c.read_at_ms) < KEY_CACHE_MS);
            if cache.len() >= KEY_CACHE_TENANTS_MAX {
                cache.clear();
            }
        }
        cache.insert(
            tenant_id.to_owned(),
            Cached { pair: pair.clone(), read_at_ms: now.mono_ms, refreshing_since_ms: None },
        );
        Ok(pair)
    }

    /// The cached pair if it is fresh, or stale while another caller reads it
    /// again; `None` when the caller must read it (a stale one is then marked
    /// as being read again).
    fn cached(&self, tenant_id: &str, now_ms: u64) -> Option<KeyPair> {
        let mut cache = self.cache.lock().expect("key cache");
        let cached = cache.get_mut(tenant_id)?;
        let fresh = now_ms.saturating_sub(cached.read_at_ms) < KEY_CACHE_MS;
        let being_read =
            cached.refreshing_since_ms.is_some_and(|since| now_ms.saturating_sub(since) < KEY_CACHE_MS);
        if fresh || being_read {
            return Some(cached.pair.clone());
        }
        cached.refreshing_since_ms = Some(now_ms);
        None
    }

    /// Reads every stored pair into the cache (at start: no tenant's first
    /// delivery after a restart waits for the store).
    pub async fn preload(&self) -> Result<usize, StoreError> {
        let pairs = self.store.tenant_key_pairs(KEY_CACHE_TENANTS_MAX).await?;
        let now_ms = self.clock.now().mono_ms;
        let mut cache = self.cache.lock().expect("key cache");
        for (tenant, pair) in &pairs {
            cache.insert(
                tenant.clone(),
                Cached { pair: pair.clone(), read_at_ms: now_ms, refreshing_since_ms: None },
            );
        }
        Ok(pairs.len())
    }

    /// Makes sure `tenant_id`'s pair is at hand before its first delivery
    /// (called when a timer with actions is scheduled): reads or generates it
    /// in the background if it is not cached. A first delivery would
    /// otherwise wait for the store while a burst of fires queues behind it.
    pub fn warm(self: &Arc<Self>, tenant_id: &str) {
        if self.configured.for_tenant(tenant_id).is_some()
            || self.cache.lock().expect("key cache").contains_key(tenant_id)
        {
            return;
        }
        let (keys, tenant) = (self.clone(), tenant_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = keys.pair(&tenant).await {
                tracing::warn!(tenant = %tenant, error = %e, "reading a tenant's signing key failed; its first delivery reads it");
            }
        });
    }

    /// Forgets `tenant_id`'s cached pair (after a rotation through this node).
    pub fn forget(&self, tenant_id: &str) {
        self.cache.lock().expect("key cache").remove(tenant_id);
    }
}
