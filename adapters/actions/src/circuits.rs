//! Per-destination circuit breakers for webhooks: one
//! [`minoots_core::breaker::Breaker`] per tenant and destination
//! (`tenant scheme://host:port`: one tenant's failures never defer another's deliveries),
//! on the runner's monotonic clock. While a destination's breaker is open
//! (or half-open with every probe slot taken) an attempt is not made: it is
//! *deferred* to the time the breaker will let a probe through, and the
//! runner puts the delivery back without counting an attempt.
//!
//! Only destinations with something to remember are kept (a closed breaker
//! with no failure counted is dropped), at most [`DESTINATIONS_MAX`]; when
//! full, a closed one is forgotten first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use minoots_core::breaker::{Breaker, BreakerChange, BreakerConfig, BreakerState, Permit};
use minoots_node::Clock;

/// Most destinations remembered at once.
pub const DESTINATIONS_MAX: usize = 10_000;

/// An attempt not made because its destination's breaker refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    /// When to try again (wall ms since the epoch): when a probe will be allowed.
    pub until_ms: i64,
    /// Why, for the delivery's last error.
    pub reason: String,
}

/// The breakers of every webhook destination.
pub struct Circuits {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    breakers: Mutex<BTreeMap<String, Breaker>>,
}

impl std::fmt::Debug for Circuits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuits").field("config", &self.config).finish_non_exhaustive()
    }
}

/// One attempt let through; report how the destination behaved with
/// [`CircuitCall::finish`]. Dropped unfinished (the attempt was cancelled),
/// it frees its probe slot and counts nothing.
#[derive(Debug)]
pub struct CircuitCall<'a> {
    circuits: &'a Circuits,
    destination: String,
    permit: Permit,
    finished: bool,
}

impl CircuitCall<'_> {
    /// Records whether the destination behaved (`healthy`) on this attempt.
    pub fn finish(mut self, healthy: bool) {
        self.finished = true;
        self.circuits.record(&self.destination, self.permit, healthy);
    }
}

impl Drop for CircuitCall<'_> {
    fn drop(&mut self) {
        if !self.finished
            && let Some(breaker) = self.circuits.lock().get_mut(&self.destination)
        {
            breaker.cancel(self.permit);
        }
    }
}

