//! Protection against a failing or overloaded database.
//!
//! - [`Breaker`]: the store's circuit breaker, the state machine of
//!   [`minoots_core::breaker`] (closed → open → half-open probing → closed)
//!   on this process's monotonic clock. After `failure_threshold`
//!   consecutive failed operations it *opens* for `recovery_timeout_ms`:
//!   commits, loads and reads fail at once instead of each waiting for a
//!   connection that will not come (the engine backs off and retries them
//!   anyway). Then up to `half_open_max_calls` operations go through as
//!   probes: that many successes close it, one failure opens it again for
//!   twice as long (up to `recovery_timeout_max_ms`). Lease operations
//!   always run — they are the heartbeat — and their results always count:
//!   a lease success while open starts probing at once.
//! - [`PoolWatch`]: times every connection acquisition and warns (at most
//!   once per interval per pool) when one had to wait at least
//!   `wait_warn_ms` — operations queueing for connections — not merely
//!   because every connection is busy (a 2-connection writer pool is fully
//!   busy at a few hundred commits per second without anyone waiting).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use minoots_core::StoreFailure;
pub use minoots_core::breaker::BreakerConfig;
use minoots_core::breaker::{self, BreakerChange, Permit};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;

/// Milliseconds on a monotonic clock local to this module.
fn mono_ms(origin: &tokio::time::Instant) -> u64 {
    #[allow(clippy::disallowed_methods)] // tokio's Instant: a monotonic reading, no wall time.
    let now = tokio::time::Instant::now();
    now.saturating_duration_since(*origin).as_millis() as u64
}

fn monotonic_origin() -> tokio::time::Instant {
    #[allow(clippy::disallowed_methods)] // tokio's Instant: a monotonic origin.
    tokio::time::Instant::now()
}

/// The circuit breaker shared by every operation of one store.
#[derive(Debug)]
pub(crate) struct Breaker {
    origin: tokio::time::Instant,
    state: Mutex<breaker::Breaker>,
}

/// One operation let through the breaker; report its result with
/// [`BreakerCall::finish`]. Dropped unfinished (the operation's future was
/// cancelled), it frees its probe slot without counting anything.
#[derive(Debug)]
pub(crate) struct BreakerCall<'a> {
    breaker: &'a Breaker,
    permit: Option<Permit>,
    finished: bool,
}

impl BreakerCall<'_> {
    /// Records the operation's outcome.
    pub(crate) fn finish(mut self, ok: bool) {
        self.finished = true;
        self.breaker.record(self.permit, ok);
    }
}

impl Drop for BreakerCall<'_> {
    fn drop(&mut self) {
        if let (false, Some(permit)) = (self.finished, self.permit) {
            self.breaker.lock().cancel(permit);
        }
    }
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self { origin: monotonic_origin(), state: Mutex::new(breaker::Breaker::new(config)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, breaker::Breaker> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether operations are being refused now.
    pub(crate) fn is_open(&self) -> bool {
        self.lock().is_open(mono_ms(&self.origin))
    }

    /// Times the breaker opened.
    pub(crate) fn opens(&self) -> u64 {
        self.lock().opens()
    }

    /// Lets an operation through, or fails at once while the breaker is open.
    /// `bypass`: a lease operation, which always runs (its result still counts).
    pub(crate) fn call(&self, bypass: bool) -> Result<BreakerCall<'_>, StoreFailure> {
        if bypass {
            return Ok(BreakerCall { breaker: self, permit: None, finished: false });
        }
        let now_ms = mono_ms(&self.origin);
        match self.lock().admit(now_ms) {
            Ok(permit) => Ok(BreakerCall { breaker: self, permit: Some(permit), finished: false }),
            Err(refused) => Err(StoreFailure::Unknown(format!(
                "postgres: circuit breaker open after repeated failures; the next probe goes in {} ms",
                refused.retry_at_ms.saturating_sub(now_ms)
            ))),
        }
    }

    fn record(&self, permit: Option<Permit>, ok: bool) {
        let change = self.lock().record(mono_ms(&self.origin), permit, ok);
        match change {
            None => {}
            Some(BreakerChange::Opened { timeout_ms }) => tracing::warn!(
                recovery_timeout_ms = timeout_ms,
                "database failing: circuit breaker open (commits and reads fail fast; leases keep probing)"
            ),
            Some(BreakerChange::Reopened { timeout_ms }) => tracing::warn!(
                recovery_timeout_ms = timeout_ms,
                "database still failing: circuit breaker open again"
            ),
            Some(BreakerChange::HalfOpened) => {
                tracing::info!("database answered a lease operation: circuit breaker probing")
            }
            Some(BreakerChange::Closed) => tracing::info!("database reachable again: circuit breaker closed"),
        }
    }
}

/// Pool-wait warning settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolWatchConfig {
    /// Warn when acquiring a connection waited at least this long (0: never warn).
    pub wait_warn_ms: u64,
    /// Least time between two warnings about the same pool.
    pub warn_interval_ms: u64,
}

impl Default for PoolWatchConfig {
    fn default() -> Self {
        Self { wait_warn_ms: 50, warn_interval_ms: 10_000 }
    }
}

