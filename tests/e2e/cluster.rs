//! Cluster chaos with real processes: three `minoots serve --store postgres`
//! nodes on one private PostgreSQL server (started by the test; `fsync=on`),
//! under a steady load of timers due every few milliseconds, while the test
//!
//! 1. SIGKILLs the leader again and again (and restarts it once another node
//!    has taken over), measuring failover time: SIGKILL → the first fire
//!    recorded under a newer epoch;
//! 2. SIGSTOPs the leader for longer than its lease, then SIGCONTs it: it must
//!    step down, and nothing it had in flight may be recorded (fencing);
//! 3. crashes PostgreSQL (immediate shutdown) and restarts it mid-run;
//! 4. starts a node while its database is down (it must wait, not exit);
//! 5. SIGSTOPs the leader, starts a new process with the same node id, and
//!    SIGCONTs the old one: the successor takes over at once at a new epoch,
//!    the old incarnation is fenced out and steps down.
//!
//! After each scenario, every acknowledged timer has exactly one recorded
//! fire (`/api/timers/{id}/fires`, read from any node: followers answer
//! reads), none before its due time, none lost. Each prints its counts:
//! timers, kills, pauses, failovers, stale fires rejected, duplicates, lost.
//!
//! Knobs (environment, for longer runs by hand): `MINOOTS_CLUSTER_KILLS`
//! (default 4), `MINOOTS_CLUSTER_LEASE_TTL_MS` (default 1000; the renew
//! interval is a quarter of it).
//! `MINOOTS_CLUSTER_KILLS=30 MINOOTS_CLUSTER_LEASE_TTL_MS=2000 cargo test -p minoots --test e2e cluster_leader_sigkill -- --nocapture`
//! measures failover with the production lease timing.
//!
//! If PostgreSQL cannot be started, the tests fail (never skip).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{RwLock, watch};

use crate::pg::PgServer;
use crate::support::{DEV_KEY, Server, iso_ms};

pub(crate) const NODES: usize = 3;
/// Each producer creates a timer about every this many ms after its last acknowledgement (due 300–1,200 ms later).
const CREATE_EVERY_MS: u64 = 5;

pub(crate) fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn lease_ttl_ms() -> u64 {
    env_u64("MINOOTS_CLUSTER_LEASE_TTL_MS", 1_000)
}

pub(crate) fn now_ms() -> i64 {
    minoots_node::Clock::now(&minoots_node::SystemClock::new()).wall_ms
}

/// The REST URLs of the nodes that are up, by node index.
pub(crate) type AddressBook = Arc<RwLock<Vec<Option<String>>>>;

/// What the nodes share: a PostgreSQL database, or nothing but each
/// other (Raft mode, each node with its own data directory).
pub(crate) enum Backing {
    Postgres { pg: PgServer, url: String },
    Raft { dirs: Vec<tempfile::TempDir>, peers: String },
}

pub(crate) struct Cluster {
    pub(crate) backing: Backing,
    env: Vec<(String, String)>,
    pub(crate) nodes: Vec<Option<Server>>,
    pub(crate) book: AddressBook,
}

impl Cluster {
    /// Three nodes on one private PostgreSQL server, leading by lease.
    async fn start() -> Cluster {
        let pg = PgServer::start();
        let url = pg.create_database("minoots_cluster");
        let ttl = lease_ttl_ms();
        let env = vec![
            ("KERNEL_LEASE_TTL_MS".to_owned(), ttl.to_string()),
            ("KERNEL_LEASE_RENEW_MS".to_owned(), (ttl / 4).max(1).to_string()),
            ("KERNEL_LEASE_ACQUIRE_RETRY_MS".to_owned(), (ttl / 8).max(1).to_string()),
        ];
        Cluster::spawn_all(Backing::Postgres { pg, url }, env)
    }

