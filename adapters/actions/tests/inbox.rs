//! The local runner's inbox and the attempt recorder's group commits, in
//! both action stores (SQLite and a private PostgreSQL server):
//!
//! - before a runner opens the inbox, deliveries are queued unclaimed (any
//!   runner claims them from the store);
//! - once open, fresh deliveries are queued claimed for its incarnation and
//!   handed over in memory; a repeated event hands nothing again;
//! - what does not fit the inbox is queued unclaimed (what fits is handed over);
//! - a handed delivery's claim is an ordinary claim: a restart of the
//!   runner releases it;
//! - attempts recorded in one group each get their own result.

#![allow(clippy::disallowed_methods)] // Real time: claims are judged by the database clock.

mod support;

use minoots_actions::store::{AttemptOutcome, AttemptRecord, AttemptToRecord, NextStep};
use minoots_actions::{ActionStore, Inbox};
use support::{
    claim_at, deliveries, delivery, keys, now_ms, postgres_store, sqlite_store, succeeded_attempt,
};

async fn claim(store: &ActionStore, incarnation: &str) -> Vec<String> {
    claim_at(store, incarnation, now_ms(), 60_000, 60_000).await
}

fn attempt(n: u32) -> AttemptRecord {
    succeeded_attempt(n, "node-a")
}

async fn scenario(store: &ActionStore) {
    // One slot: the inbox holds at most 4 deliveries.
    let inbox = Inbox::new(1);
    assert_eq!(inbox.queue(store, deliveries([1]), now_ms()).await.expect("queue"), 1);

    store.register_incarnation("node-a", "node-a/1").await.expect("register");
    let mut handed = inbox.open("node-a/1", 60_000).expect("the first runner opens the inbox");
    assert!(inbox.open("node-a/1", 60_000).is_none(), "one reader only");
    assert!(handed.try_recv().is_err(), "queued before the runner opened the inbox: not handed over");

    // 1 again (a repeated event) and two fresh ones: only the fresh ones are handed over.
    assert_eq!(inbox.queue(store, deliveries([1, 2, 3]), now_ms()).await.expect("queue"), 2);
    let mut got = Vec::new();
    while let Ok(claimed) = handed.try_recv() {
        assert_eq!((claimed.attempts, claimed.round_attempts), (0, 0));
        got.push(claimed.delivery.idempotency_key);
    }
    got.sort();
    assert_eq!(got, keys([2, 3]));

    // Another runner finds only what was queued unclaimed.
    store.register_incarnation("node-b", "node-b/1").await.expect("register");
    assert_eq!(claim(store, "node-b/1").await, keys([1]), "2 and 3 are node-a/1's");

    // More than the inbox has room for: the first 4 are handed over, the rest wait unclaimed in the store.
    assert_eq!(inbox.queue(store, deliveries(10..15), now_ms()).await.expect("queue"), 5);
    let mut got = Vec::new();
    while let Ok(claimed) = handed.try_recv() {
        got.push(claimed.delivery.idempotency_key);
    }
    got.sort();
    assert_eq!(got, keys(10..14));
    assert_eq!(claim(store, "node-b/1").await, keys([14]));

    // A handed delivery's claim is an ordinary one: node-a's restart releases it.
    assert_eq!(store.register_incarnation("node-a", "node-a/2").await.expect("register"), 6);
    assert_eq!(claim(store, "node-a/2").await, keys([2, 3, 10, 11, 12, 13]));

    // A group of records: each its own result; one no longer pending is not recorded.
    let (two, three) = (delivery(2), delivery(3));
    let (record_two, record_three) = (attempt(2), attempt(3));
    let group = [
        AttemptToRecord { delivery: &two, attempt: &record_two, next: NextStep::Delivered, now_ms: now_ms() },
        AttemptToRecord {
            delivery: &three,
            attempt: &record_three,
            next: NextStep::RetryAt(now_ms()),
            now_ms: now_ms(),
        },
        AttemptToRecord { delivery: &two, attempt: &record_two, next: NextStep::Delivered, now_ms: now_ms() },
    ];
    assert_eq!(store.record_attempts(&group).await.expect("record"), vec![Some(1), Some(1), None]);
    assert_eq!(store.attempts_of_timer("tenant", "timer-2").await.expect("history").len(), 1);
    assert_eq!(store.attempts_of_timer("tenant", "timer-3").await.expect("history").len(), 1);

    // A dead letter in a group is written with its history.
    let (ten, eleven) = (delivery(10), delivery(11));
    let failing =
        AttemptRecord { outcome: AttemptOutcome::Failed, error: Some("HTTP 500".into()), ..attempt(10) };
    let record_eleven = attempt(11);
    let group = [
        AttemptToRecord { delivery: &ten, attempt: &failing, next: NextStep::DeadLetter, now_ms: now_ms() },
        AttemptToRecord {
            delivery: &eleven,
            attempt: &record_eleven,
            next: NextStep::Delivered,
            now_ms: now_ms(),
        },
    ];
    assert_eq!(store.record_attempts(&group).await.expect("record"), vec![Some(1), Some(1)]);
    let dead = store.dead_letters(None, 0, 10, true).await.expect("dead letters");
    assert_eq!(
        dead.iter().map(|d| d.idempotency_key.as_str()).collect::<Vec<_>>(),
        vec![ten.idempotency_key.as_str()]
    );
    assert_eq!((dead[0].attempts, dead[0].last_error.as_deref()), (1, Some("HTTP 500")));
}

#[tokio::test]
async fn the_inbox_hands_over_claimed_deliveries_in_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    scenario(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn the_inbox_hands_over_claimed_deliveries_in_postgres() {
    let server = support::pg::PgServer::start();
    scenario(&postgres_store(&server, "minoots_inbox").await).await;
}
