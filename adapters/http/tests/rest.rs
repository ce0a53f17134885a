//! The REST API end to end: a real node (in-memory reference store, system
//! clock) behind the real router on a loopback port, driven over HTTP with
//! reqwest. One test per invalid-input case (status and `error.field`),
//! tenant isolation on every route, and the happy paths: a timer created with
//! `"2s"` fires, shows in `/fires`, on the SSE stream and in `/metrics`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use minoots_core::TenantId;
use minoots_core::auth::Role;
use minoots_http::{HttpConfig, api_router, metrics_router, route_table};
use minoots_node::{
    ApiKeyRecord, Clock, KeyStore, NodeConfig, NodeHandle, SystemClock, hash_api_key, start_node,
};
use minoots_testkit::model_store::ModelStore;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Reads, writes and cancels in tenant `acme`.
const ACME: &str = "acme-all-secret";
/// Only reads in `acme`.
const ACME_READ: &str = "acme-read-secret";
/// tenant.admin in `acme`.
const ACME_ADMIN: &str = "acme-admin-secret";
/// Reads, writes and cancels in tenant `globex`.
const GLOBEX: &str = "globex-all-secret";
/// The operator's key: streams every tenant.
const OPERATOR: &str = "operator-secret";

/// An id no timer has.
const UNKNOWN_ID: &str = "01900000-0000-7000-8000-000000000001";

struct Server {
    base: String,
    metrics_base: String,
    client: reqwest::Client,
    handle: NodeHandle,
    /// Timers, fires and the outbox.
    store: Arc<ModelStore>,
    /// API keys (a separate store, so either can fail alone).
    keys: Arc<ModelStore>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn add_key(store: &ModelStore, secret: &str, id: &str, tenant: &str, roles: &[Role]) {
    let record = ApiKeyRecord {
        id: id.into(),
        tenant_id: TenantId::parse("tenantId", tenant).expect("valid tenant"),
        roles: roles.iter().copied().collect(),
        label: id.into(),
        created_at_ms: 0,
        revoked_at_ms: None,
    };
    store.insert_key(record, hash_api_key(secret)).await.expect("key stored");
}

async fn start_with(config: HttpConfig, event_buffer: usize) -> Server {
    start_with_node(config, NodeConfig { event_buffer, request_queue: 10_000, ..NodeConfig::new("n1", 7) })
        .await
}

async fn start_with_node(config: HttpConfig, node: NodeConfig) -> Server {
    let clock = Arc::new(SystemClock::new());
    let store = Arc::new(ModelStore::new(clock.clone()));
    let keys = Arc::new(ModelStore::new(clock.clone()));
    let all = [Role::TimerRead, Role::TimerWrite, Role::TimerCancel];
    add_key(&keys, ACME, "key_acme_all", "acme", &all).await;
    add_key(&keys, ACME_READ, "key_acme_read", "acme", &[Role::TimerRead]).await;
    add_key(&keys, ACME_ADMIN, "key_acme_admin", "acme", &[Role::TenantAdmin]).await;
    add_key(&keys, GLOBEX, "key_globex_all", "globex", &all).await;
    add_key(&keys, OPERATOR, "key_operator", "ops", &[Role::TimerRead, Role::Operator]).await;
    let (handle, _task) = start_node(node, store.clone(), keys.clone(), clock);
    assert!(handle.wait_for_role(minoots_node::NodeRole::Leader).await, "node became leader");

    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
    let base = format!("http://{}", api.local_addr().expect("api addr"));
    let metrics_base = format!("http://{}", metrics.local_addr().expect("metrics addr"));
    let router = api_router(handle.clone(), config);
    tokio::spawn(async move { axum::serve(api, router).await });
    let router = metrics_router(handle.clone());
    tokio::spawn(async move { axum::serve(metrics, router).await });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    Server { base, metrics_base, client, handle, store, keys }
}

async fn start() -> Server {
    start_with(HttpConfig::default(), 65_536).await
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text:?}"))
        };
        (status, headers, body)
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) =
            self.send(self.client.post(self.url(path)).header("x-api-key", key).json(&body)).await;
        (status, body)
    }

    async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(self.client.get(self.url(path)).header("x-api-key", key)).await;
        (status, body)
    }

    /// Creates a timer that fires in an hour; returns its id.
    async fn create_later(&self, key: &str, extra: Value) -> String {
        let mut body = json!({"duration": "1h"});
        if let (Some(target), Value::Object(extra)) = (body.as_object_mut(), extra) {
            target.extend(extra);
        }
        let (status, timer) = self.post("/api/timers", key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{timer}");
        timer["id"].as_str().expect("id").to_owned()
    }
}

