//! The clock the driver reads: the only place time enters the system. The
//! simulator injects per-node clocks with offset, drift and steps.

use minoots_core::Now;

/// A source of [`Now`].
pub trait Clock: Send + Sync + 'static {
    /// Reads wall and monotonic time.
    fn now(&self) -> Now;
}

/// The process's clocks: `SystemTime` for wall, tokio's `Instant` for monotonic.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    #[allow(clippy::disallowed_methods)] // tokio's Instant: simulated under madsim.
    pub fn new() -> Self {
        Self { origin: tokio::time::Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one sanctioned wall-clock read.
    fn now(&self) -> Now {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mono_ms = self.origin.elapsed().as_millis() as u64;
        Now { wall_ms, mono_ms }
    }
}

/// A clock moved by hand, for tests and conformance suites.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: std::sync::Mutex<Now>,
}

impl ManualClock {
    /// A clock reading `now`.
    pub fn new(now: Now) -> Self {
        Self { now: std::sync::Mutex::new(now) }
    }

    /// Sets the reading (monotonic time must not go backwards; wall time may).
    pub fn set(&self, now: Now) {
        *self.now.lock().expect("clock lock") = now;
    }

    /// Moves both readings forward by `ms`.
    pub fn advance(&self, ms: u64) {
        let mut now = self.now.lock().expect("clock lock");
        now.wall_ms += ms as i64;
        now.mono_ms += ms;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        *self.now.lock().expect("clock lock")
    }
}
