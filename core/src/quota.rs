//! Per-tenant quotas: what each limit counts, how a writer node estimates a
//! tenant's usage between counts read from the store, and the request-rate
//! bucket. Pure: callers pass the time and the counts.
//!
//! | limit | `limitType` | counts |
//! |---|---|---|
//! | `pending_timers` | `burst` | timers in status `scheduled` (MINOOTS's "burst": active timers) |
//! | `daily_creates` | `daily` | timers created since 00:00 UTC |
//! | `requests_per_second` | `rate` | API requests, with one second's worth as the burst |
//!
//! Usage is never charged for a rejected request: creates are *reserved*
//! before the engine sees them and only those the engine actually created
//! (not idempotent replays, not invalid drafts) are *settled* as used.
//! Between counts the estimate only over-counts (fires and cancels are not
//! subtracted until the next count), so a quota is never exceeded on the
//! node that writes; a refusal recounts from the store at most every
//! [`RECOUNT_INTERVAL_MS`].

use serde::{Deserialize, Serialize};

/// Shortest time between two store counts of one tenant's usage.
pub const RECOUNT_INTERVAL_MS: u64 = 1_000;
/// One UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// Which limit refused a request (MINOOTS's `limitType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitType {
    /// Timers created today (UTC).
    Daily,
    /// Timers pending at once.
    Burst,
    /// Requests per second.
    Rate,
}

impl LimitType {
    /// The wire name (`daily`, `burst`, `rate`).
    pub fn as_str(self) -> &'static str {
        match self {
            LimitType::Daily => "daily",
            LimitType::Burst => "burst",
            LimitType::Rate => "rate",
        }
    }
}

/// A tenant's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLimits {
    /// Timers in status `scheduled` at once.
    pub pending_timers: Option<u64>,
    /// Timers created per UTC day.
    pub daily_creates: Option<u64>,
    /// API requests per second.
    pub requests_per_second: Option<u32>,
}

impl QuotaLimits {
    /// These limits where set, `defaults` elsewhere.
    pub fn or(self, defaults: QuotaLimits) -> QuotaLimits {
        QuotaLimits {
            pending_timers: self.pending_timers.or(defaults.pending_timers),
            daily_creates: self.daily_creates.or(defaults.daily_creates),
            requests_per_second: self.requests_per_second.or(defaults.requests_per_second),
        }
    }

    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        *self == QuotaLimits::default()
    }
}

/// The UTC day of `wall_ms` (days since the epoch) and when it began.
pub fn utc_day_start_ms(wall_ms: i64) -> i64 {
    wall_ms.div_euclid(DAY_MS) * DAY_MS
}

/// A tenant's usage as counted in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantUsage {
    /// Timers in status `scheduled`.
    pub pending_timers: u64,
    /// Timers created at or after the day's start.
    pub created_today: u64,
}

/// A refused reservation: which limit, and whether a fresh count might help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// The limit that refused.
    pub limit_type: LimitType,
    /// Its value.
    pub limit: u64,
    /// The estimated usage, reserved creates included.
    pub used: u64,
}

/// Taken before counting: creates settled from here on may or may not be in
/// the count, so they are kept in the estimate (an over-count, never an under-count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountTicket {
    settled_before: u64,
}

/// One tenant's usage as the writer node estimates it.
#[derive(Debug, Clone, Default)]
pub struct UsageLedger {
    counted: Option<Counted>,
    /// Creates settled on this node, ever.
    settled_total: u64,
    /// Creates admitted and not yet settled.
    reserved: u64,
}

#[derive(Debug, Clone, Copy)]
struct Counted {
    usage: TenantUsage,
    day_start_ms: i64,
    epoch: u64,
    at_mono_ms: u64,
    settled_before: u64,
}

