//! Each tenant's webhooks are signed with its own key, and the signature
//! covers the tenant and the message as well as the time and the body:
//!
//! - tenant-local and tenant-b send webhooks to one receiver; each delivery
//!   verifies under its own tenant's key (`GET /api/signing-keys`) and not
//!   under the other's, so tenant B cannot make the server sign a body
//!   claiming tenant-local that verifies at tenant-local's receiver (the
//!   audit's forgery);
//! - the keys outlive a restart (kept in the action store);
//! - rotation: after `rotate` requests carry a signature under each key;
//!   after `promote` only the new key verifies;
//! - a key without `tenant.admin` cannot see the keys; keys the operator
//!   configured are never shown and cannot be rotated by a tenant.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Received, Receiver, create_batch, signing_key, signing_keys, start_receiver, verifies};
use crate::support::{DEV_KEY, Server, create_key, data_dir, eventually, http};

/// Schedules one webhook to `url` as `api_key`, due at once; returns the timer id.
async fn one_webhook(server: &Server, api_key: &str, url: &str, body: Option<Value>) -> String {
    let mut parameters = json!({"url": url});
    if let Some(body) = body {
        parameters["body"] = body;
    }
    let response = http()
        .post(format!("{}/api/timers", server.rest))
        .header("x-api-key", api_key)
        .json(&json!({"duration": 50, "actionBundle": {"actions": [{"id": "hook", "kind": "webhook", "parameters": parameters}]}}))
        .send()
        .await
        .expect("create");
    let status = response.status();
    let timer: Value = response.json().await.expect("json");
    assert_eq!(status, 201, "{timer}");
    timer["id"].as_str().expect("id").to_owned()
}

/// Waits for the request carrying timer `id`'s webhook.
async fn arrival(receiver: &std::sync::Arc<Receiver>, id: &str) -> Received {
    let key = format!("{id}:1:hook");
    eventually(Duration::from_secs(20), "the webhook arrived", || {
        let found = receiver.seen.lock().expect("lock").iter().find(|r| r.key == key).cloned();
        async move { found }
    })
    .await
}

async fn post_keys(server: &Server, api_key: &str, action: &str) -> (u16, Value) {
    let response = http()
        .post(format!("{}/api/signing-keys/{action}", server.rest))
        .header("x-api-key", api_key)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_signs_with_its_own_key_which_outlives_restarts_and_rotates() {
    let (receiver, base) = start_receiver().await;
    let dir = data_dir();
    let mut server = Server::start(dir.path());
    let tenant_b = create_key(dir.path(), "tenant-b", "timer.read,timer.write,tenant.admin");
    let reader = create_key(dir.path(), "tenant-local", "timer.read");

    let key_a = signing_key(&server, DEV_KEY).await;
    let key_b = signing_key(&server, &tenant_b).await;
    assert_ne!(key_a, key_b, "tenants do not share a key");
    assert_eq!(signing_key(&server, DEV_KEY).await, key_a, "generated once");

    // Tenant B's body claims to be tenant-local's.
    let forged = json!({"tenantId": "tenant-local", "event": {"type": "timer.fired"}});
    let b_id = one_webhook(&server, &tenant_b, &format!("{base}/b"), Some(forged)).await;
    let a_id = one_webhook(&server, DEV_KEY, &format!("{base}/a"), None).await;
    let from_b = arrival(&receiver, &b_id).await;
    let from_a = arrival(&receiver, &a_id).await;
    assert_eq!((from_a.tenant.as_str(), from_b.tenant.as_str()), ("tenant-local", "tenant-b"));
    assert!(verifies(&from_a, &key_a) && verifies(&from_b, &key_b), "each verifies under its tenant's key");
    assert!(!verifies(&from_b, &key_a), "tenant B's request does not verify under tenant-local's key");
    let as_if_a = minoots_actions::signing::verify(
        &from_b.signature,
        &key_a,
        "tenant-local",
        &from_b.key,
        &from_b.body,
    );
    assert_eq!(as_if_a, None, "nor when the receiver takes the body's word for the tenant");
    let with_b_key_as_a = minoots_actions::signing::verify(
        &from_b.signature,
        &key_b,
        "tenant-local",
        &from_b.key,
        &from_b.body,
    );
    assert_eq!(with_b_key_as_a, None, "the signed tenant is tenant-b, whatever the body says");

    // Only tenant.admin sees keys.
    let denied = http()
        .get(format!("{}/api/signing-keys", server.rest))
        .header("x-api-key", &reader)
        .send()
        .await
        .expect("request");
    assert_eq!(denied.status(), 403);

    // The keys outlive a restart.
    drop(server);
    server = Server::start(dir.path());
    assert_eq!(signing_key(&server, DEV_KEY).await, key_a, "kept across a restart");

    // Rotation: both keys sign until the promotion, then only the new one.
    let (status, rotated) = post_keys(&server, DEV_KEY, "rotate").await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["current"], key_a.as_str());
    let next = rotated["next"].as_str().expect("a next key").to_owned();
    assert_eq!(signing_keys(&server, DEV_KEY).await["next"], next.as_str());
    let during =
        arrival(&receiver, &one_webhook(&server, DEV_KEY, &format!("{base}/during"), None).await).await;
    assert_eq!(during.signature.matches("v2=").count(), 2, "{}", during.signature);
    assert!(verifies(&during, &key_a) && verifies(&during, &next), "both keys verify during a rotation");
    let (status, promoted) = post_keys(&server, DEV_KEY, "promote").await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["current"], next.as_str());
    assert!(promoted.get("next").is_none(), "{promoted}");
    let after =
        arrival(&receiver, &one_webhook(&server, DEV_KEY, &format!("{base}/after"), None).await).await;
    assert!(verifies(&after, &next) && !verifies(&after, &key_a), "only the promoted key verifies");
    let (status, body) = post_keys(&server, DEV_KEY, "promote").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("no_rotation")), "{body}");
    assert_eq!(signing_key(&server, &tenant_b).await, key_b, "tenant B's key did not move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_operator_configured_are_neither_shown_nor_rotated_by_tenants() {
    let dir = data_dir();
    let server = Server::start_with(
        &["--data-dir", &dir.path().to_string_lossy()],
        &[("MINOOTS_SIGNING_KEY", "operator-signing-key-0123456789")],
    );
    let keys = signing_keys(&server, DEV_KEY).await;
    assert_eq!(keys, json!({"tenantId": "tenant-local", "source": "operator"}));
    let (status, body) = post_keys(&server, DEV_KEY, "rotate").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("operator_managed")), "{body}");
    // The webhooks themselves still carry the operator's key.
    let (receiver, base) = start_receiver().await;
    let created = create_batch(
        &server,
        vec![json!({"duration": 50, "actionBundle": super::webhook_bundle(&format!("{base}/op"), Value::Null)})],
    )
    .await;
    let id = created[0]["id"].as_str().expect("id");
    let got = arrival(&receiver, id).await;
    assert!(verifies(&got, "operator-signing-key-0123456789"));
}
