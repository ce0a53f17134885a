//! The outbox relay: committed outbox rows → subscribers (and a durable
//! sink) → marked published.
//!
//! Every create, cancel and fire writes its event row in the same transaction
//! as the change. The relay sends the rows its engine hands it after each
//! commit at once (low latency), and, while its node leads, regularly *scans*
//! the store's unpublished rows: it sends every scanned row it has not sent
//! yet — rows of a leader that crashed before relaying, or of a commit whose
//! reply was lost although it applied — then marks everything up to the last
//! scanned row published. Marking only what a scan has seen keeps the shared
//! watermark from ever skipping a row, whichever node wrote it (stores assign
//! sequence numbers in commit order, see [`crate::Store`]). A scan reads a
//! page's sequence numbers first and the events only from the first row it
//! has not handed over, so rows sent live are not read back to be marked.
//!
//! With an [`EventSink`] (NATS JetStream, or the in-process action intake) a
//! row is marked published only once the sink accepted it and every row
//! before it: a sink outage leaves rows in the outbox, and they drain in
//! `seq` order after recovery. Live rows go to the sink directly only while
//! the sink is caught up (a complete scan since this node began to lead and
//! no failure since), so a timer's events reach the sink in order.
//!
//! Catching up does not wait for the scan tick: a node scans at once when it
//! becomes leader, and when live rows arrive while the sink is not caught up
//! it runs the catch-up scan right away (the rows are committed, so that scan
//! offers them too, in `seq` order behind the backlog). After a restart or a
//! failover the first fires therefore reach the sink as soon as the backlog
//! has, not a tick later. Two states leave catching up to the tick, so a
//! failing sink or store is not retried on every commit: the sink's failure
//! backoff, and a scan that failed on the store.
//!
//! Delivery to subscribers is at least once: a row can be sent again after a
//! crash or a failover; its `seq` lets consumers drop repeats.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use minoots_core::StoreFailure;
use minoots_core::event::OutboxEvent;
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Store;

/// Rows read per scan page.
const SCAN_PAGE: u32 = 1_000;
/// Most pages per scan (the rest waits for the next scan).
const SCAN_PAGES_MAX: usize = 100;
/// While leading, scan this often when rows were sent since the last scan
/// (catching up after a change of leader or a sink failure does not wait for it).
pub const SCAN_EVERY_MS: u64 = 200;
/// While leading, scan at least this often even when idle.
const SCAN_IDLE_EVERY_MS: u64 = 5_000;
/// Most sent-but-unscanned sequence numbers remembered (beyond, rows may be sent twice).
const SENT_MAX: usize = 200_000;
/// Most live commit batches gathered into one sink call.
const LIVE_BATCHES_MAX: usize = 64;
/// First pause before the sink is tried again after a failure; doubles up to the next.
pub const SINK_RETRY_MIN_MS: u64 = 250;
/// Longest pause between sink attempts while it fails.
const SINK_RETRY_MAX_MS: u64 = 5_000;

/// A durable destination for committed events.
pub trait EventSink: std::fmt::Debug + Send + Sync + 'static {
    /// Publishes `rows` (in `seq` order) and returns how many *leading* rows
    /// it durably accepted; fewer than `rows.len()` means it failed on the
    /// next one (and accepted none after it in a way that could reorder one
    /// timer's events). Sinks must tolerate repeats: a row can be offered
    /// again after a crash, a failover or a failed mark.
    fn publish<'a>(&'a self, rows: &'a [OutboxEvent]) -> BoxFuture<'a, usize>;
}

/// What tells the relay to scan.
#[derive(Clone)]
pub struct RelaySignals {
    /// Whether this node leads (only the leader scans and marks).
    pub leader: watch::Receiver<bool>,
    /// Scan soon: a commit failed, so rows may exist that no reply announced.
    pub rescan: Arc<Notify>,
}

/// What the relay sends to and reports with.
pub struct RelayOutputs {
    /// In-process subscribers (SSE, gRPC streams).
    pub subscribers: broadcast::Sender<Arc<OutboxEvent>>,
    /// The durable sink, if any; without one, rows are marked once scanned.
    pub sink: Option<Arc<dyn EventSink>>,
    /// For `minoots_outbox_*`.
    pub metrics: Arc<Metrics>,
    /// For the publish lag.
    pub clock: Arc<dyn Clock>,
}

