//! Per-tenant quotas over REST: each limit answers 429 `quota_exceeded`
//! with its `limitType` and a `Retry-After`, a refused or invalid request is
//! never charged, an invalid request over quota is told what to fix, and one
//! tenant's quota never touches another's.

use std::sync::Arc;
use std::time::Duration;

use minoots_core::TenantId;
use minoots_core::auth::Role;
use minoots_core::quota::QuotaLimits;
use minoots_http::{HttpConfig, api_router};
use minoots_node::{ApiKeyRecord, KeyStore, NodeConfig, NodeHandle, SystemClock, hash_api_key, start_node};
use minoots_testkit::model_store::ModelStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACME: &str = "acme-secret";
const GLOBEX: &str = "globex-secret";

struct Server {
    base: String,
    client: reqwest::Client,
    handle: NodeHandle,
    keys: Arc<ModelStore>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn start(default_quotas: QuotaLimits) -> Server {
    let clock = Arc::new(SystemClock::new());
    let store = Arc::new(ModelStore::new(clock.clone()));
    let keys = Arc::new(ModelStore::new(clock.clone()));
    for (secret, tenant) in [(ACME, "acme"), (GLOBEX, "globex")] {
        let record = ApiKeyRecord {
            id: format!("key_{tenant}"),
            tenant_id: TenantId::parse("tenantId", tenant).expect("valid tenant"),
            roles: [Role::TenantAdmin].into_iter().collect(),
            label: tenant.into(),
            created_at_ms: 0,
            revoked_at_ms: None,
        };
        keys.insert_key(record, hash_api_key(secret)).await.expect("key stored");
    }
    let node = NodeConfig { default_quotas, ..NodeConfig::new("n1", 7) };
    let (handle, _task) = start_node(node, store, keys.clone(), clock);
    assert!(handle.wait_for_role(minoots_node::NodeRole::Leader).await, "node became leader");
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let base = format!("http://{}", api.local_addr().expect("api addr"));
    let router = api_router(handle.clone(), HttpConfig::default());
    tokio::spawn(async move { axum::serve(api, router).await });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    Server { base, client, handle, keys }
}

/// Status, `Retry-After` (seconds) and body.
type Answer = (StatusCode, Option<u64>, Value);

impl Server {
    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").parse().expect("whole seconds"));
        let body = response.json().await.unwrap_or(Value::Null);
        (status, retry_after, body)
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> Answer {
        self.send(self.client.post(format!("{}{path}", self.base)).header("x-api-key", key).json(&body)).await
    }

    async fn get(&self, path: &str, key: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)).header("x-api-key", key)).await
    }

    async fn create(&self, key: &str, body: Value) -> Answer {
        self.post("/api/timers", key, body).await
    }
}

