//! The outbox relay: committed outbox rows → subscribers → marked published.
//!
//! Every create, cancel and fire writes its event row in the same transaction
//! as the change. The relay sends the rows its engine hands it after each
//! commit at once (low latency), and, while its node leads, regularly *scans*
//! the store's unpublished rows: it sends every scanned row it has not sent
//! yet — rows of a leader that crashed before relaying, or of a commit whose
//! reply was lost although it applied — then marks everything up to the last
//! scanned row published. Marking only what a scan has seen keeps the shared
//! watermark from ever skipping a row, whichever node wrote it (stores assign
//! sequence numbers in commit order, see [`crate::Store`]).
//!
//! Delivery to subscribers is at least once: a row can be sent again after a
//! crash or a failover; its `seq` lets consumers drop repeats.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use minoots_core::event::OutboxEvent;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::store::Store;

/// Rows read per scan page.
const SCAN_PAGE: u32 = 1_000;
/// Most pages per scan (the rest waits for the next scan).
const SCAN_PAGES_MAX: usize = 100;
/// While leading, scan this often when rows were sent since the last scan.
const SCAN_EVERY_MS: u64 = 200;
/// While leading, scan at least this often even when idle.
const SCAN_IDLE_EVERY_MS: u64 = 5_000;
/// Most sent-but-unscanned sequence numbers remembered (beyond, rows may be sent twice).
const SENT_MAX: usize = 200_000;

/// What tells the relay to scan.
#[derive(Clone)]
pub struct RelaySignals {
    /// Whether this node leads (only the leader scans and marks).
    pub leader: watch::Receiver<bool>,
    /// Scan soon: a commit failed, so rows may exist that no reply announced.
    pub rescan: Arc<Notify>,
}

/// Runs until `committed` closes.
pub async fn run(
    store: Arc<dyn Store>,
    mut committed: mpsc::UnboundedReceiver<Vec<OutboxEvent>>,
    mut signals: RelaySignals,
    subscribers: broadcast::Sender<Arc<OutboxEvent>>,
) {
    let mut relay = Relay { store, subscribers, sent: BTreeSet::new(), scanned_through: 0, dirty: true };
    let mut tick = tokio::time::interval(Duration::from_millis(SCAN_EVERY_MS));
    let mut idle_ticks = 0u64;
    loop {
        tokio::select! {
            biased;
            rows = committed.recv() => {
                let Some(rows) = rows else { break };
                relay.send_live(rows);
            }
            changed = signals.leader.changed() => {
                if changed.is_err() {
                    break;
                }
                relay.dirty = true; // a new tenure: pick up what the last leader left
            }
            _ = signals.rescan.notified() => relay.dirty = true,
            _ = tick.tick() => {
                idle_ticks += 1;
                let leader = *signals.leader.borrow();
                if leader && (relay.dirty || idle_ticks * SCAN_EVERY_MS >= SCAN_IDLE_EVERY_MS) {
                    idle_ticks = 0;
                    relay.scan().await;
                }
            }
        }
    }
    // Drain what is left, then a last scan so a clean shutdown leaves nothing unmarked.
    while let Ok(rows) = committed.try_recv() {
        relay.send_live(rows);
    }
    if *signals.leader.borrow() {
        relay.scan().await;
    }
}

struct Relay {
    store: Arc<dyn Store>,
    subscribers: broadcast::Sender<Arc<OutboxEvent>>,
    /// Rows sent since they were last covered by a scan.
    sent: BTreeSet<u64>,
    /// Every row up to here was sent by a scan or before it: a live copy
    /// arriving later is not sent again.
    scanned_through: u64,
    /// Rows were sent (or may exist) that no scan has covered yet.
    dirty: bool,
}

impl Relay {
    fn send_live(&mut self, rows: Vec<OutboxEvent>) {
        for row in rows {
            if row.seq <= self.scanned_through {
                continue; // a scan got there first
            }
            if self.sent.len() >= SENT_MAX {
                self.sent.pop_first();
            }
            if self.sent.insert(row.seq) {
                self.send(row);
            }
        }
        self.dirty = true;
    }

    fn send(&self, row: OutboxEvent) {
        // No subscriber is not an error: the row stays in the outbox history.
        let _ = self.subscribers.send(Arc::new(row));
    }

    /// Sends unpublished rows not sent yet, and marks what it covered published.
    async fn scan(&mut self) {
        let mut after = 0u64;
        for _ in 0..SCAN_PAGES_MAX {
            let rows = match self.store.outbox_unpublished(after, SCAN_PAGE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox scan failed; retrying at the next tick");
                    return;
                }
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                self.dirty = false;
                return;
            };
            let full = rows.len() == SCAN_PAGE as usize;
            for row in rows {
                if !self.sent.remove(&row.seq) {
                    self.send(row);
                }
            }
            if let Err(e) = self.store.outbox_mark_published(last).await {
                // The rows stay unpublished and are scanned (and sent) again: at least once.
                tracing::warn!(error = %e, "marking outbox rows published failed");
                return;
            }
            self.sent = self.sent.split_off(&(last + 1));
            self.scanned_through = self.scanned_through.max(last);
            after = last;
            if !full {
                self.dirty = false;
                return;
            }
        }
    }
}
