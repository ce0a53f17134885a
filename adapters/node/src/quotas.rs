//! Per-tenant quotas where requests enter the node (`NodeHandle::call_as`, under [`crate::requests`]):
//! each tenant's limits (the operator's defaults, overridden per tenant in
//! the key store), its usage ledger and its request-rate bucket. The
//! arithmetic is `minoots_core::quota`'s; this module adds the counts from
//! the store, the caching and the reply to a refused request.
//!
//! A request is checked after validation and never charged when refused: an
//! over-quota request that is also invalid gets the validation error; creates
//! are reserved before the engine sees them and settled from its reply (only
//! timers actually created count); a rate token is given back when the
//! request fails for any reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use minoots_core::draft::TimerDraft;
use minoots_core::quota::{
    DAY_MS, LimitType, OverQuota, QuotaLimits, RECOUNT_INTERVAL_MS, RateBucket, UsageLedger, utc_day_start_ms,
};
use minoots_core::{ApiError, EngineConfig, Response, TenantId};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::keys::KeyStore;
use crate::status::NodeStatus;
use crate::store::Store;

/// How long a tenant's limits read from the key store are used before they are read again.
pub const LIMITS_TTL_MS: u64 = 5_000;
/// Store counts one request may need: the first, and a recount.
const COUNTS_PER_REQUEST_MAX: usize = 3;

/// Quotas of every tenant seen on this node.
pub(crate) struct Quotas {
    defaults: QuotaLimits,
    /// The engine's rules, to validate a refused request before refusing it.
    rules: EngineConfig,
    store: Arc<dyn Store>,
    keys: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    status: watch::Receiver<NodeStatus>,
    /// Bounded by the tenants that hold keys: only authenticated callers get here.
    tenants: Mutex<BTreeMap<TenantId, TenantQuota>>,
}

#[derive(Default)]
struct TenantQuota {
    /// The limits in force and when they were read (monotonic ms).
    limits: Option<(QuotaLimits, u64)>,
    ledger: UsageLedger,
    rate: RateBucket,
}

/// What an admitted request holds until its reply settles it. Dropped
/// unsettled (the caller went away mid-call), its reserved creates count as
/// made: an over-count the next recount corrects, never an under-count.
pub(crate) struct Admission {
    quotas: Arc<Quotas>,
    tenant: TenantId,
    creates_reserved: u64,
    rate_taken: Option<u32>,
    settled: bool,
}

impl Admission {
    /// Ends the admission with the engine's reply.
    pub(crate) fn settle(mut self, reply: &Result<Response, ApiError>) {
        let created = match reply {
            Ok(Response::Scheduled(created)) => u64::from(created.created),
            Ok(Response::ScheduledBatch(results)) => {
                results.iter().filter(|r| r.as_ref().is_ok_and(|c| c.created)).count() as u64
            }
            _ => 0,
        };
        self.quotas.settle(
            &self.tenant,
            self.creates_reserved,
            created,
            self.rate_taken.filter(|_| reply.is_err()),
        );
        self.settled = true;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.settled {
            self.quotas.settle(&self.tenant, self.creates_reserved, self.creates_reserved, None);
        }
    }
}

impl Quotas {
    pub(crate) fn new(
        defaults: QuotaLimits,
        rules: EngineConfig,
        store: Arc<dyn Store>,
        keys: Arc<dyn KeyStore>,
        clock: Arc<dyn Clock>,
        status: watch::Receiver<NodeStatus>,
    ) -> Self {
        Self { defaults, rules, store, keys, clock, status, tenants: Mutex::default() }
    }

    fn tenants(&self) -> std::sync::MutexGuard<'_, BTreeMap<TenantId, TenantQuota>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's limits in force (read from the key store at most every [`LIMITS_TTL_MS`]).
    async fn limits(&self, tenant: &TenantId) -> Result<QuotaLimits, ApiError> {
        let now_mono_ms = self.clock.now().mono_ms;
        let cached = self.tenants().get(tenant).and_then(|t| t.limits);
        if let Some((limits, read_at)) = cached
            && now_mono_ms.saturating_sub(read_at) < LIMITS_TTL_MS
        {
            return Ok(limits);
        }
        let own = match self.keys.tenant_quota(tenant).await {
            Ok(own) => own,
            // Keep what was known; without it, fail closed like a key lookup.
            Err(e) => match cached {
                Some((limits, _)) => return Ok(limits),
                None => {
                    return Err(unavailable(format!("the tenant's quota could not be read: {}", e.detail())));
                }
            },
        };
        let limits = own.or(self.defaults);
        self.tenants().entry(tenant.clone()).or_default().limits = Some((limits, now_mono_ms));
        Ok(limits)
    }

    /// Counts the tenant's usage in the store into its ledger.
    async fn count(&self, tenant: &TenantId) -> Result<(), ApiError> {
        let ticket = self.tenants().entry(tenant.clone()).or_default().ledger.begin_count();
        let now = self.clock.now();
        let usage =
            self.store.tenant_usage(tenant, utc_day_start_ms(now.wall_ms)).await.map_err(|e| {
                unavailable(format!("the tenant's usage could not be counted: {}", e.detail()))
            })?;
        let now_after = self.clock.now();
        let epoch = self.epoch();
        let mut tenants = self.tenants();
        let ledger = &mut tenants.entry(tenant.clone()).or_default().ledger;
        ledger.apply_count(ticket, usage, now.wall_ms, now_after.mono_ms, epoch);
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.status.borrow().epoch.unwrap_or(0)
    }

