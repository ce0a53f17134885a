//! Seeded clients speaking gRPC to the cluster, as a real client would:
//! every write carries an idempotency key and is retried with the same key
//! on UNAVAILABLE, on FAILED_PRECONDITION with a leader hint (following
//! `x-minoots-leader` to the right node), on RESOURCE_EXHAUSTED and on
//! transport errors or timeouts, a bounded number of times. What the
//! clients are told goes to the oracle: acknowledged schedules (with the
//! timer as shown), acknowledged cancels, and anomalies (replies a correct
//! service never gives, e.g. NOT_FOUND for an acknowledged timer).
//!
//! Besides the clients, one watcher per node holds a `StreamTimerEvents`
//! stream open over gRPC (reconnecting when it breaks) and hands every event
//! it receives to the oracle, so the stream path is checked end to end.
//!
//! Operation mix per client (each from the client's own seeded stream):
//! one-shot schedules of 1 ms – 5 s (most), recurring timers (interval or
//! cron with seconds, always with `max_occurrences`), batch schedules,
//! cancels and reads of timers it was told exist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use madsim::runtime::NodeHandle;
use minoots_core::TimerId;
use minoots_node::grpc::{API_KEY_HEADER, LEADER_HEADER, RETRY_AFTER_HEADER};
use minoots_proto::horology_kernel_client::HorologyKernelClient;
use minoots_proto::{
    self as pb, TimerBatchScheduleRequest, TimerBatchScheduleResponse, TimerCancelRequest,
    TimerEventStreamRequest, TimerGetRequest, TimerScheduleRequest, TimerScheduleResponse,
    timer_batch_result, timer_schedule_request,
};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::clock::true_us;
use crate::cluster::{API_KEY, Machine, node_addr};
use crate::rng::{SimRng, stream};
use crate::world::World;

/// Attempts per operation before the client gives up.
const ATTEMPTS_MAX: u32 = 10;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT_MS: u64 = 500;
/// How long one call may take.
const CALL_TIMEOUT_MS: u64 = 3_000;
/// Delay before retrying when the server gave no hint.
const RETRY_DEFAULT_MS: u64 = 100;
/// Bounds on the server's retry hint.
const RETRY_MIN_MS: u64 = 10;
const RETRY_MAX_MS: u64 = 1_000;
/// Timers a client remembers for cancels and reads.
const REMEMBERED_MAX: usize = 256;
/// Longest one-shot delay.
pub const ONCE_DELAY_MAX_MS: u64 = 5_000;
/// Longest span of a recurring timer (from schedule to its last occurrence).
pub const RECURRING_SPAN_MAX_MS: u64 = 6_500;

/// Delay before a watcher reconnects a broken event stream.
const STREAM_RECONNECT_MS: u64 = 200;

/// The running clients (and event-stream watchers, which run until the end).
pub struct Workload {
    stop: watch::Sender<bool>,
    tasks: Vec<madsim::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts the plan's clients on `node`.
    pub fn start(world: &Arc<World>, node: &NodeHandle) -> Workload {
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..world.plan.clients)
            .map(|index| {
                let client = Client::new(world.clone(), index, stopped.clone());
                node.spawn(client.run())
            })
            .collect();
        for target in 0..world.plan.options.nodes {
            node.spawn(watch_events(world.clone(), target));
        }
        Workload { stop, tasks }
    }

    /// Asks every client to finish its current operation and stop.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for every client to stop.
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Keeps a `StreamTimerEvents` stream open to node `target` and records
/// every event received. A stream that breaks (node down, partition, lag) is
/// reopened; events missed meanwhile are missed (the stream promises no
/// replay), but none received may differ from what the store committed.
async fn watch_events(world: Arc<World>, target: usize) {
    let url = format!("http://{}", node_addr(target));
    loop {
        tokio::time::sleep(Duration::from_millis(STREAM_RECONNECT_MS)).await;
        let connect = HorologyKernelClient::connect(url.clone());
        let Ok(Ok(mut client)) =
            tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await
        else {
            continue;
        };
        let open = client.stream_timer_events(with_key(TimerEventStreamRequest::default()));
        let Ok(Ok(response)) = tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), open).await
        else {
            continue;
        };
        let mut stream = response.into_inner();
        while let Ok(Some(event)) = stream.message().await {
            let mut oracle = world.oracle.lock().expect("oracle lock");
            oracle.counters.events_streamed += 1;
            oracle.streamed.push(crate::oracle::Streamed { node: target, event, true_us: true_us() });
        }
    }
}

