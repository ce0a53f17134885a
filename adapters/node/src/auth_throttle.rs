//! Wrong API keys, throttled per source address: after [`FAILURES_MAX`]
//! unknown or revoked keys from one address within [`WINDOW_MS`], that
//! address is refused — REST 429, gRPC RESOURCE_EXHAUSTED, with a retry
//! hint — without its key being looked up, until the window ends. Guessing
//! keys then costs minutes per handful, not microseconds. A source's window
//! starts at its first failure; at most [`SOURCES_MAX`] sources are
//! remembered (expired windows are forgotten first, then the oldest).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// Failures one source may have within a window.
pub const FAILURES_MAX: u32 = 20;
/// The window's length.
pub const WINDOW_MS: u64 = 60_000;
/// Most sources remembered at once.
pub const SOURCES_MAX: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failure counts per source address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    sources: Mutex<BTreeMap<IpAddr, Window>>,
}

impl AuthThrottle {
    /// `Err(retry_after_ms)` while `source` is throttled.
    pub fn check(&self, source: IpAddr) -> Result<(), u64> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get(&source) {
            Some(w) if w.failures >= FAILURES_MAX => {
                let ends = w.started + Duration::from_millis(WINDOW_MS);
                let left = ends.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1))
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure from `source`.
    pub fn failed(&self, source: IpAddr) {
        let now = Instant::now();
        let window = Duration::from_millis(WINDOW_MS);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !sources.contains_key(&source) && sources.len() >= SOURCES_MAX {
            sources.retain(|_, w| now.saturating_duration_since(w.started) < window);
            if sources.len() >= SOURCES_MAX {
                let oldest = sources.iter().min_by_key(|(_, w)| w.started).map(|(ip, _)| *ip);
                if let Some(ip) = oldest {
                    sources.remove(&ip);
                }
            }
        }
        let entry = sources.entry(source).or_insert(Window { started: now, failures: 0 });
        if now.saturating_duration_since(entry.started) >= window {
            *entry = Window { started: now, failures: 0 };
        }
        entry.failures = entry.failures.saturating_add(1);
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_source_is_refused_after_its_failures_until_the_window_ends() {
        let throttle = AuthThrottle::default();
        let (guesser, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FAILURES_MAX {
            assert_eq!(throttle.check(guesser), Ok(()));
            throttle.failed(guesser);
        }
        let retry = throttle.check(guesser).expect_err("throttled");
        assert!(retry > 0 && retry <= WINDOW_MS, "{retry}");
        assert_eq!(throttle.check(other), Ok(()), "other sources are not affected");
        tokio::time::advance(Duration::from_millis(WINDOW_MS)).await;
        assert_eq!(throttle.check(guesser), Ok(()), "the window ended");
        throttle.failed(guesser);
        assert_eq!(throttle.check(guesser), Ok(()), "a new window counts afresh");
    }
}
