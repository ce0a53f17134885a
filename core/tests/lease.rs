//! Leases on the multi-node harness: exactly one leader, followers refuse
//! writes with a hint, renewals keep the lease, a paused leader is replaced
//! and steps down on its own clock before acting, and a commit it emitted
//! before the pause is fenced out by the store.

use minoots_core::draft::TimerDraft;
use minoots_core::engine::{Command, EngineConfig, Leadership, LeadershipMode, Response};
use minoots_core::error::ApiError;
use minoots_core::harness::Cluster;
use minoots_core::lease::LeaseConfig;
use minoots_core::store::{LEASE_SHARD, LeaseReply, StoreOp, StoreReply};
use minoots_core::{Now, TenantId};

const T0: i64 = 1_700_000_000_000;

fn lease() -> LeaseConfig {
    LeaseConfig {
        ttl_ms: 2_000,
        renew_every_ms: 500,
        drift_bound_ppm: 50_000,
        margin_ms: 100,
        acquire_retry_ms: 250,
    }
}

fn cluster(n: usize) -> Cluster {
    let configs = (0..n)
        .map(|i| {
            let mut c = EngineConfig::new(format!("node-{i}"), i as u64);
            c.address = format!("10.0.0.{i}:50051");
            c.mode = LeadershipMode::Lease(lease());
            c
        })
        .collect();
    Cluster::new(configs, Now::new(T0, 0))
}

fn schedule(ms: u64) -> Command {
    Command::Schedule(TimerDraft {
        tenant_id: Some(TenantId::parse("tenantId", "acme").unwrap()),
        duration_ms: Some(ms),
        ..Default::default()
    })
}

#[test]
fn lease_validity_accounts_for_drift_and_margin() {
    assert_eq!(lease().valid_until(1_000), 1_000 + 2_000 - 100 - 100);
    assert!(lease().check().is_ok());
    let too_short = LeaseConfig { ttl_ms: 500, ..lease() };
    assert!(too_short.check().is_err());
}

#[test]
fn exactly_one_node_leads_and_followers_point_to_it() {
    let mut c = cluster(3);
    c.advance(10);
    assert_eq!(c.leaders(), vec![0], "the first to ask gets the lease");
    c.advance(60_000);
    assert_eq!(c.leaders(), vec![0], "renewals keep it for a minute");
    assert_eq!(c.store.epoch(), 1, "no takeover happened");

    let req = c.request(2, schedule(1_000));
    match c.nodes[2].replies.remove(&req) {
        Some(Err(ApiError::Unavailable { leader, retry_after_ms, .. })) => {
            assert_eq!(leader.as_deref(), Some("10.0.0.0:50051"));
            assert!(retry_after_ms > 0);
        }
        other => panic!("a follower must refuse writes with a hint, got {other:?}"),
    }
    let req = c.request(0, schedule(1_000));
    assert!(matches!(c.nodes[0].replies.remove(&req), Some(Ok(Response::Scheduled(_)))));
    c.advance(1_000);
    assert_eq!(c.store.fires().len(), 1);
}