/// Times connection acquisitions and warns when operations wait for connections.
#[derive(Debug)]
pub(crate) struct PoolWatch {
    config: PoolWatchConfig,
    origin: tokio::time::Instant,
    /// When each pool was last warned about (monotonic ms).
    last_warned_ms: Mutex<Vec<(&'static str, u64)>>,
    /// Warnings given (for metrics).
    pub(crate) warnings: AtomicU64,
}

impl PoolWatch {
    pub(crate) fn new(config: PoolWatchConfig) -> Self {
        Self {
            config,
            origin: monotonic_origin(),
            last_warned_ms: Mutex::new(Vec::new()),
            warnings: AtomicU64::new(0),
        }
    }

    /// A connection from `pool` (called `name`), its wait timed.
    pub(crate) async fn acquire(
        &self,
        name: &'static str,
        pool: &PgPool,
    ) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let started_ms = mono_ms(&self.origin);
        let conn = pool.acquire().await;
        let now_ms = mono_ms(&self.origin);
        let waited_ms = now_ms.saturating_sub(started_ms);
        if self.waited(name, waited_ms, now_ms) {
            tracing::warn!(
                pool = name,
                waited_ms,
                connections = pool.size(),
                idle = pool.num_idle(),
                "an operation waited for a PostgreSQL connection: the pool is too small for the load, \
                 or the database is slow to connect"
            );
        }
        conn
    }

    /// Notes that an acquisition from pool `name` waited `waited_ms` (at
    /// monotonic `now_ms`); returns whether to warn (and counts the warning).
    pub(crate) fn waited(&self, name: &'static str, waited_ms: u64, now_ms: u64) -> bool {
        if self.config.wait_warn_ms == 0 || waited_ms < self.config.wait_warn_ms {
            return false;
        }
        let mut last = self.last_warned_ms.lock().unwrap_or_else(|p| p.into_inner());
        let previous = last.iter_mut().find(|(n, _)| *n == name);
        match previous {
            Some((_, at)) if now_ms < at.saturating_add(self.config.warn_interval_ms) => return false,
            Some((_, at)) => *at = now_ms,
            None => last.push((name, now_ms)),
        }
        self.warnings.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_breaker_fails_fast_while_open_and_probes_after_the_recovery_timeout() {
        let config = BreakerConfig {
            failure_threshold: 3,
            recovery_timeout_ms: 50,
            recovery_timeout_max_ms: 400,
            half_open_max_calls: 1,
            half_open_retry_ms: 10,
        };
        let breaker = Breaker::new(config);
        for _ in 0..3 {
            breaker.call(false).expect("closed").finish(false);
        }
        assert!(breaker.is_open());
        assert!(breaker.call(false).is_err(), "commits fail fast while open");
        let lease = breaker.call(true).expect("lease operations always run");
        lease.finish(false);
        assert!(breaker.is_open(), "a failed heartbeat keeps it open");
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let probe = breaker.call(false).expect("a probe after the recovery timeout");
        assert!(breaker.call(false).is_err(), "one probe slot");
        drop(probe); // cancelled: frees the slot
        breaker.call(false).expect("the slot is free again").finish(false);
        assert!(breaker.is_open(), "a failed probe opens it again (for 100 ms now)");
        breaker.call(true).expect("lease").finish(true);
        assert!(!breaker.is_open(), "a lease success starts probing at once");
        breaker.call(false).expect("probe").finish(true);
        breaker.call(false).expect("closed").finish(true);
        assert_eq!(breaker.opens(), 2);
        let disabled = Breaker::new(BreakerConfig { failure_threshold: 0, ..config });
        for _ in 0..10 {
            disabled.call(false).expect("never open").finish(false);
        }
        assert!(!disabled.is_open());
    }

    #[test]
    fn pool_watch_warns_on_waiting_not_on_being_busy_and_rate_limits() {
        let watch = PoolWatch::new(PoolWatchConfig { wait_warn_ms: 50, warn_interval_ms: 1_000 });
        // Busy but never waiting (a fully used 2-connection pool at 400 writes/s).
        for at in 0..400 {
            assert!(!watch.waited("writer", 2, at * 2_500));
        }
        assert!(!watch.waited("writer", 49, 0), "below the threshold");
        assert!(watch.waited("writer", 50, 10), "a real wait warns");
        assert!(!watch.waited("writer", 500, 500), "at most once per interval");
        assert!(watch.waited("readers", 80, 600), "each pool has its own interval");
        assert!(!watch.waited("writer", 500, 1_009));
        assert!(watch.waited("writer", 500, 1_010), "again after the interval");
        assert_eq!(watch.warnings.load(Ordering::Relaxed), 3, "counted for the metric");
        let off = PoolWatch::new(PoolWatchConfig { wait_warn_ms: 0, warn_interval_ms: 0 });
        assert!(!off.waited("writer", 60_000, 0), "0: never warn");
    }

    #[tokio::test]
    async fn pool_watch_times_a_real_acquisition() {
        // A "database" that accepts connections and never answers: the
        // acquisition waits its whole timeout, then fails.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("postgres://nobody@{}/none", silent.local_addr().expect("addr"));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_millis(80))
            .connect_lazy(&url)
            .expect("lazy pool");
        let watch = PoolWatch::new(PoolWatchConfig { wait_warn_ms: 50, warn_interval_ms: 10_000 });
        assert!(watch.acquire("writer", &pool).await.is_err());
        assert_eq!(watch.warnings.load(Ordering::Relaxed), 1, "the 80 ms wait was noticed");
    }
}
