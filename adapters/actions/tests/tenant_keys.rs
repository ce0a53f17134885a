//! Tenants' signing keys in the action store, on SQLite and PostgreSQL:
//! generated once even when many callers race on the first use, one per
//! tenant, rotated (a next key, kept by a second rotate) and promoted (the
//! next key becomes the only one; promoting again changes nothing).
#![cfg(not(madsim))]

mod support;

use minoots_actions::ActionStore;
use support::{now_ms, postgres_store, sqlite_store};

async fn scenario(store: &ActionStore) {
    let now = now_ms();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.tenant_key_pair("acme", now).await.expect("pair") })
        })
        .collect();
    let mut pairs = Vec::new();
    for racer in racers {
        pairs.push(racer.await.expect("join"));
    }
    assert!(pairs.windows(2).all(|w| w[0] == w[1]), "racing first uses agree on one key");
    let first = pairs[0].clone();
    assert_eq!(first.current.len(), 64);
    assert_eq!(first.next, None);
    let other = store.tenant_key_pair("globex", now).await.expect("pair");
    assert_ne!(other.current, first.current, "each tenant its own key");

    let rotating = store.rotate_tenant_key("acme", now + 1).await.expect("rotate");
    assert_eq!(rotating.current, first.current);
    let next = rotating.next.clone().expect("a next key");
    assert_ne!(next, first.current);
    assert_eq!(store.rotate_tenant_key("acme", now + 2).await.expect("rotate"), rotating, "kept");
    assert_eq!(store.tenant_key_pair("acme", now + 3).await.expect("pair"), rotating);

    let promoted = store.promote_tenant_key("acme", now + 4).await.expect("promote").expect("was rotating");
    assert_eq!((promoted.current.as_str(), promoted.next.as_deref()), (next.as_str(), None));
    assert_eq!(store.promote_tenant_key("acme", now + 5).await.expect("promote"), None, "nothing to promote");
    assert_eq!(store.tenant_key_pair("globex", now + 6).await.expect("pair"), other, "untouched");
}

#[tokio::test]
async fn tenant_keys_in_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    scenario(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn tenant_keys_in_postgres() {
    let server = support::pg::PgServer::start();
    scenario(&postgres_store(&server, "minoots_tenant_keys").await).await;
}
