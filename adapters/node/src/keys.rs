//! API keys: stored as SHA-256 hashes, each bound to one tenant with roles.
//! Lookups go straight to the key store (not through the engine): keys are
//! configuration, not timer state.

use futures::future::BoxFuture;
use minoots_core::StoreFailure;
use minoots_core::TenantId;
use minoots_core::auth::Role;
use minoots_core::quota::QuotaLimits;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// A stored key (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyRecord {
    /// Public id of the key (`key_…`).
    pub id: String,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its roles.
    pub roles: BTreeSet<Role>,
    /// Free label.
    pub label: String,
    /// When created (wall ms).
    pub created_at_ms: i64,
    /// When revoked, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// Hex SHA-256 of a key: what the store keeps and looks up.
pub fn hash_api_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Storage for tenants (their quota limits) and API keys.
pub trait KeyStore: Send + Sync + 'static {
    /// The active (unrevoked) key with this hash.
    fn find_key(&self, key_hash: &str) -> BoxFuture<'_, Result<Option<ApiKeyRecord>, StoreFailure>>;
    /// Stores a key (its hash) for a tenant, creating the tenant if needed.
    fn insert_key(&self, record: ApiKeyRecord, key_hash: String) -> BoxFuture<'_, Result<(), StoreFailure>>;
    /// Every key, or those of one tenant.
    fn list_keys(
        &self,
        tenant_id: Option<TenantId>,
    ) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreFailure>>;
    /// Revokes a key by id; false if no such active key.
    fn revoke_key(&self, key_id: String, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreFailure>>;
    /// Number of keys ever stored (to detect an empty store for the dev seed).
    fn count_keys(&self) -> BoxFuture<'_, Result<u64, StoreFailure>>;
    /// The tenant's own quota limits (unset: the operator's defaults apply).
    fn tenant_quota<'a>(
        &'a self,
        tenant_id: &'a TenantId,
    ) -> BoxFuture<'a, Result<QuotaLimits, StoreFailure>>;
    /// Replaces the tenant's own quota limits, creating the tenant if needed.
    fn set_tenant_quota(
        &self,
        tenant_id: TenantId,
        limits: QuotaLimits,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreFailure>>;
}