impl UsageLedger {
    /// Whether the estimate needs a count first: none yet, a new UTC day, or
    /// a new writer epoch (another node may have written meanwhile).
    pub fn needs_count(&self, wall_ms: i64, epoch: u64) -> bool {
        self.counted.is_none_or(|c| c.day_start_ms != utc_day_start_ms(wall_ms) || c.epoch != epoch)
    }

    /// Whether a refused reservation may count again now.
    pub fn may_recount(&self, mono_ms: u64) -> bool {
        self.counted.is_none_or(|c| mono_ms.saturating_sub(c.at_mono_ms) >= RECOUNT_INTERVAL_MS)
    }

    /// Milliseconds until [`UsageLedger::may_recount`] holds.
    pub fn recount_in_ms(&self, mono_ms: u64) -> u64 {
        self.counted.map_or(0, |c| RECOUNT_INTERVAL_MS.saturating_sub(mono_ms.saturating_sub(c.at_mono_ms)))
    }

    /// Marks the start of a count.
    pub fn begin_count(&self) -> CountTicket {
        CountTicket { settled_before: self.settled_total }
    }

    /// Takes a count started with `ticket` for the day of `wall_ms`.
    pub fn apply_count(
        &mut self,
        ticket: CountTicket,
        usage: TenantUsage,
        wall_ms: i64,
        mono_ms: u64,
        epoch: u64,
    ) {
        self.counted = Some(Counted {
            usage,
            day_start_ms: utc_day_start_ms(wall_ms),
            epoch,
            at_mono_ms: mono_ms,
            settled_before: ticket.settled_before,
        });
    }

    /// Estimated (pending timers, created today), reserved creates included.
    /// Zero before the first count.
    pub fn estimate(&self) -> (u64, u64) {
        let Some(c) = self.counted else { return (0, 0) };
        let since = self.settled_total.saturating_sub(c.settled_before).saturating_add(self.reserved);
        (c.usage.pending_timers.saturating_add(since), c.usage.created_today.saturating_add(since))
    }

    /// Reserves `creates` against `limits`, or says which limit refuses.
    pub fn try_reserve(&mut self, creates: u64, limits: &QuotaLimits) -> Result<(), OverQuota> {
        let (pending, today) = self.estimate();
        let checks = [
            (LimitType::Daily, limits.daily_creates, today),
            (LimitType::Burst, limits.pending_timers, pending),
        ];
        for (limit_type, limit, used) in checks {
            if let Some(limit) = limit
                && used.saturating_add(creates) > limit
            {
                return Err(OverQuota { limit_type, limit, used });
            }
        }
        self.reserved = self.reserved.saturating_add(creates);
        Ok(())
    }

    /// Ends a reservation of `reserved` creates (0 when no limit asked for
    /// one) of which `created` happened: every create counts, reserved or not.
    pub fn settle(&mut self, reserved: u64, created: u64) {
        self.reserved = self.reserved.saturating_sub(reserved);
        self.settled_total = self.settled_total.saturating_add(created);
    }
}

/// A request-rate bucket (GCRA): `per_second` requests a second, up to one
/// second's worth at once. Monotonic time in, no clock read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateBucket {
    /// Theoretical arrival time of the next request, monotonic µs.
    tat_us: u64,
}

impl RateBucket {
    fn interval_us(per_second: u32) -> u64 {
        1_000_000 / u64::from(per_second.max(1))
    }

    /// Takes one request, or says in how many ms one will be allowed.
    pub fn try_take(&mut self, per_second: u32, mono_ms: u64) -> Result<(), u64> {
        let now_us = mono_ms.saturating_mul(1_000);
        let interval_us = Self::interval_us(per_second);
        let burst_us = interval_us.saturating_mul(u64::from(per_second.max(1)));
        let next = self.tat_us.max(now_us).saturating_add(interval_us);
        if next > now_us.saturating_add(burst_us) {
            let wait_us = next - now_us - burst_us;
            return Err(wait_us.div_ceil(1_000).max(1));
        }
        self.tat_us = next;
        Ok(())
    }

