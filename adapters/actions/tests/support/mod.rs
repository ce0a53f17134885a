//! What the action-store tests share: a private PostgreSQL server, both
//! stores opened fresh, numbered deliveries, their keys, claims under
//! chosen terms, and a successful attempt. Each test crate uses a part of it.
#![allow(dead_code)]

#[path = "../../../../tests/support/pg.rs"]
pub mod pg;

use minoots_actions::ActionStore;
use minoots_actions::claims::ClaimTerms;
use minoots_actions::store::{AttemptOutcome, AttemptRecord, NewDelivery};

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The wall clock (claims and heartbeats are judged by the database clock).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// A fresh SQLite action store in `dir`.
pub async fn sqlite_store(dir: &tempfile::TempDir) -> ActionStore {
    ActionStore::open_sqlite(&dir.path().join("actions.db")).await.expect("open")
}

/// A fresh PostgreSQL action store: database `name` on `server`, migrated.
pub async fn postgres_store(server: &pg::PgServer, name: &str) -> ActionStore {
    let url = server.create_database(name);
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.expect("connect");
    PG_MIGRATOR.run(&pool).await.expect("migrate");
    pool.close().await;
    ActionStore::connect_postgres(&url, None, 2).await.expect("connect")
}

/// Delivery number `n`: the webhook of `timer-n`'s first occurrence.
pub fn delivery(n: u32) -> NewDelivery {
    NewDelivery {
        idempotency_key: format!("timer-{n}:1:hook"),
        tenant_id: "tenant".into(),
        timer_id: format!("timer-{n}"),
        occurrence: 1,
        action_id: "hook".into(),
        kind: "webhook".into(),
        action: "{}".into(),
        retry_policy: "{}".into(),
        envelope: "{}".into(),
    }
}

/// The deliveries numbered `ns`.
pub fn deliveries(ns: impl IntoIterator<Item = u32>) -> Vec<NewDelivery> {
    ns.into_iter().map(delivery).collect()
}

/// The sorted keys of the deliveries numbered `ns`.
pub fn keys(ns: impl IntoIterator<Item = u32>) -> Vec<String> {
    let mut keys: Vec<String> = ns.into_iter().map(|n| delivery(n).idempotency_key).collect();
    keys.sort();
    keys
}

/// What `incarnation` claims at `now_ms` for `claim_ms` (at most 100),
/// after releasing the claims void then (other incarnations' claims are
/// void after `heartbeat_lapse_ms`); sorted keys.
pub async fn claim_at(
    store: &ActionStore,
    incarnation: &str,
    now_ms: i64,
    claim_ms: i64,
    heartbeat_lapse_ms: i64,
) -> Vec<String> {
    store.release_void_claims(now_ms, heartbeat_lapse_ms).await.expect("release void claims");
    let terms =
        ClaimTerms { incarnation, now_ms, claim_until_ms: now_ms + claim_ms, limit: 100, skip_tenants: &[] };
    let mut keys: Vec<String> = store
        .claim_due(terms)
        .await
        .expect("claim")
        .into_iter()
        .map(|c| c.delivery.idempotency_key)
        .collect();
    keys.sort();
    keys
}

/// A first attempt of delivery `n` that succeeded, made by `runner`.
pub fn succeeded_attempt(n: u32, runner: &str) -> AttemptRecord {
    AttemptRecord {
        idempotency_key: delivery(n).idempotency_key,
        attempt: 1,
        timer_id: format!("timer-{n}"),
        occurrence: 1,
        action_id: "hook".into(),
        kind: "webhook".into(),
        started_at_ms: now_ms(),
        duration_ms: 1,
        outcome: AttemptOutcome::Succeeded,
        status_code: Some(200),
        error: None,
        output: None,
        runner: runner.into(),
    }
}
