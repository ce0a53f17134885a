//! The circuit breaker, as a pure state machine (time is an input, in
//! monotonic milliseconds; nothing here reads a clock). One implementation
//! for every breaker: the PostgreSQL store's (`minoots-store`) and each
//! webhook destination's (`minoots-actions`).
//!
//! ```text
//!            failure_threshold consecutive failures
//!   Closed ───────────────────────────────────────────▶ Open (recovery_timeout_ms)
//!     ▲                                                   │ the timeout passes
//!     │ half_open_max_calls probes succeed                ▼ (or a call outside the breaker succeeds)
//!     └──────────────────────────────────────────────── HalfOpen ── a probe fails ──▶ Open (timeout doubled,
//!                                                                                     capped at recovery_timeout_max_ms)
//! ```
//!
//! - **Closed**: every call is let through; successes reset the count.
//! - **Open**: calls are refused with the time a probe will be allowed
//!   ([`Refused::retry_at_ms`]).
//! - **HalfOpen**: at most `half_open_max_calls` probe calls at once; once
//!   that many have succeeded the breaker closes (and the timeout returns to
//!   `recovery_timeout_ms`); one failed probe opens it again for twice as
//!   long. Calls beyond the probe slots are refused for `half_open_retry_ms`.
//!
//! Each admitted call gets a [`Permit`] carrying the breaker's *generation*
//! (bumped at every state change); a result reported with a permit of an
//! earlier generation is stale (the call was let through before the state
//! changed, e.g. a slow request that times out after the breaker opened) and
//! is ignored. Results of calls that bypass the breaker (the store's lease
//! heartbeat) are reported without a permit and always count: a success
//! while open moves the breaker to half-open at once.

/// Circuit-breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0: the breaker never opens).
    pub failure_threshold: u32,
    /// How long the breaker stays open before the first probe.
    pub recovery_timeout_ms: u64,
    /// Longest open period: the timeout doubles after each failed probe up to this.
    pub recovery_timeout_max_ms: u64,
    /// Probe calls let through at once while half-open; that many successes close the breaker.
    pub half_open_max_calls: u32,
    /// While half-open with every probe slot taken, how long a refused call waits before asking again.
    pub half_open_retry_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout_ms: 1_000,
            recovery_timeout_max_ms: 30_000,
            half_open_max_calls: 3,
            half_open_retry_ms: 100,
        }
    }
}

impl BreakerConfig {
    /// The first open period, at least 1 ms.
    fn base_timeout_ms(&self) -> u64 {
        self.recovery_timeout_ms.max(1)
    }

    /// The longest open period (never below the first).
    fn max_timeout_ms(&self) -> u64 {
        self.recovery_timeout_max_ms.max(self.base_timeout_ms())
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `failures` consecutive failures so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Calls are refused until `until_ms`.
    Open {
        /// When the first probe may go.
        until_ms: u64,
        /// The length of this open period.
        timeout_ms: u64,
    },
    /// Probing: `in_flight` probes running, `succeeded` probes done.
    HalfOpen {
        /// Probes let through and not answered yet.
        in_flight: u32,
        /// Probes that succeeded.
        succeeded: u32,
        /// The open period that preceded (doubled if a probe fails).
        timeout_ms: u64,
    },
}

/// Leave to make one call; hand it back with the call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    generation: u64,
    probe: bool,
}

impl Permit {
    /// Whether the call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A refused call, with when to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The earliest time (monotonic ms) a call may be let through.
    pub retry_at_ms: u64,
}

/// A state change worth telling an operator about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerChange {
    /// Closed → open after `failure_threshold` consecutive failures.
    Opened {
        /// How long it stays open.
        timeout_ms: u64,
    },
    /// Open → half-open because a call outside the breaker succeeded.
    HalfOpened,
    /// Half-open → closed: the probes succeeded.
    Closed,
    /// Half-open → open again: a probe failed.
    Reopened {
        /// How long it stays open (doubled).
        timeout_ms: u64,
    },
}

