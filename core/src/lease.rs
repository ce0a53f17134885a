//! The leader lease, judged by the store's clock, as a pure state machine.
//!
//! ```text
//!            Acquire ──Granted(epoch)──▶ Leader{epoch} ──Renew every renew_every_ms──┐
//!  Follower ─┘  ▲  └──Held(holder)──▶ Follower(hint)        │  ▲                      │
//!               │                                          │  └──────Renewed──────────┘
//!               └──── retry after acquire_retry_ms ◀── Lost / expired locally / store unreachable
//! ```
//!
//! The store grants a lease for `ttl_ms` of *its* clock and bumps the epoch
//! (the fencing token) at every grant. This node cannot read the store's
//! clock, so it counts from the moment it *sent* the request on its own
//! monotonic clock and stops acting at
//! `sent_mono + ttl × (1 − drift_bound) − margin`: as long as the two clocks'
//! rates differ by less than `drift_bound`, the lease is still valid in store
//! time whenever this node believes it is. Every fire and cancel is fenced by
//! the store anyway; stepping down early keeps a deposed leader from even
//! trying, and from answering clients as if it could.

use serde::{Deserialize, Serialize};

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// How long the store grants a lease for (store clock).
    pub ttl_ms: u64,
    /// How often the leader renews.
    pub renew_every_ms: u64,
    /// Largest relative clock-rate difference assumed between any node and the store, in parts per million.
    pub drift_bound_ppm: u64,
    /// Extra safety subtracted from the locally computed validity.
    pub margin_ms: u64,
    /// How long a follower waits between acquisition attempts.
    pub acquire_retry_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 2_000,
            renew_every_ms: 500,
            drift_bound_ppm: 50_000,
            margin_ms: 100,
            acquire_retry_ms: 250,
        }
    }
}

impl LeaseConfig {
    /// The local monotonic time until which a lease requested at `sent_mono_ms` may be acted on.
    pub fn valid_until(&self, sent_mono_ms: u64) -> u64 {
        let ttl = self.ttl_ms;
        let drift = ttl.saturating_mul(self.drift_bound_ppm) / 1_000_000;
        sent_mono_ms + ttl.saturating_sub(drift).saturating_sub(self.margin_ms)
    }

    /// Checks the timing makes sense: a renewal must be able to land before validity ends.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.ttl_ms == 0 || self.renew_every_ms == 0 || self.acquire_retry_ms == 0 {
            return Err("lease ttl, renew interval and acquire retry must be positive");
        }
        if self.drift_bound_ppm >= 500_000 {
            return Err("lease drift bound must be below 50%");
        }
        if self.valid_until(0) <= self.renew_every_ms {
            return Err(
                "the lease must stay valid (ttl minus drift and margin) longer than the renew interval",
            );
        }
        Ok(())
    }
}

/// Who holds the lease, as the store reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// The holder's node id.
    pub node_id: String,
    /// Where clients reach it.
    pub address: String,
    /// Its epoch.
    pub epoch: u64,
}