/// Asserts an error answer: status, code and field (`None`: no field).
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(*got, status, "status of {body}");
    assert_eq!(body["error"]["code"], code, "code of {body}");
    assert_eq!(body["error"]["field"].as_str(), field, "field of {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message of {body}");
}

async fn create(server: &Server, body: Value) -> (StatusCode, Value) {
    server.post("/api/timers", ACME, body).await
}

// ---- invalid input: one case per test --------------------------------------

#[tokio::test]
async fn duration_text_that_is_not_a_duration_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"duration": "abc"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("duration"));
}

#[tokio::test]
async fn zero_duration_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"duration": 0})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("duration"));
}

#[tokio::test]
async fn negative_duration_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"duration": -5})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("duration"));
    let answer = create(&s, json!({"duration": "-5s"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("duration"));
}

#[tokio::test]
async fn past_fire_at_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"fireAt": "2001-01-01T00:00:00Z"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("fireAt"));
}

/// The instant `offset_ms` from now by the node's clock, as `fireAt` text.
fn instant_from_now(offset_ms: i64) -> String {
    minoots_core::time::format_wall_ms(SystemClock::new().now().wall_ms + offset_ms)
}

#[tokio::test]
async fn fire_at_beyond_the_past_tolerance_is_400_naming_it() {
    let s = start().await;
    let two_minutes_ago = instant_from_now(-120_000);
    let answer = create(&s, json!({"fireAt": two_minutes_ago})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("fireAt"));
    let message = answer.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("60 s") && message.contains("tolerance"), "names the tolerance: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_at_a_few_seconds_in_the_past_is_201_and_fires_at_once_keeping_its_instant() {
    let s = start().await;
    let five_seconds_ago = instant_from_now(-5_000);
    let (status, timer) = create(&s, json!({"fireAt": five_seconds_ago})).await;
    assert_eq!(status, StatusCode::CREATED, "{timer}");
    assert_eq!(timer["fireAt"], five_seconds_ago.as_str(), "the requested instant, not now");
    let id = timer["id"].as_str().expect("id").to_owned();

    let mut fires = Vec::new();
    for _ in 0..100 {
        let (status, page) = s.get(&format!("/api/timers/{id}/fires"), ACME).await;
        assert_eq!(status, StatusCode::OK);
        fires = page["fires"].as_array().cloned().unwrap_or_default();
        if !fires.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fires.len(), 1, "fired once");
    assert_eq!(fires[0]["dueAt"], five_seconds_ago.as_str(), "due stays the requested instant");
    let lateness_ms = fires[0]["latenessMs"].as_i64().expect("latenessMs");
    assert!(lateness_ms >= 5_000, "the recorded lateness shows the past instant: {lateness_ms} ms");
    let (_, fired) = s.get(&format!("/api/timers/{id}"), ACME).await;
    assert_eq!(fired["status"], "fired", "{fired}");
}

#[tokio::test]
async fn unparsable_fire_at_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"fireAt": "tomorrow"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("fireAt"));
}

#[tokio::test]
async fn duration_and_fire_at_together_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"duration": "5s", "fireAt": "2099-01-01T00:00:00Z"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("schedule"));
}

#[tokio::test]
async fn no_schedule_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"name": "nothing to do"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("schedule"));
}

#[tokio::test]
async fn unknown_time_zone_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"cron": "0 * * * *", "timeZone": "Mars/Olympus_Mons"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("timeZone"));
}

#[tokio::test]
async fn bad_cron_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"cron": "61 * * *"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("cron"));
}

#[tokio::test]
async fn too_many_labels_is_400() {
    let s = start().await;
    let labels: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let answer = create(&s, json!({"duration": "1h", "labels": labels})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("labels"));
}

#[tokio::test]
async fn oversized_label_value_is_400() {
    let s = start().await;
    let answer = create(&s, json!({"duration": "1h", "labels": {"team": "x".repeat(257)}})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("labels.team"));
}

#[tokio::test]
async fn non_string_label_value_is_400_naming_the_label() {
    let s = start().await;
    let answer = create(&s, json!({"duration": "1h", "labels": {"team": 5}})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("labels.team"));
}

#[tokio::test]
async fn malformed_json_is_400() {
    let s = start().await;
    let (status, _, body) = s
        .send(
            s.client
                .post(s.url("/api/timers"))
                .header("x-api-key", ACME)
                .header("content-type", "application/json")
                .body("{\"duration\": "),
        )
        .await;
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_argument", Some("duration"));
    let (status, _, body) = s
        .send(
            s.client
                .post(s.url("/api/timers"))
                .header("x-api-key", ACME)
                .header("content-type", "application/json")
                .body("this is not json"),
        )
        .await;
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_argument", Some("body"));
}

