//! The local runner's inbox: how an intake (the outbox relay's sink, or the
//! JetStream consumer) queues deliveries and hands them to the runner of
//! its own process.
//!
//! A delivery queued here is inserted *already claimed* for the local
//! runner's incarnation and passed to it in memory, so it starts as soon as
//! its queueing commits: no claim transaction and no wait for the runner's
//! next look at the store on the path from a fire to its webhook. The claim
//! is an ordinary one (see [`crate::claims`]): if this process dies before
//! running it, the next incarnation (or another runner, once the heartbeat
//! lapses) takes it over, with the same idempotency key.
//!
//! Deliveries the inbox cannot take — the runner has not registered yet, or
//! it is [`INBOX_CAPACITY_PER_SLOT`] × its concurrency behind — are queued
//! unclaimed (in the same transaction) and the runner is woken to claim them
//! from the store.

use std::sync::{Mutex, OnceLock};

use tokio::sync::{Notify, mpsc};

use crate::store::{ActionStore, ClaimAtQueueing, ClaimedDelivery, NewDelivery, StoreError};

/// The inbox holds at most this many deliveries per runner slot (beyond,
/// new deliveries wait in the store for a claim).
pub const INBOX_CAPACITY_PER_SLOT: usize = 4;

/// The claim terms of the runner reading the inbox, once it has registered.
#[derive(Debug)]
struct Reader {
    incarnation: String,
    claim_ms: i64,
}

/// Deliveries on their way to the local runner (shared by its intakes and the runner).
#[derive(Debug)]
pub struct Inbox {
    /// Cuts the runner's sleep short: deliveries wait in the store.
    pub(crate) wake: Notify,
    reader: OnceLock<Reader>,
    sender: mpsc::Sender<ClaimedDelivery>,
    receiver: Mutex<Option<mpsc::Receiver<ClaimedDelivery>>>,
}

impl Inbox {
    /// An inbox for a runner running `concurrency` deliveries at once.
    pub fn new(concurrency: usize) -> Self {
        let (sender, receiver) = mpsc::channel(concurrency.max(1).saturating_mul(INBOX_CAPACITY_PER_SLOT));
        Self { wake: Notify::new(), reader: OnceLock::new(), sender, receiver: Mutex::new(Some(receiver)) }
    }

    /// Queues `deliveries` in `store` (idempotently: those already queued
    /// are left alone) and hands the new ones the inbox has room for to the
    /// local runner; returns how many were new. Nothing is handed over
    /// unless the store committed.
    pub async fn queue(
        &self,
        store: &ActionStore,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        // As many as the inbox has room for go to the runner; the rest wait in the store.
        let handoff = self.reader.get().and_then(|reader| {
            let room = deliveries.len().min(self.sender.capacity());
            self.sender.try_reserve_many(room).ok().map(|slots| (reader, room, slots))
        });
        let Some((reader, room, slots)) = handoff.filter(|(_, room, _)| *room > 0) else {
            let fresh = store.enqueue(&deliveries, now_ms).await?;
            self.wake.notify_one();
            return Ok(fresh);
        };
        let claim = ClaimAtQueueing {
            incarnation: &reader.incarnation,
            claimed_until_ms: now_ms.saturating_add(reader.claim_ms),
            first: room,
        };
        let fresh = store.enqueue_claimed(&deliveries, now_ms, Some(claim)).await?;
        let new = fresh.iter().filter(|new| **new).count() as u64;
        if room < deliveries.len() {
            self.wake.notify_one();
        }
        for ((delivery, new), slot) in deliveries.into_iter().zip(fresh).zip(slots) {
            // One already queued (a repeated event) belongs to whoever holds it.
            if new {
                slot.send(ClaimedDelivery { delivery, attempts: 0, round_attempts: 0 });
            }
        }
        Ok(new)
    }

    /// Opens the inbox to the runner incarnation `incarnation` (registered:
    /// its claims are valid), whose claims last `claim_ms`; returns its
    /// receiving end, or `None` if a runner already reads this inbox.
    pub fn open(&self, incarnation: &str, claim_ms: i64) -> Option<mpsc::Receiver<ClaimedDelivery>> {
        let receiver = self.receiver.lock().ok()?.take()?;
        let _ = self.reader.set(Reader { incarnation: incarnation.to_owned(), claim_ms });
        Some(receiver)
    }
}