/// Runs until `committed` closes.
pub async fn run(
    store: Arc<dyn Store>,
    mut committed: mpsc::UnboundedReceiver<Vec<OutboxEvent>>,
    mut signals: RelaySignals,
    outputs: RelayOutputs,
) {
    let mut relay = Relay {
        store,
        outputs,
        sent: BTreeSet::new(),
        sink_accepted: BTreeSet::new(),
        sink_live: false,
        sink_retry_at: None,
        sink_retry_ms: SINK_RETRY_MIN_MS,
        scanned_through: 0,
        highest_seen: 0,
        dirty: true,
        scan_failed: false,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(SCAN_EVERY_MS));
    let mut idle_ticks = 0u64;
    loop {
        tokio::select! {
            biased;
            rows = committed.recv() => {
                let Some(mut rows) = rows else { break };
                for _ in 1..LIVE_BATCHES_MAX {
                    match committed.try_recv() {
                        Ok(more) => rows.extend(more),
                        Err(_) => break,
                    }
                }
                let leader = *signals.leader.borrow();
                relay.send_live(rows, leader).await;
                if leader && relay.wants_catch_up() {
                    // The sink is behind: catch up now rather than at the next tick,
                    // so these rows (and the backlog before them) reach it at once.
                    idle_ticks = 0;
                    relay.scan().await;
                }
            }
            changed = signals.leader.changed() => {
                if changed.is_err() {
                    break;
                }
                relay.dirty = true; // a new tenure: pick up what the last leader left
                relay.sink_live = false; // and reach the sink in order again
                if *signals.leader.borrow_and_update() {
                    // At once: live rows reach the sink only after this scan.
                    idle_ticks = 0;
                    relay.scan().await;
                }
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
    let leader = *signals.leader.borrow();
    while let Ok(rows) = committed.try_recv() {
        relay.send_live(rows, leader).await;
    }
    if leader {
        relay.sink_retry_at = None;
        relay.scan().await;
    }
}

/// What sending one page of a scan came to.
enum SentPage {
    /// No unpublished row after the page's start.
    Empty,
    /// The outputs have every row up to `through`; `last` is the page's
    /// last row; `full` whether the page was.
    Sent { through: u64, last: u64, full: bool },
    /// The store or the sink failed: the scan stops here.
    Stopped,
}

struct Relay {
    store: Arc<dyn Store>,
    outputs: RelayOutputs,
    /// Rows broadcast since they were last covered by a mark.
    sent: BTreeSet<u64>,
    /// Rows the sink accepted since they were last covered by a mark.
    sink_accepted: BTreeSet<u64>,
    /// Live rows may go straight to the sink (caught up, no failure since).
    sink_live: bool,
    /// After a sink failure: do not try it again before this (tokio instant).
    sink_retry_at: Option<tokio::time::Instant>,
    /// The next pause after a sink failure.
    sink_retry_ms: u64,
    /// Every row up to here was sent by a scan or before it: a live copy
    /// arriving later is not sent again.
    scanned_through: u64,
    /// The largest `seq` seen (for the pending gauge).
    highest_seen: u64,
    /// Rows were sent (or may exist) that no scan has covered yet.
    dirty: bool,
    /// The last scan failed on the store (reading or marking): until a scan
    /// gets through, only the tick retries.
    scan_failed: bool,
}

impl Relay {
    async fn send_live(&mut self, rows: Vec<OutboxEvent>, leader: bool) {
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            if row.seq <= self.scanned_through {
                continue; // a scan got there first
            }
            self.highest_seen = self.highest_seen.max(row.seq);
            if self.sent.len() >= SENT_MAX {
                self.sent.pop_first();
            }
            if self.sent.insert(row.seq) {
                self.broadcast(&row);
                fresh.push(row);
            }
        }
        self.dirty = true;
        self.update_pending();
        if leader && self.sink_live && !fresh.is_empty() {
            let accepted = self.offer_to_sink(&fresh).await;
            if accepted < fresh.len() {
                self.sink_live = false; // the scan takes over, in order
            }
        }
    }

    /// Whether live rows should start the catch-up scan now: there is a sink,
    /// it is not caught up, it is not backing off after a failure, and the
    /// last scan did not fail on the store (those wait for the tick).
    fn wants_catch_up(&self) -> bool {
        self.outputs.sink.is_some() && !self.sink_live && !self.sink_backing_off() && !self.scan_failed
    }

    fn sink_backing_off(&self) -> bool {
        self.sink_retry_at.is_some_and(|at| tokio::time::Instant::now() < at)
    }

    fn broadcast(&self, row: &OutboxEvent) {
        // No subscriber is not an error: the row stays in the outbox history.
        let _ = self.outputs.subscribers.send(Arc::new(row.clone()));
    }

    /// Offers rows to the sink; returns how many leading rows it accepted.
    async fn offer_to_sink(&mut self, rows: &[OutboxEvent]) -> usize {
        let Some(sink) = self.outputs.sink.clone() else { return rows.len() };
        if self.sink_backing_off() {
            return 0;
        }
        let accepted = sink.publish(rows).await.min(rows.len());
        let now_ms = self.outputs.clock.now().wall_ms;
        for row in &rows[..accepted] {
            self.sink_accepted.insert(row.seq);
            let lag_ms = now_ms.saturating_sub(row.occurred_at_ms).max(0);
            self.outputs.metrics.outbox_publish_lag.observe(lag_ms as f64 / 1_000.0);
        }
        if self.sink_accepted.len() > SENT_MAX {
            self.sink_accepted.pop_first();
        }
        if accepted < rows.len() {
            self.sink_retry_at =
                Some(tokio::time::Instant::now() + Duration::from_millis(self.sink_retry_ms));
            self.sink_retry_ms = (self.sink_retry_ms * 2).min(SINK_RETRY_MAX_MS);
        } else {
            self.sink_retry_at = None;
            self.sink_retry_ms = SINK_RETRY_MIN_MS;
        }
        accepted
    }

    fn update_pending(&self) {
        let pending = self.highest_seen.saturating_sub(self.scanned_through);
        self.outputs.metrics.outbox_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Sends unpublished rows not sent yet, and marks what it covered published.
    ///
    /// Each page is read as sequence numbers first: a leading run of rows
    /// already handed over (broadcast, and accepted by the sink if there is
    /// one) — what live sending leaves behind — is marked without reading
    /// the rows again; only from the first row not handed over are the
    /// events read and sent.
    async fn scan(&mut self) {
        self.scan_failed = false;
        let mut after = 0u64;
        for _ in 0..SCAN_PAGES_MAX {
            let seqs = match self.store.outbox_unpublished_seqs(after, SCAN_PAGE).await {
                Ok(seqs) => seqs,
                Err(e) => return self.scan_failed_on(&e),
            };
            let Some(&last) = seqs.last() else {
                self.caught_up();
                return;
            };
            self.highest_seen = self.highest_seen.max(last);
            let handed_over = seqs.iter().take_while(|seq| self.handed_over(**seq)).count();
            let (through, last, full) = if handed_over > 0 {
                (seqs[handed_over - 1], last, seqs.len() == SCAN_PAGE as usize)
            } else {
                match self.send_page(after).await {
                    SentPage::Sent { through, last, full } => (through, last, full),
                    SentPage::Empty => {
                        self.caught_up();
                        return;
                    }
                    SentPage::Stopped => return,
                }
            };
            if let Err(e) = self.store.outbox_mark_published(through).await {
                // The rows stay unpublished and are scanned (and offered) again: at least once.
                tracing::warn!(error = %e, "marking outbox rows published failed");
                self.scan_failed = true;
                return;
            }
            self.sent = self.sent.split_off(&(through + 1));
            self.sink_accepted = self.sink_accepted.split_off(&(through + 1));
            self.scanned_through = self.scanned_through.max(through);
            self.update_pending();
            if through < last {
                if handed_over > 0 {
                    after = through; // the rest of the page is read next
                    continue;
                }
                return; // the sink failed part-way: try again at a later tick
            }
            after = last;
            if !full {
                self.caught_up();
                return;
            }
        }
    }

    /// Whether row `seq` has reached every output: broadcast, and accepted
    /// by the sink if there is one.
    fn handed_over(&self, seq: u64) -> bool {
        self.sent.contains(&seq) && (self.outputs.sink.is_none() || self.sink_accepted.contains(&seq))
    }

    /// Reads a page of rows after `after` and sends those not sent yet.
    async fn send_page(&mut self, after: u64) -> SentPage {
        let rows = match self.store.outbox_unpublished(after, SCAN_PAGE).await {
            Ok(rows) => rows,
            Err(e) => {
                self.scan_failed_on(&e);
                return SentPage::Stopped;
            }
        };
        let Some(last) = rows.last().map(|r| r.seq) else { return SentPage::Empty };
        self.highest_seen = self.highest_seen.max(last);
        let full = rows.len() == SCAN_PAGE as usize;
        for row in &rows {
            if !self.sent.contains(&row.seq) {
                if self.sent.len() >= SENT_MAX {
                    self.sent.pop_first();
                }
                self.sent.insert(row.seq);
                self.broadcast(row);
            }
        }
        if self.outputs.sink.is_none() {
            return SentPage::Sent { through: last, last, full };
        }
        // The leading rows the sink already has, then offer the rest.
        let known = rows.iter().take_while(|r| self.sink_accepted.contains(&r.seq)).count();
        let accepted = known + self.offer_to_sink(&rows[known..]).await;
        if accepted == 0 {
            self.update_pending();
            return SentPage::Stopped;
        }
        SentPage::Sent { through: rows[accepted - 1].seq, last, full }
    }

    fn scan_failed_on(&mut self, e: &StoreFailure) {
        tracing::warn!(error = %e, "outbox scan failed; retrying at the next tick");
        self.scan_failed = true;
    }

    fn caught_up(&mut self) {
        self.dirty = false;
        self.sink_live = true;
        self.update_pending();
    }
}
