//! Property tests: random command sequences (schedules, cancels, restarts,
//! clock advances, store failures of every kind — not sent, request lost,
//! applied with the reply lost — store clock skew) against the reference
//! store. Properties: no occurrence recorded twice (the model asserts it), none
//! before its due time by the store clock, and none lost: after a quiet
//! period every due, uncancelled one-shot timer has fired.

use minoots_core::draft::TimerDraft;
use minoots_core::engine::{Command, EngineConfig, Response};
use minoots_core::harness::{CommitFailure, Harness};
use minoots_core::timer::TimerStatus;
use minoots_core::{Now, TenantId, TimerId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    ScheduleAfter(u64),
    ScheduleEvery(u64),
    Cancel(usize),
    Advance(u64),
    Restart(u64),
    FailNextCommit(CommitFailure),
    Skew(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..5_000).prop_map(Op::ScheduleAfter),
        1 => (50u64..2_000).prop_map(Op::ScheduleEvery),
        2 => (0usize..64).prop_map(Op::Cancel),
        4 => (0u64..3_000).prop_map(Op::Advance),
        1 => any::<u64>().prop_map(Op::Restart),
        1 => prop_oneof![
            Just(CommitFailure::NotSent),
            Just(CommitFailure::LostRequest),
            Just(CommitFailure::LostReply),
        ]
        .prop_map(Op::FailNextCommit),
        1 => (-50i64..50).prop_map(Op::Skew),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn exactly_once_never_early_never_lost(ops in proptest::collection::vec(op(), 1..80)) {
        let tenant = TenantId::parse("tenantId", "acme").unwrap();
        let mut h = Harness::new(EngineConfig::new("n", 1), Now::new(1_700_000_000_000, 0));
        let mut ids: Vec<TimerId> = Vec::new();
        for op in ops {
            match op {
                Op::ScheduleAfter(ms) => {
                    let req = h.request(Command::Schedule(TimerDraft {
                        tenant_id: Some(tenant.clone()), duration_ms: Some(ms), ..Default::default()
                    }));
                    if let Some(Ok(Response::Scheduled(c))) = h.take_reply(req) { ids.push(c.timer.id) }
                }
                Op::ScheduleEvery(ms) => {
                    let req = h.request(Command::Schedule(TimerDraft {
                        tenant_id: Some(tenant.clone()), every_ms: Some(ms), max_occurrences: Some(5), ..Default::default()
                    }));
                    if let Some(Ok(Response::Scheduled(c))) = h.take_reply(req) { ids.push(c.timer.id) }
                }
                Op::Cancel(i) => {
                    if let Some(id) = ids.get(i % ids.len().max(1)).copied() {
                        h.request(Command::Cancel { tenant_id: tenant.clone(), timer_id: id, requested_by: String::new(), reason: None });
                    }
                }
                Op::Advance(ms) => h.advance(ms),
                Op::Restart(seed) => h.restart(seed),
                Op::FailNextCommit(how) => h.fail_next_commit = Some(how),
                Op::Skew(ms) => h.store_skew_ms = ms,
            }
            for fire in h.store.fires().values() {
                prop_assert!(fire.fired_at_ms >= fire.due_ms, "early fire {fire:?}");
            }
        }
        // Liveness: heal, then let every interval run out (5 occurrences of ≤ 2 s, or coalesced).
        h.store_skew_ms = 0;
        h.fail_next_commit = None;
        h.advance(60_000);
        for timer in h.store.timers().values() {
            if timer.schedule.is_recurring() {
                continue;
            }
            match timer.status {
                TimerStatus::Fired => prop_assert!(h.store.fires().contains_key(&(timer.id, 1))),
                TimerStatus::Cancelled => prop_assert!(!h.store.fires().contains_key(&(timer.id, 1))),
                TimerStatus::Scheduled => prop_assert!(false, "timer {} due at {} never fired", timer.id, timer.next_due_ms),
            }
        }
        // Events: exactly one fired event per recorded fire.
        let fired_events = h.published.iter().filter(|e| e.kind == minoots_core::event::EventKind::Fired).count();
        prop_assert_eq!(fired_events, h.store.fires().len());
    }
}