/// A request of any kind, kept to resend it unchanged.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // One per operation; boxing would only add an allocation.
enum Req {
    Schedule(TimerScheduleRequest),
    Batch(TimerBatchScheduleRequest),
    Cancel(TimerCancelRequest),
    Get(TimerGetRequest),
}

impl Req {
    fn name(&self) -> &'static str {
        match self {
            Req::Schedule(_) => "schedule",
            Req::Batch(_) => "batch",
            Req::Cancel(_) => "cancel",
            Req::Get(_) => "get",
        }
    }
}

#[derive(Debug)]
enum Resp {
    Schedule(TimerScheduleResponse),
    Batch(TimerBatchScheduleResponse),
    Timer(pb::Timer),
}

#[allow(clippy::large_enum_variant)] // One per operation.
enum Outcome {
    Done(Resp),
    Failed(Status),
    GaveUp(String),
}

enum AttemptError {
    Connect(String),
    Timeout,
    Status(Status),
}

struct Client {
    index: usize,
    world: Arc<World>,
    rng: SimRng,
    nodes: usize,
    conns: BTreeMap<usize, HorologyKernelClient<Channel>>,
    target: usize,
    next_op: u64,
    mine: Vec<TimerId>,
    stopped: watch::Receiver<bool>,
}

impl Client {
    fn new(world: Arc<World>, index: usize, stopped: watch::Receiver<bool>) -> Client {
        let mut rng = SimRng::new(world.plan.seed, stream::CLIENT_BASE + index as u64);
        let nodes = world.plan.options.nodes;
        let target = rng.below(nodes as u64) as usize;
        Client {
            index,
            world,
            rng,
            nodes,
            conns: BTreeMap::new(),
            target,
            next_op: 0,
            mine: Vec::new(),
            stopped,
        }
    }

    fn name(&self) -> String {
        format!("c{}", self.index + 1)
    }

