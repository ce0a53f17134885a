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
//! (the fencing token) at every new tenure. A tenure belongs to one
//! *tenure id* of one node: a process draws a fresh one at every start (its
//! incarnation) and again after any commit whose outcome it cannot know, so a
//! paused older incarnation with the same node id — or a commit of this one
//! still wandering towards the store — is fenced out by the new epoch.
//! Tenure ids increase ([`first_tenure`], then one more per new tenure), so
//! an older tenure can never take the lease back from a newer one. This node cannot read the store's
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
    /// The holder's tenure id (see the module docs); 0 for a standalone `Open`.
    pub tenure: u64,
}

/// Who asks for a lease: `AcquireLease`'s identity fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAsker<'a> {
    /// The node.
    pub node_id: &'a str,
    /// Where clients reach it.
    pub address: &'a str,
    /// Its current tenure id.
    pub tenure: u64,
}

/// A process's first tenure id: its start time (wall clock, ms) in the high
/// bits, 8 bits of its per-incarnation `seed` below (two starts in one
/// millisecond), and 12 low bits of room for the tenures it moves on to
/// (`+ 1` each; beyond 4,096 they carry into the bits above and still
/// increase). A restart whose wall clock stepped back before the previous
/// start gets a smaller id: it then waits for the old lease to expire, like
/// any other node, instead of taking it over at once.
pub fn first_tenure(start_wall_ms: crate::time::WallMs, seed: u64) -> u64 {
    let start = u64::try_from(start_wall_ms).unwrap_or(0) & ((1 << 43) - 1);
    let mixed = crate::ids::mix64(seed.wrapping_add(crate::ids::GOLDEN_GAMMA));
    (start << 20) | ((mixed & 0xff) << 12)
}

/// A store's answer to a lease operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseReply {
    /// The lease is the asker's, at this (new) epoch.
    Granted {
        /// The fencing token for this tenure.
        epoch: u64,
    },
    /// Someone else holds an unexpired lease.
    Held {
        /// The holder.
        holder: LeaseHolder,
    },
    /// The renewal applied.
    Renewed,
    /// The lease is no longer the asker's (expired, or taken over).
    Lost {
        /// The current holder, if any.
        holder: Option<LeaseHolder>,
    },
}

/// Lease grants longer than a day are clamped (a bound on every input).
pub const LEASE_TTL_MAX_MS: u64 = 86_400_000;

/// One lease row, as every store keeps it, and the rules every store applies
/// to it — written once here so the model and the SQL stores cannot drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder, with its epoch.
    pub holder: LeaseHolder,
    /// Expiry, store clock (`WallMs::MAX` for a standalone `Open` lease).
    pub expires_at_ms: crate::time::WallMs,
}

impl Lease {
    /// The fencing rule: a writer `node_id` at `epoch` holds this lease, unexpired at `now`.
    pub fn fences(&self, node_id: &str, epoch: u64, now: crate::time::WallMs) -> bool {
        self.holder.node_id == node_id && self.holder.epoch == epoch && self.expires_at_ms > now
    }

    /// `AcquireLease` at store time `now` against the `current` row: the row
    /// to write (if any) and the reply.
    /// - A free or expired lease is granted at a new epoch.
    /// - The holder asking again *in the same tenure* — a retry, or a request
    ///   it gave up on arriving late — keeps its epoch and is extended (a new
    ///   epoch would silently depose the very tenure that asked).
    /// - The same node in a *newer* tenure (a restarted process, or one that
    ///   lost track of a commit) takes over at once at a new epoch: whatever
    ///   the old tenure still sends is fenced out from this grant on.
    /// - Anyone else gets `Held` — an *older* tenure of the holder too: a
    ///   paused process that wakes up after its successor started never takes
    ///   the lease back from it.
    pub fn acquire(
        current: Option<&Lease>,
        now: crate::time::WallMs,
        asker: &LeaseAsker<'_>,
        ttl_ms: u64,
    ) -> (Option<Lease>, LeaseReply) {
        let until = now.saturating_add(clamp_ttl(ttl_ms));
        match current.filter(|l| l.expires_at_ms > now) {
            Some(l) if l.holder.node_id != asker.node_id || asker.tenure < l.holder.tenure => {
                (None, LeaseReply::Held { holder: l.holder.clone() })
            }
            Some(l) if l.holder.tenure == asker.tenure => {
                let holder = LeaseHolder { address: asker.address.to_owned(), ..l.holder.clone() };
                let epoch = holder.epoch;
                (
                    Some(Lease { holder, expires_at_ms: l.expires_at_ms.max(until) }),
                    LeaseReply::Granted { epoch },
                )
            }
            _ => {
                let epoch = current.map_or(0, |l| l.holder.epoch) + 1;
                let holder = LeaseHolder {
                    node_id: asker.node_id.to_owned(),
                    address: asker.address.to_owned(),
                    epoch,
                    tenure: asker.tenure,
                };
                (Some(Lease { holder, expires_at_ms: until }), LeaseReply::Granted { epoch })
            }
        }
    }

    /// `Open` against the `current` row: the lease forever, at a new epoch,
    /// whoever held it (standalone start-up: every process start is a new
    /// incarnation with its own epoch).
    pub fn open(current: Option<&Lease>, node_id: &str) -> Lease {
        let epoch = current.map_or(0, |l| l.holder.epoch) + 1;
        let holder = LeaseHolder { node_id: node_id.to_owned(), address: String::new(), epoch, tenure: 0 };
        Lease { holder, expires_at_ms: crate::time::WallMs::MAX }
    }

    /// Raft mode: the row a committed `Lead` entry of `term` writes, if any.
    /// The Raft term is the fencing epoch: a leader records its term in the
    /// replicated state before it acts, and every commit stamped with an
    /// older term applies nothing from then on, on every node. The row never
    /// expires by the clock (a Raft leader is deposed by a newer term, not by
    /// time); an entry of a term not newer than the one in force (a replay, or
    /// a deposed leader's late barrier) changes nothing.
    pub fn raft_term(current: Option<&Lease>, node_id: &str, address: &str, term: u64) -> Option<Lease> {
        if current.is_some_and(|l| l.holder.epoch >= term) {
            return None;
        }
        let holder =
            LeaseHolder { node_id: node_id.to_owned(), address: address.to_owned(), epoch: term, tenure: 0 };
        Some(Lease { holder, expires_at_ms: crate::time::WallMs::MAX })
    }

    /// `RenewLease` at store time `now` against the `current` row: the row to
    /// write (only when its expiry moves; a renewal never shortens a lease)
    /// and the reply. Only the holder, at its epoch, before expiry, renews.
    pub fn renew(
        current: Option<&Lease>,
        now: crate::time::WallMs,
        node_id: &str,
        epoch: u64,
        ttl_ms: u64,
    ) -> (Option<Lease>, LeaseReply) {
        match current {
            Some(l) if l.holder.node_id == node_id && l.holder.epoch == epoch && l.expires_at_ms > now => {
                let expires_at_ms = l.expires_at_ms.max(now.saturating_add(clamp_ttl(ttl_ms)));
                let row = (expires_at_ms != l.expires_at_ms).then(|| Lease { expires_at_ms, ..l.clone() });
                (row, LeaseReply::Renewed)
            }
            other => {
                let holder = other.filter(|l| l.expires_at_ms > now).map(|l| l.holder.clone());
                (None, LeaseReply::Lost { holder })
            }
        }
    }
}

fn clamp_ttl(ttl_ms: u64) -> i64 {
    ttl_ms.min(LEASE_TTL_MAX_MS) as i64
}
