//! Wire compatibility with MINOOTS: a client generated from the contract-only
//! proto (MINOOTS's `minoots.timer.v1` without any of our extensions) drives a
//! real node over gRPC — schedule, get, list with paging and status filters,
//! cancel, the event stream (scheduled / fired / cancelled) and errors. Plus
//! the extensions through the full client (idempotency, batch, recurring
//! fires, fire history, topic filters) and an encode/decode cross-check of
//! the two message sets.
#![cfg(not(madsim))]

mod grpc_support;

use std::collections::BTreeMap;
use std::time::Duration;

use grpc_support::*;
use minoots_proto::contract as c;
use prost::Message;
use tonic::Code;

fn contract_schedule(name: &str, duration_ms: u64) -> c::TimerScheduleRequest {
    c::TimerScheduleRequest {
        tenant_id: String::new(),
        requested_by: "contract-test".into(),
        name: name.into(),
        schedule_time: Some(c::timer_schedule_request::ScheduleTime::DurationMs(duration_ms)),
        action_bundle_json:
            r#"{"actions":[{"id":"a1","kind":"webhook","parameters":{"url":"https://hooks.example.com/x"}}]}"#
                .into(),
        labels: BTreeMap::from([("team".to_owned(), "core".to_owned())]).into_iter().collect(),
        metadata_json: r#"{"purpose":"contract"}"#.into(),
        agent_binding_json: String::new(),
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_client_full_lifecycle() {
    let node = TestNode::start().await;
    let mut client = node.contract_client().await;

    // Subscribe first: every later event must arrive.
    let mut events = client
        .stream_timer_events(with_key(
            KEY_A,
            c::TimerEventStreamRequest { tenant_id: TENANT_A.into(), topics: vec![] },
        ))
        .await
        .expect("stream")
        .into_inner();

    // Schedule (duration_ms) and check the returned timer.
    let short = client
        .schedule_timer(with_key(KEY_A, contract_schedule("short", 300)))
        .await
        .expect("schedule")
        .into_inner()
        .timer
        .expect("timer");
    assert!(!short.id.is_empty());
    assert_eq!(short.tenant_id, TENANT_A);
    assert_eq!(short.requested_by, "contract-test");
    assert_eq!(short.name, "short");
    assert_eq!(short.status, c::TimerStatus::Scheduled as i32);
    assert_eq!(short.duration_ms, 300);
    assert_eq!(short.labels.get("team").map(String::as_str), Some("core"));
    assert_eq!(json(&short.metadata_json), json(r#"{"purpose":"contract"}"#));
    assert_eq!(json(&short.action_bundle_json)["actions"][0]["id"], "a1");
    let created = chrono::DateTime::parse_from_rfc3339(&short.created_at_iso).expect("created_at_iso");
    let fire_at = chrono::DateTime::parse_from_rfc3339(&short.fire_at_iso).expect("fire_at_iso");
    assert_eq!((fire_at - created).num_milliseconds(), 300);
    assert!(short.fired_at_iso.is_empty() && short.cancelled_at_iso.is_empty());

    // Get.
    let got = client
        .get_timer(with_key(
            KEY_A,
            c::TimerGetRequest { tenant_id: String::new(), timer_id: short.id.clone() },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, short);

    // Four long timers, then list with paging (2 + 2 + 1, creation order).
    let mut long_ids = Vec::new();
    for i in 0..4 {
        let t = client
            .schedule_timer(with_key(KEY_A, contract_schedule(&format!("long-{i}"), 3_600_000)))
            .await
            .expect("schedule long")
            .into_inner()
            .timer
            .expect("timer");
        long_ids.push(t.id);
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_timers(with_key(
                KEY_A,
                c::TimerListRequest {
                    tenant_id: TENANT_A.into(),
                    page_size: 2,
                    page_token: token,
                    statuses: vec![],
                },
            ))
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.timers.len() <= 2);
        listed.extend(page.timers.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    let mut expected = vec![short.id.clone()];
    expected.extend(long_ids.iter().cloned());
    assert_eq!(listed, expected, "every timer exactly once, in creation order");
    assert!(pages >= 3);

    // Cancel one long timer.
    let cancelled = client
        .cancel_timer(with_key(
            KEY_A,
            c::TimerCancelRequest {
                tenant_id: TENANT_A.into(),
                timer_id: long_ids[0].clone(),
                requested_by: "contract-test".into(),
                reason: "no longer needed".into(),
            },
        ))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status, c::TimerStatus::Cancelled as i32);
    assert_eq!(cancelled.cancel_reason, "no longer needed");
    assert_eq!(cancelled.cancelled_by, "contract-test");
    assert!(!cancelled.cancelled_at_iso.is_empty());

    // The stream shows: 5 scheduled, 1 cancelled, and the short timer fired.
    let mut scheduled = Vec::new();
    let mut cancelled_seen = None;
    let mut fired_seen = None;
    while scheduled.len() < 5 || cancelled_seen.is_none() || fired_seen.is_none() {
        match next_message(&mut events).await.event.expect("event body") {
            c::timer_event::Event::Scheduled(s) => scheduled.push(s.timer.expect("timer").id),
            c::timer_event::Event::Cancelled(x) => {
                assert!(cancelled_seen.is_none(), "one cancel, one event");
                assert_eq!(x.reason, "no longer needed");
                cancelled_seen = x.timer.map(|t| t.id);
            }
            c::timer_event::Event::Fired(f) => {
                assert!(fired_seen.is_none(), "one fire, one event");
                let t = f.timer.expect("timer");
                assert_eq!(t.status, c::TimerStatus::Fired as i32);
                assert!(!t.fired_at_iso.is_empty());
                fired_seen = Some(t.id);
            }
        }
    }
    assert_eq!(scheduled, expected, "scheduled events in commit order");
    assert_eq!(cancelled_seen.as_deref(), Some(long_ids[0].as_str()));
    assert_eq!(fired_seen.as_deref(), Some(short.id.as_str()));

    // Get after the fire; never before its due time.
    let fired = client
        .get_timer(with_key(
            KEY_A,
            c::TimerGetRequest { tenant_id: TENANT_A.into(), timer_id: short.id.clone() },
        ))
        .await
        .expect("get fired")
        .into_inner();
    assert_eq!(fired.status, c::TimerStatus::Fired as i32);
    let fired_at = chrono::DateTime::parse_from_rfc3339(&fired.fired_at_iso).expect("fired_at_iso");
    assert!(fired_at >= fire_at, "fired at {fired_at}, due {fire_at}");

    // Status filters, in MINOOTS's enum spelling and ours.
    let list_status = |statuses: &[&str]| c::TimerListRequest {
        tenant_id: String::new(),
        page_size: 0,
        page_token: String::new(),
        statuses: statuses.iter().map(|s| s.to_string()).collect(),
    };
    let only_fired =
        client.list_timers(with_key(KEY_A, list_status(&["TIMER_STATUS_FIRED"]))).await.expect("list");
    let ids: Vec<_> = only_fired.into_inner().timers.into_iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![short.id.clone()]);
    let pending = client.list_timers(with_key(KEY_A, list_status(&["scheduled"]))).await.expect("list");
    let ids: Vec<_> = pending.into_inner().timers.into_iter().map(|t| t.id).collect();
    assert_eq!(ids, long_ids[1..].to_vec());
    let status = expect_code(
        client.list_timers(with_key(KEY_A, list_status(&["exploded"]))).await,
        Code::InvalidArgument,
    );
    assert_eq!(field_of(&status).as_deref(), Some("statuses"));

    // Cancelling a fired timer is a conflict.
    let late_cancel = client
        .cancel_timer(with_key(
            KEY_A,
            c::TimerCancelRequest {
                tenant_id: String::new(),
                timer_id: short.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    expect_code(late_cancel, Code::FailedPrecondition);

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_client_errors() {
    let node = TestNode::start().await;
    let mut client = node.contract_client().await;

    // duration_ms = 0 set in the oneof is a zero delay: rejected, naming `duration`.
    let status = expect_code(
        client.schedule_timer(with_key(KEY_A, contract_schedule("zero", 0))).await,
        Code::InvalidArgument,
    );
    assert_eq!(field_of(&status).as_deref(), Some("duration"));
    assert!(status.message().starts_with("duration: "), "{}", status.message());

    // No schedule at all.
    let mut none = contract_schedule("none", 1);
    none.schedule_time = None;
    let status = expect_code(client.schedule_timer(with_key(KEY_A, none)).await, Code::InvalidArgument);
    assert!(field_of(&status).is_some());

    // A fire time in the past, and one that is not a time.
    let mut past = contract_schedule("past", 1);
    past.schedule_time =
        Some(c::timer_schedule_request::ScheduleTime::FireTimeIso("2001-01-01T00:00:00Z".into()));
    let status = expect_code(client.schedule_timer(with_key(KEY_A, past)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("fireAt"));
    let mut garbage = contract_schedule("garbage", 1);
    garbage.schedule_time = Some(c::timer_schedule_request::ScheduleTime::FireTimeIso("next tuesday".into()));
    let status = expect_code(client.schedule_timer(with_key(KEY_A, garbage)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("fireAt"));

    // Bad JSON.
    let mut bad_json = contract_schedule("json", 1_000);
    bad_json.metadata_json = "{nope".into();
    let status = expect_code(client.schedule_timer(with_key(KEY_A, bad_json)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("metadata"));

    // Unknown and malformed ids; a bad page token.
    let unknown = c::TimerGetRequest {
        tenant_id: String::new(),
        timer_id: "0190b8a0-0000-7000-8000-000000000000".into(),
    };
    expect_code(client.get_timer(with_key(KEY_A, unknown)).await, Code::NotFound);
    let malformed = c::TimerGetRequest { tenant_id: String::new(), timer_id: "not-a-uuid".into() };
    let status = expect_code(client.get_timer(with_key(KEY_A, malformed)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("timerId"));
    let bad_token = c::TimerListRequest { page_token: "garbage".into(), ..Default::default() };
    let status = expect_code(client.list_timers(with_key(KEY_A, bad_token)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("pageToken"));
    let bad_topic =
        c::TimerEventStreamRequest { tenant_id: String::new(), topics: vec!["timer.exploded".into()] };
    let status =
        expect_code(client.stream_timer_events(with_key(KEY_A, bad_topic)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("topics"));

    // Nothing was created by any of the above.
    let all = client.list_timers(with_key(KEY_A, c::TimerListRequest::default())).await.expect("list");
    assert!(all.into_inner().timers.is_empty());

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_time_within_the_past_tolerance_is_accepted_and_an_older_one_names_it() {
    let node = TestNode::start().await;
    let mut client = node.contract_client().await;
    // Within the past-fire tolerance (60 s by default) a fire time in the past is
    // accepted, as over REST, and keeps its instant; beyond it, the error names it.
    let now_ms = minoots_node::Clock::now(&minoots_node::SystemClock::new()).wall_ms;
    let at = |offset_ms: i64, name: &str| {
        let mut request = contract_schedule(name, 1);
        let iso = minoots_core::time::format_wall_ms(now_ms + offset_ms);
        request.schedule_time = Some(c::timer_schedule_request::ScheduleTime::FireTimeIso(iso.clone()));
        (request, iso)
    };
    let (recent, recent_iso) = at(-5_000, "recent-past");
    let accepted = client.schedule_timer(with_key(KEY_A, recent)).await.expect("5 s in the past is accepted");
    assert_eq!(accepted.into_inner().timer.expect("timer").fire_at_iso, recent_iso);
    let (old, _) = at(-120_000, "old-past");
    let status = expect_code(client.schedule_timer(with_key(KEY_A, old)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("fireAt"));
    assert!(
        status.message().contains("60 s") && status.message().contains("tolerance"),
        "{}",
        status.message()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_over_the_full_client() {
    use minoots_proto as pb;
    let node = TestNode::start().await;
    let mut client = node.client().await;

    // Topic filter: only fires.
    let mut fires_only = client
        .stream_timer_events(with_key(
            KEY_A,
            pb::TimerEventStreamRequest { tenant_id: String::new(), topics: vec!["timer.fired".into()] },
        ))
        .await
        .expect("stream")
        .into_inner();

    // Idempotency: the same key gives the same timer; a different request under it conflicts.
    let request = pb::TimerScheduleRequest {
        name: "idem".into(),
        duration: "1h".into(),
        idempotency_key: "order-17".into(),
        ..Default::default()
    };
    let first = client.schedule_timer(with_key(KEY_A, request.clone())).await.expect("first").into_inner();
    let again = client.schedule_timer(with_key(KEY_A, request.clone())).await.expect("retry").into_inner();
    assert!(first.created && !again.created);
    let first_timer = first.timer.expect("timer");
    assert_eq!(first_timer.id, again.timer.expect("timer").id);
    assert_eq!(first_timer.duration_ms, 3_600_000);
    assert_eq!(first_timer.schedule_kind, "once");
    assert_eq!(first_timer.idempotency_key, "order-17");
    let different = pb::TimerScheduleRequest { name: "other".into(), ..request };
    let status = expect_code(client.schedule_timer(with_key(KEY_A, different)).await, Code::AlreadyExists);
    assert_eq!(field_of(&status).as_deref(), Some("idempotencyKey"));

    // Batch: all or nothing on validation, naming the item.
    let item = |name: &str, ms: u64| pb::TimerScheduleRequest {
        name: name.into(),
        schedule_time: Some(pb::timer_schedule_request::ScheduleTime::DurationMs(ms)),
        ..Default::default()
    };
    let bad_batch = pb::TimerBatchScheduleRequest { timers: vec![item("ok", 60_000), item("bad", 0)] };
    let status = expect_code(client.schedule_timers(with_key(KEY_A, bad_batch)).await, Code::InvalidArgument);
    assert_eq!(field_of(&status).as_deref(), Some("timers[1].duration"));
    let empty = pb::TimerBatchScheduleRequest { timers: vec![] };
    expect_code(client.schedule_timers(with_key(KEY_A, empty)).await, Code::InvalidArgument);
    let batch =
        pb::TimerBatchScheduleRequest { timers: (0..10).map(|i| item(&format!("b{i}"), 60_000)).collect() };
    let results = client.schedule_timers(with_key(KEY_A, batch)).await.expect("batch").into_inner().results;
    assert_eq!(results.len(), 10);
    for (i, r) in results.iter().enumerate() {
        assert!(r.created);
        match &r.result {
            Some(pb::timer_batch_result::Result::Timer(t)) => assert_eq!(t.name, format!("b{i}")),
            other => panic!("item {i}: {other:?}"),
        }
    }

    // A recurring timer fires twice; its fire history and the fired events agree.
    let recurring = pb::TimerScheduleRequest {
        name: "tick".into(),
        every_ms: Some(200),
        max_occurrences: Some(2),
        misfire_policy: "fire_all".into(),
        ..Default::default()
    };
    let tick = client.schedule_timer(with_key(KEY_A, recurring)).await.expect("recurring").into_inner();
    let tick = tick.timer.expect("timer");
    assert_eq!((tick.schedule_kind.as_str(), tick.every_ms, tick.max_occurrences), ("interval", 200, 2));
    assert_eq!(tick.misfire_policy, "fire_all");
    assert_eq!((tick.next_occurrence, tick.fired_count), (1, 0));
    for occurrence in 1..=2 {
        let event = next_message(&mut fires_only).await;
        assert_eq!(event.event_type, "timer.fired");
        assert_eq!(event.tenant_id, TENANT_A);
        assert_eq!(event.dedupe_key, format!("{}:{occurrence}:fired", tick.id));
        assert_eq!(event.envelope_id, format!("evt-{}", event.dedupe_key));
        let Some(pb::timer_event::Event::Fired(fired)) = event.event else { panic!("not a fire: {event:?}") };
        assert_eq!(fired.occurrence, occurrence);
        assert_eq!(fired.node_id, "node-1");
        assert!(fired.epoch >= 1);
        assert!(fired.fired_at_iso >= fired.due_at_iso, "{} < {}", fired.fired_at_iso, fired.due_at_iso);
    }
    let fires = client
        .list_timer_fires(with_key(
            KEY_A,
            pb::TimerFiresRequest { timer_id: tick.id.clone(), page_size: 1, ..Default::default() },
        ))
        .await
        .expect("fires page 1")
        .into_inner();
    assert_eq!(fires.fires.iter().map(|f| f.occurrence).collect::<Vec<_>>(), vec![1]);
    assert_eq!(fires.next_after_occurrence, 1);
    let rest = client
        .list_timer_fires(with_key(
            KEY_A,
            pb::TimerFiresRequest { timer_id: tick.id.clone(), after_occurrence: 1, ..Default::default() },
        ))
        .await
        .expect("fires page 2")
        .into_inner();
    assert_eq!(rest.fires.iter().map(|f| f.occurrence).collect::<Vec<_>>(), vec![2]);
    assert_eq!(rest.next_after_occurrence, 0);
    let done = client
        .get_timer(with_key(
            KEY_A,
            pb::TimerGetRequest { tenant_id: String::new(), timer_id: tick.id.clone() },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!((done.status, done.fired_count), (pb::TimerStatus::Fired as i32, 2));

    // Label filters on list.
    let labelled = pb::TimerScheduleRequest {
        name: "labelled".into(),
        duration: "5m".into(),
        labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        ..Default::default()
    };
    let labelled = client.schedule_timer(with_key(KEY_A, labelled)).await.expect("labelled").into_inner();
    let filter = pb::TimerListRequest {
        labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        ..Default::default()
    };
    let page = client.list_timers(with_key(KEY_A, filter)).await.expect("list by label").into_inner();
    assert_eq!(
        page.timers.into_iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![labelled.timer.expect("timer").id]
    );

    // The topic filter let nothing but the two fires through.
    assert!(stays_silent(&mut fires_only, Duration::from_millis(300)).await);

    node.stop().await;
}

/// A subscriber that falls behind is told so (DATA_LOSS) and its stream
/// ends; it never just misses events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_stream_ends_with_data_loss() {
    use minoots_proto as pb;
    let mut config = minoots_node::NodeConfig::new("node-1", 42);
    config.event_buffer = 4;
    let node = TestNode::start_with(config).await;
    let mut client = node.client().await;
    let mut events = client
        .stream_timer_events(with_key(KEY_A, pb::TimerEventStreamRequest::default()))
        .await
        .expect("stream")
        .into_inner();
    // One commit of 1,000 creates publishes 1,000 events in a burst.
    let item = |i: usize| pb::TimerScheduleRequest {
        name: format!("burst-{i}"),
        duration: "1h".into(),
        ..Default::default()
    };
    let batch = pb::TimerBatchScheduleRequest { timers: (0..1_000).map(item).collect() };
    client.schedule_timers(with_key(KEY_A, batch)).await.expect("batch");
    let mut delivered = 0;
    let status = loop {
        match tokio::time::timeout(PATIENCE, events.message()).await.expect("stream moves") {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("stream ended without an error after {delivered} events"),
            Err(status) => break status,
        }
    };
    assert!(delivered < 1_000);
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("resubscribe"), "{}", status.message());
    node.stop().await;
}

/// A client that stops reading fills only its own bounded queue: it is then
/// dropped with RESOURCE_EXHAUSTED after the events it was sent, while a
/// subscriber that keeps reading sees every event. A tenant holds at most
/// its limit of open streams; a dropped stream gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_dropped_and_streams_per_tenant_are_capped() {
    use minoots_proto as pb;
    let mut config = minoots_node::NodeConfig::new("node-1", 42);
    // Room for one batch's burst of events, not for twenty.
    config.stream_limits = minoots_node::subscription::StreamLimits { buffer_events: 100, per_tenant: 2 };
    let node = TestNode::start_with(config).await;
    let mut client = node.client().await;
    let open = |client: &mut minoots_proto::horology_kernel_client::HorologyKernelClient<_>| {
        let mut client = client.clone();
        async move { client.stream_timer_events(with_key(KEY_A, pb::TimerEventStreamRequest::default())).await }
    };
    let mut stalled = open(&mut client).await.expect("first stream").into_inner();
    let mut reader = open(&mut client).await.expect("second stream").into_inner();
    let third = open(&mut client).await;
    let status = expect_code(third, Code::ResourceExhausted);
    assert!(status.message().contains("2 open event streams"), "{}", status.message());
    // Tenant B has its own count.
    client
        .stream_timer_events(with_key(KEY_B, pb::TimerEventStreamRequest::default()))
        .await
        .expect("tenant B's stream");

    // 1,000 events of ~40 KB: far more than the HTTP/2 windows and the queue hold.
    let metadata_json = serde_json::json!({"blob": "x".repeat(40_000)}).to_string();
    let item = |i: usize| pb::TimerScheduleRequest {
        name: format!("burst-{i}"),
        duration: "1h".into(),
        metadata_json: metadata_json.clone(),
        ..Default::default()
    };
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0);
    let reading = tokio::spawn(async move {
        let mut received = 0;
        while received < 1_000 {
            match tokio::time::timeout(PATIENCE, reader.message()).await.expect("the reader's stream moves") {
                Ok(Some(_)) => received += 1,
                other => panic!("the reading subscriber's stream ended after {received}: {other:?}"),
            }
            progress_tx.send_replace(received);
        }
        received
    });
    for round in 0..20 {
        let batch = pb::TimerBatchScheduleRequest { timers: (0..50).map(|i| item(round * 50 + i)).collect() };
        client.schedule_timers(with_key(KEY_A, batch)).await.expect("batch");
        // The reader keeps up batch by batch; the stalled one never reads.
        let caught_up = progress.wait_for(|n| *n >= (round + 1) * 50);
        tokio::time::timeout(PATIENCE, caught_up).await.expect("the reader keeps up").expect("reader alive");
    }
    assert_eq!(reading.await.expect("reader"), 1_000);

    let mut delivered = 0;
    let status = loop {
        match tokio::time::timeout(PATIENCE, stalled.message()).await.expect("stalled stream ends") {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("stream ended without an error after {delivered} events"),
            Err(status) => break status,
        }
    };
    assert!(delivered < 1_000, "{delivered}");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("stopped reading"), "{}", status.message());
    let metrics = node.handle.metrics().encode();
    assert!(metrics.contains("minoots_event_streams_closed_total{reason=\"too_slow\"} 1"), "{metrics}");
    // The dropped stream gave its place back.
    drop(stalled);
    open(&mut client).await.expect("a stream in the freed place");
    node.stop().await;
}

/// A quota refusal is RESOURCE_EXHAUSTED naming the limit in metadata,
/// with a retry hint; the other tenant is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refusal_names_its_limit_type() {
    use minoots_proto as pb;
    let mut config = minoots_node::NodeConfig::new("node-1", 42);
    config.default_quotas = minoots_core::quota::QuotaLimits {
        daily_creates: Some(1),
        ..minoots_core::quota::QuotaLimits::default()
    };
    let node = TestNode::start_with(config).await;
    let mut client = node.client().await;
    let later = || pb::TimerScheduleRequest { duration: "1h".into(), ..Default::default() };
    client.schedule_timer(with_key(KEY_A, later())).await.expect("the first fits");
    let status = expect_code(client.schedule_timer(with_key(KEY_A, later())).await, Code::ResourceExhausted);
    assert_eq!(status.metadata().get("x-minoots-limit-type").and_then(|v| v.to_str().ok()), Some("daily"));
    assert!(status.metadata().get("retry-after-ms").is_some(), "{status:?}");
    client.schedule_timer(with_key(KEY_B, later())).await.expect("tenant B has its own count");
    node.stop().await;
}

/// The two message sets interoperate byte-for-byte: our messages decode as
/// MINOOTS's (extensions skipped as unknown fields) and MINOOTS's decode as ours.
#[test]
fn extended_and_contract_messages_interoperate() {
    use minoots_proto as pb;
    let ours = pb::Timer {
        id: "t1".into(),
        tenant_id: "tenant-a".into(),
        name: "n".into(),
        status: pb::TimerStatus::Fired as i32,
        fire_at_iso: "2030-01-01T00:00:00.000Z".into(),
        duration_ms: 42,
        labels: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        schedule_kind: "interval".into(),
        every_ms: 1_000,
        next_occurrence: 3,
        fired_count: 2,
        idempotency_key: "key".into(),
        ..Default::default()
    };
    let theirs = c::Timer::decode(ours.encode_to_vec().as_slice()).expect("contract decodes ours");
    assert_eq!(theirs.id, "t1");
    assert_eq!(theirs.status, c::TimerStatus::Fired as i32);
    assert_eq!(theirs.fire_at_iso, ours.fire_at_iso);
    assert_eq!(theirs.duration_ms, 42);
    assert_eq!(theirs.labels.get("k").map(String::as_str), Some("v"));

    let request = contract_schedule("x", 7);
    let decoded =
        pb::TimerScheduleRequest::decode(request.encode_to_vec().as_slice()).expect("ours decodes theirs");
    assert_eq!(decoded.schedule_time, Some(pb::timer_schedule_request::ScheduleTime::DurationMs(7)));
    assert_eq!(decoded.metadata_json, request.metadata_json);
    assert_eq!(decoded.every_ms, None);
    assert!(decoded.idempotency_key.is_empty());

    let event = pb::TimerEvent {
        event: Some(pb::timer_event::Event::Cancelled(pb::TimerCancelled {
            timer: Some(ours),
            reason: "r".into(),
        })),
        seq: 9,
        dedupe_key: "t1:3:cancelled".into(),
        ..Default::default()
    };
    let theirs = c::TimerEvent::decode(event.encode_to_vec().as_slice()).expect("contract decodes our event");
    match theirs.event {
        Some(c::timer_event::Event::Cancelled(x)) => {
            assert_eq!((x.reason.as_str(), x.timer.map(|t| t.id)), ("r", Some("t1".into())))
        }
        other => panic!("{other:?}"),
    }
}