    /// Three Raft nodes, each with its own data directory, on free ports,
    /// started at once (each waits for nothing but its own listeners), with
    /// the extra environment `env`.
    pub(crate) async fn start_raft(env: Vec<(String, String)>) -> Cluster {
        let raft_ports: Vec<u16> = (0..NODES).map(|_| crate::pg::free_port()).collect();
        let peers = raft_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}=http://127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let dirs = (0..NODES).map(|_| crate::support::data_dir()).collect();
        Cluster::spawn_all(Backing::Raft { dirs, peers }, env)
    }

    fn spawn_all(backing: Backing, env: Vec<(String, String)>) -> Cluster {
        let mut cluster =
            Cluster { backing, env, nodes: Vec::new(), book: Arc::new(RwLock::new(vec![None; NODES])) };
        let started: Vec<Server> = std::thread::scope(|scope| {
            let spawning: Vec<_> = (0..NODES)
                .map(|i| {
                    scope.spawn({
                        let cluster = &cluster;
                        move || cluster.spawn(i)
                    })
                })
                .collect();
            spawning.into_iter().map(|h| h.join().expect("a node started")).collect()
        });
        let book: Vec<Option<String>> = started.iter().map(|n| Some(n.rest.clone())).collect();
        cluster.book = Arc::new(RwLock::new(book));
        cluster.nodes = started.into_iter().map(Some).collect();
        cluster
    }

    pub(crate) fn spawn(&self, i: usize) -> Server {
        let id = format!("node-{}", i + 1);
        // No signing key configured (as in the README): each tenant's is generated in the database.
        let mut envs: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match &self.backing {
            Backing::Postgres { url, .. } => {
                Server::start_with(&["--store", "postgres", "--database-url", url, "--node-id", &id], &envs)
            }
            Backing::Raft { dirs, peers, .. } => {
                let raft_id = (i + 1).to_string();
                envs.extend([
                    ("KERNEL_RAFT_NODE_ID", raft_id.as_str()),
                    ("KERNEL_RAFT_PEERS", peers.as_str()),
                ]);
                let dir = dirs[i].path().to_string_lossy().into_owned();
                Server::start_with(&["--data-dir", &dir, "--node-id", &id], &envs)
            }
        }
    }

    fn pg(&mut self) -> &mut PgServer {
        match &mut self.backing {
            Backing::Postgres { pg, .. } => pg,
            Backing::Raft { .. } => panic!("not a PostgreSQL cluster"),
        }
    }

    pub(crate) async fn kill(&mut self, i: usize) {
        self.book.write().await[i] = None;
        if let Some(node) = self.nodes[i].take() {
            node.kill9();
        }
    }

    pub(crate) async fn restart(&mut self, i: usize) {
        let node = self.spawn(i);
        self.book.write().await[i] = Some(node.rest.clone());
        self.nodes[i] = Some(node);
    }

    pub(crate) fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node is up")
    }

    /// The leader (index, epoch) as the nodes report it, if one leads.
    pub(crate) async fn leader(&self, client: &reqwest::Client) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let Some(h) = health(client, &node.rest).await else { continue };
            if h["role"] == "leader" {
                let epoch = h["epoch"].as_u64().unwrap_or(0);
                if best.is_none_or(|(_, e)| epoch > e) {
                    best = Some((i, epoch));
                }
            }
        }
        best
    }

    /// Waits until a node leads at an epoch above `above`.
    pub(crate) async fn wait_for_leader_above(&self, client: &reqwest::Client, above: u64) -> (usize, u64) {
        for _ in 0..3_000 {
            if let Some((i, epoch)) = self.leader(client).await
                && epoch > above
            {
                return (i, epoch);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no node took over above epoch {above} within 30 s");
    }

    /// Sums a counter over the nodes that are up.
    pub(crate) async fn metric_sum(&self, client: &reqwest::Client, name: &str) -> f64 {
        let mut sum = 0.0;
        for node in self.nodes.iter().flatten() {
            sum += metric(client, &node.metrics, name).await.unwrap_or(0.0);
        }
        sum
    }
}

pub(crate) fn client(timeout_ms: u64) -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_millis(timeout_ms)).build().expect("http client")
}

pub(crate) async fn health(client: &reqwest::Client, rest: &str) -> Option<Value> {
    let resp = client.get(format!("{rest}/health")).send().await.ok()?;
    resp.json().await.ok()
}

pub(crate) async fn metric(client: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// An acknowledged timer.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    pub(crate) id: String,
    pub(crate) due_ms: i64,
}

/// Producers running at once (each waits for its acknowledgement).
const PRODUCERS: usize = 4;

