//! The conformance suite against the reference `ModelStore` (a self-check of
//! the suite and the model), and against deliberately broken stores, to prove
//! that the suite catches what it claims to catch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use minoots_core::event::OutboxEvent;
use minoots_core::store::{LEASE_SHARD, StoreOp, StoreReply};
use minoots_core::{Now, StoreFailure, TenantId};
use minoots_node::clock::{Clock, ManualClock};
use minoots_node::keys::{ApiKeyRecord, KeyStore};
use minoots_node::store::Store;
use minoots_testkit::conformance::{Failure, report, run_all};
use minoots_testkit::model_store::ModelStore;

#[tokio::test]
async fn model_store_conforms() {
    let result = run_all(|clock: Arc<ManualClock>| async move { ModelStore::new(clock) }).await;
    if let Err(failures) = result {
        panic!("{}", report(&failures));
    }
}

/// How a [`Broken`] store departs from the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// Commits always carry the current lease holder and epoch: fencing is off.
    IgnoresEpoch,
    /// Its store clock runs an hour ahead: fires are recorded early.
    ClockAhead,
    /// `outbox_mark_published` does nothing.
    ForgetsPublished,
    /// A revoked key still authenticates.
    IgnoresRevocation,
}

/// A `ModelStore` with one planted flaw.
struct Broken {
    inner: ModelStore,
    flaw: Flaw,
    /// Key id → hash, for the `IgnoresRevocation` flaw.
    hashes: Mutex<BTreeMap<String, String>>,
}

/// A clock `offset_ms` ahead of another.
struct Ahead {
    base: Arc<ManualClock>,
    offset_ms: i64,
}

impl Clock for Ahead {
    fn now(&self) -> Now {
        let now = self.base.now();
        Now::new(now.wall_ms + self.offset_ms, now.mono_ms)
    }
}

impl Broken {
    fn new(clock: Arc<ManualClock>, flaw: Flaw) -> Self {
        let inner = if flaw == Flaw::ClockAhead {
            ModelStore::new(Arc::new(Ahead { base: clock, offset_ms: 3_600_000 }))
        } else {
            ModelStore::new(clock)
        };
        Self { inner, flaw, hashes: Mutex::new(BTreeMap::new()) }
    }
}

impl Store for Broken {
    fn execute(&self, mut op: StoreOp) -> BoxFuture<'_, Result<StoreReply, StoreFailure>> {
        if let (Flaw::IgnoresEpoch, StoreOp::Commit(batch)) = (self.flaw, &mut op) {
            let model = self.inner.snapshot();
            if let Some(lease) = model.leases().get(&LEASE_SHARD) {
                batch.epoch = lease.holder.epoch;
                batch.node_id = lease.holder.node_id.clone();
            }
        }
        self.inner.execute(op)
    }

    fn outbox_unpublished(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<OutboxEvent>, StoreFailure>> {
        self.inner.outbox_unpublished(after_seq, limit)
    }

    fn outbox_mark_published(&self, up_to_seq: u64) -> BoxFuture<'_, Result<(), StoreFailure>> {
        if self.flaw == Flaw::ForgetsPublished {
            return Box::pin(async { Ok(()) });
        }
        self.inner.outbox_mark_published(up_to_seq)
    }

    fn count_pending(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        self.inner.count_pending()
    }

    fn tenant_usage<'a>(
        &'a self,
        tenant: &'a minoots_core::TenantId,
        day_start_ms: minoots_core::WallMs,
    ) -> BoxFuture<'a, Result<minoots_core::quota::TenantUsage, StoreFailure>> {
        self.inner.tenant_usage(tenant, day_start_ms)
    }
}

impl KeyStore for Broken {
    fn find_key(&self, key_hash: &str) -> BoxFuture<'_, Result<Option<ApiKeyRecord>, StoreFailure>> {
        if self.flaw != Flaw::IgnoresRevocation {
            return self.inner.find_key(key_hash);
        }
        let id = self
            .hashes
            .lock()
            .expect("hashes lock")
            .iter()
            .find(|(_, h)| *h == key_hash)
            .map(|(id, _)| id.clone());
        Box::pin(async move {
            // The key with that hash, revoked or not.
            let all = self.inner.list_keys(None).await?;
            Ok(all.into_iter().find(|k| Some(&k.id) == id.as_ref()))
        })
    }

    fn insert_key(&self, record: ApiKeyRecord, key_hash: String) -> BoxFuture<'_, Result<(), StoreFailure>> {
        self.hashes.lock().expect("hashes lock").insert(record.id.clone(), key_hash.clone());
        self.inner.insert_key(record, key_hash)
    }

    fn list_keys(
        &self,
        tenant_id: Option<TenantId>,
    ) -> BoxFuture<'_, Result<Vec<ApiKeyRecord>, StoreFailure>> {
        self.inner.list_keys(tenant_id)
    }

    fn revoke_key(&self, key_id: String, now_ms: i64) -> BoxFuture<'_, Result<bool, StoreFailure>> {
        self.inner.revoke_key(key_id, now_ms)
    }

    fn count_keys(&self) -> BoxFuture<'_, Result<u64, StoreFailure>> {
        self.inner.count_keys()
    }

    fn tenant_quota<'a>(
        &'a self,
        tenant_id: &'a TenantId,
    ) -> BoxFuture<'a, Result<minoots_core::quota::QuotaLimits, StoreFailure>> {
        self.inner.tenant_quota(tenant_id)
    }

    fn set_tenant_quota(
        &self,
        tenant_id: TenantId,
        limits: minoots_core::quota::QuotaLimits,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreFailure>> {
        self.inner.set_tenant_quota(tenant_id, limits, now_ms)
    }
}

async fn failures_with(flaw: Flaw) -> Vec<Failure> {
    match run_all(|clock: Arc<ManualClock>| async move { Broken::new(clock, flaw) }).await {
        Ok(()) => panic!("the conformance suite passed a store that {flaw:?}"),
        Err(failures) => failures,
    }
}

fn failed(failures: &[Failure], scenario: &str) -> bool {
    failures.iter().any(|f| f.scenario == scenario)
}

#[tokio::test]
async fn suite_catches_a_store_without_fencing() {
    let failures = failures_with(Flaw::IgnoresEpoch).await;
    assert!(failed(&failures, "fire_fencing"), "{}", report(&failures));
    assert!(failed(&failures, "open_bumps_epoch"), "{}", report(&failures));
    assert!(failed(&failures, "leases"), "{}", report(&failures));
    assert!(!failed(&failures, "keys"), "{}", report(&failures));
}

#[tokio::test]
async fn suite_catches_a_store_that_fires_early() {
    let failures = failures_with(Flaw::ClockAhead).await;
    assert!(failed(&failures, "fire_never_early_and_once"), "{}", report(&failures));
    assert!(failed(&failures, "fire_recurring"), "{}", report(&failures));
}

#[tokio::test]
async fn suite_catches_a_store_that_forgets_published_marks() {
    let failures = failures_with(Flaw::ForgetsPublished).await;
    assert!(failed(&failures, "outbox"), "{}", report(&failures));
    assert!(!failed(&failures, "fire_fencing"), "{}", report(&failures));
}

#[tokio::test]
async fn suite_catches_a_key_store_that_ignores_revocation() {
    let failures = failures_with(Flaw::IgnoresRevocation).await;
    assert_eq!(
        failures.iter().map(|f| f.scenario.as_str()).collect::<Vec<_>>(),
        vec!["keys"],
        "{}",
        report(&failures)
    );
}