    /// Gives back one request taken with [`RateBucket::try_take`] (it was refused later).
    pub fn give_back(&mut self, per_second: u32) {
        self.tat_us = self.tat_us.saturating_sub(Self::interval_us(per_second));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QuotaLimits =
        QuotaLimits { pending_timers: Some(10), daily_creates: Some(15), requests_per_second: None };

    fn counted(pending: u64, today: u64) -> UsageLedger {
        let mut ledger = UsageLedger::default();
        let ticket = ledger.begin_count();
        ledger.apply_count(ticket, TenantUsage { pending_timers: pending, created_today: today }, 5, 0, 1);
        ledger
    }

    #[test]
    fn reservations_count_until_settled_and_only_creates_stay() {
        let mut ledger = counted(7, 7);
        assert_eq!(ledger.try_reserve(3, &LIMITS), Ok(()));
        let refused = ledger.try_reserve(1, &LIMITS).unwrap_err();
        assert_eq!((refused.limit_type, refused.limit, refused.used), (LimitType::Burst, 10, 10));
        // Of the three, one was an idempotent replay and one invalid: one stays.
        ledger.settle(3, 1);
        assert_eq!(ledger.estimate(), (8, 8));
        assert_eq!(ledger.try_reserve(2, &LIMITS), Ok(()));
    }

    #[test]
    fn the_daily_limit_refuses_first_and_a_new_day_or_epoch_needs_a_count() {
        let mut ledger = counted(0, 15);
        let refused = ledger.try_reserve(1, &LIMITS).unwrap_err();
        assert_eq!(refused.limit_type, LimitType::Daily);
        assert!(!ledger.needs_count(DAY_MS - 1, 1));
        assert!(ledger.needs_count(DAY_MS, 1), "a new UTC day");
        assert!(ledger.needs_count(5, 2), "another epoch");
        assert!(UsageLedger::default().needs_count(5, 1));
    }

    #[test]
    fn creates_settled_while_counting_stay_in_the_estimate() {
        let mut ledger = counted(0, 0);
        ledger.try_reserve(2, &LIMITS).unwrap();
        let ticket = ledger.begin_count();
        ledger.settle(2, 2);
        // The count may not have seen them: they are kept (over-count).
        ledger.apply_count(ticket, TenantUsage { pending_timers: 1, created_today: 1 }, 5, 2_000, 1);
        assert_eq!(ledger.estimate(), (3, 3));
        assert!(!ledger.may_recount(2_500));
        assert_eq!(ledger.recount_in_ms(2_500), 500);
        assert!(ledger.may_recount(3_000));
    }

    #[test]
    fn the_rate_bucket_allows_a_seconds_burst_then_the_rate() {
        let mut bucket = RateBucket::default();
        let start = 10_000;
        for i in 0..5 {
            assert_eq!(bucket.try_take(5, start), Ok(()), "request {i} of the burst");
        }
        let wait = bucket.try_take(5, start).unwrap_err();
        assert_eq!(wait, 200);
        assert_eq!(bucket.try_take(5, start + 200), Ok(()));
        // A request taken, then refused by another check, is given back.
        assert!(bucket.try_take(5, start + 200).is_err());
        bucket.give_back(5);
        assert_eq!(bucket.try_take(5, start + 200), Ok(()));
    }

    #[test]
    fn limits_fall_back_to_defaults_field_by_field() {
        let tenant = QuotaLimits { daily_creates: Some(1), ..QuotaLimits::default() };
        let merged = tenant.or(LIMITS);
        assert_eq!(
            merged,
            QuotaLimits { pending_timers: Some(10), daily_creates: Some(1), requests_per_second: None }
        );
        assert!(QuotaLimits::default().is_unlimited());
        assert_eq!(utc_day_start_ms(DAY_MS + 5), DAY_MS);
        assert_eq!(utc_day_start_ms(-1), -DAY_MS);
    }
}
