//! Raft-mode chaos with real processes: three `minoots serve` nodes with
//! `KERNEL_RAFT_NODE_ID`/`KERNEL_RAFT_PEERS`, each on its own data directory
//! (no shared database), under the same steady load of timers due every few
//! milliseconds as the PostgreSQL cluster tests (`cluster`, whose harness
//! this shares), while the test
//!
//! 1. starts every node at once: they form one cluster (one leader, every
//!    follower naming it, one term), and followers refuse writes with the
//!    leader's address (REST 503 + `Retry-After`, gRPC `FAILED_PRECONDITION`);
//! 2. SIGKILLs the leader again and again and restarts it, measuring
//!    failover: SIGKILL → the first fire recorded under a newer term;
//! 3. SIGSTOPs the leader past an election and SIGCONTs it: it follows the
//!    new leader, and nothing is recorded under its term after the takeover;
//! 4. kills two of three nodes: nothing fires and writes are refused; once
//!    one returns, everything due meanwhile fires;
//! 5. wipes the lowest-id node's data directory (the node that initialises
//!    a new cluster) and restarts it: it rejoins its peers' cluster, catches
//!    up from a snapshot (the leader has purged its log) and shows every fire.
//!
//! After each: every acknowledged timer has exactly one fire, none early,
//! none lost. Each prints its counts. Knob: `MINOOTS_RAFT_KILLS` (default 4;
//! `MINOOTS_RAFT_KILLS=30 cargo test -p minoots --test e2e raft_leader_sigkill -- --nocapture`
//! measures failover with the default election settings).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{RwLock, watch};

use crate::cluster::{
    Backing, Cluster, NODES, assert_exactly_once, client, env_u64, epochs, failover_ms, finish,
    follower_refuses_grpc_writes_with_the_leader, health, kill_leaders, now_ms, percentile, role_once_at,
    spawn_load, verify,
};
use crate::support::DEV_KEY;

/// Waits until the nodes agree: one leads at term T and every other node up
/// follows it at T, and every node knows the development key (the first
/// leader seeds it once it leads). Returns (leader index, T).
async fn one_cluster(cluster: &Cluster) -> (usize, u64) {
    let agreed = agreed_leader(cluster).await;
    let probe = client(500);
    for node in cluster.nodes.iter().flatten() {
        let mut status = None;
        for _ in 0..500 {
            let resp = probe
                .get(format!("{}/api/timers?limit=1", node.rest))
                .header("x-api-key", DEV_KEY)
                .send()
                .await;
            status = resp.ok().map(|r| r.status());
            if status == Some(reqwest::StatusCode::OK) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, Some(reqwest::StatusCode::OK), "{} never accepted the development key", node.rest);
    }
    agreed
}

