//! `minoots bench`: a load generator against a running server, the
//! measuring tool of DESIGN.md §9. It owns the whole measurement: scheduling
//! load (batches or single requests, over gRPC or REST — `--api` — at a
//! bounded concurrency and an optional target rate), watching the fires come
//! back on `StreamTimerEvents`, with `--webhook` receiving every timer's
//! webhook on a receiver of its own (`receiver`: due → receipt,
//! what a user of webhooks feels), and reading the server's memory (RSS from
//! `/proc/<pid>/status`, gauges from `/metrics`). Numbers only: it asserts
//! nothing unless `--strict` is given.
//!
//! How a run goes:
//! 1. Subscribe to `timer.fired` events of the key's tenant — before anything
//!    is scheduled, so no fire can be missed by subscribing late.
//! 2. Optionally preload N timers due far in the future (`--preload`, spread
//!    over `[horizon, 2 × horizon]` from now), to measure memory with many
//!    pending timers.
//! 3. Per mode (`batch`, `single`, or both one after the other): schedule
//!    `--timers` one-shot timers whose due times are spread uniformly over
//!    `--window`, starting `--lead` after the START of that schedule phase
//!    (timer i of N is due at `start + lead + i × window / N`). Anchoring on
//!    the start keeps the fire rate exactly N / window; if scheduling is
//!    slower than the lead, some timers are acknowledged after their due time
//!    (reported as `acked_after_due`; their lateness includes the schedule
//!    delay), so pick `--lead` or `--rate` to avoid that.
//! 4. Wait until every acknowledged timer fired, or until the last due time
//!    plus `--grace`; then count missing, duplicate and early fires.
//!
//! Every timer carries labels `bench-run=<random run id>` and
//! `bench-mode=<mode>`; only fired events carrying this run's id are counted,
//! so other clients' and earlier runs' timers do not disturb the numbers.
//! The bench deletes nothing and cancels nothing: its timers fire and stay in
//! the store as fired timers, and preloaded timers stay pending until they
//! fire after the horizon. Use a throwaway data directory for big runs.
//!
//! Server memory: RSS and peak RSS from `/proc/<pid>/status` (`--pid`), and
//! the gauges `minoots_due_index_entries` and `minoots_timers_pending` from
//! `--metrics-url`, sampled at the start, after each phase and at the end.
//! The server refreshes `minoots_timers_pending` only every few seconds, so
//! a sample may lag; the after-preload sample waits (≤ 15 s) for it.
//!
//! Latency is measured from the moment a request is sent (not from its
//! planned send time), with hdrhistogram at 3 significant digits.
//! Fire lateness comes two ways: as the server recorded it
//! (`fired_at_iso − due_at_iso`, millisecond resolution) and as received
//! (local wall clock at receipt − due time; the client and server are meant
//! to share one machine, hence one clock).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use minoots_core::time::format_wall_ms;
use minoots_proto::timer_v1::{
    TimerBatchScheduleRequest, TimerEvent, TimerEventStreamRequest, TimerScheduleRequest, timer_batch_result,
    timer_event, timer_schedule_request,
};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod measure;
mod receiver;

use crate::client::{
    ConnectArgs, KernelClient, code_name, error_chain, parse_duration_ms, parse_instant_ms, status_text,
};
use measure::{MODE_LABEL, Percentiles, RUN_LABEL, WallClock, lock, new_histogram, summarize_us};
use receiver::{Receiver, WebhookReport};

/// Re-subscriptions of the event stream before the bench gives up on it.
const STREAM_RESTARTS_MAX: u32 = 20;
/// Missing timer ids listed in the report.
const MISSING_SAMPLE_LEN: usize = 10;
/// Upper bounds of the options (keeps memory and run time bounded).
const TIMERS_MAX: u64 = 5_000_000;
const PRELOAD_MAX: u64 = 50_000_000;
/// How long the settled RSS after a preload is watched for.
const RSS_SETTLE_MS: u64 = 5_000;

/// Which API the schedule requests use (fires are always watched on the gRPC event stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// `ScheduleTimers` / `ScheduleTimer` over gRPC.
    Grpc,
    /// `POST /api/timers/batch` / `POST /api/timers` over REST (`--rest-url`).
    Rest,
}

/// How the timers are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `ScheduleTimers` batches of `--batch-size`, `--batch-concurrency` in flight.
    Batch,
    /// One `ScheduleTimer` per timer, `--concurrency` in flight.
    Single,
    /// `batch`, then `single` (each with `--timers` timers and its own window).
    Both,
}

/// `minoots bench`
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Timers to schedule and watch fire, per mode (0 = only the preload).
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(0..=TIMERS_MAX))]
    pub timers: u64,
    /// How to schedule them.
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    pub mode: Mode,
    /// Which API schedules them.
    #[arg(long, value_enum, default_value_t = Api::Grpc)]
    pub api: Api,
    /// The REST API's base URL (`--api rest`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4000")]
    pub rest_url: String,
    /// Timers per `ScheduleTimers` request (batch mode and preload).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: u64,
    /// `ScheduleTimer` requests in flight (single mode).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
    /// `ScheduleTimers` requests in flight (batch mode and preload).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub batch_concurrency: u64,
    /// HTTP/2 connections the schedule requests are spread over (the event stream has its own).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub channels: u64,
    /// Target schedules per second (0 = as fast as possible).
    #[arg(long = "rate", value_name = "PER_SECOND", default_value_t = 0)]
    pub rate_per_s: u64,
    /// Due times are spread uniformly over this window (N timers → N / window fires per second).
    #[arg(long = "window", value_name = "DURATION", default_value = "20s", value_parser = parse_duration_ms)]
    pub window_ms: u64,
    /// The window starts this long after the schedule phase starts.
    #[arg(long = "lead", value_name = "DURATION", default_value = "2s", value_parser = parse_duration_ms)]
    pub lead_ms: u64,
    /// How long to wait for fires after the last due time before counting the rest missing.
    #[arg(long = "grace", value_name = "DURATION", default_value = "10s", value_parser = parse_duration_ms)]
    pub grace_ms: u64,
    /// The server's process id, to read its RSS (VmRSS, VmHWM) from /proc/<pid>/status.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The server's Prometheus endpoint (plain http), for minoots_due_index_entries and minoots_timers_pending.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    /// First schedule this many timers due far in the future (never firing during the run), to measure memory.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=PRELOAD_MAX))]
    pub preload: u64,
    /// Preloaded timers are due between this horizon and twice it from now.
    #[arg(long = "preload-horizon", value_name = "DURATION", default_value = "1h", value_parser = parse_duration_ms)]
    pub preload_horizon_ms: u64,
    /// Give every timer a webhook action to a receiver the bench runs (loopback, a free port) and report
    /// due → webhook receipt beside the fire record. The server must allow loopback webhook URLs.
    #[arg(long)]
    pub webhook: bool,
    /// With `--webhook`: the receiver answers 503 for this long from the middle of each phase's window
    /// (a receiver outage); the server retries those deliveries and the report shows what it cost.
    #[arg(long = "webhook-outage", value_name = "DURATION", default_value = "0ms", value_parser = parse_duration_ms)]
    pub webhook_outage_ms: u64,
    /// Exit non-zero when a fire is missing, duplicated, early or unexpected.
    #[arg(long)]
    pub strict: bool,
    /// Print one JSON document instead of the summary table.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

