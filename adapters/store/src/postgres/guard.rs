//! Protection against a failing or overloaded database.
//!
//! - [`Breaker`]: a circuit breaker. After `failure_threshold` consecutive
//!   failed operations it *opens* for `reset_ms`: commits, loads and reads
//!   fail at once instead of each waiting for a connection that will not
//!   come (the engine backs off and retries them anyway). Lease operations
//!   always run — they are the heartbeat, and their first success closes the
//!   breaker (as does any success once `reset_ms` has passed and traffic is
//!   let through again).
//! - [`PoolWatch`]: warns (at most once per interval per pool) when a pool's
//!   connections in use reach a share of its maximum — the sign that
//!   operations are about to queue for connections.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use minoots_core::StoreFailure;
use sqlx::postgres::PgPool;

/// Milliseconds on a monotonic clock local to this module.
fn mono_ms(origin: &tokio::time::Instant) -> u64 {
    #[allow(clippy::disallowed_methods)] // tokio's Instant: a monotonic reading, no wall time.
    let now = tokio::time::Instant::now();
    now.saturating_duration_since(*origin).as_millis() as u64
}

/// Circuit-breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0: never opens).
    pub failure_threshold: u32,
    /// How long it stays open before operations are let through again.
    pub reset_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, reset_ms: 1_000 }
    }
}

/// A circuit breaker shared by every operation of one store.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    origin: tokio::time::Instant,
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    /// Times it opened (for metrics).
    pub(crate) opens: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        #[allow(clippy::disallowed_methods)] // tokio's Instant: a monotonic origin.
        let origin = tokio::time::Instant::now();
        Self {
            config,
            origin,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            opens: AtomicU64::new(0),
        }
    }

    /// Whether the breaker is open now.
    pub(crate) fn is_open(&self) -> bool {
        self.config.failure_threshold > 0
            && self.failures.load(Ordering::Relaxed) >= self.config.failure_threshold
            && mono_ms(&self.origin) < self.open_until_ms.load(Ordering::Relaxed)
    }

    /// Fails at once while the breaker is open.
    pub(crate) fn check(&self) -> Result<(), StoreFailure> {
        if self.is_open() {
            return Err(StoreFailure(format!(
                "postgres: circuit breaker open after {} consecutive failures; retrying the database in at most {} ms",
                self.failures.load(Ordering::Relaxed),
                self.config.reset_ms
            )));
        }
        Ok(())
    }

    /// Records an operation's outcome.
    pub(crate) fn record(&self, ok: bool) {
        if self.config.failure_threshold == 0 {
            return;
        }
        if ok {
            let before = self.failures.swap(0, Ordering::Relaxed);
            if before >= self.config.failure_threshold {
                tracing::info!(failures = before, "database reachable again: circuit breaker closed");
            }
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.config.failure_threshold {
            let until = mono_ms(&self.origin) + self.config.reset_ms;
            let previous = self.open_until_ms.swap(until, Ordering::Relaxed);
            if failures == self.config.failure_threshold || previous + self.config.reset_ms < until {
                self.opens.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    failures,
                    reset_ms = self.config.reset_ms,
                    "database failing: circuit breaker open (commits and reads fail fast; leases keep probing)"
                );
            }
        }
    }
}

/// Pool-pressure warning settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolWatchConfig {
    /// Share (0–1] of a pool's maximum connections in use that triggers a warning (0: never).
    pub threshold: f64,
    /// Least time between two warnings about the same pool.
    pub warn_interval_ms: u64,
}

impl Default for PoolWatchConfig {
    fn default() -> Self {
        Self { threshold: 0.9, warn_interval_ms: 10_000 }
    }
}

/// Warns when a pool is nearly exhausted.
#[derive(Debug)]
pub(crate) struct PoolWatch {
    config: PoolWatchConfig,
    origin: tokio::time::Instant,
    last_warned_ms: Mutex<Vec<(&'static str, u64)>>,
    /// Warnings given (for metrics).
    pub(crate) warnings: AtomicU64,
}

impl PoolWatch {
    pub(crate) fn new(config: PoolWatchConfig) -> Self {
        #[allow(clippy::disallowed_methods)] // tokio's Instant: a monotonic origin.
        let origin = tokio::time::Instant::now();
        Self { config, origin, last_warned_ms: Mutex::new(Vec::new()), warnings: AtomicU64::new(0) }
    }

    /// Checks `pool` (called `name`, with at most `max` connections) before an operation uses it.
    pub(crate) fn observe(&self, name: &'static str, pool: &PgPool, max: u32) {
        if self.config.threshold <= 0.0 || max == 0 {
            return;
        }
        let in_use = pool.size().saturating_sub(pool.num_idle() as u32);
        if f64::from(in_use) < self.config.threshold * f64::from(max) {
            return;
        }
        let now = mono_ms(&self.origin);
        let Ok(mut last) = self.last_warned_ms.lock() else { return };
        let slot = match last.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot,
            None => {
                last.push((name, 0));
                last.last_mut().expect("just pushed")
            }
        };
        if slot.1 == 0 || now >= slot.1 + self.config.warn_interval_ms {
            slot.1 = now.max(1);
            self.warnings.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                pool = name,
                in_use,
                max,
                threshold = self.config.threshold,
                "PostgreSQL connection pool nearly exhausted: operations may queue for a connection"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_after_the_threshold_and_closes_on_success() {
        let breaker = Breaker::new(BreakerConfig { failure_threshold: 3, reset_ms: 50 });
        for _ in 0..2 {
            breaker.record(false);
        }
        assert!(breaker.check().is_ok(), "still closed below the threshold");
        breaker.record(false);
        assert!(breaker.check().is_err(), "open at the threshold");
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        assert!(breaker.check().is_ok(), "traffic is let through after reset_ms");
        breaker.record(false);
        assert!(breaker.check().is_err(), "a failure while half-open opens it again");
        breaker.record(true);
        assert!(breaker.check().is_ok(), "a success (a lease probe) closes it");
        assert_eq!(breaker.opens.load(Ordering::Relaxed), 2, "opened twice, counted for the metric");
        let disabled = Breaker::new(BreakerConfig { failure_threshold: 0, reset_ms: 1_000 });
        for _ in 0..10 {
            disabled.record(false);
        }
        assert!(disabled.check().is_ok());
    }
}