    async fn run(mut self) {
        let (lo, hi) = self.world.plan.think_ms;
        tokio::time::sleep(Duration::from_millis(300 + self.rng.below(200))).await;
        while !*self.stopped.borrow() {
            self.next_op += 1;
            self.one_op().await;
            let think = self.rng.range(lo, hi);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }

    async fn one_op(&mut self) {
        let roll = self.rng.below(100);
        let op = self.next_op;
        let key = format!("{}-o{op}", self.name());
        let req = match roll {
            0..45 => Req::Schedule(self.once_request(&key)),
            45..55 => Req::Schedule(self.recurring_request(&key)),
            55..65 => {
                let items = self.rng.range(2, 6);
                let timers = (0..items).map(|j| self.once_request(&format!("{key}-{j}"))).collect();
                Req::Batch(TimerBatchScheduleRequest { timers })
            }
            65..85 if !self.mine.is_empty() => {
                let timer_id = self.rng.pick(&self.mine).to_string();
                Req::Cancel(TimerCancelRequest {
                    timer_id,
                    requested_by: self.name(),
                    reason: format!("op{op}"),
                    ..Default::default()
                })
            }
            _ if !self.mine.is_empty() => {
                let timer_id = self.rng.pick(&self.mine).to_string();
                Req::Get(TimerGetRequest { timer_id, ..Default::default() })
            }
            _ => Req::Schedule(self.once_request(&key)),
        };
        self.world.oracle.lock().expect("oracle lock").counters.client_ops += 1;
        let outcome = self.execute(&req).await;
        self.record(op, &req, outcome);
    }

    fn once_request(&mut self, key: &str) -> TimerScheduleRequest {
        let delay_ms = if self.rng.chance(70) {
            self.rng.range(1, 2_000)
        } else {
            self.rng.range(2_000, ONCE_DELAY_MAX_MS + 1)
        };
        TimerScheduleRequest {
            requested_by: self.name(),
            name: key.to_owned(),
            schedule_time: Some(timer_schedule_request::ScheduleTime::DurationMs(delay_ms)),
            idempotency_key: key.to_owned(),
            labels: [("client".to_owned(), self.name())].into_iter().collect(),
            ..Default::default()
        }
    }

    fn recurring_request(&mut self, key: &str) -> TimerScheduleRequest {
        let misfire = *self.rng.pick(&["fire_once", "fire_all", "skip"]);
        let mut req = TimerScheduleRequest {
            requested_by: self.name(),
            name: key.to_owned(),
            idempotency_key: key.to_owned(),
            misfire_policy: misfire.to_owned(),
            ..Default::default()
        };
        if self.rng.chance(60) {
            // Span: every × max ≤ 1.5 s × 4 (first slot one period after now).
            req.every_ms = Some(self.rng.range(300, 1_501));
            req.max_occurrences = Some(self.rng.range(2, 5) as u32);
        } else {
            // Span: ≤ 2 s to the first slot + 2 × 2 s.
            req.cron = "*/2 * * * * *".to_owned();
            req.time_zone = "UTC".to_owned();
            req.max_occurrences = Some(self.rng.range(2, 4) as u32);
        }
        req
    }

    /// Sends `req` until it succeeds, fails for good, or runs out of attempts.
    async fn execute(&mut self, req: &Req) -> Outcome {
        let mut last = String::new();
        for _ in 0..ATTEMPTS_MAX {
            let node = self.target;
            let wait_ms = match self.attempt(node, req).await {
                Ok(resp) => return Outcome::Done(resp),
                Err(AttemptError::Connect(e)) => {
                    last = format!("connect to n{}: {e}", node + 1);
                    self.conns.remove(&node);
                    self.target = self.other_node(node);
                    RETRY_DEFAULT_MS
                }
                Err(AttemptError::Timeout) => {
                    last = format!("n{} timed out", node + 1);
                    self.conns.remove(&node);
                    self.target = self.other_node(node);
                    RETRY_DEFAULT_MS
                }
                Err(AttemptError::Status(status)) => {
                    let hint = leader_hint(&status, self.nodes);
                    let retry_ms = retry_after(&status);
                    match status.code() {
                        Code::FailedPrecondition if hint.is_some() => {
                            self.target = hint.unwrap_or(node);
                        }
                        Code::Unavailable | Code::ResourceExhausted => {
                            if let Some(leader) = hint {
                                self.target = leader;
                            } else if self.rng.chance(50) {
                                self.target = self.other_node(node);
                            }
                        }
                        // Transport failures surface as these codes.
                        Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
                            self.conns.remove(&node);
                            self.target = self.other_node(node);
                        }
                        _ => return Outcome::Failed(status),
                    }
                    last = format!("n{}: {:?} {}", node + 1, status.code(), status.message());
                    retry_ms
                }
            };
            tokio::time::sleep(Duration::from_millis(wait_ms + self.rng.below(50))).await;
        }
        Outcome::GaveUp(last)
    }

    fn other_node(&mut self, node: usize) -> usize {
        if self.nodes <= 1 {
            return node;
        }
        (node + 1 + self.rng.below(self.nodes as u64 - 1) as usize) % self.nodes
    }