    /// Admits a request of `tenant` creating `drafts` (none for other
    /// requests), or refuses it with `QuotaExceeded` (or with its validation
    /// error, when it is also invalid).
    pub(crate) async fn admit(
        self: &Arc<Self>,
        tenant: &TenantId,
        drafts: &[TimerDraft],
    ) -> Result<Admission, ApiError> {
        let limits = self.limits(tenant).await?;
        let mut admission = Admission {
            quotas: self.clone(),
            tenant: tenant.clone(),
            creates_reserved: 0,
            rate_taken: None,
            settled: true,
        };
        if let Some(per_second) = limits.requests_per_second {
            let now = self.clock.now();
            let taken =
                self.tenants().entry(tenant.clone()).or_default().rate.try_take(per_second, now.mono_ms);
            if let Err(retry_after_ms) = taken {
                self.check_valid(drafts)?;
                let reason = format!("at most {per_second} requests per second");
                return Err(quota_exceeded(LimitType::Rate, reason, retry_after_ms));
            }
            admission.rate_taken = Some(per_second);
        }
        if drafts.is_empty() || (limits.pending_timers.is_none() && limits.daily_creates.is_none()) {
            return Ok(admission);
        }
        let creates = drafts.len() as u64;
        // A count, then at most one recount after a refusal (or after the
        // day or the epoch changed during the first count).
        for attempt in 0..COUNTS_PER_REQUEST_MAX {
            let reserved = {
                let now = self.clock.now();
                let epoch = self.epoch();
                let mut tenants = self.tenants();
                let ledger = &mut tenants.entry(tenant.clone()).or_default().ledger;
                if ledger.needs_count(now.wall_ms, epoch) {
                    None
                } else {
                    Some((ledger.try_reserve(creates, &limits), ledger.may_recount(now.mono_ms)))
                }
            };
            match reserved {
                Some((Ok(()), _)) => {
                    admission.creates_reserved = creates;
                    admission.settled = false;
                    return Ok(admission);
                }
                Some((Err(over), may_recount)) if attempt > 0 || !may_recount => {
                    self.give_back_rate(tenant, admission.rate_taken.take());
                    self.check_valid(drafts)?;
                    return Err(self.refusal(tenant, over));
                }
                _ => {
                    if let Err(e) = self.count(tenant).await {
                        self.give_back_rate(tenant, admission.rate_taken.take());
                        return Err(e);
                    }
                }
            }
        }
        self.give_back_rate(tenant, admission.rate_taken.take());
        Err(unavailable("the tenant's usage kept changing while it was counted".into()))
    }

    /// Refuses with the validation error when the drafts are invalid: a
    /// request that is both invalid and over quota is told what to fix.
    fn check_valid(&self, drafts: &[TimerDraft]) -> Result<(), ApiError> {
        if drafts.is_empty() {
            return Ok(());
        }
        self.rules.check_drafts(drafts, self.clock.now()).map_err(ApiError::Invalid)
    }

    fn refusal(&self, tenant: &TenantId, over: OverQuota) -> ApiError {
        let now = self.clock.now();
        let OverQuota { limit_type, limit, used } = over;
        let (reason, retry_after_ms) = match limit_type {
            LimitType::Daily => {
                let next_day_ms = utc_day_start_ms(now.wall_ms).saturating_add(DAY_MS);
                let wait = u64::try_from(next_day_ms.saturating_sub(now.wall_ms)).unwrap_or(0);
                (format!("at most {limit} timers created per UTC day; {used} created today"), wait)
            }
            LimitType::Burst | LimitType::Rate => {
                // (try_reserve refuses only by Daily or Burst.)
                let wait = self.tenants().get(tenant).map_or(RECOUNT_INTERVAL_MS, |t| {
                    t.ledger.recount_in_ms(now.mono_ms).max(RECOUNT_INTERVAL_MS)
                });
                (format!("at most {limit} timers pending at once; {used} pending"), wait)
            }
        };
        quota_exceeded(limit_type, reason, retry_after_ms)
    }

    fn give_back_rate(&self, tenant: &TenantId, rate_taken: Option<u32>) {
        if let Some(per_second) = rate_taken
            && let Some(state) = self.tenants().get_mut(tenant)
        {
            state.rate.give_back(per_second);
        }
    }

    fn settle(&self, tenant: &TenantId, reserved: u64, created: u64, rate_to_give_back: Option<u32>) {
        let mut tenants = self.tenants();
        if let Some(state) = tenants.get_mut(tenant) {
            state.ledger.settle(reserved, created);
            if let Some(per_second) = rate_to_give_back {
                state.rate.give_back(per_second);
            }
        }
    }
}

fn quota_exceeded(limit_type: LimitType, reason: String, retry_after_ms: u64) -> ApiError {
    ApiError::QuotaExceeded { limit_type, reason, retry_after_ms: retry_after_ms.max(1) }
}

fn unavailable(reason: String) -> ApiError {
    ApiError::Unavailable { reason, retry_after_ms: minoots_core::engine::RETRY_AFTER_MS, leader: None }
}