#[test]
fn a_paused_leader_is_replaced_and_its_delayed_commit_is_fenced_out() {
    let mut c = cluster(2);
    c.advance(10);
    assert_eq!(c.leaders(), vec![0]);
    let req = c.request(0, schedule(300));
    assert!(matches!(c.nodes[0].replies.remove(&req), Some(Ok(Response::Scheduled(_)))));

    // The leader reaches the due time and emits its fire commit, then pauses
    // before that commit reaches the store (a GC pause mid-request).
    c.advance(299);
    c.nodes[0].engine.handle_input(Now::new(c.now.wall_ms + 1, c.now.mono_ms + 1), minoots_core::Input::Tick);
    c.now = Now::new(c.now.wall_ms + 1, c.now.mono_ms + 1);
    c.pause(0);
    assert!(
        c.nodes[0].pending.iter().any(
            |e| matches!(e, minoots_core::Effect::Store { op: StoreOp::Commit(b), .. } if !b.fires.is_empty())
        ),
        "the fire commit is held by the paused node"
    );

    // Longer than the TTL: node 1 takes over and fires the timer itself.
    c.advance(5_000);
    assert_eq!(c.leaders(), vec![0, 1], "node 0 still believes it leads: it has not run");
    assert_eq!(c.store.epoch(), 2);
    assert_eq!(c.store.fires().len(), 1);
    let fire = c.store.fires().values().next().unwrap();
    assert_eq!((fire.epoch, fire.node_id.as_str()), (2, "node-1"));

    // Node 0 wakes: its held commit is fenced out, and it steps down.
    c.resume(0);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.store.fires().len(), 1, "no second fire from the stale leader");
    assert!(matches!(c.nodes[0].engine.leadership(), Leadership::Follower { .. }));
    assert_eq!(c.nodes[0].engine.stats().step_downs, 1, "it stepped down once");
}

#[test]
fn a_leader_that_cannot_renew_steps_down_before_the_store_expires_its_lease() {
    let mut c = cluster(2);
    c.advance(500); // node 0 leads since t=0; its renewal sent at t=500 succeeds
    assert_eq!(c.leaders(), vec![0]);
    let store_expiry = c.store.leases()[&LEASE_SHARD].expires_at_ms;
    assert_eq!(store_expiry, T0 + 2_500, "renewed at store time 500 for 2 s");
    c.nodes[0].store_down = true; // from now on its renewals fail

    // Local validity of the last successful renewal: 500 + ttl − 5 % drift − margin = 2_300.
    c.advance(1_799);
    assert_eq!(c.leaders(), vec![0], "still within its local validity at t=2_299");
    c.advance(1);
    assert!(c.leaders().is_empty(), "stepped down at t=2_300, 200 ms before the store would let anyone in");
    assert!(c.now.wall_ms < store_expiry);
    c.advance(500);
    assert_eq!(c.leaders(), vec![1], "node 1 takes over once the store's lease expired");
    assert_eq!(c.store.epoch(), 2);
}

#[test]
fn a_restarted_leader_takes_its_lease_over_at_once_at_a_new_epoch() {
    let mut c = cluster(2);
    c.advance(10);
    c.restart(0);
    assert_eq!(c.leaders(), vec![0], "the new incarnation leads without waiting for the TTL");
    assert_eq!(c.store.epoch(), 2, "a new incarnation is a new tenure: a new epoch");
    let reply = c
        .store
        .clone()
        .apply(
            c.now.wall_ms,
            &StoreOp::RenewLease { shard: LEASE_SHARD, node_id: "node-0".into(), epoch: 1, ttl_ms: 2_000 },
        )
        .expect("a renewal always gets a reply");
    assert!(matches!(reply, StoreReply::Lease(LeaseReply::Lost { .. })), "the old epoch cannot renew");

    // Node 0 loses the store long enough for its lease to lapse: node 1 takes a new epoch.
    c.nodes[0].store_down = true;
    c.advance(3_000);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.store.epoch(), 3);
}

#[test]
fn a_paused_old_incarnation_is_fenced_out_by_its_successor_and_never_takes_the_lease_back() {
    let mut c = cluster(2);
    c.advance(10);
    assert_eq!(c.leaders(), vec![0]);
    // The leader freezes with a create on its way to the store.
    c.pause(0);
    let held = c.request(0, schedule(50));
    let successor = c.start_successor(0);
    assert_eq!(c.leaders(), vec![0, successor], "the frozen one still believes it leads");
    assert_eq!(c.store.epoch(), 2, "the successor (same node id) took over at once");
    let fresh = c.request(successor, schedule(50));
    assert!(matches!(c.nodes[successor].replies.get(&fresh), Some(Ok(Response::Scheduled(_)))));

    c.resume(0);
    assert!(
        matches!(c.nodes[0].replies.get(&held), Some(Err(ApiError::Unavailable { .. }))),
        "the old incarnation's create was fenced out: {:?}",
        c.nodes[0].replies.get(&held)
    );
    assert_eq!(c.store.timers().len(), 1, "only the successor's timer exists");
    assert_eq!(c.leaders(), vec![successor], "the old incarnation stepped down");
    c.advance(5_000);
    assert_eq!(c.leaders(), vec![successor], "and never took the lease back");
    assert_eq!(c.store.epoch(), 2);
    let fires: Vec<_> = c.store.fires().values().map(|f| f.epoch).collect();
    assert_eq!(fires, vec![2], "the successor fired its timer, at its own epoch");
}

