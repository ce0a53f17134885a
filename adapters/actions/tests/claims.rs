//! Claims belong to runner incarnations, in both action stores (SQLite and
//! a private PostgreSQL server): the same scenario runs against each.
//!
//! - a live incarnation's claims are not taken by anyone else;
//! - a new incarnation of the same runner id releases its predecessor's
//!   claims at registration (the restart path);
//! - another runner takes the claims of an incarnation whose heartbeat
//!   lapsed (the dead-node path), and of one never registered;
//! - a claim's attempt bound still ends it, even for a live runner;
//! - a clean retirement hands the claims over at once;
//! - a deferral puts a delivery back without counting an attempt.

#![allow(clippy::disallowed_methods)] // Real time: the heartbeat lapse is judged by the database clock.

mod support;

use std::time::Duration;

use minoots_actions::ActionStore;
use minoots_actions::claims::ClaimTerms;
use minoots_actions::store::{NewDelivery, NextStep};
use support::{claim_at, delivery, keys, now_ms, postgres_store, sqlite_store, succeeded_attempt};

/// The heartbeat lapse used by the scenario.
const LAPSE_MS: i64 = 400;

async fn claim(store: &ActionStore, incarnation: &str) -> Vec<String> {
    claim_at(store, incarnation, now_ms(), 60_000, LAPSE_MS).await
}

async fn scenario(store: &ActionStore) {
    store.enqueue(&[delivery(1), delivery(2), delivery(3)], now_ms()).await.expect("enqueue");

    // A live incarnation keeps its claims.
    assert_eq!(store.register_incarnation("node-a", "node-a/1").await.expect("register"), 0);
    store.register_incarnation("node-b", "node-b/1").await.expect("register");
    assert_eq!(claim(store, "node-a/1").await, keys([1, 2, 3]));
    assert_eq!(claim(store, "node-b/1").await, Vec::<String>::new(), "node-a/1 is alive");

    // node-a restarts: its new incarnation releases the old one's claims at once.
    assert_eq!(store.register_incarnation("node-a", "node-a/2").await.expect("register"), 3);
    assert_eq!(claim(store, "node-a/2").await, keys([1, 2, 3]));

    // node-a dies for good: once its heartbeat lapses, node-b takes over.
    store.heartbeat("node-b", "node-b/1").await.expect("heartbeat");
    assert_eq!(claim(store, "node-b/1").await, Vec::<String>::new(), "not before the lapse");
    tokio::time::sleep(Duration::from_millis(LAPSE_MS as u64 + 200)).await;
    store.heartbeat("node-b", "node-b/1").await.expect("heartbeat");
    assert_eq!(claim(store, "node-b/1").await, keys([1, 2, 3]), "taken over after the lapse");
    // ... and while node-b beats, nobody takes them from it.
    store.register_incarnation("node-c", "node-c/1").await.expect("register");
    assert_eq!(claim(store, "node-c/1").await, Vec::<String>::new());

    // The attempt bound still ends a live runner's claim.
    store.heartbeat("node-b", "node-b/1").await.expect("heartbeat");
    assert_eq!(
        claim_at(store, "node-c/1", now_ms() + 120_000, 60_000, LAPSE_MS).await,
        keys([1, 2, 3]),
        "past node-b's claim bound"
    );

    // A clean retirement hands the claims over at once.
    store.heartbeat("node-c", "node-c/1").await.expect("heartbeat");
    assert_eq!(store.retire_incarnation("node-c/1").await.expect("retire"), 3);
    assert_eq!(claim(store, "node-b/1").await, keys([1, 2, 3]));

    // A claim by an incarnation never registered is void.
    store.retire_incarnation("node-b/1").await.expect("retire");
    assert_eq!(claim(store, "ghost/1").await, keys([1, 2, 3]));
    store.heartbeat("node-b", "node-b/2").await.expect("heartbeat");
    assert_eq!(claim(store, "node-b/2").await, keys([1, 2, 3]));

    // A deferral is not an attempt; it runs again at the deferred time.
    let later = now_ms() + 5_000;
    assert!(store.defer(&delivery(1), "node-b/2", later, "circuit open", now_ms()).await.expect("defer"));
    assert!(
        !store.defer(&delivery(2), "node-a/2", later, "circuit open", now_ms()).await.expect("defer"),
        "only the holder may defer"
    );
    let record = succeeded_attempt(2, "node-b");
    store.record_attempt(&delivery(2), &record, NextStep::Delivered, now_ms()).await.expect("record");
    store.retire_incarnation("node-b/2").await.expect("retire");
    store.register_incarnation("node-d", "node-d/1").await.expect("register");
    assert_eq!(claim(store, "node-d/1").await, keys([3]), "1 is deferred, 2 delivered");
    let deferred = claim_at(store, "node-d/1", later, 60_000, LAPSE_MS).await;
    assert_eq!(deferred, keys([1]), "due at the deferred time");
    let attempts = store.attempts_of_timer("tenant", "timer-1").await.expect("history");
    assert!(attempts.is_empty(), "a deferral is not recorded as an attempt: {attempts:?}");

    // Forgetting lapsed incarnations keeps live ones.
    // (Margins wide enough for a loaded machine: node-d/1 beats just before the
    // forgetting, every other incarnation at least 400 ms earlier.)
    tokio::time::sleep(Duration::from_millis(400)).await;
    store.heartbeat("node-d", "node-d/1").await.expect("heartbeat");
    let forgotten = store.forget_lapsed_incarnations(200).await.expect("forget");
    assert!(forgotten >= 1, "node-a/2 and others lapsed long ago");
    assert_eq!(claim(store, "node-e/1").await, Vec::<String>::new(), "node-d/1 still holds 1 and 3");

    // A claim may skip tenants (those already holding their share of a runner's slots).
    let other =
        NewDelivery { idempotency_key: "other-1:1:hook".into(), tenant_id: "other".into(), ..delivery(50) };
    store.enqueue(&[delivery(51), other], now_ms()).await.expect("enqueue");
    store.register_incarnation("node-e", "node-e/1").await.expect("register");
    let now = now_ms();
    let skip = ["tenant".to_owned()];
    let terms = ClaimTerms {
        incarnation: "node-e/1",
        now_ms: now,
        claim_until_ms: now + 60_000,
        limit: 100,
        skip_tenants: &skip,
    };
    let claimed = store.claim_due(terms).await.expect("claim");
    let claimed: Vec<&str> = claimed.iter().map(|c| c.delivery.idempotency_key.as_str()).collect();
    assert_eq!(claimed, ["other-1:1:hook"], "tenant's deliveries are skipped");
    assert_eq!(claim(store, "node-e/1").await, keys([51]), "and claimed once not skipped");
}