#[track_caller]
fn assert_refused(answer: &Answer, limit_type: &str) {
    let (status, retry_after, body) = answer;
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(body["error"]["limitType"], limit_type, "{body}");
    let retry_after_ms = body["error"]["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert_eq!(*retry_after, Some(retry_after_ms.div_ceil(1_000)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_limit_counts_only_timers_created_and_refuses_after_validation() {
    let s = start(QuotaLimits { daily_creates: Some(3), ..QuotaLimits::default() }).await;
    let later = json!({"duration": "1h", "idempotencyKey": "order-1"});
    assert_eq!(s.create(ACME, later.clone()).await.0, StatusCode::CREATED);
    // An idempotent replay creates nothing and is not charged.
    assert_eq!(s.create(ACME, later).await.0, StatusCode::OK);
    // An invalid batch is refused whole and charged nothing.
    let batch = json!({"timers": [{"duration": "1h"}, {"duration": "soon"}]});
    assert_eq!(s.post("/api/timers/batch", ACME, batch).await.0, StatusCode::BAD_REQUEST);
    // So two more fit today, but not three.
    let three = json!({"timers": [{"duration": "1h"}, {"duration": "1h"}, {"duration": "1h"}]});
    let refused = s.post("/api/timers/batch", ACME, three).await;
    assert_refused(&refused, "daily");
    let retry_after_ms = refused.2["error"]["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!(retry_after_ms <= 86_400_000, "until the next UTC day at most: {retry_after_ms}");
    let two = json!({"timers": [{"duration": "1h"}, {"duration": "1h"}]});
    assert_eq!(s.post("/api/timers/batch", ACME, two).await.0, StatusCode::CREATED);
    assert_refused(&s.create(ACME, json!({"duration": "1h"})).await, "daily");
    // A request that is invalid as well as over quota is told what to fix.
    let invalid = s.create(ACME, json!({"duration": "soon"})).await;
    assert_eq!(
        (invalid.0, invalid.2["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("duration"))
    );
    // Reads are not creates; the other tenant has its own count.
    assert_eq!(s.get("/api/timers", ACME).await.0, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(s.create(GLOBEX, json!({"duration": "1h"})).await.0, StatusCode::CREATED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_pending_limit_frees_a_place_when_a_timer_is_cancelled() {
    let s = start(QuotaLimits::default()).await;
    let acme = TenantId::parse("tenant", "acme").expect("tenant");
    let own = QuotaLimits { pending_timers: Some(2), ..QuotaLimits::default() };
    s.keys.set_tenant_quota(acme, own, 0).await.expect("quota stored");
    let first = s.create(ACME, json!({"duration": "1h"})).await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(s.create(ACME, json!({"duration": "1h"})).await.0, StatusCode::CREATED);
    let refused = s.create(ACME, json!({"duration": "1h"})).await;
    assert_refused(&refused, "burst");
    assert!(refused.2["error"]["message"].as_str().is_some_and(|m| m.contains("2 pending")), "{}", refused.2);
    // Globex has no limit of its own and no default.
    for _ in 0..5 {
        assert_eq!(s.create(GLOBEX, json!({"duration": "1h"})).await.0, StatusCode::CREATED);
    }
    let id = first.2["id"].as_str().expect("id");
    let cancelled = s.post(&format!("/api/timers/{id}/cancel"), ACME, json!({})).await;
    assert_eq!(cancelled.0, StatusCode::OK, "{}", cancelled.2);
    // The place is free once the tenant is counted again (after the retry hint).
    tokio::time::sleep(Duration::from_millis(refused.2["error"]["retryAfterMs"].as_u64().expect("hint")))
        .await;
    assert_eq!(s.create(ACME, json!({"duration": "1h"})).await.0, StatusCode::CREATED);
    assert_refused(&s.create(ACME, json!({"duration": "1h"})).await, "burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_refuses_past_a_seconds_burst_and_failed_requests_are_free() {
    let s = start(QuotaLimits { requests_per_second: Some(3), ..QuotaLimits::default() }).await;
    // Requests that fail are given back: many 404s in a row, never a 429.
    for _ in 0..10 {
        let answer = s.get("/api/timers/01900000-0000-7000-8000-000000000001", ACME).await;
        assert_eq!(answer.0, StatusCode::NOT_FOUND, "{}", answer.2);
    }
    let mut refused = None;
    for i in 0..10 {
        let answer = s.get("/api/timers", ACME).await;
        if answer.0 != StatusCode::OK {
            refused = Some((i, answer));
            break;
        }
    }
    let (served, answer) = refused.expect("the rate limit refused within 10 requests");
    assert!(served >= 3, "a second's burst (3) is served first, got {served}");
    assert_refused(&answer, "rate");
    // Event streams count as requests too; the other tenant is untouched.
    assert_refused(&s.get("/api/timers/stream", ACME).await, "rate");
    assert_eq!(s.get("/api/timers", GLOBEX).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(answer.2["error"]["retryAfterMs"].as_u64().expect("hint")))
        .await;
    assert_eq!(s.get("/api/timers", ACME).await.0, StatusCode::OK);
}