    async fn attempt(&mut self, node: usize, req: &Req) -> Result<Resp, AttemptError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.conns.entry(node) {
            let url = format!("http://{}", process_addr(node, self.nodes));
            let connect = HorologyKernelClient::connect(url);
            match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), connect).await {
                Ok(Ok(client)) => {
                    slot.insert(client);
                }
                Ok(Err(e)) => return Err(AttemptError::Connect(e.to_string())),
                Err(_) => return Err(AttemptError::Connect("timed out".into())),
            }
        }
        let client = self.conns.get_mut(&node).expect("connected above");
        let call = async {
            match req.clone() {
                Req::Schedule(r) => {
                    client.schedule_timer(with_key(r)).await.map(|r| Resp::Schedule(r.into_inner()))
                }
                Req::Batch(r) => {
                    client.schedule_timers(with_key(r)).await.map(|r| Resp::Batch(r.into_inner()))
                }
                Req::Cancel(r) => client.cancel_timer(with_key(r)).await.map(|r| Resp::Timer(r.into_inner())),
                Req::Get(r) => client.get_timer(with_key(r)).await.map(|r| Resp::Timer(r.into_inner())),
            }
        };
        match tokio::time::timeout(Duration::from_millis(CALL_TIMEOUT_MS), call).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(status)) => Err(AttemptError::Status(status)),
            Err(_) => Err(AttemptError::Timeout),
        }
    }

    /// Tells the oracle what this operation's caller was told.
    fn record(&mut self, op: u64, req: &Req, outcome: Outcome) {
        let who = format!("{} op{op}", self.name());
        let mut acked = Vec::new();
        let mut oracle = self.world.oracle.lock().expect("oracle lock");
        match (req, outcome) {
            (_, Outcome::GaveUp(last)) => {
                oracle.counters.client_give_ups += 1;
                oracle.trace(format!("{who}: {} gave up after {ATTEMPTS_MAX} attempts ({last})", req.name()));
            }
            (Req::Schedule(r), Outcome::Done(Resp::Schedule(resp))) => match resp.timer {
                Some(timer) => {
                    check_key(&mut oracle, &who, &r.idempotency_key, &timer);
                    oracle.trace(format!(
                        "{who}: schedule {} ok (created={}, due {})",
                        timer.id, resp.created, timer.fire_at_iso
                    ));
                    acked.push(timer);
                }
                None => {
                    oracle.anomaly("api-contract", format!("{who}: schedule reply without a timer"), None)
                }
            },
            (Req::Batch(r), Outcome::Done(Resp::Batch(resp))) => {
                if resp.results.len() != r.timers.len() {
                    let message =
                        format!("{who}: batch of {} got {} results", r.timers.len(), resp.results.len());
                    oracle.anomaly("api-contract", message, None);
                }
                for (item, result) in r.timers.iter().zip(resp.results) {
                    match result.result {
                        Some(timer_batch_result::Result::Timer(timer)) => {
                            check_key(&mut oracle, &who, &item.idempotency_key, &timer);
                            oracle.trace(format!(
                                "{who}: batch item {} ok (created={}, due {})",
                                timer.id, result.created, timer.fire_at_iso
                            ));
                            acked.push(timer);
                        }
                        Some(timer_batch_result::Result::Error(e)) => {
                            let message = format!(
                                "{who}: batch item {} refused: {} {}",
                                item.idempotency_key, e.code, e.message
                            );
                            oracle.anomaly("api-contract", message, None);
                        }
                        None => oracle.anomaly("api-contract", format!("{who}: empty batch result"), None),
                    }
                }
            }
            (Req::Cancel(r), Outcome::Done(Resp::Timer(timer))) => {
                let id = parse_id(&r.timer_id);
                if timer.status == pb::TimerStatus::Cancelled as i32 {
                    oracle.trace(format!("{who}: cancel {} ok", r.timer_id));
                    oracle
                        .cancels
                        .insert(id, crate::oracle::AckedCancel { true_us: true_us(), client: self.index });
                    oracle.counters.client_acks += 1;
                } else {
                    let message =
                        format!("{who}: cancel {} answered OK with status {}", r.timer_id, timer.status);
                    oracle.anomaly("api-contract", message, Some(id));
                }
            }
            (Req::Cancel(r), Outcome::Failed(status)) => {
                let id = parse_id(&r.timer_id);
                match status.code() {
                    // The timer fired its last occurrence first: a legitimate answer.
                    Code::FailedPrecondition => {
                        oracle.trace(format!("{who}: cancel {} refused: {}", r.timer_id, status.message()));
                    }
                    Code::NotFound => {
                        let message =
                            format!("{who}: cancel of acknowledged timer {} answered NOT_FOUND", r.timer_id);
                        oracle.anomaly("acked-durable", message, Some(id));
                    }
                    code => {
                        let message =
                            format!("{who}: cancel {} failed: {code:?} {}", r.timer_id, status.message());
                        oracle.anomaly("api-contract", message, Some(id));
                    }
                }
            }
            (Req::Get(r), Outcome::Done(Resp::Timer(timer))) => {
                oracle.trace(format!("{who}: get {} ok (status {})", r.timer_id, timer.status));
                oracle.counters.client_acks += 1;
            }
            (Req::Get(r), Outcome::Failed(status)) if status.code() == Code::NotFound => {
                let message = format!("{who}: get of acknowledged timer {} answered NOT_FOUND", r.timer_id);
                oracle.anomaly("acked-durable", message, Some(parse_id(&r.timer_id)));
            }
            (req, Outcome::Failed(status)) => {
                let message =
                    format!("{who}: {} failed: {:?} {}", req.name(), status.code(), status.message());
                oracle.anomaly("api-contract", message, None);
            }
            (req, Outcome::Done(resp)) => {
                let message = format!("{who}: {} answered with the wrong message {resp:?}", req.name());
                oracle.anomaly("api-contract", message, None);
            }
        }
        for timer in acked {
            let Ok(id) = TimerId::parse("id", &timer.id) else {
                oracle.anomaly(
                    "api-contract",
                    format!("{who}: acknowledged timer id {:?} is not a UUID", timer.id),
                    None,
                );
                continue;
            };
            oracle.counters.client_acks += 1;
            oracle.acked.entry(id).or_insert(crate::oracle::AckedTimer {
                wire: timer,
                true_us: true_us(),
                client: self.index,
            });
            if self.mine.len() < REMEMBERED_MAX {
                self.mine.push(id);
            }
        }
    }
}

