//! Authentication, roles and tenant isolation over gRPC: no key or a wrong
//! key is UNAUTHENTICATED, a failing key store is UNAVAILABLE, a missing role
//! is PERMISSION_DENIED, naming another tenant is PERMISSION_DENIED, and
//! tenant B can neither see, cancel, list, stream nor read the fires of
//! tenant A's timers (they simply do not exist for it: NOT_FOUND).
//! `__all__` streams every tenant, for the operator role only (never
//! tenant.admin); a revoked key's open stream ends, without what was still queued for it.
#![cfg(not(madsim))]

mod grpc_support;

use std::time::Duration;

use grpc_support::*;
use minoots_node::KeyStore;
use minoots_proto as pb;
use minoots_proto::horology_kernel_client::HorologyKernelClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn schedule(name: &str, tenant: &str) -> pb::TimerScheduleRequest {
    pb::TimerScheduleRequest {
        tenant_id: tenant.into(),
        name: name.into(),
        schedule_time: Some(pb::timer_schedule_request::ScheduleTime::DurationMs(3_600_000)),
        ..Default::default()
    }
}

fn get(timer_id: &str, tenant: &str) -> pb::TimerGetRequest {
    pb::TimerGetRequest { tenant_id: tenant.into(), timer_id: timer_id.into() }
}

fn cancel(timer_id: &str, tenant: &str) -> pb::TimerCancelRequest {
    pb::TimerCancelRequest { tenant_id: tenant.into(), timer_id: timer_id.into(), ..Default::default() }
}

fn list(tenant: &str) -> pb::TimerListRequest {
    pb::TimerListRequest { tenant_id: tenant.into(), ..Default::default() }
}

fn stream(tenant: &str) -> pb::TimerEventStreamRequest {
    pb::TimerEventStreamRequest { tenant_id: tenant.into(), topics: vec![] }
}

fn fires(timer_id: &str, tenant: &str) -> pb::TimerFiresRequest {
    pb::TimerFiresRequest { tenant_id: tenant.into(), timer_id: timer_id.into(), ..Default::default() }
}

/// `message` with the key if there is one, without `x-api-key` otherwise.
fn keyed<T>(key: Option<&str>, message: T) -> Request<T> {
    match key {
        Some(k) => with_key(k, message),
        None => Request::new(message),
    }
}

