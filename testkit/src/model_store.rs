//! [`ModelStore`]: the reference [`StoreModel`] behind the [`Store`] and
//! [`KeyStore`] traits, in memory. Used by driver tests, the conformance suite
//! (as the reference) and the simulator. Its clock is the store clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_core::model::StoreModel;
use minoots_core::quota::{QuotaLimits, TenantUsage};
use minoots_core::store::{StoreOp, StoreReply};
use minoots_core::timer::TimerStatus;
use minoots_core::{StoreFailure, TenantId, WallMs};

use minoots_node::clock::Clock;
use minoots_node::keys::{ApiKeyRecord, KeyStore};
use minoots_node::store::Store;

#[derive(Default)]
struct State {
    model: StoreModel,
    published_through: u64,
    keys: BTreeMap<String, (ApiKeyRecord, String)>,
    quotas: BTreeMap<TenantId, QuotaLimits>,
    failing: bool,
    latency_ms: u64,
}

/// The reference store in memory.
pub struct ModelStore {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

impl ModelStore {
    /// An empty store whose clock is `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { state: Mutex::new(State::default()), clock }
    }

    /// While `failing`, every operation fails (for outage tests).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Every operation takes this long before it applies (a slow disk or network).
    pub fn set_latency_ms(&self, latency_ms: u64) {
        self.lock().latency_ms = latency_ms;
    }

    /// A copy of the model (for assertions).
    pub fn snapshot(&self) -> StoreModel {
        self.lock().model.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("model store lock")
    }

    fn guard(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreFailure> {
        let state = self.lock();
        if state.failing {
            return Err(StoreFailure::Unknown("injected failure".into()));
        }
        Ok(state)
    }
}

impl Store for ModelStore {
    fn execute(&self, op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>> {
        let latency_ms = self.lock().latency_ms;
        Box::pin(async move {
            if latency_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(latency_ms)).await;
            }
            let now = self.clock.now().wall_ms;
            self.guard()?.model.apply(now, &op)
        })
    }

    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>> {
        let result = self.guard().map(|s| {
            let from = after_seq.max(s.published_through);
            s.model.outbox().iter().filter(|e| e.seq > from).take(limit as usize).cloned().collect()
        });
        Box::pin(async move { result })
    }

    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>> {
        let result = self.guard().map(|mut s| s.published_through = s.published_through.max(up_to_seq));
        Box::pin(async move { result })
    }

    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        let result = self
            .guard()
            .map(|s| s.model.timers().values().filter(|t| t.status == TimerStatus::Scheduled).count() as u64);
        Box::pin(async move { result })
    }

    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a TenantId,
        day_start_ms: WallMs,
    ) -> BoxFuture<'a, Result<TenantUsage, StoreFailure>> {
        let result = self.guard().map(|s| s.model.tenant_usage(tenant, day_start_ms));
        Box::pin(async move { result })
    }
}

impl KeyStore for ModelStore {
    fn find_key(&self, key_hash: &str) -> BoxFuture<'_, Result<Option<ApiKeyRecord>, StoreFailure>> {
        let result = self.guard().map(|s| {
            s.keys.values().find(|(r, h)| h == key_hash && r.revoked_at_ms.is_none()).map(|(r, _)| r.clone())
        });
        Box::pin(async move { result })
    }

    fn insert_key(&self, record: ApiKeyRecord, key_hash: String) -> BoxFuture<'_, Result<(), StoreFailure>> {
        let result = self.guard().map(|mut s| {
            s.keys.insert(record.id.clone(), (record, key_hash));
        });
        Box::pin(async move { result })
    }

    fn list_keys(
        &self,
        tenant_id: Option<TenantId>,
    ) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreFailure>> {
        let result = self.guard().map(|s| {
            s.keys
                .values()
                .filter(|(r, _)| tenant_id.as_ref().is_none_or(|t| &r.tenant_id == t))
                .map(|(r, _)| r.clone())
                .collect()
        });
        Box::pin(async move { result })
    }

    fn revoke_key(&self, key_id: String, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreFailure>> {
        let result = self.guard().map(|mut s| match s.keys.get_mut(&key_id) {
            Some((r, _)) if r.revoked_at_ms.is_none() => {
                r.revoked_at_ms = Some(now_ms);
                true
            }
            _ => false,
        });
        Box::pin(async move { result })
    }

    fn count_keys(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        let result = self.guard().map(|s| s.keys.len() as u64);
        Box::pin(async move { result })
    }

    fn tenant_quota<'a>(
        &'a self,
        tenant_id: &'a TenantId,
    ) -> BoxFuture<'a, Result<QuotaLimits, StoreFailure>> {
        let result = self.guard().map(|s| s.quotas.get(tenant_id).copied().unwrap_or_default());
        Box::pin(async move { result })
    }

    fn set_tenant_quota(
        &self,
        tenant_id: TenantId,
        limits: QuotaLimits,
        _now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreFailure>> {
        let result = self.guard().map(|mut s| {
            s.quotas.insert(tenant_id, limits);
        });
        Box::pin(async move { result })
    }
}