/// Offset of timer `index` of `count` in a window of `window_ms`: `index × window / count`
/// (uniform; the first at 0, the last one step before the window's end).
fn due_offset_ms(index: u64, count: u64, window_ms: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    let offset = u128::from(index) * u128::from(window_ms) / u128::from(count);
    u64::try_from(offset).unwrap_or(u64::MAX)
}

/// Due time (UTC ms) of timer `index`: phase start + lead + its offset in the window.
fn due_at_ms(start_wall_ms: i64, lead_ms: u64, index: u64, count: u64, window_ms: u64) -> i64 {
    let after_ms = lead_ms.saturating_add(due_offset_ms(index, count, window_ms));
    start_wall_ms.saturating_add(i64::try_from(after_ms).unwrap_or(i64::MAX))
}

/// `(VmRSS, VmHWM)` in kB from the text of `/proc/<pid>/status`.
fn parse_proc_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The value of an unlabelled (or summed over labels) metric in Prometheus text format.
fn parse_metric(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        // `name 12`, `name{a="b"} 12`, but not `name_total 12`.
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value_text = match rest.rfind('}') {
            Some(end) => &rest[end + 1..],
            None => rest,
        };
        // A timestamp may follow the value: take the first token.
        if let Some(value) = value_text.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

// ---------------------------------------------------------------------------
// Fire collection (event stream)
// ---------------------------------------------------------------------------

/// Fires seen for one phase.
struct PhaseFires {
    seen: HashSet<(String, u32)>,
    duplicates: u64,
    early: u64,
    received_before_due: u64,
    server_lateness_us: Histogram<u64>,
    receive_lateness_us: Histogram<u64>,
}

impl PhaseFires {
    fn new() -> Self {
        Self {
            seen: HashSet::new(),
            duplicates: 0,
            early: 0,
            received_before_due: 0,
            server_lateness_us: new_histogram(),
            receive_lateness_us: new_histogram(),
        }
    }
}

/// What the event-stream task records, shared with the phases.
struct Collector {
    run_id: String,
    phases: Mutex<HashMap<String, PhaseFires>>,
    restarts: AtomicU64,
    malformed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Collector {
    fn new(run_id: String) -> Self {
        Self {
            run_id,
            phases: Mutex::new(HashMap::new()),
            restarts: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Starts counting fires of timers labelled `bench-mode=<mode>`.
    fn register(&self, mode: &str) {
        lock(&self.phases).insert(mode.to_owned(), PhaseFires::new());
    }

    /// Stops counting a phase and returns what it saw.
    fn take(&self, mode: &str) -> PhaseFires {
        lock(&self.phases).remove(mode).unwrap_or_else(PhaseFires::new)
    }

    /// Distinct fires seen so far for a phase.
    fn unique(&self, mode: &str) -> u64 {
        lock(&self.phases).get(mode).map_or(0, |p| p.seen.len() as u64)
    }

    fn note_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    /// Records one event received at `received_us` (local wall clock).
    fn record(&self, event: &TimerEvent, received_us: i64) {
        let Some(timer_event::Event::Fired(fired)) = &event.event else { return };
        let Some(timer) = &fired.timer else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if timer.labels.get(RUN_LABEL) != Some(&self.run_id) {
            return;
        }
        let Some(mode) = timer.labels.get(MODE_LABEL) else { return };
        let (Ok(due_ms), Ok(fired_ms)) =
            (parse_instant_ms(&fired.due_at_iso), parse_instant_ms(&fired.fired_at_iso))
        else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut phases = lock(&self.phases);
        let Some(phase) = phases.get_mut(mode) else { return };
        if !phase.seen.insert((timer.id.clone(), fired.occurrence)) {
            phase.duplicates += 1;
            return;
        }
        let server_ms = fired_ms - due_ms;
        if server_ms < 0 {
            phase.early += 1;
        }
        phase.server_lateness_us.saturating_record(u64::try_from(server_ms.max(0)).unwrap_or(0) * 1000);
        let receive_us = received_us - due_ms.saturating_mul(1000);
        if receive_us < 0 {
            phase.received_before_due += 1;
        }
        phase.receive_lateness_us.saturating_record(u64::try_from(receive_us.max(0)).unwrap_or(0));
    }
}

async fn subscribe(client: &mut KernelClient) -> Result<tonic::Streaming<TimerEvent>, tonic::Status> {
    let request =
        TimerEventStreamRequest { tenant_id: String::new(), topics: vec!["timer.fired".to_owned()] };
    client.stream_timer_events(request).await.map(tonic::Response::into_inner)
}

/// Reads the event stream into the collector; re-subscribes (bounded) when
/// the server ends it or reports DATA_LOSS. Fires published while
/// re-subscribing are lost to the bench (the report shows the restarts).
async fn read_events(
    mut client: KernelClient,
    first: tonic::Streaming<TimerEvent>,
    collector: Arc<Collector>,
    clock: WallClock,
) {
    let mut next = Some(first);
    for attempt in 0..=STREAM_RESTARTS_MAX {
        if attempt > 0 {
            collector.restarts.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut stream = match next.take() {
            Some(stream) => stream,
            None => match subscribe(&mut client).await {
                Ok(stream) => stream,
                Err(status) => {
                    collector.note_error(format!("resubscribing: {}", status_text(&status)));
                    continue;
                }
            },
        };
        // Ends when the server ends the stream or the task is aborted.
        loop {
            match stream.message().await {
                Ok(Some(event)) => collector.record(&event, clock.now_us()),
                Ok(None) => {
                    collector.note_error("the server closed the event stream".to_owned());
                    break;
                }
                Err(status) => {
                    collector.note_error(status_text(&status));
                    break;
                }
            }
        }
    }
    collector.note_error(format!("gave up on the event stream after {STREAM_RESTARTS_MAX} restarts"));
}

// ---------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------

/// How requests are sent.
#[derive(Debug, Clone, Copy)]
enum Sender {
    Batch { size: u64, in_flight: u64 },
    Single { in_flight: u64 },
}

/// One schedule phase.
struct Plan {
    sender: Sender,
    timers: u64,
    rate_per_s: u64,
    labels: BTreeMap<String, String>,
    /// Timer i is due at start + lead + i × window / timers.
    lead_ms: u64,
    window_ms: u64,
    /// Keep acknowledged ids (to find missing fires).
    keep_ids: bool,
    /// The action bundle every timer carries (`--webhook`), as JSON.
    action_bundle: Option<String>,
}

/// Shared by the workers of one phase.
struct PhaseCtx {
    plan: Plan,
    clock: WallClock,
    start: Instant,
    start_wall_ms: i64,
    next: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
}

impl PhaseCtx {
    fn due_ms(&self, index: u64) -> i64 {
        due_at_ms(self.start_wall_ms, self.plan.lead_ms, index, self.plan.timers, self.plan.window_ms)
    }
}

/// What a worker (and, merged, a phase) observed.
struct Outcome {
    acked: u64,
    requests_ok: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    ack_us: Histogram<u64>,
    acked_after_due: u64,
    ids: HashMap<String, i64>,
    elapsed: Duration,
}

impl Outcome {
    fn new() -> Self {
        Self {
            acked: 0,
            requests_ok: 0,
            errors: BTreeMap::new(),
            first_error: None,
            ack_us: new_histogram(),
            acked_after_due: 0,
            ids: HashMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn ok(&mut self, ctx: &PhaseCtx, id: String, due_ms: i64, acked_wall_ms: i64) {
        self.acked += 1;
        if acked_wall_ms > due_ms {
            self.acked_after_due += 1;
        }
        if ctx.plan.keep_ids {
            self.ids.insert(id, due_ms);
        }
        ctx.acked.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&mut self, ctx: &PhaseCtx, code: &str, count: u64, message: impl FnOnce() -> String) {
        *self.errors.entry(code.to_owned()).or_default() += count;
        if self.first_error.is_none() {
            self.first_error = Some(message());
        }
        ctx.failed.fetch_add(count, Ordering::Relaxed);
    }

    fn merge(&mut self, other: Outcome) -> Result<(), Box<dyn Error>> {
        self.acked += other.acked;
        self.requests_ok += other.requests_ok;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.ack_us.add(&other.ack_us).map_err(|e| format!("merging histograms: {e:?}"))?;
        self.acked_after_due += other.acked_after_due;
        self.ids.extend(other.ids);
        Ok(())
    }
}

/// The request for one bench timer of `plan`.
fn bench_request(due_ms: i64, plan: &Plan) -> TimerScheduleRequest {
    TimerScheduleRequest {
        requested_by: "minoots-bench".to_owned(),
        schedule_time: Some(timer_schedule_request::ScheduleTime::FireTimeIso(format_wall_ms(due_ms))),
        labels: plan.labels.clone(),
        action_bundle_json: plan.action_bundle.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// Waits for the planned send time of item `index` at `rate_per_s` (no wait at rate 0).
async fn pace(start: Instant, index: u64, rate_per_s: u64) {
    if rate_per_s == 0 {
        return;
    }
    let at = start + Duration::from_secs_f64(index as f64 / rate_per_s as f64);
    tokio::time::sleep_until(at).await;
}

/// One item's answer: the timer id, or an error code and message.
type ItemResult = Result<String, (String, String)>;

/// Where schedule requests go: the gRPC API or the REST API.
#[derive(Clone)]
enum Scheduler {
    Grpc(KernelClient),
    Rest { http: reqwest::Client, base: String, api_key: String },
}

impl Scheduler {
    /// Schedules one batch; `Err` when the whole request failed.
    async fn batch(&mut self, dues: &[i64], plan: &Plan) -> Result<Vec<ItemResult>, (String, String)> {
        match self {
            Scheduler::Grpc(client) => {
                let request = TimerBatchScheduleRequest {
                    timers: dues.iter().map(|&due| bench_request(due, plan)).collect(),
                };
                let reply = client.schedule_timers(request).await.map_err(|status| {
                    (code_name(status.code()).to_owned(), format!("ScheduleTimers: {}", status_text(&status)))
                })?;
                Ok(reply
                    .into_inner()
                    .results
                    .into_iter()
                    .map(|item| match item.result {
                        Some(timer_batch_result::Result::Timer(timer)) => Ok(timer.id),
                        Some(timer_batch_result::Result::Error(e)) => Err((
                            e.code.clone(),
                            format!("ScheduleTimers item: {}: {} (field: {})", e.code, e.message, e.field),
                        )),
                        None => {
                            Err(("EMPTY_RESULT".to_owned(), "ScheduleTimers: an empty result".to_owned()))
                        }
                    })
                    .collect())
            }
            Scheduler::Rest { http, base, api_key } => {
                let timers: Vec<serde_json::Value> = dues.iter().map(|&due| rest_body(due, plan)).collect();
                let url = format!("{base}/api/timers/batch");
                let body = serde_json::json!({ "timers": timers });
                let answer = rest_post(http, &url, api_key, &body).await?;
                let results = answer["results"].as_array().cloned().unwrap_or_default();
                Ok(results
                    .iter()
                    .map(|item| match item["timer"]["id"].as_str() {
                        Some(id) => Ok(id.to_owned()),
                        None => Err(rest_error(&item["error"], "POST /api/timers/batch item")),
                    })
                    .collect())
            }
        }
    }

    /// Schedules one timer.
    async fn one(&mut self, due: i64, plan: &Plan) -> ItemResult {
        match self {
            Scheduler::Grpc(client) => match client.schedule_timer(bench_request(due, plan)).await {
                Ok(reply) => reply.into_inner().timer.map(|t| t.id).ok_or_else(|| {
                    ("EMPTY_RESULT".to_owned(), "ScheduleTimer: a reply without a timer".to_owned())
                }),
                Err(status) => Err((
                    code_name(status.code()).to_owned(),
                    format!("ScheduleTimer: {}", status_text(&status)),
                )),
            },
            Scheduler::Rest { http, base, api_key } => {
                let url = format!("{base}/api/timers");
                let answer = rest_post(http, &url, api_key, &rest_body(due, plan)).await?;
                answer["id"].as_str().map(str::to_owned).ok_or_else(|| {
                    ("EMPTY_RESULT".to_owned(), "POST /api/timers: an answer without an id".to_owned())
                })
            }
        }
    }
}

/// The REST body for one bench timer of `plan`.
fn rest_body(due_ms: i64, plan: &Plan) -> serde_json::Value {
    let mut body = serde_json::json!({
        "fireAt": format_wall_ms(due_ms),
        "requestedBy": "minoots-bench",
        "labels": plan.labels,
    });
    if let Some(bundle) = &plan.action_bundle {
        body["actionBundle"] = serde_json::from_str(bundle).unwrap_or_default();
    }
    body
}

/// POSTs JSON; the answer's JSON on 2xx, else `(code, message)`.
async fn rest_post(
    http: &reqwest::Client,
    url: &str,
    api_key: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, (String, String)> {
    let response = http
        .post(url)
        .header("x-api-key", api_key)
        .json(body)
        .send()
        .await
        .map_err(|e| ("TRANSPORT".to_owned(), format!("POST {url}: {}", error_chain(&e))))?;
    let status = response.status();
    let answer: serde_json::Value = response
        .json()
        .await
        .map_err(|e| ("BAD_ANSWER".to_owned(), format!("POST {url}: {}", error_chain(&e))))?;
    if status.is_success() {
        Ok(answer)
    } else {
        Err(rest_error(&answer["error"], &format!("POST {url} ({status})")))
    }
}

/// `(code, message)` of a REST error object.
fn rest_error(error: &serde_json::Value, context: &str) -> (String, String) {
    let code = error["code"].as_str().unwrap_or("UNKNOWN").to_owned();
    let message = format!(
        "{context}: {}: {} (field: {})",
        code,
        error["message"].as_str().unwrap_or(""),
        error["field"].as_str().unwrap_or("")
    );
    (code, message)
}

async fn batch_worker(mut scheduler: Scheduler, ctx: Arc<PhaseCtx>, size: u64) -> Outcome {
    let mut out = Outcome::new();
    let batches = ctx.plan.timers.div_ceil(size);
    // Bounded: each turn claims a batch index; at most `batches` turns overall.
    loop {
        let batch = ctx.next.fetch_add(1, Ordering::Relaxed);
        if batch >= batches {
            return out;
        }
        let first = batch * size;
        let end = ctx.plan.timers.min(first + size);
        pace(ctx.start, first, ctx.plan.rate_per_s).await;
        let dues: Vec<i64> = (first..end).map(|i| ctx.due_ms(i)).collect();
        let sent = Instant::now();
        let reply = scheduler.batch(&dues, &ctx.plan).await;
        let ack_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        let acked_wall_ms = ctx.clock.now_ms();
        let count = end - first;
        match reply {
            Ok(results) => {
                out.requests_ok += 1;
                out.ack_us.saturating_record(ack_us);
                let missing = count.saturating_sub(results.len() as u64);
                if missing > 0 {
                    out.error(&ctx, "SHORT_REPLY", missing, || {
                        format!("a batch answered {} of {count} timers", results.len())
                    });
                }
                for (due, item) in dues.iter().zip(results) {
                    match item {
                        Ok(id) => out.ok(&ctx, id, *due, acked_wall_ms),
                        Err((code, message)) => out.error(&ctx, &code, 1, || message),
                    }
                }
            }
            Err((code, message)) => out.error(&ctx, &code, count, || message),
        }
    }
}

async fn single_worker(mut scheduler: Scheduler, ctx: Arc<PhaseCtx>) -> Outcome {
    let mut out = Outcome::new();
    // Bounded: each turn claims one timer index; at most `timers` turns overall.
    loop {
        let index = ctx.next.fetch_add(1, Ordering::Relaxed);
        if index >= ctx.plan.timers {
            return out;
        }
        pace(ctx.start, index, ctx.plan.rate_per_s).await;
        let due = ctx.due_ms(index);
        let sent = Instant::now();
        let reply = scheduler.one(due, &ctx.plan).await;
        let ack_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        match reply {
            Ok(id) => {
                out.requests_ok += 1;
                out.ack_us.saturating_record(ack_us);
                out.ok(&ctx, id, due, ctx.clock.now_ms());
            }
            Err((code, message)) => out.error(&ctx, &code, 1, || message),
        }
    }
}

/// Prints a progress line to stderr every second until aborted.
fn spawn_progress(label: String, ctx: Arc<PhaseCtx>, fires: Option<Arc<Collector>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        // Ends when the phase aborts this task.
        loop {
            tick.tick().await;
            let total = ctx.plan.timers;
            let mut line = format!(
                "bench {label}: {:>5.1}s  scheduled {}/{total}",
                ctx.start.elapsed().as_secs_f64(),
                ctx.acked.load(Ordering::Relaxed)
            );
            let failed = ctx.failed.load(Ordering::Relaxed);
            if failed > 0 {
                line.push_str(&format!(" ({failed} failed)"));
            }
            if let Some(collector) = &fires {
                line.push_str(&format!("  fired {}", collector.unique(&label)));
            }
            eprintln!("{line}");
        }
    })
}

/// The shared state of a phase that starts now.
fn new_ctx(plan: Plan, clock: WallClock) -> Arc<PhaseCtx> {
    Arc::new(PhaseCtx {
        plan,
        clock,
        start: Instant::now(),
        start_wall_ms: clock.now_ms(),
        next: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    })
}

async fn run_workers(ctx: Arc<PhaseCtx>, clients: &[Scheduler]) -> Result<Outcome, Box<dyn Error>> {
    if clients.is_empty() {
        return Err("no connection to schedule over".into());
    }
    let (workers, batch_size) = match ctx.plan.sender {
        Sender::Batch { size, in_flight } => (in_flight.min(ctx.plan.timers.div_ceil(size)), Some(size)),
        Sender::Single { in_flight } => (in_flight.min(ctx.plan.timers), None),
    };
    let mut handles = Vec::new();
    for w in 0..workers {
        let client = clients[(w as usize) % clients.len()].clone();
        let ctx = ctx.clone();
        handles.push(match batch_size {
            Some(size) => tokio::spawn(batch_worker(client, ctx, size)),
            None => tokio::spawn(single_worker(client, ctx)),
        });
    }
    let mut total = Outcome::new();
    for handle in handles {
        total.merge(handle.await.map_err(|e| format!("a schedule worker failed: {e}"))?)?;
    }
    total.elapsed = ctx.start.elapsed();
    Ok(total)
}

// ---------------------------------------------------------------------------
// Server memory
// ---------------------------------------------------------------------------

/// Reads the server's memory: RSS from /proc and gauges from /metrics.
struct Probe {
    pid: Option<u32>,
    metrics: Option<(reqwest::Client, String)>,
}

/// The server's memory at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When (`start`, `after preload`, `after batch schedule`, …).
    pub at: String,
    /// Resident set size.
    pub rss_kb: Option<u64>,
    /// Peak resident set size so far.
    pub hwm_kb: Option<u64>,
    /// `minoots_due_index_entries`.
    pub due_index_entries: Option<f64>,
    /// `minoots_timers_pending`.
    pub timers_pending: Option<f64>,
}

impl Probe {
    fn new(pid: Option<u32>, metrics_url: Option<String>) -> Result<Self, Box<dyn Error>> {
        if let Some(pid) = pid {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map_err(|e| format!("--pid {pid}: cannot read /proc/{pid}/status: {e}"))?;
        }
        let metrics = match metrics_url {
            None => None,
            Some(url) => {
                if !url.starts_with("http://") {
                    return Err(format!("--metrics-url {url}: only plain http:// is supported").into());
                }
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .map_err(|e| format!("HTTP client: {e}"))?;
                Some((client, url))
            }
        };
        Ok(Self { pid, metrics })
    }

    /// The server's (VmRSS, VmHWM) in KiB, when `--pid` names it.
    fn memory_kb(&self) -> (Option<u64>, Option<u64>) {
        match self.pid {
            Some(pid) => std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|text| parse_proc_status(&text))
                .unwrap_or((None, None)),
            None => (None, None),
        }
    }

    async fn sample(&self, at: &str) -> Sample {
        let (rss_kb, hwm_kb) = self.memory_kb();
        let (due_index_entries, timers_pending) = match &self.metrics {
            Some((client, url)) => match fetch_text(client, url).await {
                Ok(text) => (
                    parse_metric(&text, "minoots_due_index_entries"),
                    parse_metric(&text, "minoots_timers_pending"),
                ),
                Err(e) => {
                    eprintln!("bench: metrics unreachable at {url}: {e}");
                    (None, None)
                }
            },
            None => (None, None),
        };
        Sample { at: at.to_owned(), rss_kb, hwm_kb, due_index_entries, timers_pending }
    }

    /// The lowest RSS read every 500 ms over [`RSS_SETTLE_MS`]: what the
    /// server holds once its allocator has returned what a burst left
    /// (it frees with a delay, so a reading right after a burst counts
    /// memory no longer in use).
    async fn settled_rss_kb(&self) -> Option<u64> {
        self.pid?;
        let mut lowest = self.memory_kb().0;
        for _ in 0..RSS_SETTLE_MS / 500 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            lowest = match (lowest, self.memory_kb().0) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        lowest
    }

    /// A sample once `minoots_timers_pending` (refreshed by the server every
    /// few seconds) has caught up with `pending_at_least`, or after 15 s.
    async fn settled_sample(&self, at: &str, pending_at_least: u64) -> Sample {
        let deadline = Instant::now() + Duration::from_secs(15);
        // Bounded by the deadline.
        loop {
            let sample = self.sample(at).await;
            let caught_up = sample.timers_pending.is_none_or(|p| p >= pending_at_least as f64);
            if caught_up || Instant::now() >= deadline {
                return sample;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn fetch_text(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client.get(url).send().await.map_err(|e| crate::client::error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// The options a run used.
#[derive(Debug, Serialize)]
struct ConfigReport {
    timers: u64,
    mode: &'static str,
    api: &'static str,
    webhook: bool,
    webhook_outage_ms: u64,
    batch_size: u64,
    concurrency: u64,
    batch_concurrency: u64,
    channels: u64,
    rate_per_s: u64,
    window_ms: u64,
    lead_ms: u64,
    grace_ms: u64,
    /// Due times count from the start of each schedule phase.
    due_anchor: &'static str,
    preload: u64,
    preload_horizon_ms: u64,
}

/// Schedule numbers of a phase.
#[derive(Debug, Serialize)]
struct ScheduleReport {
    requested: u64,
    scheduled: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    schedule_s: f64,
    schedules_per_s: f64,
    /// `batch` (one ScheduleTimers call) or `request` (one ScheduleTimer call).
    ack_unit: &'static str,
    ack_latency_ms: Option<Percentiles>,
}

impl ScheduleReport {
    fn new(requested: u64, outcome: &Outcome, ack_unit: &'static str) -> Self {
        let schedule_s = outcome.elapsed.as_secs_f64();
        Self {
            requested,
            scheduled: outcome.acked,
            errors: outcome.errors.clone(),
            first_error: outcome.first_error.clone(),
            schedule_s,
            schedules_per_s: if schedule_s > 0.0 { outcome.acked as f64 / schedule_s } else { 0.0 },
            ack_unit,
            ack_latency_ms: summarize_us(&outcome.ack_us),
        }
    }
}

/// One measured phase.
#[derive(Debug, Serialize)]
struct PhaseReport {
    mode: &'static str,
    schedule: ScheduleReport,
    /// Timers acknowledged only after their due time (their lateness includes scheduling).
    acked_after_due: u64,
    target_fires_per_s: f64,
    fires_expected: u64,
    fires_received: u64,
    duplicates: u64,
    missing: u64,
    missing_sample: Vec<String>,
    /// Fires of this run for timers the bench never saw acknowledged.
    unexpected_fires: u64,
    /// Recorded before their due time (a broken promise).
    early_fires: u64,
    received_before_due: u64,
    /// Server-recorded lateness: fired_at − due_at.
    fire_lateness_ms: Option<Percentiles>,
    /// Lateness at receipt: local clock at receipt − due_at.
    receive_lateness_ms: Option<Percentiles>,
    /// Webhook deliveries to the bench's receiver (`--webhook`).
    webhooks: Option<WebhookReport>,
    wait_s: f64,
}

/// The preload phase.
#[derive(Debug, Serialize)]
struct PreloadReport {
    schedule: ScheduleReport,
    horizon_ms: u64,
    rss_before_kb: Option<u64>,
    rss_after_kb: Option<u64>,
    /// (RSS after − RSS before) / timers scheduled.
    rss_bytes_per_timer: Option<f64>,
    /// The lowest RSS over the [`RSS_SETTLE_MS`] after that.
    rss_settled_kb: Option<u64>,
    /// (RSS settled − RSS before) / timers scheduled.
    rss_settled_bytes_per_timer: Option<f64>,
    due_index_entries: Option<f64>,
    timers_pending: Option<f64>,
}

/// The event stream's health.
#[derive(Debug, Serialize)]
struct StreamReport {
    restarts: u64,
    malformed_events: u64,
    last_error: Option<String>,
}

/// The whole run.
#[derive(Debug, Serialize)]
struct Report {
    run_id: String,
    server: String,
    config: ConfigReport,
    preload: Option<PreloadReport>,
    phases: Vec<PhaseReport>,
    samples: Vec<Sample>,
    event_stream: Option<StreamReport>,
}

// ---------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Batch => "batch",
        Mode::Single => "single",
        Mode::Both => "both",
    }
}

/// Runs the bench.
pub async fn run(args: BenchArgs) -> Result<(), Box<dyn Error>> {
    if args.timers == 0 && args.preload == 0 {
        return Err("nothing to do: --timers 0 and no --preload".into());
    }
    if args.timers > 0 && args.window_ms == 0 {
        return Err("--window must be at least 1 ms".into());
    }
    if args.preload > 0 && args.preload_horizon_ms == 0 {
        return Err("--preload-horizon must be at least 1 ms".into());
    }
    let probe = Probe::new(args.pid, args.metrics_url.clone())?;
    let clock = WallClock::new();
    let run_id = format!("{:016x}", rand::random::<u64>());

    let mut clients = Vec::new();
    for _ in 0..args.channels {
        clients.push(match args.api {
            Api::Grpc => Scheduler::Grpc(args.connect.connect().await?),
            Api::Rest => Scheduler::Rest {
                http: reqwest::Client::builder().pool_max_idle_per_host(64).build()?,
                base: args.rest_url.trim_end_matches('/').to_owned(),
                api_key: args.connect.api_key.clone(),
            },
        });
    }
    let mut samples = vec![probe.sample("start").await];
    eprintln!("bench: run {run_id} against {}", args.connect.server_url());

    // Subscribe before scheduling anything, on a connection of its own.
    let collector = Arc::new(Collector::new(run_id.clone()));
    let mut stream_task = None;
    if args.timers > 0 {
        let mut stream_client = args.connect.connect().await?;
        let stream = subscribe(&mut stream_client)
            .await
            .map_err(|s| format!("subscribing to timer.fired events: {}", status_text(&s)))?;
        stream_task = Some(tokio::spawn(read_events(stream_client, stream, collector.clone(), clock)));
    }

    let receiver = if args.webhook && args.timers > 0 {
        let receiver = Receiver::start(&run_id, clock).await?;
        eprintln!("bench: webhooks go to {}", receiver.action_bundle());
        Some(receiver)
    } else {
        None
    };

    let mut preload = None;
    if args.preload > 0 {
        let before = samples.last().and_then(|s| s.rss_kb);
        let plan = Plan {
            sender: Sender::Batch { size: args.batch_size, in_flight: args.batch_concurrency },
            timers: args.preload,
            rate_per_s: 0,
            labels: labels(&run_id, "preload"),
            lead_ms: args.preload_horizon_ms,
            window_ms: args.preload_horizon_ms,
            keep_ids: false,
            action_bundle: None,
        };
        eprintln!("bench: preloading {} timers due in {} ms or later", args.preload, args.preload_horizon_ms);
        let outcome = schedule_with_progress(plan, &clients, clock, "preload").await?;
        let sample = probe.settled_sample("after preload", outcome.acked).await;
        let rss_settled_kb = probe.settled_rss_kb().await;
        let per_timer = |after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) if outcome.acked > 0 => {
                Some((a as f64 - b as f64) * 1024.0 / outcome.acked as f64)
            }
            _ => None,
        };
        preload = Some(PreloadReport {
            schedule: ScheduleReport::new(args.preload, &outcome, "batch"),
            horizon_ms: args.preload_horizon_ms,
            rss_before_kb: before,
            rss_after_kb: sample.rss_kb,
            rss_bytes_per_timer: per_timer(sample.rss_kb),
            rss_settled_kb,
            rss_settled_bytes_per_timer: per_timer(rss_settled_kb),
            due_index_entries: sample.due_index_entries,
            timers_pending: sample.timers_pending,
        });
        samples.push(sample);
    }

    let modes: &[Mode] = match (args.timers, args.mode) {
        (0, _) => &[],
        (_, Mode::Both) => &[Mode::Batch, Mode::Single],
        (_, Mode::Batch) => &[Mode::Batch],
        (_, Mode::Single) => &[Mode::Single],
    };
    let mut phases = Vec::new();
    for &mode in modes {
        let watch = Watch { fires: &collector, webhooks: receiver.as_ref() };
        phases.push(measure(&args, mode, &run_id, &clients, clock, watch, &probe, &mut samples).await?);
    }

    let event_stream = stream_task.map(|task| {
        task.abort();
        StreamReport {
            restarts: collector.restarts.load(Ordering::Relaxed),
            malformed_events: collector.malformed.load(Ordering::Relaxed),
            last_error: lock(&collector.last_error).clone(),
        }
    });
    if args.timers > 0 || args.preload > 0 {
        samples.push(probe.sample("end").await);
    }
    let report = Report {
        run_id,
        server: args.connect.server_url(),
        config: ConfigReport {
            timers: args.timers,
            mode: mode_name(args.mode),
            api: match args.api {
                Api::Grpc => "grpc",
                Api::Rest => "rest",
            },
            webhook: args.webhook,
            webhook_outage_ms: args.webhook_outage_ms,
            batch_size: args.batch_size,
            concurrency: args.concurrency,
            batch_concurrency: args.batch_concurrency,
            channels: args.channels,
            rate_per_s: args.rate_per_s,
            window_ms: args.window_ms,
            lead_ms: args.lead_ms,
            grace_ms: args.grace_ms,
            due_anchor: "schedule_phase_start",
            preload: args.preload,
            preload_horizon_ms: args.preload_horizon_ms,
        },
        preload,
        phases,
        samples,
        event_stream,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_summary(&report));
    }
    let violations: u64 = report
        .phases
        .iter()
        .map(|p| {
            p.missing
                + p.duplicates
                + p.early_fires
                + p.unexpected_fires
                + p.webhooks.as_ref().map_or(0, |w| w.missing + w.received_before_due)
        })
        .sum();
    if violations > 0 {
        eprintln!(
            "bench: WARNING: {violations} missing, duplicate, early or unexpected fires (see the report)"
        );
        if args.strict {
            return Err("--strict: fires were missing, duplicated, early or unexpected".into());
        }
    }
    Ok(())
}

fn labels(run_id: &str, mode: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(RUN_LABEL.to_owned(), run_id.to_owned()), (MODE_LABEL.to_owned(), mode.to_owned())])
}

/// Schedules a plan's timers over `clients` with progress lines; returns the merged outcome.
async fn schedule_with_progress(
    plan: Plan,
    clients: &[Scheduler],
    clock: WallClock,
    label: &str,
) -> Result<Outcome, Box<dyn Error>> {
    let ctx = new_ctx(plan, clock);
    let progress = spawn_progress(label.to_owned(), ctx.clone(), None);
    let outcome = run_workers(ctx, clients).await;
    progress.abort();
    outcome
}

/// What a phase watches arrive: fires on the event stream, and webhooks.
#[derive(Clone, Copy)]
struct Watch<'a> {
    fires: &'a Arc<Collector>,
    webhooks: Option<&'a Receiver>,
}

/// One measured phase: schedule, wait for the fires (and webhooks), count.
#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &BenchArgs,
    mode: Mode,
    run_id: &str,
    clients: &[Scheduler],
    clock: WallClock,
    watch: Watch<'_>,
    probe: &Probe,
    samples: &mut Vec<Sample>,
) -> Result<PhaseReport, Box<dyn Error>> {
    let collector = watch.fires;
    let name = mode_name(mode);
    let (sender, ack_unit) = match mode {
        Mode::Single => (Sender::Single { in_flight: args.concurrency }, "request"),
        Mode::Batch | Mode::Both => {
            (Sender::Batch { size: args.batch_size, in_flight: args.batch_concurrency }, "batch")
        }
    };
    collector.register(name);
    if let Some(receiver) = watch.webhooks {
        receiver.register(name);
    }
    let plan = Plan {
        sender,
        timers: args.timers,
        rate_per_s: args.rate_per_s,
        labels: labels(run_id, name),
        lead_ms: args.lead_ms,
        window_ms: args.window_ms,
        keep_ids: true,
        action_bundle: watch.webhooks.map(Receiver::action_bundle),
    };
    eprintln!(
        "bench {name}: scheduling {} timers due over {} ms from +{} ms ({:.0} fires/s)",
        args.timers,
        args.window_ms,
        args.lead_ms,
        args.timers as f64 * 1000.0 / args.window_ms as f64
    );
    let ctx = new_ctx(plan, clock);
    let (start, start_wall_ms) = (ctx.start, ctx.start_wall_ms);
    if let Some(receiver) = watch.webhooks.filter(|_| args.webhook_outage_ms > 0) {
        let middle_ms = i64::try_from(args.lead_ms.saturating_add(args.window_ms / 2)).unwrap_or(i64::MAX);
        receiver.plan_outage(start_wall_ms.saturating_add(middle_ms), args.webhook_outage_ms);
    }
    // One progress line a second through both the schedule and the wait.
    let progress = spawn_progress(name.to_owned(), ctx.clone(), Some(collector.clone()));
    let outcome = match run_workers(ctx, clients).await {
        Ok(outcome) => outcome,
        Err(e) => {
            progress.abort();
            return Err(e);
        }
    };
    samples.push(probe.sample(&format!("after {name} schedule")).await);

    // Wait for every acknowledged timer to fire, or the last due time + grace.
    let last_due = start + Duration::from_millis(args.lead_ms.saturating_add(args.window_ms));
    let deadline = last_due.max(Instant::now()) + Duration::from_millis(args.grace_ms);
    let wait_start = Instant::now();
    let all_arrived = || {
        collector.unique(name) >= outcome.acked
            && watch.webhooks.is_none_or(|receiver| receiver.unique(name) >= outcome.acked)
    };
    while Instant::now() < deadline && !all_arrived() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wait_s = wait_start.elapsed().as_secs_f64();
    progress.abort();
    let fires = collector.take(name);
    let last_due_ms =
        due_at_ms(start_wall_ms, args.lead_ms, args.timers.saturating_sub(1), args.timers, args.window_ms);
    let webhooks = watch.webhooks.map(|receiver| receiver.take(name, outcome.acked, last_due_ms));
    samples.push(probe.sample(&format!("after {name} fires")).await);

    let mut missing_ids: Vec<&String> =
        outcome.ids.keys().filter(|id| !fires.seen.contains(&((*id).clone(), 1))).collect();
    missing_ids.sort();
    let unexpected_fires = fires.seen.iter().filter(|(id, _)| !outcome.ids.contains_key(id)).count() as u64;
    Ok(PhaseReport {
        mode: name,
        schedule: ScheduleReport::new(args.timers, &outcome, ack_unit),
        acked_after_due: outcome.acked_after_due,
        target_fires_per_s: args.timers as f64 * 1000.0 / args.window_ms as f64,
        fires_expected: outcome.acked,
        fires_received: fires.seen.len() as u64,
        duplicates: fires.duplicates,
        missing: missing_ids.len() as u64,
        missing_sample: missing_ids.iter().take(MISSING_SAMPLE_LEN).map(|id| (*id).clone()).collect(),
        unexpected_fires,
        early_fires: fires.early,
        received_before_due: fires.received_before_due,
        fire_lateness_ms: summarize_us(&fires.server_lateness_us),
        receive_lateness_ms: summarize_us(&fires.receive_lateness_us),
        webhooks,
        wait_s,
    })
}

// ---------------------------------------------------------------------------
// Human summary
// ---------------------------------------------------------------------------

fn ms_text(p: Option<Percentiles>) -> String {
    match p {
        None => "-".to_owned(),
        Some(p) => format!("{:.2} / {:.2} / {:.2} / {:.2}", p.p50, p.p99, p.p99_9, p.max),
    }
}

fn opt_text<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn mib_text(kb: Option<u64>) -> String {
    kb.map_or_else(|| "-".to_owned(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0))
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "0".to_owned();
    }
    errors.iter().map(|(code, n)| format!("{n} {code}")).collect::<Vec<_>>().join(", ")
}

/// Renders rows of cells with left-aligned columns.
fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn render_summary(report: &Report) -> String {
    let c = &report.config;
    let mut text = format!(
        "minoots bench  run {}  server {}  api {}{}\n  timers {} per mode, window {} ms from +{} ms after each schedule phase starts, grace {} ms, rate {}\n",
        report.run_id,
        report.server,
        c.api,
        if c.webhook { "  webhooks to the bench's receiver" } else { "" },
        c.timers,
        c.window_ms,
        c.lead_ms,
        c.grace_ms,
        if c.rate_per_s == 0 { "unlimited".to_owned() } else { format!("{}/s", c.rate_per_s) },
    );
    if !report.phases.is_empty() {
        let mut rows: Vec<Vec<String>> = vec![
            vec!["measure".into()],
            vec!["scheduled / requested".into()],
            vec!["schedule errors".into()],
            vec!["schedule time (s)".into()],
            vec!["schedules/s".into()],
            vec!["ack latency p50/p99/p99.9/max (ms)".into()],
            vec!["acked after due".into()],
            vec!["target fires/s".into()],
            vec!["fires received / expected".into()],
            vec!["duplicates".into()],
            vec!["missing".into()],
            vec!["early (fired before due)".into()],
            vec!["fire lateness, server p50/p99/p99.9/max (ms)".into()],
            vec!["fire lateness, received p50/p99/p99.9/max (ms)".into()],
        ];
        let webhooks = report.phases.iter().any(|p| p.webhooks.is_some());
        if webhooks {
            rows.extend([
                vec!["webhooks received / duplicates / missing".into()],
                vec!["webhook due → receipt p50/p99/p99.9/max (ms)".into()],
                vec!["webhooks delivered/s".into()],
                vec!["last receipt − last due (ms)".into()],
                vec!["answered 503 in the outage".into()],
            ]);
        }
        for p in &report.phases {
            let s = &p.schedule;
            let cells = [
                format!("{} (per {})", p.mode, s.ack_unit),
                format!("{} / {}", s.scheduled, s.requested),
                errors_text(&s.errors),
                format!("{:.3}", s.schedule_s),
                format!("{:.0}", s.schedules_per_s),
                ms_text(s.ack_latency_ms),
                p.acked_after_due.to_string(),
                format!("{:.0}", p.target_fires_per_s),
                format!("{} / {}", p.fires_received, p.fires_expected),
                p.duplicates.to_string(),
                p.missing.to_string(),
                p.early_fires.to_string(),
                ms_text(p.fire_lateness_ms),
                ms_text(p.receive_lateness_ms),
            ];
            let hook_cells = p.webhooks.as_ref().map(|w| {
                [
                    format!("{} / {} / {}", w.received, w.duplicates, w.missing),
                    ms_text(w.receipt_lateness_ms),
                    format!("{:.0}", w.delivered_per_s),
                    opt_text(w.last_receipt_after_last_due_ms.map(|ms| format!("{ms:.0}"))),
                    w.refused_in_outage.to_string(),
                ]
            });
            for (row, cell) in rows.iter_mut().zip(cells.into_iter().chain(hook_cells.into_iter().flatten()))
            {
                row.push(cell);
            }
        }
        text.push('\n');
        text.push_str(&render_table(&rows));
        for p in &report.phases {
            if let Some(e) = &p.schedule.first_error {
                text.push_str(&format!("  {} first schedule error: {e}\n", p.mode));
            }
            if !p.missing_sample.is_empty() {
                text.push_str(&format!("  {} missing (sample): {}\n", p.mode, p.missing_sample.join(", ")));
            }
        }
    }
    if let Some(p) = &report.preload {
        let s = &p.schedule;
        text.push_str(&format!(
            "\npreload: {} / {} timers due after {} ms, {:.3} s = {:.0} timers/s, errors {}, ack p50/p99/p99.9/max {} ms\n",
            s.scheduled,
            s.requested,
            p.horizon_ms,
            s.schedule_s,
            s.schedules_per_s,
            errors_text(&s.errors),
            ms_text(s.ack_latency_ms),
        ));
        text.push_str(&format!(
            "  server RSS {} → {} ({} bytes per pending timer), {} after {} s ({} bytes per pending timer); \
             due index entries {}, timers pending {}\n",
            mib_text(p.rss_before_kb),
            mib_text(p.rss_after_kb),
            opt_text(p.rss_bytes_per_timer.map(|b| format!("{b:.0}"))),
            mib_text(p.rss_settled_kb),
            RSS_SETTLE_MS / 1_000,
            opt_text(p.rss_settled_bytes_per_timer.map(|b| format!("{b:.0}"))),
            opt_text(p.due_index_entries),
            opt_text(p.timers_pending),
        ));
        if let Some(e) = &s.first_error {
            text.push_str(&format!("  first preload error: {e}\n"));
        }
    }
    let probed = report.samples.iter().any(|s| s.rss_kb.is_some() || s.timers_pending.is_some());
    if probed {
        let mut rows = vec![vec![
            "server".to_owned(),
            "RSS".to_owned(),
            "peak RSS".to_owned(),
            "due index entries".to_owned(),
            "timers pending".to_owned(),
        ]];
        for s in &report.samples {
            rows.push(vec![
                s.at.clone(),
                mib_text(s.rss_kb),
                mib_text(s.hwm_kb),
                opt_text(s.due_index_entries),
                opt_text(s.timers_pending),
            ]);
        }
        text.push('\n');
        text.push_str(&render_table(&rows));
    }
    if let Some(s) = &report.event_stream
        && (s.restarts > 0 || s.malformed_events > 0)
    {
        text.push_str(&format!(
            "\nevent stream: {} restarts (fires in between were lost to the bench), {} malformed events; last error: {}\n",
            s.restarts,
            s.malformed_events,
            s.last_error.as_deref().unwrap_or("-")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_spread_uniformly_over_the_window_after_the_lead() {
        assert_eq!(due_offset_ms(0, 20_000, 20_000), 0);
        assert_eq!(due_offset_ms(1, 20_000, 20_000), 1);
        assert_eq!(due_offset_ms(19_999, 20_000, 20_000), 19_999);
        assert_eq!(due_offset_ms(500, 1000, 5_000), 2_500);
        assert_eq!(due_offset_ms(0, 0, 5_000), 0, "no timers, no division by zero");
        // 2,000 timers over 5 s: 400 per second, every second of the window gets its share.
        let mut per_second = [0u32; 5];
        for i in 0..2_000 {
            per_second[(due_offset_ms(i, 2_000, 5_000) / 1000) as usize] += 1;
        }
        assert_eq!(per_second, [400; 5]);
        // Absolute due time: start + lead + offset.
        assert_eq!(due_at_ms(1_700_000_000_000, 2_000, 1_000, 2_000, 5_000), 1_700_000_004_500);
        // Huge values saturate instead of overflowing.
        assert_eq!(due_offset_ms(u64::MAX, 1, u64::MAX), u64::MAX);
    }

    #[test]
    fn percentile_summary_reports_milliseconds() {
        assert_eq!(summarize_us(&new_histogram()), None);
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            h.saturating_record(ms * 1000);
        }
        let p = summarize_us(&h).expect("values recorded");
        assert_eq!(p.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(p.p50, 500.0), "p50 {}", p.p50);
        assert!(close(p.p99, 990.0), "p99 {}", p.p99);
        assert!(close(p.p99_9, 999.0), "p99.9 {}", p.p99_9);
        assert!(close(p.max, 1000.0), "max {}", p.max);
        assert!(close(p.mean, 500.5), "mean {}", p.mean);
    }

    #[test]
    fn proc_status_and_metrics_parse() {
        let status = "Name:\tminoots\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t4\n";
        assert_eq!(parse_proc_status(status), (Some(10_240), Some(20_480)));
        assert_eq!(parse_proc_status("Name:\tx\n"), (None, None));

        let metrics = "# HELP minoots_timers_pending Timers in status scheduled\n\
                       # TYPE minoots_timers_pending gauge\n\
                       minoots_timers_pending 42\n\
                       minoots_timers_pending_extra 7\n\
                       minoots_due_index_entries{shard=\"0\"} 3\n\
                       minoots_due_index_entries{shard=\"1\"} 4 1700000000000\n";
        assert_eq!(parse_metric(metrics, "minoots_timers_pending"), Some(42.0));
        assert_eq!(parse_metric(metrics, "minoots_due_index_entries"), Some(7.0));
        assert_eq!(parse_metric(metrics, "minoots_missing"), None);
    }

    #[test]
    fn collector_counts_duplicates_early_fires_and_only_this_run() {
        use minoots_proto::timer_v1::{Timer, TimerFired};
        let collector = Collector::new("run1".into());
        collector.register("batch");
        let event = |id: &str, run: &str, due: &str, fired: &str| TimerEvent {
            event: Some(timer_event::Event::Fired(TimerFired {
                timer: Some(Timer { id: id.into(), labels: labels(run, "batch"), ..Default::default() }),
                occurrence: 1,
                due_at_iso: due.into(),
                fired_at_iso: fired.into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let due_us = 1_700_000_000_000_000;
        collector.record(
            &event("a", "run1", "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.003Z"),
            due_us + 5_000,
        );
        collector.record(
            &event("a", "run1", "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.003Z"),
            due_us + 9_000,
        );
        collector.record(
            &event("b", "run1", "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:19.999Z"),
            due_us - 500,
        );
        collector
            .record(&event("c", "other", "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:20.001Z"), due_us);
        collector.record(&event("d", "run1", "not a time", "2023-11-14T22:13:20.001Z"), due_us);
        assert_eq!(collector.unique("batch"), 2);
        let fires = collector.take("batch");
        assert_eq!(fires.duplicates, 1);
        assert_eq!(fires.early, 1);
        assert_eq!(fires.received_before_due, 1);
        assert_eq!(collector.malformed.load(Ordering::Relaxed), 1);
        assert_eq!(fires.server_lateness_us.max(), fires.server_lateness_us.highest_equivalent(3_000));
        assert_eq!(fires.receive_lateness_us.max(), fires.receive_lateness_us.highest_equivalent(5_000));
        assert_eq!(collector.unique("batch"), 0, "taken phases stop counting");
    }

    #[test]
    fn summary_table_aligns_columns() {
        let text = render_table(&[vec!["a".into(), "bb".into()], vec!["ccc".into(), "d".into()]]);
        assert_eq!(text, "a    bb\nccc  d\n");
    }
}