#[tokio::test]
async fn unknown_field_is_400_naming_it() {
    let s = start().await;
    let answer = create(&s, json!({"duration": "1h", "colour": "blue"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("colour"));
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let s = start().await;
    let (status, _, body) = s
        .send(
            s.client
                .post(s.url("/api/timers"))
                .header("x-api-key", ACME)
                .header("content-type", "text/plain")
                .body("{\"duration\": \"1h\"}"),
        )
        .await;
    assert_error(
        &(status, body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        Some("content-type"),
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let s = start_with(HttpConfig { max_body_bytes: 64 * 1024, ..HttpConfig::default() }, 65_536).await;
    let answer = create(&s, json!({"duration": "1h", "metadata": {"blob": "x".repeat(70 * 1024)}})).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", Some("body"));
    // The default limit is 1 MiB.
    let s = start().await;
    let answer = create(&s, json!({"duration": "1h", "metadata": {"blob": "x".repeat(1024 * 1024)}})).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", Some("body"));
}

#[tokio::test]
async fn missing_key_is_401() {
    let s = start().await;
    let (status, _, body) =
        s.send(s.client.post(s.url("/api/timers")).json(&json!({"duration": "1h"}))).await;
    assert_error(&(status, body), StatusCode::UNAUTHORIZED, "unauthenticated", Some("x-api-key"));
    let (status, _, body) = s.send(s.client.get(s.url("/api/timers"))).await;
    assert_error(&(status, body), StatusCode::UNAUTHORIZED, "unauthenticated", Some("x-api-key"));
}

#[tokio::test]
async fn wrong_key_is_401() {
    let s = start().await;
    let answer = s.post("/api/timers", "not-a-key", json!({"duration": "1h"})).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthenticated", Some("x-api-key"));
}

#[tokio::test]
async fn auth_is_checked_before_the_body() {
    let s = start().await;
    let answer = s.post("/api/timers", "not-a-key", json!({"duration": "abc"})).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthenticated", Some("x-api-key"));
    let answer = s.post("/api/timers", ACME_READ, json!({"duration": "abc"})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", None);
}

#[tokio::test]
async fn wrong_role_is_403() {
    let s = start().await;
    let answer = s.post("/api/timers", ACME_READ, json!({"duration": "1h"})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", None);
    let id = s.create_later(ACME, json!({})).await;
    let answer = s.post(&format!("/api/timers/{id}/cancel"), ACME_READ, json!({})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", None);
    // tenant.admin holds every role.
    let answer = s.post(&format!("/api/timers/{id}/cancel"), ACME_ADMIN, json!({})).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
}

#[tokio::test]
async fn other_tenants_tenant_id_is_403() {
    let s = start().await;
    let answer = create(&s, json!({"tenantId": "globex", "duration": "1h"})).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", Some("tenantId"));
    let answer = s.get("/api/timers?tenantId=globex", ACME).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", Some("tenantId"));
    // Naming one's own tenant is fine.
    let (status, timer) = create(&s, json!({"tenantId": "acme", "duration": "1h"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(timer["tenantId"], "acme");
}

#[tokio::test]
async fn other_tenants_timer_is_404_on_get_cancel_and_fires() {
    let s = start().await;
    let id = s.create_later(GLOBEX, json!({})).await;
    let answer = s.get(&format!("/api/timers/{id}"), ACME).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", Some("id"));
    let answer = s.post(&format!("/api/timers/{id}/cancel"), ACME, json!({"reason": "mine now"})).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", Some("id"));
    let answer = s.get(&format!("/api/timers/{id}/fires"), ACME).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", Some("id"));
    // The owner still sees it untouched.
    let (status, timer) = s.get(&format!("/api/timers/{id}"), GLOBEX).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(timer["status"], "scheduled");
}

#[tokio::test]
async fn unknown_timer_is_404() {
    let s = start().await;
    let answer = s.get(&format!("/api/timers/{UNKNOWN_ID}"), ACME).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", Some("id"));
}

#[tokio::test]
async fn bad_timer_id_is_400_naming_id() {
    let s = start().await;
    let answer = s.get("/api/timers/not-a-uuid", ACME).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("id"));
    let answer = s.post("/api/timers/not-a-uuid/cancel", ACME, json!({})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("id"));
    let answer = s.get("/api/timers/not-a-uuid/fires", ACME).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("id"));
}

#[tokio::test]
async fn bad_list_parameters_are_400() {
    let s = start().await;
    let fires_path = format!("/api/timers/{UNKNOWN_ID}/fires?after=-1");
    let cases = [
        ("/api/timers?limit=0", "limit"),
        ("/api/timers?limit=1001", "limit"),
        ("/api/timers?limit=ten", "limit"),
        ("/api/timers?status=sleeping", "status"),
        ("/api/timers?status=", "status"),
        ("/api/timers?status=fired,", "status"),
        ("/api/timers?label=novalue", "label"),
        ("/api/timers?cursor=nope", "cursor"),
        ("/api/timers?colour=blue", "colour"),
        (fires_path.as_str(), "after"),
        ("/api/timers/stream?topics=timer.exploded", "topics"),
        ("/api/timers/stream?topics=", "topics"),
    ];
    for (path, field) in cases {
        let answer = s.get(path, ACME).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some(field));
    }
}

#[tokio::test]
async fn list_never_shows_other_tenants_timers() {
    let s = start().await;
    let mine = s.create_later(ACME, json!({"labels": {"team": "ops"}})).await;
    let theirs = s.create_later(GLOBEX, json!({"labels": {"team": "ops"}})).await;
    for path in ["/api/timers", "/api/timers?label=team=ops", "/api/timers?status=scheduled"] {
        let (status, page) = s.get(path, ACME).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<&str> =
            page["timers"].as_array().expect("timers").iter().filter_map(|t| t["id"].as_str()).collect();
        assert_eq!(ids, vec![mine.as_str()], "{path}");
        assert!(page["timers"].as_array().expect("timers").iter().all(|t| t["tenantId"] == "acme"));
    }
    let (_, page) = s.get("/api/timers", GLOBEX).await;
    let ids: Vec<&str> =
        page["timers"].as_array().expect("timers").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec![theirs.as_str()]);
}

#[tokio::test]
async fn batch_validates_all_or_nothing_and_names_the_item() {
    let s = start().await;
    let answer =
        s.post("/api/timers/batch", ACME, json!({"timers": [{"duration": "1h"}, {"duration": "abc"}]})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("timers[1].duration"));
    let answer = s.post("/api/timers/batch", ACME, json!({"timers": [{"duration": "1h", "bogus": 1}]})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("timers[0].bogus"));
    let answer = s.post("/api/timers/batch", ACME, json!({"timers": []})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("timers"));
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"duration": "1h"})).collect();
    let answer = s.post("/api/timers/batch", ACME, json!({"timers": too_many})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("timers"));
    let (_, page) = s.get("/api/timers", ACME).await;
    assert_eq!(page["timers"].as_array().map(Vec::len), Some(0), "nothing was created");
}

#[tokio::test]
async fn unknown_route_and_method_use_the_error_shape() {
    let s = start().await;
    let answer = s.get("/api/nothing-here", ACME).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found", None);
    let (status, _, body) = s.send(s.client.delete(s.url("/api/timers")).header("x-api-key", ACME)).await;
    assert_error(&(status, body), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
}

// ---- happy paths ------------------------------------------------------------

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads events from an SSE response until `done` says stop or the deadline passes.
async fn read_events(
    response: reqwest::Response,
    deadline: Duration,
    mut done: impl FnMut(&[SseEvent]) -> bool,
) -> Vec<SseEvent> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let until = tokio::time::Instant::now() + deadline;
    while !done(&events) {
        let chunk = match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            _ => break,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = SseEvent { id: None, event: None, data: String::new() };
            let mut has_data = false;
            for line in block.lines() {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match name {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {} // comments (keep-alives) and unknown fields
                }
            }
            if has_data {
                events.push(event);
            }
        }
    }
    events
}

async fn open_stream(s: &Server, query: &str, key: &str) -> reqwest::Response {
    let response = s
        .client
        .get(s.url(&format!("/api/timers/stream{query}")))
        .header("x-api-key", key)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("stream opened");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_timer_fires_and_shows_in_fires_stream_and_metrics() {
    let s = start().await;
    let stream = open_stream(&s, "", ACME).await;
    let other_tenant_stream = open_stream(&s, "", GLOBEX).await;

    let (status, timer) =
        create(&s, json!({"duration": "2s", "name": "tea", "labels": {"kind": "tea"}})).await;
    assert_eq!(status, StatusCode::CREATED, "{timer}");
    let id = timer["id"].as_str().expect("id").to_owned();
    assert_eq!(timer["status"], "scheduled");
    assert_eq!(timer["durationMs"], 2_000);
    assert_eq!(timer["requestedBy"], "key_acme_all", "defaults to the key id");
    assert_eq!(timer["schedule"]["kind"], "once");

    // Poll GET until fired, bounded.
    let mut fired = Value::Null;
    for _ in 0..100 {
        let (status, t) = s.get(&format!("/api/timers/{id}"), ACME).await;
        assert_eq!(status, StatusCode::OK);
        if t["status"] == "fired" {
            fired = t;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fired["status"], "fired", "fired within ~10 s");
    assert_eq!(fired["firedCount"], 1);
    assert!(
        fired["firedAt"].as_str().is_some_and(|t| t >= fired["fireAt"].as_str().unwrap_or("~")),
        "{fired}"
    );

    let (status, page) = s.get(&format!("/api/timers/{id}/fires"), ACME).await;
    assert_eq!(status, StatusCode::OK);
    let fires = page["fires"].as_array().expect("fires");
    assert_eq!(fires.len(), 1, "{page}");
    assert_eq!(fires[0]["occurrence"], 1);
    assert_eq!(fires[0]["nodeId"], "n1");
    assert_eq!(fires[0]["timerId"], id);
    assert!(fires[0]["epoch"].as_u64().is_some_and(|e| e >= 1));
    assert!(fires[0]["firedAt"].as_str().is_some());
    assert_eq!(page["nextAfter"], Value::Null);
    let (_, page) = s.get(&format!("/api/timers/{id}/fires?after=1"), ACME).await;
    assert_eq!(page["fires"].as_array().map(Vec::len), Some(0));

    // The stream saw it scheduled and fired, in that order, with envelopes.
    let events = read_events(stream, Duration::from_secs(10), |events| {
        events.iter().any(|e| e.event.as_deref() == Some("timer.fired"))
    })
    .await;
    let mine: Vec<&SseEvent> = events.iter().filter(|e| e.data.contains(&id)).collect();
    let kinds: Vec<&str> = mine.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(kinds, vec!["timer.scheduled", "timer.fired"], "{events:?}");
    let envelope: Value = serde_json::from_str(&mine[1].data).expect("envelope JSON");
    assert_eq!(envelope["event"]["type"], "timer.fired");
    assert_eq!(envelope["event"]["timer"]["id"], id);
    assert_eq!(envelope["event"]["fire"]["occurrence"], 1);
    assert_eq!(envelope["tenantId"], "acme");
    assert_eq!(envelope["dedupeKey"], format!("{id}:1:fired"));
    assert_eq!(mine[1].id.as_deref(), envelope["seq"].as_u64().map(|n| n.to_string()).as_deref());

    // The other tenant's stream saw nothing of it.
    let theirs = read_events(other_tenant_stream, Duration::from_millis(500), |_| false).await;
    assert!(theirs.iter().all(|e| !e.data.contains(&id)), "{theirs:?}");

    // Metrics on the separate address.
    let response = s.client.get(format!("{}/metrics", s.metrics_base)).send().await.expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.expect("metrics text");
    let fired_total = text
        .lines()
        .find_map(|l| l.strip_prefix("minoots_timers_fired_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("minoots_timers_fired_total is exported");
    assert!(fired_total >= 1.0, "{text}");

    // A fired timer cannot be cancelled.
    let answer = s.post(&format!("/api/timers/{id}/cancel"), ACME, json!({})).await;
    assert_error(&answer, StatusCode::CONFLICT, "conflict", Some("status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_filters_topics_and_all_tenants_needs_the_operator_role() {
    let s = start().await;
    let answer = s.get("/api/timers/stream?tenantId=__all__", ACME).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", None);
    // tenant.admin is a tenant's role: it never reaches other tenants.
    let answer = s.get("/api/timers/stream?tenantId=__all__", ACME_ADMIN).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", None);
    assert!(answer.1.to_string().contains("operator"), "{}", answer.1);
    let answer = s.get("/api/timers/stream?tenantId=globex", ACME).await;
    assert_error(&answer, StatusCode::FORBIDDEN, "permission_denied", Some("tenantId"));

    let cancelled_only = open_stream(&s, "?topics=timer.cancelled", ACME).await;
    let everything = open_stream(&s, "?tenantId=__all__", OPERATOR).await;
    let globex_id = s.create_later(GLOBEX, json!({})).await;
    let acme_id = s.create_later(ACME, json!({})).await;
    let (status, _) = s.post(&format!("/api/timers/{acme_id}/cancel"), ACME, json!({"reason": "done"})).await;
    assert_eq!(status, StatusCode::OK);

    let events = read_events(cancelled_only, Duration::from_secs(10), |e| !e.is_empty()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event.as_deref(), Some("timer.cancelled"));
    let envelope: Value = serde_json::from_str(&events[0].data).expect("envelope");
    assert_eq!(envelope["event"]["timer"]["id"], acme_id);
    assert_eq!(envelope["event"]["timer"]["cancelReason"], "done");

    let events = read_events(everything, Duration::from_secs(10), |e| e.len() >= 3).await;
    let seen: BTreeSet<String> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| v["event"]["timer"]["id"].as_str().map(str::to_owned))
        .collect();
    assert!(seen.contains(&globex_id) && seen.contains(&acme_id), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_open_streams() {
    let s = start().await;
    let revoked = "acme-soon-revoked-secret";
    add_key(&s.keys, revoked, "key_acme_soon_revoked", "acme", &[Role::TimerRead]).await;
    let doomed = open_stream(&s, "", revoked).await;
    let kept = open_stream(&s, "", ACME).await;
    let before = s.create_later(ACME, json!({})).await;
    assert!(s.keys.revoke_key("key_acme_soon_revoked".into(), 1).await.expect("revoked"));

    // The revoked key's stream ends with an error event; nothing after the revocation reaches it.
    let events = read_events(doomed, Duration::from_secs(30), |_| false).await;
    let last = events.last().expect("at least the error event");
    assert_eq!(last.event.as_deref(), Some("error"), "{events:?}");
    let body: Value = serde_json::from_str(&last.data).expect("error JSON");
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(
        events.iter().any(|e| e.data.contains(&before)),
        "events before the revocation arrive: {events:?}"
    );
    let after = s.create_later(ACME, json!({})).await;
    let events =
        read_events(kept, Duration::from_secs(10), |e| e.iter().any(|e| e.data.contains(&after))).await;
    assert!(events.iter().all(|e| e.event.as_deref() != Some("error")), "{events:?}");
}

/// Single-threaded on purpose: the relay hands a whole commit's events to the
/// broadcast in one synchronous loop, so a 16-event buffer overflows before
/// the stream task can run.
#[tokio::test]
async fn a_lagging_stream_gets_an_error_event_and_ends() {
    let s = start_with(HttpConfig::default(), 16).await;
    let stream = open_stream(&s, "", ACME).await;
    let timers: Vec<Value> = (0..100).map(|_| json!({"duration": "1h"})).collect();
    let (status, _) = s.post("/api/timers/batch", ACME, json!({"timers": timers})).await;
    assert_eq!(status, StatusCode::CREATED);
    let events = read_events(stream, Duration::from_secs(10), |_| false).await;
    let last = events.last().expect("at least the error event");
    assert_eq!(last.event.as_deref(), Some("error"), "{events:?}");
    let body: Value = serde_json::from_str(&last.data).expect("error JSON");
    assert_eq!(body["error"]["code"], "lagged");
    assert!(events.len() < 100, "the stream ended instead of skipping: {}", events.len());
}

/// A client that stops reading is dropped once its own queue fills: after
/// the events it was sent it reads an `error` event `too_slow`. A tenant
/// holds at most its limit of open streams (429 `too_many_streams`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_dropped_as_too_slow_and_streams_per_tenant_are_capped() {
    let node = NodeConfig {
        stream_limits: minoots_node::subscription::StreamLimits { buffer_events: 8, per_tenant: 1 },
        ..NodeConfig::new("n1", 7)
    };
    let s = start_with_node(HttpConfig { max_body_bytes: 64 << 20, ..HttpConfig::default() }, node).await;
    let stalled = open_stream(&s, "", ACME).await;
    let (status, body) = s.get("/api/timers/stream", ACME).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_streams"))
    );
    // ~30 MB of events: more than loopback's socket buffers and the 8-event queue.
    let metadata = json!({"blob": "x".repeat(60_000)});
    for _ in 0..2 {
        let timers: Vec<Value> = (0..250).map(|_| json!({"duration": "1h", "metadata": metadata})).collect();
        let (status, body) = s.post("/api/timers/batch", ACME, json!({"timers": timers})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let events = read_events(stalled, Duration::from_secs(20), |events| {
        events.last().is_some_and(|e| e.event.as_deref() == Some("error"))
    })
    .await;
    let last = events.last().expect("at least the error event");
    assert_eq!(last.event.as_deref(), Some("error"), "{} events, none an error", events.len());
    let body: Value = serde_json::from_str(&last.data).expect("error JSON");
    assert_eq!(body["error"]["code"], "too_slow", "{body}");
    assert!(events.len() < 500, "the stream ended instead of buffering: {}", events.len());
    // Its place is free again.
    open_stream(&s, "", ACME).await;
}

#[tokio::test]
async fn idempotent_retry_returns_the_same_timer() {
    let s = start().await;
    let body = json!({"duration": "1h", "idempotencyKey": "order-42"});
    let (status, headers, first) =
        s.send(s.client.post(s.url("/api/timers")).header("x-api-key", ACME).json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().expect("id");
    assert_eq!(headers["location"], format!("/api/timers/{id}").as_str());
    let (status, headers, again) =
        s.send(s.client.post(s.url("/api/timers")).header("x-api-key", ACME).json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["id"], id);
    assert_eq!(again["idempotencyKey"], "order-42");

    // The header works the same way.
    let create_with_key_header = |key: &'static str, body: Value| {
        s.send(
            s.client
                .post(s.url("/api/timers"))
                .header("x-api-key", ACME)
                .header("Idempotency-Key", key)
                .json(&body),
        )
    };
    let (status, _, via_header) = create_with_key_header("order-42", json!({"duration": "1h"})).await;
    assert_eq!(status, StatusCode::OK, "{via_header}");
    assert_eq!(via_header["id"], id);

    // Same key, different request: conflict.
    let answer = create(&s, json!({"duration": "2h", "idempotencyKey": "order-42"})).await;
    assert_error(&answer, StatusCode::CONFLICT, "conflict", Some("idempotencyKey"));
    // Header and body disagreeing: 400.
    let (status, _, body) =
        create_with_key_header("a", json!({"duration": "1h", "idempotencyKey": "b"})).await;
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_argument", Some("idempotencyKey"));
    // A header key with a tab is not visible text: 400 naming the header.
    let (status, _, body) = create_with_key_header("a\tb", json!({"duration": "1h"})).await;
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_argument", Some("Idempotency-Key"));

    // Another tenant's identical key is its own timer.
    let (status, theirs) = s.post("/api/timers", GLOBEX, body_with_key("order-42")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(theirs["id"], id);
}

fn body_with_key(key: &str) -> Value {
    json!({"duration": "1h", "idempotencyKey": key})
}

#[tokio::test]
async fn cancel_records_who_and_why_and_is_repeatable() {
    let s = start().await;
    let id = s.create_later(ACME, json!({})).await;
    let (status, timer) = s
        .post(
            &format!("/api/timers/{id}/cancel"),
            ACME,
            json!({"reason": "no longer needed", "requestedBy": "bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{timer}");
    assert_eq!(timer["status"], "cancelled");
    assert_eq!(timer["cancelReason"], "no longer needed");
    assert_eq!(timer["cancelledBy"], "bob");
    assert!(timer["cancelledAt"].as_str().is_some());
    // Again, with no body at all: the same cancelled timer.
    let (status, _, again) =
        s.send(s.client.post(s.url(&format!("/api/timers/{id}/cancel"))).header("x-api-key", ACME)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["status"], "cancelled");
    let answer = s.post(&format!("/api/timers/{id}/cancel"), ACME, json!({"why": "x"})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("why"));
    let answer = s.post(&format!("/api/timers/{id}/cancel"), ACME, json!({"reason": "x".repeat(300)})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_argument", Some("reason"));
}

#[tokio::test]
async fn list_pages_with_cursor_and_filters_by_label_and_status() {
    let s = start().await;
    let mut ops = Vec::new();
    for i in 0..5 {
        ops.push(s.create_later(ACME, json!({"labels": {"team": "ops", "n": i.to_string()}})).await);
    }
    let dev = s.create_later(ACME, json!({"labels": {"team": "dev"}})).await;

    let mut seen = Vec::new();
    let mut path = "/api/timers?label=team=ops&limit=2".to_owned();
    for _ in 0..10 {
        let (status, page) = s.get(&path, ACME).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let timers = page["timers"].as_array().expect("timers");
        assert!(timers.len() <= 2);
        seen.extend(timers.iter().filter_map(|t| t["id"].as_str().map(str::to_owned)));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/timers?label=team=ops&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    // Every ops timer once, in id order (UUIDv7: creation order to the millisecond).
    let mut expected = ops.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let (_, page) = s.get("/api/timers?label=team=ops&label=n=3", ACME).await;
    let ids: Vec<&str> =
        page["timers"].as_array().expect("timers").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec![ops[3].as_str()]);
    // One key with two values is a filter no timer can match: an empty page, not an error.
    let (status, page) = s.get("/api/timers?label=team=ops&label=team=dev", ACME).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({"timers": [], "nextCursor": null}));

    let (status, _) = s.post(&format!("/api/timers/{dev}/cancel"), ACME, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = s.get("/api/timers?status=cancelled", ACME).await;
    let ids: Vec<&str> =
        page["timers"].as_array().expect("timers").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec![dev.as_str()]);
    let (_, page) = s.get("/api/timers?status=scheduled,cancelled", ACME).await;
    assert_eq!(page["timers"].as_array().map(Vec::len), Some(6));
    let (_, page) = s.get("/api/timers?status=scheduled&status=fired", ACME).await;
    assert_eq!(page["timers"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn batch_creates_and_reports_per_item() {
    let s = start().await;
    let (status, first) = create(&s, body_with_key("dup")).await;
    assert_eq!(status, StatusCode::CREATED);
    let body = json!({"timers": [
        {"duration": 60_000, "name": "a"},
        {"every": "5m", "maxOccurrences": 3.0, "misfirePolicy": "skip"},
        {"duration": "1h", "idempotencyKey": "dup"},
        {"duration": "2h", "idempotencyKey": "dup"},
    ]});
    let (status, answer) = s.post("/api/timers/batch", ACME, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    assert_eq!((results[0]["status"].as_u64(), results[0]["created"].as_bool()), (Some(201), Some(true)));
    assert_eq!(results[0]["timer"]["name"], "a");
    assert_eq!(results[1]["timer"]["schedule"]["kind"], "interval");
    assert_eq!(results[1]["timer"]["schedule"]["every"], 300_000);
    assert_eq!(results[1]["timer"]["misfirePolicy"], "skip");
    // 3.0 is the integer 3, as JSON Schema counts integers.
    assert_eq!(results[1]["timer"]["schedule"]["maxOccurrences"], 3);
    assert_eq!((results[2]["status"].as_u64(), results[2]["created"].as_bool()), (Some(200), Some(false)));
    assert_eq!(results[2]["timer"]["id"], first["id"]);
    assert_eq!(results[3]["status"], 409);
    assert_eq!(results[3]["error"]["code"], "conflict");
    assert_eq!(results[3]["error"]["field"], "timers[3].idempotencyKey");
}

#[tokio::test]
async fn health_and_healthz() {
    let s = start().await;
    let (status, _, body) = s.send(s.client.get(s.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "service": "minoots"}));
    let (status, _, body) = s.send(s.client.get(s.url("/health"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["nodeId"], "n1");
    assert_eq!(body["role"], "leader");
    assert_eq!(body["isLeader"], true);
    assert!(body["epoch"].as_u64().is_some_and(|e| e >= 1));
    assert_eq!(body["store"]["ok"], true);
    assert!(body["dueIndex"].is_u64() && body["queuedWrites"].is_u64());

    // A failing store makes /health 503 once the node notices.
    s.store.set_failing(true);
    let answer = s.post("/api/timers", ACME, json!({"duration": "1h"})).await;
    assert_eq!(answer.0, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.1);
    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..50 {
        let (status, _, body) = s.send(s.client.get(s.url("/health"))).await;
        last = (status, body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, StatusCode::SERVICE_UNAVAILABLE, "{}", last.1);
    assert_eq!(last.1["store"]["ok"], false);
    s.store.set_failing(false);
}

#[tokio::test]
async fn store_failure_is_503_with_retry_after() {
    let s = start().await;
    s.store.set_failing(true);
    let (status, headers, body) = s
        .send(s.client.post(s.url("/api/timers")).header("x-api-key", ACME).json(&json!({"duration": "1h"})))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["retryAfterMs"].as_u64().is_some(), "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry_after >= 1);
    s.store.set_failing(false);
}

#[tokio::test]
async fn key_store_failure_is_503_not_401() {
    let s = start().await;
    s.keys.set_failing(true);
    let (status, headers, body) = s.send(s.client.get(s.url("/api/timers")).header("x-api-key", ACME)).await;
    assert_error(&(status, body), StatusCode::SERVICE_UNAVAILABLE, "unavailable", None);
    assert!(headers.contains_key("retry-after"));
    s.keys.set_failing(false);
    let (status, _) = s.get("/api/timers", ACME).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let s = start().await;
    let (status, _, doc) = s.send(s.client.get(s.url("/api/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in route_table() {
        let operation =
            &paths.get(path).unwrap_or_else(|| panic!("{path} documented"))[method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{method} {path} documented");
        assert!(operation["responses"].is_object(), "{method} {path} has responses");
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["Error", "Timer", "CreateTimerRequest", "EventEnvelope", "Fire", "Health"] {
        assert!(schemas.contains_key(name), "{name}");
    }
    // Every create-body field the server accepts is documented, and no other.
    let documented: BTreeSet<&str> = schemas["CreateTimerRequest"]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    for field in documented.iter() {
        // An accepted field never answers "unknown field".
        let mut body = serde_json::Map::new();
        body.insert((*field).to_owned(), Value::Null);
        body.insert("duration".to_owned(), json!("1h"));
        let answer = create(&s, Value::Object(body)).await;
        assert_ne!(answer.1["error"]["field"].as_str(), Some(*field), "{field} accepted: {}", answer.1);
    }
}