fn check_key(oracle: &mut crate::oracle::Oracle, who: &str, key: &str, timer: &pb::Timer) {
    if timer.idempotency_key != key {
        let message =
            format!("{who}: key {key} answered with timer {} of key {:?}", timer.id, timer.idempotency_key);
        oracle.anomaly("api-contract", message, None);
    }
}

/// Ids the client sends came from replies it parsed, so they parse again.
fn parse_id(text: &str) -> TimerId {
    TimerId::parse("timerId", text).expect("the client only sends ids it parsed from replies")
}

/// Adds the API key to a request.
fn with_key<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(API_KEY_HEADER, API_KEY.parse().expect("the API key is valid metadata"));
    request
}

/// The process named by `x-minoots-leader`, if any: node `i` on its own
/// machine is `i`, a successor of node `i` on its spare machine is `nodes + i`.
fn leader_hint(status: &Status, nodes: usize) -> Option<usize> {
    let leader = status.metadata().get(LEADER_HEADER)?.to_str().ok()?;
    (0..2 * nodes).find(|i| process_addr(*i, nodes) == leader)
}

/// The gRPC address of process index `process` (see [`leader_hint`]).
fn process_addr(process: usize, nodes: usize) -> String {
    if process < nodes { node_addr(process) } else { Machine::Spare.addr(process - nodes) }
}

/// The server's retry hint, bounded.
fn retry_after(status: &Status) -> u64 {
    status
        .metadata()
        .get(RETRY_AFTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(RETRY_DEFAULT_MS, |ms| ms.clamp(RETRY_MIN_MS, RETRY_MAX_MS))
}