#[tokio::test]
async fn claims_follow_incarnations_in_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    scenario(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn claims_follow_incarnations_in_postgres() {
    let server = support::pg::PgServer::start();
    scenario(&postgres_store(&server, "minoots_claims").await).await;
}

/// Claimers racing on one PostgreSQL database: every delivery is claimed
/// exactly once (a claim locks the rows it picks and skips those another
/// claim holds).
#[tokio::test]
async fn racing_claims_in_postgres_never_take_a_delivery_twice() {
    const DELIVERIES: u32 = 2_000;
    let server = support::pg::PgServer::start();
    let store = postgres_store(&server, "minoots_claim_race").await;
    let all: Vec<NewDelivery> = (0..DELIVERIES).map(delivery).collect();
    store.enqueue(&all, now_ms()).await.expect("enqueue");
    let mut claimers = Vec::new();
    for r in 0..4 {
        let incarnation = format!("node-{r}/1");
        store.register_incarnation(&format!("node-{r}"), &incarnation).await.expect("register");
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let now = now_ms();
                let terms = ClaimTerms {
                    incarnation: &incarnation,
                    now_ms: now,
                    claim_until_ms: now + 60_000,
                    limit: 64,
                    skip_tenants: &[],
                };
                let batch = store.claim_due(terms).await.expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.delivery.idempotency_key));
            }
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.expect("claimer"));
    }
    let distinct: std::collections::BTreeSet<&String> = claimed.iter().collect();
    assert_eq!(distinct.len(), claimed.len(), "a delivery was claimed twice");
    assert_eq!(claimed.len(), DELIVERIES as usize, "every delivery claimed");
}
