//! The outbox relay: committed outbox rows → subscribers → marked published.
//!
//! Every create, cancel and fire writes its event row in the same transaction
//! as the change. The relay first drains rows left unpublished by an earlier
//! run (a crash between commit and relay), then relays what the engine hands
//! it after each commit, in sequence order, and marks them published. A row is
//! delivered to in-process subscribers at least once; sequence numbers let a
//! consumer drop repeats (the relay itself never sends a sequence twice).

use std::sync::Arc;
use std::time::Duration;

use minoots_core::event::OutboxEvent;
use tokio::sync::{broadcast, mpsc};

use crate::store::Store;

/// Rows read per page when draining the backlog.
const BACKLOG_PAGE: u32 = 1_000;
/// Most backlog pages drained at start-up before live events are served.
const BACKLOG_PAGES_MAX: usize = 100_000;
/// Delay before retrying a failed backlog read.
const RETRY_MS: u64 = 200;

/// Runs until `committed` closes.
pub async fn run(
    store: Arc<dyn Store>,
    mut committed: mpsc::UnboundedReceiver<Vec<OutboxEvent>>,
    subscribers: broadcast::Sender<Arc<OutboxEvent>>,
) {
    let mut last_sent = 0u64;
    // Backlog: rows committed by an earlier run but never relayed.
    let mut pages = 0;
    while pages < BACKLOG_PAGES_MAX {
        match store.outbox_unpublished(last_sent, BACKLOG_PAGE).await {
            Ok(rows) if rows.is_empty() => break,
            Ok(rows) => {
                pages += 1;
                last_sent = send(&subscribers, rows, last_sent);
                mark(&*store, last_sent).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox backlog read failed; retrying");
                tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
            }
        }
    }
    while let Some(rows) = committed.recv().await {
        let before = last_sent;
        last_sent = send(&subscribers, rows, last_sent);
        if last_sent > before {
            mark(&*store, last_sent).await;
        }
    }
}

fn send(
    subscribers: &broadcast::Sender<Arc<OutboxEvent>>,
    rows: Vec<OutboxEvent>,
    mut last_sent: u64,
) -> u64 {
    for row in rows {
        if row.seq <= last_sent {
            continue;
        }
        last_sent = row.seq;
        // No subscriber is not an error: the row stays in the outbox history.
        let _ = subscribers.send(Arc::new(row));
    }
    last_sent
}

async fn mark(store: &dyn Store, up_to_seq: u64) {
    if let Err(e) = store.outbox_mark_published(up_to_seq).await {
        // Harmless: the watermark moves on the next success; rows may be re-relayed after a restart.
        tracing::warn!(error = %e, "marking outbox rows published failed");
    }
}