/// One circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    generation: u64,
    opens: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, state: BreakerState::Closed { failures: 0 }, generation: 0, opens: 0 }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (an expired open period still reads `Open` until the next [`Breaker::admit`]).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether calls are being refused at `now_ms` because the breaker is open.
    pub fn is_open(&self, now_ms: u64) -> bool {
        matches!(self.state, BreakerState::Open { until_ms, .. } if now_ms < until_ms)
    }

    /// Times the breaker opened (from closed, or again from half-open).
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Closed with no failure counted: nothing worth remembering.
    pub fn is_idle(&self) -> bool {
        self.state == BreakerState::Closed { failures: 0 }
    }

    fn enabled(&self) -> bool {
        self.config.failure_threshold > 0
    }

    fn permit(&self, probe: bool) -> Permit {
        Permit { generation: self.generation, probe }
    }

    fn enter(&mut self, state: BreakerState) {
        self.state = state;
        self.generation += 1;
    }

    fn open(&mut self, now_ms: u64, timeout_ms: u64) {
        self.opens += 1;
        self.enter(BreakerState::Open { until_ms: now_ms.saturating_add(timeout_ms), timeout_ms });
    }

    /// Asks to make a call at `now_ms`.
    pub fn admit(&mut self, now_ms: u64) -> Result<Permit, Refused> {
        if !self.enabled() {
            return Ok(self.permit(false));
        }
        if let BreakerState::Open { until_ms, timeout_ms } = self.state {
            if now_ms < until_ms {
                return Err(Refused { retry_at_ms: until_ms });
            }
            self.enter(BreakerState::HalfOpen { in_flight: 0, succeeded: 0, timeout_ms });
        }
        match &mut self.state {
            BreakerState::Closed { .. } => Ok(Permit { generation: self.generation, probe: false }),
            BreakerState::HalfOpen { in_flight, succeeded, timeout_ms } => {
                if in_flight.saturating_add(*succeeded) < self.config.half_open_max_calls.max(1) {
                    *in_flight += 1;
                    Ok(Permit { generation: self.generation, probe: true })
                } else {
                    let wait_ms = self.config.half_open_retry_ms.clamp(1, *timeout_ms);
                    Err(Refused { retry_at_ms: now_ms.saturating_add(wait_ms) })
                }
            }
            BreakerState::Open { .. } => unreachable!("an open breaker was handled above"),
        }
    }

    /// Reports a call's result at `now_ms`: `permit` from [`Breaker::admit`],
    /// or `None` for a call that bypassed the breaker (it always counts).
    pub fn record(&mut self, now_ms: u64, permit: Option<Permit>, ok: bool) -> Option<BreakerChange> {
        if !self.enabled() || permit.is_some_and(|p| p.generation != self.generation) {
            return None;
        }
        match self.state {
            BreakerState::Closed { failures } => {
                if ok {
                    self.state = BreakerState::Closed { failures: 0 };
                    return None;
                }
                let failures = failures.saturating_add(1);
                if failures < self.config.failure_threshold {
                    self.state = BreakerState::Closed { failures };
                    return None;
                }
                let timeout_ms = self.config.base_timeout_ms();
                self.open(now_ms, timeout_ms);
                Some(BreakerChange::Opened { timeout_ms })
            }
            // Only a call outside the breaker reports here (admitted calls are stale).
            BreakerState::Open { timeout_ms, .. } => {
                if !ok {
                    return None;
                }
                self.enter(BreakerState::HalfOpen { in_flight: 0, succeeded: 0, timeout_ms });
                Some(BreakerChange::HalfOpened)
            }
            BreakerState::HalfOpen { in_flight, succeeded, timeout_ms } => {
                let in_flight =
                    if permit.is_some_and(|p| p.probe) { in_flight.saturating_sub(1) } else { in_flight };
                if !ok {
                    let timeout_ms = timeout_ms.saturating_mul(2).min(self.config.max_timeout_ms());
                    self.open(now_ms, timeout_ms);
                    return Some(BreakerChange::Reopened { timeout_ms });
                }
                let succeeded = succeeded.saturating_add(1);
                if succeeded >= self.config.half_open_max_calls.max(1) {
                    self.enter(BreakerState::Closed { failures: 0 });
                    return Some(BreakerChange::Closed);
                }
                self.state = BreakerState::HalfOpen { in_flight, succeeded, timeout_ms };
                None
            }
        }
    }

    /// Hands back a permit whose call ended without a result (cancelled):
    /// a probe's slot is freed, nothing is counted.
    pub fn cancel(&mut self, permit: Permit) {
        if permit.generation != self.generation || !permit.probe {
            return;
        }
        if let BreakerState::HalfOpen { in_flight, .. } = &mut self.state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            recovery_timeout_ms: 1_000,
            recovery_timeout_max_ms: 3_000,
            half_open_max_calls: 2,
            half_open_retry_ms: 100,
        }
    }

    /// Fails `n` admitted calls at `now`.
    fn fail(breaker: &mut Breaker, now: u64, n: u32) -> Option<BreakerChange> {
        let mut last = None;
        for _ in 0..n {
            let permit = breaker.admit(now).expect("admitted");
            last = breaker.record(now, Some(permit), false);
        }
        last
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures() {
        let mut b = Breaker::new(config());
        assert_eq!(fail(&mut b, 0, 2), None);
        let ok = b.admit(0).expect("closed");
        assert!(!ok.is_probe());
        assert_eq!(b.record(0, Some(ok), true), None, "a success resets the count");
        assert_eq!(fail(&mut b, 10, 2), None);
        assert_eq!(b.state(), BreakerState::Closed { failures: 2 });
        assert_eq!(fail(&mut b, 10, 1), Some(BreakerChange::Opened { timeout_ms: 1_000 }));
        assert_eq!(b.state(), BreakerState::Open { until_ms: 1_010, timeout_ms: 1_000 });
        assert!(b.is_open(500));
        assert_eq!(b.opens(), 1);
    }

    #[test]
    fn refuses_while_open_with_the_probe_time() {
        let mut b = Breaker::new(config());
        fail(&mut b, 0, 3);
        assert_eq!(b.admit(1), Err(Refused { retry_at_ms: 1_000 }));
        assert_eq!(b.admit(999), Err(Refused { retry_at_ms: 1_000 }));
        assert!(b.is_open(999));
        assert!(!b.is_open(1_000), "the open period is over at its end");
    }

    #[test]
    fn half_open_lets_at_most_the_probe_slots_through_then_closes_on_their_success() {
        let mut b = Breaker::new(config());
        fail(&mut b, 0, 3);
        let p1 = b.admit(1_000).expect("first probe");
        let p2 = b.admit(1_001).expect("second probe");
        assert!(p1.is_probe() && p2.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen { in_flight: 2, succeeded: 0, timeout_ms: 1_000 });
        assert_eq!(b.admit(1_002), Err(Refused { retry_at_ms: 1_102 }), "no third probe at once");
        assert_eq!(b.record(1_005, Some(p1), true), None, "one success of two is not enough");
        assert_eq!(b.admit(1_006), Err(Refused { retry_at_ms: 1_106 }), "two slots used up");
        assert_eq!(b.record(1_007, Some(p2), true), Some(BreakerChange::Closed));
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert!(!b.admit(1_008).expect("closed").is_probe());
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_timeout_capped_at_the_maximum() {
        let mut b = Breaker::new(config());
        fail(&mut b, 0, 3);
        let probe = b.admit(1_000).expect("probe");
        assert_eq!(b.record(1_010, Some(probe), false), Some(BreakerChange::Reopened { timeout_ms: 2_000 }));
        assert_eq!(b.admit(3_009), Err(Refused { retry_at_ms: 3_010 }));
        let probe = b.admit(3_010).expect("probe after the doubled timeout");
        assert_eq!(b.record(3_010, Some(probe), false), Some(BreakerChange::Reopened { timeout_ms: 3_000 }));
        let probe = b.admit(6_010).expect("probe");
        assert_eq!(
            b.record(6_010, Some(probe), false),
            Some(BreakerChange::Reopened { timeout_ms: 3_000 }),
            "capped at recovery_timeout_max_ms"
        );
        assert_eq!(b.opens(), 4);
        // Closing resets the timeout to the first one.
        for at in [9_010, 9_011] {
            let probe = b.admit(at).expect("probe");
            b.record(at, Some(probe), true);
        }
        assert_eq!(fail(&mut b, 10_000, 3), Some(BreakerChange::Opened { timeout_ms: 1_000 }));
    }

    #[test]
    fn results_of_calls_admitted_before_a_state_change_are_ignored() {
        let mut b = Breaker::new(config());
        let slow = b.admit(0).expect("closed");
        fail(&mut b, 0, 3);
        assert_eq!(b.record(500, Some(slow), true), None, "a stale success does not half-open it");
        assert!(b.is_open(500));
        let probe = b.admit(1_000).expect("probe");
        let stale_probe = probe;
        b.record(1_001, Some(probe), true);
        let probe = b.admit(1_002).expect("probe");
        b.record(1_003, Some(probe), true);
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
        assert_eq!(b.record(1_004, Some(stale_probe), false), None, "a late probe result is stale");
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn calls_outside_the_breaker_always_count() {
        let mut b = Breaker::new(config());
        for _ in 0..2 {
            b.record(0, None, false);
        }
        assert_eq!(b.record(0, None, false), Some(BreakerChange::Opened { timeout_ms: 1_000 }));
        assert_eq!(b.record(10, None, false), None, "failures while open change nothing");
        assert_eq!(b.record(20, None, true), Some(BreakerChange::HalfOpened), "a heartbeat success");
        let probe = b.admit(21).expect("probing at once, before the timeout");
        assert!(probe.is_probe());
        assert_eq!(b.record(22, None, false), Some(BreakerChange::Reopened { timeout_ms: 2_000 }));
        assert_eq!(b.admit(23), Err(Refused { retry_at_ms: 2_022 }));
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let mut b = Breaker::new(BreakerConfig { half_open_max_calls: 1, ..config() });
        fail(&mut b, 0, 3);
        let probe = b.admit(1_000).expect("probe");
        assert!(b.admit(1_001).is_err(), "the only slot is taken");
        b.cancel(probe);
        let again = b.admit(1_002).expect("the slot is free again");
        assert_eq!(b.record(1_003, Some(again), true), Some(BreakerChange::Closed));
    }

    #[test]
    fn threshold_zero_never_opens() {
        let mut b = Breaker::new(BreakerConfig { failure_threshold: 0, ..config() });
        for at in 0..100 {
            let permit = b.admit(at).expect("always admitted");
            assert_eq!(b.record(at, Some(permit), false), None);
            assert_eq!(b.record(at, None, false), None);
        }
        assert!(b.is_idle());
        assert_eq!(b.opens(), 0);
    }
}