/// Starts [`PRODUCERS`] producers; the task returns every acknowledged timer.
pub(crate) fn spawn_load(
    book: &AddressBook,
    prefix: &str,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<Acked>> {
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(produce(book.clone(), format!("{prefix}-{p}"), stop.clone())))
        .collect();
    tokio::spawn(async move {
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("producer"));
        }
        all
    })
}

/// Creates a timer every few ms until `stop`, each with its own idempotency
/// key, retried (same key) until acknowledged: on 503 at the hinted leader,
/// on connection errors and timeouts at the next node up.
async fn produce(book: AddressBook, prefix: String, mut stop: watch::Receiver<bool>) -> Vec<Acked> {
    let client = client(1_000);
    let mut acked = Vec::new();
    let mut target = 0usize;
    let mut i = 0u64;
    while !*stop.borrow() {
        i += 1;
        let key = format!("{prefix}-{i}");
        let body = json!({
            "duration": 300 + (i * 37) % 900,
            "idempotencyKey": key,
            "labels": { "suite": prefix },
        });
        let deadline = now_ms() + 90_000;
        loop {
            assert!(now_ms() < deadline, "timer {key} was not acknowledged within 90 s");
            let urls = book.read().await.clone();
            let Some(url) = urls[target % NODES].clone() else {
                target += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            match client
                .post(format!("{url}/api/timers"))
                .header("x-api-key", DEV_KEY)
                .json(&body)
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => {
                    let v: Value = resp.json().await.expect("timer JSON");
                    let id = v["id"].as_str().expect("id").to_owned();
                    let due_ms = iso_ms(v["fireAt"].as_str().expect("fireAt"));
                    acked.push(Acked { id, due_ms });
                    break;
                }
                Ok(resp) if resp.status() == 503 => {
                    let retry_after = resp.headers().get("retry-after").is_some();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    assert!(retry_after, "a 503 carries Retry-After: {v}");
                    assert!(v["error"]["retryAfterMs"].is_u64(), "a 503 carries retryAfterMs: {v}");
                    match v["error"]["leader"]
                        .as_str()
                        .and_then(|l| urls.iter().position(|u| u.as_deref() == Some(l)))
                    {
                        Some(leader) => target = leader,
                        None => {
                            target += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    panic!("create {key}: unexpected {status}: {}", resp.text().await.unwrap_or_default());
                }
                Err(_) => {
                    target += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(CREATE_EVERY_MS)) => {}
            _ = stop.changed() => {}
        }
    }
    acked
}

/// One fire as the API shows it.
#[derive(Debug, Clone)]
pub(crate) struct Fire {
    pub(crate) epoch: u64,
    pub(crate) node_id: String,
    pub(crate) due_ms: i64,
    pub(crate) fired_ms: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) timers: usize,
    pub(crate) duplicates: usize,
    pub(crate) lost: usize,
    pub(crate) early: usize,
    pub(crate) fires: Vec<Fire>,
    /// The timers verified.
    pub(crate) acked: Vec<Acked>,
}

/// Reads every acknowledged timer's fires (from any node up), waiting up to
/// 30 s for each to fire.
pub(crate) async fn verify(book: &AddressBook, acked: &[Acked]) -> Verdict {
    let client = client(2_000);
    let urls: Vec<String> = book.read().await.iter().flatten().cloned().collect();
    assert!(!urls.is_empty(), "no node is up to verify with");
    let distinct: BTreeSet<&str> = acked.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(distinct.len(), acked.len(), "idempotent retries never created a second timer");
    let results: Vec<Vec<Fire>> = futures::stream::iter(acked.iter().enumerate())
        .map(|(n, timer)| {
            let client = client.clone();
            let url = urls[n % urls.len()].clone();
            async move {
                let deadline = now_ms() + 30_000;
                loop {
                    let fires = async {
                        let resp = client
                            .get(format!("{url}/api/timers/{}/fires", timer.id))
                            .header("x-api-key", DEV_KEY)
                            .send()
                            .await
                            .ok()?;
                        let v: Value = resp.json().await.ok()?;
                        v["fires"].as_array().cloned()
                    }
                    .await;
                    if let Some(fires) = fires.filter(|f| !f.is_empty()) {
                        return fires
                            .iter()
                            .map(|f| Fire {
                                epoch: f["epoch"].as_u64().expect("epoch"),
                                node_id: f["nodeId"].as_str().expect("nodeId").to_owned(),
                                due_ms: iso_ms(f["dueAt"].as_str().expect("dueAt")),
                                fired_ms: iso_ms(f["firedAt"].as_str().expect("firedAt")),
                            })
                            .collect();
                    }
                    if now_ms() > deadline {
                        return Vec::new();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .buffered(16)
        .collect()
        .await;
    let mut verdict = Verdict { timers: acked.len(), acked: acked.to_vec(), ..Default::default() };
    for (timer, fires) in acked.iter().zip(results) {
        match fires.len() {
            0 => {
                verdict.lost += 1;
                eprintln!("LOST: timer {} due {} never fired", timer.id, timer.due_ms);
            }
            1 => {}
            n => {
                verdict.duplicates += n - 1;
                eprintln!("DUPLICATE: timer {} fired {n} times: {fires:?}", timer.id);
            }
        }
        for fire in &fires {
            if fire.fired_ms < fire.due_ms || fire.due_ms != timer.due_ms {
                verdict.early += 1;
                eprintln!("EARLY OR WRONG: timer {} due {}: {fire:?}", timer.id, timer.due_ms);
            }
        }
        verdict.fires.extend(fires);
    }
    verdict
}

pub(crate) fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Stops the producer, waits until every acknowledged timer is due, and
/// verifies; asserts exactly once, never early.
pub(crate) async fn finish(
    book: &AddressBook,
    stop: watch::Sender<bool>,
    producer: tokio::task::JoinHandle<Vec<Acked>>,
) -> Verdict {
    let _ = stop.send(true);
    let acked = producer.await.expect("producer");
    let last_due = acked.iter().map(|a| a.due_ms).max().unwrap_or(0);
    let wait = (last_due - now_ms() + 500).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let verdict = verify(book, &acked).await;
    assert!(verdict.timers > 100, "the load ran ({} timers)", verdict.timers);
    verdict
}

/// Every 1.5 s under the running load, `kills` times: SIGKILLs the leader,
/// waits until another node leads at a newer epoch, restarts the killed
/// one; then lets the load run 1.5 s more. Returns (kill time, epoch of the
/// killed leader) per kill.
pub(crate) async fn kill_leaders(cluster: &mut Cluster, kills: usize) -> Vec<(i64, u64)> {
    let probe = client(500);
    let mut killed = Vec::new();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (leader, epoch) = cluster.wait_for_leader_above(&probe, 0).await;
        let at = now_ms();
        cluster.kill(leader).await;
        killed.push((at, epoch));
        let (next, next_epoch) = cluster.wait_for_leader_above(&probe, epoch).await;
        assert_ne!(next, leader, "another node took over");
        assert!(next_epoch > epoch);
        cluster.restart(leader).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    killed
}

/// Failover per kill, sorted: SIGKILL of the leader → the first fire
/// recorded under a newer epoch.
pub(crate) fn failover_ms(killed: &[(i64, u64)], verdict: &Verdict) -> Vec<i64> {
    let mut failover_ms: Vec<i64> = killed
        .iter()
        .map(|(at, epoch)| {
            let first = verdict
                .fires
                .iter()
                .filter(|f| f.epoch > *epoch)
                .map(|f| f.fired_ms)
                .min()
                .expect("a fire after every takeover");
            first - at
        })
        .collect();
    failover_ms.sort_unstable();
    failover_ms
}

/// The role `/health` of the node at `rest` reports once it follows at
/// `epoch` or later (polled for up to 5 s; the last role seen otherwise).
pub(crate) async fn role_once_at(rest: &str, epoch: u64) -> Value {
    let probe = client(500);
    let mut role = Value::Null;
    for _ in 0..500 {
        if let Some(h) = health(&probe, rest).await {
            role = h["role"].clone();
            if role == "follower" && h["epoch"].as_u64().is_some_and(|e| e >= epoch) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    role
}

pub(crate) fn assert_exactly_once(name: &str, verdict: &Verdict) {
    assert_eq!(
        (verdict.duplicates, verdict.lost, verdict.early),
        (0, 0, 0),
        "{name}: duplicates, lost, early fires"
    );
}

pub(crate) fn epochs(verdict: &Verdict) -> BTreeMap<u64, BTreeSet<String>> {
    let mut by_epoch: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for fire in &verdict.fires {
        by_epoch.entry(fire.epoch).or_default().insert(fire.node_id.clone());
    }
    by_epoch
}

/// Every node shows a tenant the same signing key: generated once, kept in
/// the cluster database (no node was given a key).
pub(crate) async fn nodes_agree_on_the_tenants_signing_key(cluster: &Cluster) {
    let mut keys = BTreeSet::new();
    for i in 0..NODES {
        let response = client(5_000)
            .get(format!("{}/api/signing-keys", cluster.node(i).rest))
            .header("x-api-key", DEV_KEY)
            .send()
            .await
            .expect("signing keys");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["source"], "generated", "{body}");
        keys.insert(body["current"].as_str().expect("current").to_owned());
    }
    assert_eq!(keys.len(), 1, "one key for the tenant on every node");
}

/// A real gRPC client (the `minoots` CLI) writing to a follower gets
/// FAILED_PRECONDITION naming the leader's gRPC address and a retry hint.
pub(crate) fn follower_refuses_grpc_writes_with_the_leader(cluster: &Cluster, leader: usize) {
    let follower = (0..NODES).find(|&i| i != leader).expect("a follower");
    let out = std::process::Command::new(crate::support::minoots_bin())
        .args([
            "timers",
            "create",
            "--in",
            "1m",
            "--server",
            &cluster.node(follower).grpc,
            "--api-key",
            DEV_KEY,
        ])
        .output()
        .expect("run minoots timers create");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a follower must refuse the write: {stderr}");
    assert!(stderr.contains("FAILED_PRECONDITION"), "gRPC status: {stderr}");
    assert!(stderr.contains("retry after"), "retry hint: {stderr}");
    assert!(stderr.contains(&format!("leader: {}", cluster.node(leader).grpc)), "leader hint: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leader_sigkill_loses_and_duplicates_nothing() {
    let kills = env_u64("MINOOTS_CLUSTER_KILLS", 4) as usize;
    let mut cluster = Cluster::start().await;
    let probe = client(500);
    let (first_leader, first_epoch) = cluster.wait_for_leader_above(&probe, 0).await;
    follower_refuses_grpc_writes_with_the_leader(&cluster, first_leader);
    nodes_agree_on_the_tenants_signing_key(&cluster).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "kill", stop_rx);

    let killed = kill_leaders(&mut cluster, kills).await;
    let verdict = finish(&cluster.book, stop_tx, producer).await;
    let rejected = cluster.metric_sum(&probe, "minoots_fires_rejected_total").await;

    let failover_ms = failover_ms(&killed, &verdict);
    let by_epoch = epochs(&verdict);
    println!(
        "cluster sigkill: timers={} kills={} pauses=0 failovers={} stale_fires_rejected={} duplicates={} lost={} early={} \
         epochs_with_fires={} failover_ms p50={} p99={} max={} (lease ttl {} ms) all={failover_ms:?}",
        verdict.timers,
        killed.len(),
        by_epoch.keys().last().copied().unwrap_or(first_epoch) - first_epoch,
        rejected,
        verdict.duplicates,
        verdict.lost,
        verdict.early,
        by_epoch.len(),
        percentile(&failover_ms, 0.5),
        percentile(&failover_ms, 0.99),
        failover_ms.last().copied().unwrap_or(0),
        lease_ttl_ms(),
    );
    assert_exactly_once("sigkill", &verdict);
    assert!(by_epoch.len() > kills, "fires were recorded under every leader: {by_epoch:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_paused_leader_is_fenced_and_steps_down() {
    let cluster = Cluster::start().await;
    let probe = client(500);
    let ttl = lease_ttl_ms();
    let (_, first_epoch) = cluster.wait_for_leader_above(&probe, 0).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "pause", stop_rx);

    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let (paused, epoch) = cluster.wait_for_leader_above(&probe, 0).await;
    cluster.node(paused).signal("STOP");
    // Longer than the lease: another node must take over meanwhile.
    tokio::time::sleep(Duration::from_millis(ttl * 5 / 2)).await;
    let (next, next_epoch) = cluster.wait_for_leader_above(&probe, epoch).await;
    assert_ne!(next, paused);
    cluster.node(paused).signal("CONT");

    // The paused leader steps down (its lease is gone) and follows the new one.
    let role = role_once_at(&cluster.node(paused).rest, next_epoch).await;
    assert_eq!(role, "follower", "the resumed leader stepped down");
    let paused_rejected =
        metric(&probe, &cluster.node(paused).metrics, "minoots_fires_rejected_total").await.unwrap_or(0.0);
    let paused_failures =
        metric(&probe, &cluster.node(paused).metrics, "minoots_store_failures_total").await.unwrap_or(0.0);

    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let verdict = finish(&cluster.book, stop_tx, producer).await;
    let by_epoch = epochs(&verdict);
    let rejected = cluster.metric_sum(&probe, "minoots_fires_rejected_total").await;
    println!(
        "cluster sigstop: timers={} kills=0 pauses=1 pause_ms={} failovers={} stale_fires_rejected={} \
         (paused node: rejected {} fires, {} store failures incl. commits refused unsent) duplicates={} lost={} early={}",
        verdict.timers,
        ttl * 5 / 2,
        by_epoch.keys().last().copied().unwrap_or(first_epoch) - first_epoch,
        rejected,
        paused_rejected,
        paused_failures,
        verdict.duplicates,
        verdict.lost,
        verdict.early,
    );
    assert_exactly_once("sigstop", &verdict);
    // Nothing was recorded under the paused leader's epoch after the takeover
    // (the load runs throughout, so a later epoch recorded fires).
    let takeover_at =
        verdict.fires.iter().filter(|f| f.epoch >= next_epoch).map(|f| f.fired_ms).min().unwrap_or_else(
            || panic!("no fire recorded after the takeover at epoch {next_epoch}: {by_epoch:?}"),
        );
    let late = verdict.fires.iter().filter(|f| f.epoch == epoch && f.fired_ms > takeover_at).count();
    assert_eq!(late, 0, "a fire under the deposed epoch {epoch} after the takeover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rides_out_a_database_restart() {
    let mut cluster = Cluster::start().await;
    let probe = client(500);
    let (_, first_epoch) = cluster.wait_for_leader_above(&probe, 0).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "pgrestart", stop_rx);

    tokio::time::sleep(Duration::from_millis(2_000)).await;
    cluster.pg().crash();
    // Every node reports the database down on /health (within the outage).
    let crashed_at = now_ms();
    let mut down = [false; NODES];
    while down.iter().any(|d| !d) && now_ms() - crashed_at < 5_000 {
        for (i, seen) in down.iter_mut().enumerate() {
            let h = health(&probe, &cluster.node(i).rest)
                .await
                .expect("health answers while the database is down");
            *seen |= h["store"]["ok"] == false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down.iter().all(|d| *d), "every node reported the database down: {down:?}");
    tokio::time::sleep(Duration::from_millis((2_000 - (now_ms() - crashed_at)).max(0) as u64)).await;
    cluster.pg().restart();
    let (_, epoch_after) = cluster.wait_for_leader_above(&probe, 0).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let verdict = finish(&cluster.book, stop_tx, producer).await;
    let rejected = cluster.metric_sum(&probe, "minoots_fires_rejected_total").await;
    println!(
        "cluster postgres restart: timers={} kills=0 pauses=0 db_restarts=1 failovers={} stale_fires_rejected={} \
         duplicates={} lost={} early={}",
        verdict.timers,
        epoch_after.saturating_sub(first_epoch),
        rejected,
        verdict.duplicates,
        verdict.lost,
        verdict.early,
    );
    assert_exactly_once("postgres restart", &verdict);
    // The store's guard is observable: breaker state and pool warnings are exported.
    let metrics = &cluster.node(0).metrics;
    for name in [
        "minoots_store_circuit_open",
        "minoots_store_circuit_opens_total",
        "minoots_store_pool_exhaustion_warnings_total",
    ] {
        assert!(metric(&probe, metrics, name).await.is_some(), "{name} is exported");
    }
}

/// A node started while its database is down does not exit: it retries
/// (with backoff) and becomes ready, and leads, once the database is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_started_before_its_database_waits_for_it() {
    let mut pg = PgServer::start();
    let url = pg.create_database("minoots_late");
    pg.crash();
    let starter = std::thread::spawn(move || {
        Server::start_with(&["--store", "postgres", "--database-url", &url, "--node-id", "node-late"], &[])
    });
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(!starter.is_finished(), "the node waits for its database (it neither exited nor became ready)");
    pg.restart();
    let node =
        tokio::task::spawn_blocking(move || starter.join().expect("the node started")).await.expect("join");
    let probe = client(2_000);
    let h = health(&probe, &node.rest).await.expect("health");
    assert_eq!(h["role"], "leader", "{h}");
    assert_eq!(h["store"]["ok"], true, "{h}");
}

/// A replaced node whose predecessor is frozen, not dead: SIGSTOP the
/// leader (the other nodes are gone), start a new process with the *same
/// node id*, SIGCONT the old one.
/// The successor takes the lease over at once at a new epoch (no TTL wait);
/// the old process is fenced out, steps down and never takes the lease back;
/// every timer fires exactly once, and the fires' epochs tell the two
/// incarnations apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_successor_of_a_frozen_leader_fences_it_out() {
    let mut cluster = Cluster::start().await;
    let probe = client(500);
    let (_, first_epoch) = cluster.wait_for_leader_above(&probe, 0).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "successor", stop_rx);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (frozen, old_epoch) = cluster.wait_for_leader_above(&probe, 0).await;
    // Only processes of the frozen node's id remain, so the lease can only
    // pass to its successor, however long that takes to start.
    for other in (0..NODES).filter(|&i| i != frozen) {
        cluster.kill(other).await;
    }
    let old = cluster.nodes[frozen].take().expect("the leader is up");
    old.signal("STOP");
    let stopped_at_ms = now_ms();
    let successor = cluster.spawn(frozen);
    cluster.book.write().await[frozen] = Some(successor.rest.clone());
    cluster.nodes[frozen] = Some(successor);
    let (leader, new_epoch) = cluster.wait_for_leader_above(&probe, old_epoch).await;
    let takeover_ms = now_ms() - stopped_at_ms;
    assert_eq!(leader, frozen, "the successor (same node id) took over");

    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("CONT");
    let mut role = Value::Null;
    for _ in 0..500 {
        if let Some(h) = health(&probe, &old.rest).await {
            role = h["role"].clone();
            if role == "follower" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(role, "follower", "the resumed old incarnation stepped down");
    tokio::time::sleep(Duration::from_millis(2 * lease_ttl_ms() + 500)).await;
    let old_health = health(&probe, &old.rest).await.expect("the old incarnation answers");
    assert_eq!(old_health["role"], "follower", "it never took the lease back: {old_health}");
    let (still, _) = cluster.wait_for_leader_above(&probe, old_epoch).await;
    assert_eq!(still, frozen);

    let verdict = finish(&cluster.book, stop_tx, producer).await;
    let by_epoch = epochs(&verdict);
    println!(
        "cluster successor: timers={} frozen=node-{} old_epoch={old_epoch} new_epoch={new_epoch} \
         takeover_ms={takeover_ms} (lease ttl {} ms) fires_per_epoch={:?} duplicates={} lost={} early={}",
        verdict.timers,
        frozen + 1,
        lease_ttl_ms(),
        verdict.fires.iter().fold(BTreeMap::<u64, usize>::new(), |mut counts, f| {
            *counts.entry(f.epoch).or_default() += 1;
            counts
        }),
        verdict.duplicates,
        verdict.lost,
        verdict.early,
    );
    assert!(first_epoch <= old_epoch && new_epoch > old_epoch);
    assert_exactly_once("successor", &verdict);
    let takeover_at = verdict
        .fires
        .iter()
        .filter(|f| f.epoch == new_epoch)
        .map(|f| f.fired_ms)
        .min()
        .unwrap_or_else(|| panic!("the successor fired under its own epoch {new_epoch}: {by_epoch:?}"));
    let late = verdict.fires.iter().filter(|f| f.epoch == old_epoch && f.fired_ms > takeover_at).count();
    assert_eq!(late, 0, "a fire under the old incarnation's epoch {old_epoch} after its successor's");
    drop(old);
}