async fn schedule_ok(client: &mut HorologyKernelClient<Channel>, key: &str, name: &str) -> pb::Timer {
    client
        .schedule_timer(with_key(key, schedule(name, "")))
        .await
        .expect("schedule")
        .into_inner()
        .timer
        .expect("timer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_keys_are_unauthenticated() {
    let node = TestNode::start().await;
    let mut client = node.client().await;
    let a = schedule_ok(&mut client, KEY_A, "a").await;

    for key in [None, Some("wrong-key"), Some("")] {
        expect_code(client.schedule_timer(keyed(key, schedule("x", ""))).await, Code::Unauthenticated);
        expect_code(client.get_timer(keyed(key, get(&a.id, ""))).await, Code::Unauthenticated);
        expect_code(client.cancel_timer(keyed(key, cancel(&a.id, ""))).await, Code::Unauthenticated);
        expect_code(client.list_timers(keyed(key, list(""))).await, Code::Unauthenticated);
        expect_code(client.stream_timer_events(keyed(key, stream(""))).await, Code::Unauthenticated);
        expect_code(client.list_timer_fires(keyed(key, fires(&a.id, ""))).await, Code::Unauthenticated);
        let batch = pb::TimerBatchScheduleRequest { timers: vec![schedule("x", "")] };
        expect_code(client.schedule_timers(keyed(key, batch)).await, Code::Unauthenticated);
    }
    // A key that is not visible ASCII cannot be any issued key.
    let mut odd = Request::new(get(&a.id, ""));
    odd.metadata_mut()
        .insert("x-api-key", tonic::metadata::MetadataValue::try_from(&b"\xffkey"[..]).expect("value"));
    expect_code(client.get_timer(odd).await, Code::Unauthenticated);

    // The timer is untouched.
    let still = client.get_timer(with_key(KEY_A, get(&a.id, ""))).await.expect("get").into_inner();
    assert_eq!(still.status, pb::TimerStatus::Scheduled as i32);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced() {
    let node = TestNode::start().await;
    let mut client = node.client().await;
    let a = schedule_ok(&mut client, KEY_A, "a").await;

    // Read-only: may read, may not write or cancel.
    expect_code(client.schedule_timer(with_key(KEY_A_READ, schedule("x", ""))).await, Code::PermissionDenied);
    let batch = pb::TimerBatchScheduleRequest { timers: vec![schedule("x", "")] };
    expect_code(client.schedule_timers(with_key(KEY_A_READ, batch)).await, Code::PermissionDenied);
    expect_code(client.cancel_timer(with_key(KEY_A_READ, cancel(&a.id, ""))).await, Code::PermissionDenied);
    client.get_timer(with_key(KEY_A_READ, get(&a.id, ""))).await.expect("read key reads");
    client.list_timers(with_key(KEY_A_READ, list(""))).await.expect("read key lists");
    client.list_timer_fires(with_key(KEY_A_READ, fires(&a.id, ""))).await.expect("read key reads fires");
    client.stream_timer_events(with_key(KEY_A_READ, stream(""))).await.expect("read key streams");

    // Write-only: may schedule, nothing else.
    schedule_ok(&mut client, KEY_A_WRITE, "by-writer").await;
    expect_code(client.get_timer(with_key(KEY_A_WRITE, get(&a.id, ""))).await, Code::PermissionDenied);
    expect_code(client.list_timers(with_key(KEY_A_WRITE, list(""))).await, Code::PermissionDenied);
    expect_code(
        client.list_timer_fires(with_key(KEY_A_WRITE, fires(&a.id, ""))).await,
        Code::PermissionDenied,
    );
    expect_code(client.stream_timer_events(with_key(KEY_A_WRITE, stream(""))).await, Code::PermissionDenied);
    expect_code(client.cancel_timer(with_key(KEY_A_WRITE, cancel(&a.id, ""))).await, Code::PermissionDenied);

    // tenant.admin holds every role in its tenant.
    client.get_timer(with_key(KEY_A_ADMIN, get(&a.id, TENANT_A))).await.expect("admin reads");
    let cancelled =
        client.cancel_timer(with_key(KEY_A_ADMIN, cancel(&a.id, ""))).await.expect("admin cancels");
    assert_eq!(cancelled.into_inner().status, pb::TimerStatus::Cancelled as i32);

    // Only the operator streams every tenant: tenant.admin is a tenant's role.
    expect_code(client.stream_timer_events(with_key(KEY_A, stream("__all__"))).await, Code::PermissionDenied);
    expect_code(client.stream_timer_events(with_key(KEY_B, stream("__all__"))).await, Code::PermissionDenied);
    let status = expect_code(
        client.stream_timer_events(with_key(KEY_A_ADMIN, stream("__all__"))).await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("operator"), "{status:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let node = TestNode::start().await;
    let mut client = node.client().await;

    // B's stream is open before A does anything.
    let mut b_events =
        client.stream_timer_events(with_key(KEY_B, stream(""))).await.expect("B stream").into_inner();
    let mut all_events = client
        .stream_timer_events(with_key(KEY_OPERATOR, stream("__all__")))
        .await
        .expect("operator stream")
        .into_inner();

    let a = schedule_ok(&mut client, KEY_A, "secret-of-a").await;
    assert_eq!(a.tenant_id, TENANT_A);

    // B does not see A's timer: NOT_FOUND, as if it did not exist.
    expect_code(client.get_timer(with_key(KEY_B, get(&a.id, ""))).await, Code::NotFound);
    expect_code(client.get_timer(with_key(KEY_B, get(&a.id, TENANT_B))).await, Code::NotFound);
    expect_code(client.cancel_timer(with_key(KEY_B, cancel(&a.id, ""))).await, Code::NotFound);
    expect_code(client.list_timer_fires(with_key(KEY_B, fires(&a.id, ""))).await, Code::NotFound);

    // B naming tenant A is refused outright, whatever the call.
    expect_code(client.get_timer(with_key(KEY_B, get(&a.id, TENANT_A))).await, Code::PermissionDenied);
    expect_code(client.cancel_timer(with_key(KEY_B, cancel(&a.id, TENANT_A))).await, Code::PermissionDenied);
    expect_code(client.list_timers(with_key(KEY_B, list(TENANT_A))).await, Code::PermissionDenied);
    expect_code(client.stream_timer_events(with_key(KEY_B, stream(TENANT_A))).await, Code::PermissionDenied);
    expect_code(
        client.list_timer_fires(with_key(KEY_B, fires(&a.id, TENANT_A))).await,
        Code::PermissionDenied,
    );
    expect_code(
        client.schedule_timer(with_key(KEY_B, schedule("into-a", TENANT_A))).await,
        Code::PermissionDenied,
    );
    let sneaky =
        pb::TimerBatchScheduleRequest { timers: vec![schedule("ok", ""), schedule("into-a", TENANT_A)] };
    expect_code(client.schedule_timers(with_key(KEY_B, sneaky)).await, Code::PermissionDenied);

    // B's own list never shows A's timers.
    let b_own = schedule_ok(&mut client, KEY_B, "b-own").await;
    let b_list = client.list_timers(with_key(KEY_B, list(""))).await.expect("B list").into_inner();
    assert_eq!(b_list.timers.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), vec![b_own.id.as_str()]);
    assert!(b_list.timers.iter().all(|t| t.tenant_id == TENANT_B));
    // Even with A's id as the cursor.
    let cursor = pb::TimerListRequest { page_token: a.id.clone(), ..list("") };
    let after = client.list_timers(with_key(KEY_B, cursor)).await.expect("B list after").into_inner();
    assert!(after.timers.iter().all(|t| t.tenant_id == TENANT_B));

    // A's timer is still scheduled after B's attempts.
    let still = client.get_timer(with_key(KEY_A, get(&a.id, TENANT_A))).await.expect("A get").into_inner();
    assert_eq!(still.status, pb::TimerStatus::Scheduled as i32);

    // B's stream: its own timer is the first (and only) event; A's never appears.
    let first = next_message(&mut b_events).await;
    assert_eq!(first.tenant_id, TENANT_B);
    let Some(pb::timer_event::Event::Scheduled(s)) = first.event else { panic!("{first:?}") };
    assert_eq!(s.timer.expect("timer").id, b_own.id);
    assert!(stays_silent(&mut b_events, Duration::from_millis(300)).await);

    // The operator's __all__ stream sees both tenants, in commit order.
    let one = next_message(&mut all_events).await;
    let two = next_message(&mut all_events).await;
    assert_eq!((one.tenant_id.as_str(), two.tenant_id.as_str()), (TENANT_A, TENANT_B));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_open_stream() {
    let node = TestNode::start().await;
    let mut client = node.client().await;
    let mut doomed =
        client.stream_timer_events(with_key(KEY_A_READ, stream(""))).await.expect("stream").into_inner();
    assert!(node.store.revoke_key(format!("id-{KEY_A_READ}"), 1).await.expect("revoke"));
    let ended =
        tokio::time::timeout(Duration::from_secs(30), doomed.message()).await.expect("the stream ends");
    let status = ended.expect_err("an error status, not an event");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_key_store_is_unavailable() {
    let node = TestNode::start().await;
    let mut client = node.client().await;
    node.store.set_failing(true);
    let status = expect_code(client.list_timers(with_key(KEY_A, list(""))).await, Code::Unavailable);
    assert!(status.metadata().get("retry-after-ms").is_some());
    node.store.set_failing(false);
    client.list_timers(with_key(KEY_A, list(""))).await.expect("list after recovery");
    node.stop().await;
}

/// Accepts one bearer token, for tenant A with `timer.read`.
#[derive(Debug)]
struct OneToken;

impl minoots_node::TokenVerifier for OneToken {
    fn verify(&self, token: &str) -> Result<minoots_core::auth::Principal, String> {
        if token != "good-token" {
            return Err("InvalidSignature".into());
        }
        Ok(minoots_core::auth::Principal {
            tenant_id: minoots_core::TenantId::parse("tenant", TENANT_A).expect("tenant"),
            roles: [minoots_core::auth::Role::TimerRead].into(),
            key_id: "jwt:test".into(),
            expires_at_ms: None,
        })
    }
}

fn with_metadata<T>(pairs: &[(&'static str, &str)], message: T) -> Request<T> {
    let mut request = Request::new(message);
    for (name, value) in pairs {
        request.metadata_mut().insert(*name, value.parse().expect("ascii"));
    }
    request
}

/// `authorization: Bearer …` metadata authenticates through the configured
/// verifier, with the same rules as REST: a refused token, both credentials
/// at once, or a server without a verifier are UNAUTHENTICATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_authenticate_when_a_verifier_is_configured() {
    let mut config = minoots_node::NodeConfig::new("node-1", 42);
    config.token_verifier = Some(std::sync::Arc::new(OneToken));
    let node = TestNode::start_with(config).await;
    let mut client = node.client().await;
    let listed = client.list_timers(with_metadata(&[("authorization", "Bearer good-token")], list(""))).await;
    assert!(listed.is_ok(), "{listed:?}");
    let write = client
        .schedule_timer(with_metadata(&[("authorization", "Bearer good-token")], schedule("t", "")))
        .await;
    expect_code(write, Code::PermissionDenied);
    for pairs in [
        vec![("authorization", "Bearer forged")],
        vec![("authorization", "Basic good-token")],
        vec![("authorization", "Bearer good-token"), ("x-api-key", KEY_A)],
    ] {
        let status =
            expect_code(client.list_timers(with_metadata(&pairs, list(""))).await, Code::Unauthenticated);
        assert!(status.message().contains("bearer token"), "{status:?}");
    }
    node.stop().await;

    let keys_only = TestNode::start().await;
    let mut client = keys_only.client().await;
    let status = expect_code(
        client.list_timers(with_metadata(&[("authorization", "Bearer good-token")], list(""))).await,
        Code::Unauthenticated,
    );
    assert!(status.message().contains("API keys only"), "{status:?}");
    keys_only.stop().await;
}

/// A revoked key's stream ends without delivering what was still queued
/// for it: events committed while the key was valid but not yet read stay
/// unread once it is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_keys_stream_drops_what_was_still_queued() {
    let node = TestNode::start().await;
    let mut client = node.client().await;
    let mut stream = client
        .stream_timer_events(with_key(KEY_A_READ, pb::TimerEventStreamRequest::default()))
        .await
        .expect("stream")
        .into_inner();
    // 1,000 events of ~40 KB: most wait in the subscriber's queue (the client does not read yet).
    let metadata_json = serde_json::json!({"blob": "x".repeat(40_000)}).to_string();
    for round in 0..20 {
        let timers = (0..50)
            .map(|i| pb::TimerScheduleRequest {
                name: format!("queued-{round}-{i}"),
                duration: "1h".into(),
                metadata_json: metadata_json.clone(),
                ..Default::default()
            })
            .collect();
        client
            .schedule_timers(with_key(KEY_A, pb::TimerBatchScheduleRequest { timers }))
            .await
            .expect("batch");
    }
    assert!(node.store.revoke_key(format!("id-{KEY_A_READ}"), 1).await.expect("revoke"));
    // Past the re-check period: the stream has noticed.
    tokio::time::sleep(Duration::from_millis(minoots_node::handle::STREAM_KEY_RECHECK_MS + 1_000)).await;
    let mut delivered = 0;
    let status = loop {
        match tokio::time::timeout(PATIENCE, stream.message()).await.expect("the stream moves") {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("ended without a status after {delivered} events"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(delivered < 1_000, "every queued event was delivered after the revocation");
    node.stop().await;
}