async fn agreed_leader(cluster: &Cluster) -> (usize, u64) {
    let probe = client(500);
    let mut seen = Vec::new();
    for _ in 0..1_000 {
        seen.clear();
        for node in cluster.nodes.iter() {
            let h = match node {
                Some(node) => health(&probe, &node.rest).await,
                None => None,
            };
            seen.push(h);
        }
        let leaders: Vec<(usize, u64)> = seen
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let h = h.as_ref()?;
                (h["role"] == "leader").then(|| (i, h["epoch"].as_u64().unwrap_or(0)))
            })
            .collect();
        if let [(leader, term)] = leaders[..] {
            let leader_rest = &cluster.nodes[leader].as_ref().expect("up").rest;
            let followers_agree = seen.iter().enumerate().filter(|(i, _)| *i != leader).all(|(_, h)| {
                h.as_ref().is_some_and(|h| {
                    h["role"] == "follower"
                        && h["epoch"].as_u64() == Some(term)
                        && h["leader"].as_str().is_some_and(|l| l.contains(leader_rest.as_str()))
                })
            });
            if followers_agree {
                return (leader, term);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the nodes never agreed on one leader: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_leader_sigkill_loses_and_duplicates_nothing() {
    let kills = env_u64("MINOOTS_RAFT_KILLS", 4) as usize;
    let mut cluster = Cluster::start_raft(Vec::new()).await;
    let (first_leader, first_term) = one_cluster(&cluster).await;
    follower_refuses_grpc_writes_with_the_leader(&cluster, first_leader);
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "raftkill", stop_rx);

    let killed = kill_leaders(&mut cluster, kills).await;
    let verdict = finish(&cluster.book, stop_tx, producer).await;
    let failover_ms = failover_ms(&killed, &verdict);
    let by_term = epochs(&verdict);
    println!(
        "raft sigkill: timers={} kills={} terms_with_fires={} first_term={first_term} duplicates={} lost={} early={} \
         failover_ms p50={} p99={} max={} all={failover_ms:?}",
        verdict.timers,
        killed.len(),
        by_term.len(),
        verdict.duplicates,
        verdict.lost,
        verdict.early,
        percentile(&failover_ms, 0.5),
        percentile(&failover_ms, 0.99),
        failover_ms.last().copied().unwrap_or(0),
    );
    assert_exactly_once("raft sigkill", &verdict);
    assert!(by_term.len() > kills, "fires were recorded under every leader: {by_term:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_paused_leader_follows_after_it_resumes() {
    let cluster = Cluster::start_raft(Vec::new()).await;
    let probe = client(500);
    one_cluster(&cluster).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "raftpause", stop_rx);

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (paused, term) = cluster.wait_for_leader_above(&probe, 0).await;
    cluster.node(paused).signal("STOP");
    let (next, next_term) = cluster.wait_for_leader_above(&probe, term).await;
    assert_ne!(next, paused);
    // Past the takeover, then resume: the old leader learns the newer term and follows.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.node(paused).signal("CONT");
    let role = role_once_at(&cluster.node(paused).rest, next_term).await;
    assert_eq!(role, "follower", "the resumed leader follows the new one");

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let verdict = finish(&cluster.book, stop_tx, producer).await;
    println!(
        "raft sigstop: timers={} pauses=1 term={term} next_term={next_term} duplicates={} lost={} early={}",
        verdict.timers, verdict.duplicates, verdict.lost, verdict.early,
    );
    assert_exactly_once("raft sigstop", &verdict);
    let takeover_at = verdict
        .fires
        .iter()
        .filter(|f| f.epoch >= next_term)
        .map(|f| f.fired_ms)
        .min()
        .unwrap_or_else(|| panic!("no fire after the takeover at term {next_term}"));
    let late = verdict.fires.iter().filter(|f| f.epoch == term && f.fired_ms > takeover_at).count();
    assert_eq!(late, 0, "a fire under the deposed term {term} after the takeover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_without_a_quorum_refuses_writes_and_fires_nothing_until_one_returns() {
    let mut cluster = Cluster::start_raft(Vec::new()).await;
    let probe = client(500);
    let (leader, _) = one_cluster(&cluster).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "raftquorum", stop_rx);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Stop the load first: while no quorum exists no write can be acknowledged.
    let _ = stop_tx.send(true);
    let acked = producer.await.expect("producer");
    let followers: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
    let lost_quorum_at = now_ms();
    for &i in &followers {
        cluster.kill(i).await;
    }
    // The leader steps down by itself once a quorum has not answered for an election timeout.
    let rest = cluster.node(leader).rest.clone();
    let mut h = Value::Null;
    for _ in 0..500 {
        h = health(&probe, &rest).await.unwrap_or(Value::Null);
        if h["role"] == "follower" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h["role"], "follower", "the leader without a quorum stopped leading: {h}");
    let stepped_down_at = now_ms();
    let mut h = Value::Null;
    for _ in 0..500 {
        h = health(&probe, &rest).await.unwrap_or(Value::Null);
        if h["status"] == "no_quorum" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h["status"], "no_quorum", "/health says the quorum is lost: {h}");
    assert_eq!(h["raft"]["quorum"], false, "{h}");
    assert_eq!(h["raft"]["node_id"], (leader + 1).to_string(), "{h}");
    for field in ["state", "is_leader", "term", "commit_index", "applied_index"] {
        assert!(!h["raft"][field].is_null(), "/health's raft block has {field}: {h}");
    }
    let refused = client(10_000)
        .post(format!("{rest}/api/timers"))
        .header("x-api-key", DEV_KEY)
        .json(&serde_json::json!({ "duration": "1s" }))
        .send()
        .await
        .expect("the survivor answers");
    assert_eq!(refused.status(), 503, "no write without a quorum");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let restored_at = now_ms();
    cluster.restart(followers[0]).await;

    let book = cluster.book.clone();
    let last_due = acked.iter().map(|a| a.due_ms).max().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis((last_due - now_ms() + 500).max(0) as u64)).await;
    let verdict = verify(&book, &acked).await;
    let during =
        verdict.fires.iter().filter(|f| f.fired_ms > stepped_down_at && f.fired_ms < restored_at).count();
    let due_meanwhile = acked.iter().filter(|a| a.due_ms > stepped_down_at && a.due_ms < restored_at).count();
    println!(
        "raft quorum loss: timers={} due_without_quorum={due_meanwhile} lost_quorum_ms={} refused_writes=1 \
         fires_without_quorum={during} duplicates={} lost={} early={}",
        verdict.timers,
        restored_at - lost_quorum_at,
        verdict.duplicates,
        verdict.lost,
        verdict.early,
    );
    assert!(verdict.timers > 100, "the load ran ({} timers)", verdict.timers);
    assert!(due_meanwhile > 0, "some timers came due while no quorum existed");
    assert_eq!(during, 0, "nothing fires without a quorum");
    assert_exactly_once("raft quorum loss", &verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_wiped_node_catches_up_from_a_snapshot() {
    // Snapshots every 100 entries, 10 kept behind: the leader purges its log
    // early, so a node starting from nothing must be sent a snapshot.
    let env = vec![
        ("KERNEL_RAFT_SNAPSHOT_EVERY_ENTRIES".to_owned(), "100".to_owned()),
        ("KERNEL_RAFT_KEEP_AFTER_SNAPSHOT_ENTRIES".to_owned(), "10".to_owned()),
    ];
    let mut cluster = Cluster::start_raft(env).await;
    one_cluster(&cluster).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let producer = spawn_load(&cluster.book, "raftwipe", stop_rx);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // The lowest id: the one node that initialises a new cluster when it
    // finds no state. Its peers hold state, so it must rejoin theirs.
    let wiped = 0;
    cluster.kill(wiped).await;
    let dir = match &cluster.backing {
        Backing::Raft { dirs, .. } => dirs[wiped].path().to_owned(),
        Backing::Postgres { .. } => unreachable!("a Raft cluster"),
    };
    std::fs::remove_dir_all(&dir).expect("wipe the data directory");
    std::fs::create_dir_all(&dir).expect("recreate it empty");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    cluster.restart(wiped).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let verdict = finish(&cluster.book, stop_tx, producer).await;
    assert_exactly_once("raft wipe", &verdict);
    // One cluster still: the wiped node follows the others' leader at their term.
    one_cluster(&cluster).await;

    // The wiped node alone shows every fire: it holds the whole state again.
    let only_wiped = Arc::new(RwLock::new(vec![Some(cluster.node(wiped).rest.clone())]));
    let on_wiped = verify(&only_wiped, &verdict.acked).await;
    let snapshot = dir.join("raft-snapshots").join("current.json");
    println!(
        "raft wipe: timers={} on_wiped_node: fires={} duplicates={} lost={} early={} snapshot_kept={}",
        on_wiped.timers,
        on_wiped.fires.len(),
        on_wiped.duplicates,
        on_wiped.lost,
        on_wiped.early,
        snapshot.exists(),
    );
    assert_exactly_once("raft wipe, read from the wiped node", &on_wiped);
    assert!(snapshot.exists(), "the wiped node holds a snapshot");
}