impl Circuits {
    /// Breakers with `config`, timed by `clock`.
    pub fn new(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self { config, clock, breakers: Mutex::new(BTreeMap::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Breaker>> {
        self.breakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets an attempt to `destination` through, or defers it.
    pub fn admit(&self, destination: &str) -> Result<CircuitCall<'_>, Deferral> {
        let now = self.clock.now();
        let mut breakers = self.lock();
        let admitted = match breakers.get_mut(destination) {
            Some(breaker) => breaker.admit(now.mono_ms),
            // Not remembered: closed, nothing counted.
            None => Breaker::new(self.config).admit(now.mono_ms),
        };
        match admitted {
            Ok(permit) => Ok(CircuitCall {
                circuits: self,
                destination: destination.to_owned(),
                permit,
                finished: false,
            }),
            Err(refused) => {
                let wait_ms = refused.retry_at_ms.saturating_sub(now.mono_ms);
                let probing = matches!(
                    breakers.get(destination).map(Breaker::state),
                    Some(BreakerState::HalfOpen { .. })
                );
                Err(Deferral {
                    until_ms: now.wall_ms.saturating_add(i64::try_from(wait_ms).unwrap_or(i64::MAX)),
                    reason: if probing {
                        format!("circuit half-open for {destination}: waiting for its probes ({wait_ms} ms)")
                    } else {
                        format!(
                            "circuit open for {destination} after repeated failures: next probe in {wait_ms} ms"
                        )
                    },
                })
            }
        }
    }

    fn record(&self, destination: &str, permit: Permit, healthy: bool) {
        let now_ms = self.clock.now().mono_ms;
        let mut breakers = self.lock();
        let change = match breakers.get_mut(destination) {
            Some(breaker) => {
                let change = breaker.record(now_ms, Some(permit), healthy);
                if breaker.is_idle() {
                    breakers.remove(destination);
                }
                change
            }
            None if healthy => None,
            None => {
                // The first failure of a destination not remembered: the
                // permit came from a fresh closed breaker (generation 0).
                if breakers.len() >= DESTINATIONS_MAX {
                    let closed = breakers
                        .iter()
                        .find(|(_, b)| matches!(b.state(), BreakerState::Closed { .. }))
                        .map(|(d, _)| d.clone());
                    match closed {
                        Some(d) => breakers.remove(&d),
                        None => breakers.pop_first().map(|(_, b)| b),
                    };
                }
                let mut breaker = Breaker::new(self.config);
                let change = breaker.record(now_ms, Some(permit), false);
                breakers.insert(destination.to_owned(), breaker);
                change
            }
        };
        drop(breakers);
        match change {
            Some(BreakerChange::Opened { timeout_ms }) => tracing::warn!(
                destination,
                recovery_timeout_ms = timeout_ms,
                "webhook destination keeps failing: circuit open (attempts wait for a probe, uncounted)"
            ),
            Some(BreakerChange::Reopened { timeout_ms }) => tracing::warn!(
                destination,
                recovery_timeout_ms = timeout_ms,
                "webhook destination still failing: circuit open again"
            ),
            Some(BreakerChange::Closed) => {
                tracing::info!(destination, "webhook destination recovered: circuit closed")
            }
            Some(BreakerChange::HalfOpened) | None => {}
        }
    }

    /// Destinations remembered now (for tests and diagnostics).
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use minoots_core::Now;
    use minoots_node::clock::ManualClock;

    use super::*;

    fn circuits(clock: Arc<ManualClock>) -> Circuits {
        let config = BreakerConfig {
            failure_threshold: 2,
            recovery_timeout_ms: 1_000,
            recovery_timeout_max_ms: 4_000,
            half_open_max_calls: 1,
            half_open_retry_ms: 50,
        };
        Circuits::new(config, clock)
    }

    #[test]
    fn a_failing_destination_defers_attempts_until_its_probe_and_others_are_untouched() {
        let clock = Arc::new(ManualClock::new(Now { wall_ms: 1_000_000, mono_ms: 0 }));
        let c = circuits(clock.clone());
        let a = "http://a:80";
        c.admit(a).expect("closed").finish(true);
        assert_eq!(c.remembered(), 0, "a healthy destination is not remembered");
        c.admit(a).expect("closed").finish(false);
        c.admit(a).expect("closed").finish(false);
        let deferral = c.admit(a).expect_err("open");
        assert_eq!(deferral.until_ms, 1_001_000, "deferred to the probe time, in wall ms");
        assert!(deferral.reason.contains("circuit open"), "{}", deferral.reason);
        c.admit("http://b:80").expect("another destination is closed").finish(true);
        clock.advance(1_000);
        let probe = c.admit(a).expect("a probe after the recovery timeout");
        let waiting = c.admit(a).expect_err("one probe at a time");
        assert_eq!(waiting.until_ms, 1_001_050);
        assert!(waiting.reason.contains("half-open"), "{}", waiting.reason);
        probe.finish(false);
        assert_eq!(c.admit(a).expect_err("open again").until_ms, 1_003_000, "for twice as long");
        clock.advance(2_000);
        c.admit(a).expect("probe").finish(true);
        assert_eq!(c.remembered(), 0, "closed again: forgotten");
    }

    #[test]
    fn a_cancelled_probe_does_not_wedge_the_destination() {
        let clock = Arc::new(ManualClock::new(Now { wall_ms: 0, mono_ms: 0 }));
        let c = circuits(clock.clone());
        for _ in 0..2 {
            c.admit("http://a:80").expect("closed").finish(false);
        }
        clock.advance(1_000);
        drop(c.admit("http://a:80").expect("probe"));
        c.admit("http://a:80").expect("the slot was freed").finish(true);
    }

    #[test]
    fn at_most_destinations_max_are_remembered() {
        let clock = Arc::new(ManualClock::new(Now { wall_ms: 0, mono_ms: 0 }));
        let c = circuits(clock);
        for i in 0..DESTINATIONS_MAX + 10 {
            c.admit(&format!("http://h{i}:80")).expect("closed").finish(false);
        }
        assert_eq!(c.remembered(), DESTINATIONS_MAX);
    }
}