mod props {
    use super::*;
    use minoots_core::timer::TimerStatus;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Schedule(usize, u64),
        Advance(u64),
        Pause(usize),
        Resume(usize),
        Restart(usize),
        StoreDown(usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..3, 1u64..4_000).prop_map(|(n, ms)| Op::Schedule(n, ms)),
            4 => (1u64..3_000).prop_map(Op::Advance),
            1 => (0usize..3).prop_map(Op::Pause),
            1 => (0usize..3).prop_map(Op::Resume),
            1 => (0usize..3).prop_map(Op::Restart),
            1 => (0usize..3, any::<bool>()).prop_map(|(n, down)| Op::StoreDown(n, down)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// One running leader at a time; every fire recorded once, never early,
        /// by the lease holder of its epoch; nothing acknowledged is lost.
        #[test]
        fn leases_keep_fires_exactly_once(ops in proptest::collection::vec(op(), 1..60)) {
            let mut c = cluster(3);
            let mut acked = Vec::new();
            for op in ops {
                match op {
                    Op::Schedule(n, ms) => {
                        let req = c.request(n, schedule(ms));
                        if let Some(Ok(Response::Scheduled(created))) = c.nodes[n].replies.remove(&req) {
                            acked.push(created.timer.id);
                        }
                    }
                    Op::Advance(ms) => c.advance(ms),
                    Op::Pause(n) => c.pause(n),
                    Op::Resume(n) => if c.nodes[n].paused { c.resume(n) },
                    Op::Restart(n) => c.restart(n),
                    Op::StoreDown(n, down) => c.nodes[n].store_down = down,
                }
                let running_leaders = c.leaders().into_iter().filter(|&i| !c.nodes[i].paused).count();
                prop_assert!(running_leaders <= 1, "two running leaders");
                for fire in c.store.fires().values() {
                    prop_assert!(fire.fired_at_ms >= fire.due_ms);
                }
            }
            // Heal, then everything acknowledged fires exactly once.
            for i in 0..3 {
                c.nodes[i].store_down = false;
                if c.nodes[i].paused { c.resume(i) }
            }
            c.advance(30_000);
            for id in acked {
                let timer = &c.store.timers()[&id];
                prop_assert_eq!(timer.status, TimerStatus::Fired);
                prop_assert!(c.store.fires().contains_key(&(id, 1)));
            }
        }
    }
}

#[test]
fn a_raft_term_fences_older_terms_and_never_goes_back() {
    use minoots_core::lease::Lease;
    let first = Lease::raft_term(None, "n1", "a1", 3).expect("a first term is recorded");
    assert_eq!(first.holder.epoch, 3);
    assert!(first.fences("n1", 3, i64::MAX - 1), "a Raft term does not expire by the clock");
    let second = Lease::raft_term(Some(&first), "n2", "a2", 5).expect("a newer term replaces it");
    assert!(second.fences("n2", 5, T0));
    assert!(!second.fences("n1", 3, T0), "the deposed leader's commits apply nothing");
    assert_eq!(Lease::raft_term(Some(&second), "n1", "a1", 4), None, "a late barrier of an older term");
    assert_eq!(Lease::raft_term(Some(&second), "n2", "a2", 5), None, "a replayed barrier");
}
