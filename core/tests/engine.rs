//! Engine behaviour, input by input: the exact effects each handler emits,
//! then scenarios on the stepping harness (group commit, fire, cancel,
//! fencing, early-fire refusal, store failures, restarts, horizon paging).

use minoots_core::draft::TimerDraft;
use minoots_core::engine::{
    Command, Deadline, Effect, Engine, EngineConfig, Input, Leadership, LeadershipChange, LeadershipMode,
    Response,
};
use minoots_core::error::ApiError;
use minoots_core::event::EventKind;
use minoots_core::harness::{CommitFailure, Harness};
use minoots_core::store::{ListQuery, StoreOp, StoreReply};
use minoots_core::timer::TimerStatus;
use minoots_core::{Now, TenantId};

const T0: i64 = 1_700_000_000_000;

fn tenant(name: &str) -> TenantId {
    TenantId::parse("tenantId", name).expect("valid tenant")
}

fn after(ms: u64) -> TimerDraft {
    TimerDraft { tenant_id: Some(tenant("acme")), duration_ms: Some(ms), ..Default::default() }
}

fn config() -> EngineConfig {
    EngineConfig::new("node-a", 42)
}

fn harness() -> Harness {
    Harness::new(config(), Now::new(T0, 0))
}

fn created_id(reply: Option<Result<Response, ApiError>>) -> minoots_core::TimerId {
    match reply {
        Some(Ok(Response::Scheduled(c))) => c.timer.id,
        other => panic!("expected Scheduled, got {other:?}"),
    }
}

// ---- exact effects -------------------------------------------------------

#[test]
fn start_opens_the_store_then_loads_the_horizon_as_leader() {
    let now = Now::new(T0, 0);
    let mut engine = Engine::new(config(), now);
    assert_eq!(
        engine.poll_output(),
        Some(Effect::Store { io: 1, op: StoreOp::Open { node_id: "node-a".into() } })
    );
    assert_eq!(engine.poll_output(), None);
    assert_eq!(engine.leadership(), &Leadership::Opening);

    engine.handle_input(now, Input::StoreDone { io: 1, result: Ok(StoreReply::Opened { epoch: 7 }) });
    assert_eq!(engine.leadership(), &Leadership::Leader { epoch: 7 });
    assert_eq!(
        engine.poll_output(),
        Some(Effect::Store {
            io: 2,
            op: StoreOp::LoadDue { after: None, until_ms: T0 + 60_000, limit: 10_000 }
        })
    );
    assert_eq!(engine.poll_output(), None);
}

#[test]
fn a_schedule_is_replied_only_after_its_commit() {
    let now = Now::new(T0, 0);
    let mut engine = Engine::new(config(), now);
    let _open = engine.poll_output();
    engine.handle_input(now, Input::StoreDone { io: 1, result: Ok(StoreReply::Opened { epoch: 1 }) });
    let _load = engine.poll_output();
    engine.handle_input(now, Input::Request { req: 9, command: Command::Schedule(after(5_000)) });
    let Some(Effect::Store { io, op: StoreOp::Commit(batch) }) = engine.poll_output() else {
        panic!("expected a commit")
    };
    assert_eq!(batch.epoch, 1);
    assert_eq!(batch.creates.len(), 1);
    assert_eq!(batch.creates[0].next_due_ms, T0 + 5_000);
    assert_eq!(batch.creates[0].next_occurrence, 1);
    assert!(batch.cancels.is_empty() && batch.fires.is_empty());
    assert_eq!(engine.poll_output(), None, "no reply before the commit is done");

    let mut model = minoots_core::model::StoreModel::new();
    model.apply(T0, &StoreOp::Open { node_id: "node-a".into() }).expect("opened");
    let result = model.apply(T0, &StoreOp::Commit(batch.clone()));
    engine.handle_input(now, Input::StoreDone { io, result });
    match engine.poll_output() {
        Some(Effect::Reply { req: 9, result: Ok(Response::Scheduled(c)) }) => {
            assert!(c.created);
            assert_eq!(c.timer, batch.creates[0]);
        }
        other => panic!("expected the reply, got {other:?}"),
    }
    match engine.poll_output() {
        Some(Effect::Publish { events }) => {
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].kind, EventKind::Scheduled);
        }
        other => panic!("expected the scheduled event, got {other:?}"),
    }
}

#[test]
fn invalid_drafts_are_refused_without_touching_the_store() {
    let mut h = harness();
    let req = h.request(Command::Schedule(after(0)));
    match h.take_reply(req) {
        Some(Err(ApiError::Invalid(e))) => assert_eq!(e.field, "duration"),
        other => panic!("expected invalid duration, got {other:?}"),
    }
    let req = h.request(Command::ScheduleBatch(vec![after(10), after(0)]));
    match h.take_reply(req) {
        Some(Err(ApiError::Invalid(e))) => assert_eq!(e.field, "timers[1].duration"),
        other => panic!("expected invalid batch item, got {other:?}"),
    }
    assert!(h.store.timers().is_empty(), "nothing of a rejected batch is stored");
}

// ---- scenarios -----------------------------------------------------------

#[test]
fn writes_arriving_during_a_commit_share_the_next_one() {
    let now = Now::new(T0, 0);
    let mut engine = Engine::new(config(), now);
    let _ = engine.poll_output();
    engine.handle_input(now, Input::StoreDone { io: 1, result: Ok(StoreReply::Opened { epoch: 1 }) });
    let _ = engine.poll_output();
    engine.handle_input(now, Input::Request { req: 1, command: Command::Schedule(after(1_000)) });
    let Some(Effect::Store { io: first, op: StoreOp::Commit(_) }) = engine.poll_output() else { panic!() };
    for req in 2..=4 {
        engine.handle_input(now, Input::Request { req, command: Command::Schedule(after(1_000)) });
    }
    assert_eq!(engine.poll_output(), None, "one commit in flight at a time");
    assert_eq!(engine.queued_writes(), 3);
    engine.handle_input(
        now,
        Input::StoreDone { io: first, result: Err(minoots_core::StoreFailure::Unknown("disk".into())) },
    );
    // The failed commit's caller is told to retry; the queued three go out together after the backoff.
    assert!(matches!(
        engine.poll_output(),
        Some(Effect::Reply { req: 1, result: Err(ApiError::Unavailable { .. }) })
    ));
    let later = Now::new(T0 + 50, 50);
    engine.handle_input(later, Input::Tick);
    let mut creates = None;
    while let Some(effect) = engine.poll_output() {
        if let Effect::Store { op: StoreOp::Commit(batch), .. } = effect {
            creates = Some(batch.creates.len());
        }
    }
    assert_eq!(creates, Some(3));
}

#[test]
fn a_timer_fires_once_at_its_due_time_and_never_before() {
    let mut h = harness();
    let id = {
        let req = h.request(Command::Schedule(after(250)));
        created_id(h.take_reply(req))
    };
    assert_eq!(h.engine.poll_timeout(), Some(250), "the engine asks to wake exactly at the due time");
    h.advance(249);
    assert!(h.store.fires().is_empty(), "not fired 1 ms early");
    h.advance(1);
    let fire = &h.store.fires()[&(id, 1)];
    assert_eq!(fire.due_ms, T0 + 250);
    assert_eq!(fire.fired_at_ms, T0 + 250);
    assert_eq!(fire.epoch, 1);
    assert_eq!(h.store.timers()[&id].status, TimerStatus::Fired);
    h.advance(10_000);
    assert_eq!(h.store.fires().len(), 1);
    let fired_events = h.published.iter().filter(|e| e.kind == EventKind::Fired).count();
    assert_eq!(fired_events, 1);
}

#[test]
fn cancel_before_due_prevents_the_fire_and_is_idempotent() {
    let mut h = harness();
    let req = h.request(Command::Schedule(after(1_000)));
    let id = created_id(h.take_reply(req));
    let cancel = || Command::Cancel {
        tenant_id: tenant("acme"),
        timer_id: id,
        requested_by: "ops".into(),
        reason: Some("no longer needed".into()),
    };
    let first = h.request(cancel());
    let second = h.request(cancel());
    for req in [first, second] {
        match h.take_reply(req) {
            Some(Ok(Response::Timer(t))) => {
                assert_eq!(t.status, TimerStatus::Cancelled);
                assert_eq!(t.cancel_reason.as_deref(), Some("no longer needed"));
            }
            other => panic!("expected cancelled timer, got {other:?}"),
        }
    }
    assert_eq!(h.engine.due_len(), 0, "the index forgets a cancelled timer");
    h.advance(5_000);
    assert!(h.store.fires().is_empty());
}

#[test]
fn cancelling_a_fired_timer_is_a_conflict_and_other_tenants_see_nothing() {
    let mut h = harness();
    let req = h.request(Command::Schedule(after(10)));
    let id = created_id(h.take_reply(req));
    h.advance(20);
    let req = h.request(Command::Cancel {
        tenant_id: tenant("acme"),
        timer_id: id,
        requested_by: String::new(),
        reason: None,
    });
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::Conflict { field, .. })) if field == "status"));
    let req = h.request(Command::Get { tenant_id: tenant("other"), timer_id: id });
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::NotFound { .. }))));
    let req = h.request(Command::Cancel {
        tenant_id: tenant("other"),
        timer_id: id,
        requested_by: String::new(),
        reason: None,
    });
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::NotFound { .. }))));
    let req = h.request(Command::List(ListQuery {
        tenant_id: tenant("other"),
        statuses: vec![],
        labels: Default::default(),
        after: None,
        limit: 100,
    }));
    assert!(matches!(h.take_reply(req), Some(Ok(Response::Timers { timers, .. })) if timers.is_empty()));
}

#[test]
fn an_idempotent_retry_returns_the_same_timer_and_a_different_body_conflicts() {
    let mut h = harness();
    let keyed = |ms| TimerDraft { idempotency_key: Some("order-17".into()), ..after(ms) };
    let a = h.request(Command::Schedule(keyed(1_000)));
    let b = h.request(Command::Schedule(keyed(1_000)));
    let (a, b) = (h.take_reply(a), h.take_reply(b));
    let (Some(Ok(Response::Scheduled(a))), Some(Ok(Response::Scheduled(b)))) = (a, b) else { panic!() };
    assert_eq!(a.timer.id, b.timer.id);
    assert!(a.created && !b.created);
    let c = h.request(Command::Schedule(keyed(2_000)));
    assert!(
        matches!(h.take_reply(c), Some(Err(ApiError::Conflict { field, .. })) if field == "idempotencyKey")
    );
    assert_eq!(h.store.timers().len(), 1);
}

#[test]
fn the_store_refuses_a_fire_its_clock_says_is_early_and_the_engine_retries() {
    let mut h = harness();
    h.store_skew_ms = -30; // the store's clock runs 30 ms behind the engine's
    let req = h.request(Command::Schedule(after(100)));
    let id = created_id(h.take_reply(req));
    h.advance(100);
    assert!(h.store.fires().is_empty(), "refused: early by the store clock");
    assert_eq!(h.engine.stats().fires_rejected, 1, "one attempt, refused");
    h.advance(40);
    let fire = &h.store.fires()[&(id, 1)];
    assert!(fire.fired_at_ms >= fire.due_ms, "never early by the store clock");
}

#[test]
fn a_deposed_engine_stops_firing_and_refuses_writes() {
    let mut h = harness();
    let req = h.request(Command::Schedule(after(100)));
    let _id = created_id(h.take_reply(req));
    // Another writer opens the store: epoch 2 supersedes ours.
    h.store.apply(T0, &StoreOp::Open { node_id: "intruder".into() }).expect("opened");
    h.advance(200);
    assert!(h.store.fires().is_empty(), "a stale epoch cannot record a fire");
    assert!(matches!(h.engine.leadership(), &Leadership::Deposed { current_epoch: 2 }));
    let req = h.request(Command::Schedule(after(100)));
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::Unavailable { .. }))));
}

#[test]
fn a_failed_fire_commit_is_retried_without_a_duplicate() {
    for how in [CommitFailure::NotSent, CommitFailure::LostRequest, CommitFailure::LostReply] {
        let mut h = harness();
        let req = h.request(Command::Schedule(after(100)));
        let id = created_id(h.take_reply(req));
        h.fail_next_commit = Some(how);
        h.advance(100);
        let applied = how == CommitFailure::LostReply;
        assert_eq!(h.store.fires().len(), usize::from(applied), "{how:?}: applied only with the reply lost");
        h.advance(1_000);
        assert_eq!(h.store.fires().keys().collect::<Vec<_>>(), vec![&(id, 1)], "{how:?}: fired exactly once");
        let fired = h.published.iter().filter(|e| e.kind == EventKind::Fired).count();
        assert_eq!(fired, 1, "{how:?}: one fired event");
        assert_eq!(h.engine.due_len(), 0, "{how:?}: nothing left armed");
    }
}

#[test]
fn a_create_whose_commit_applied_but_lost_its_reply_is_armed_by_the_reload_and_fires_once() {
    let mut h = harness();
    let resyncs = h.engine.stats().resyncs;
    h.fail_next_commit = Some(CommitFailure::LostReply);
    let req = h.request(Command::Schedule(after(500)));
    match h.take_reply(req) {
        Some(Err(ApiError::Unavailable { reason, .. })) => {
            assert!(reason.contains("outcome is unknown"), "{reason}")
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    assert_eq!(h.store.timers().len(), 1, "the create applied");
    assert_eq!(h.engine.stats().resyncs, resyncs + 1, "the index was thrown away after the unknown outcome");
    h.advance(600);
    assert_eq!(h.store.fires().len(), 1, "the reload armed it: it fired");
    h.advance(5_000);
    assert_eq!(h.store.fires().len(), 1, "and only once");
}

#[test]
fn a_commit_that_was_not_sent_keeps_the_index_and_says_nothing_applied() {
    let mut h = harness();
    let armed = h.request(Command::Schedule(after(10_000)));
    created_id(h.take_reply(armed));
    assert_eq!(h.engine.due_len(), 1);
    let before = h.engine.stats();
    h.fail_next_commit = Some(CommitFailure::NotSent);
    let req = h.request(Command::Schedule(after(500)));
    match h.take_reply(req) {
        Some(Err(ApiError::Unavailable { reason, .. })) => {
            assert!(reason.starts_with("not applied, retry"), "{reason}");
        }
        other => panic!("expected a known refusal, got {other:?}"),
    }
    assert_eq!(h.store.timers().len(), 1, "nothing of the refused commit applied");
    assert_eq!(h.engine.stats().resyncs, before.resyncs, "a refused send does not throw the index away");
    assert_eq!(h.engine.due_len(), 1);
    assert_eq!(h.engine.leadership(), &Leadership::Leader { epoch: 1 }, "nor the leadership");
    let again = h.request(Command::Schedule(after(500)));
    h.advance(1_000); // past the store backoff, then past its due time
    created_id(h.take_reply(again));
    h.advance(1_000);
    assert_eq!(h.store.fires().len(), 1);
}

#[test]
fn timers_beyond_the_horizon_are_paged_in_as_time_advances() {
    let mut h = harness();
    let far = h.request(Command::Schedule(after(600_000)));
    let far = created_id(h.take_reply(far));
    assert_eq!(h.engine.due_len(), 0, "ten minutes out is beyond the 60 s horizon");
    h.advance(590_000);
    assert_eq!(h.engine.due_len(), 1, "paged in before it is due");
    h.advance(10_000);
    assert!(h.store.fires().contains_key(&(far, 1)));
}

#[test]
fn a_burst_from_one_tenant_does_not_hold_back_another_tenants_fire_past_the_next_commit() {
    let config = EngineConfig { commit_fires_max: 64, ..config() };
    let mut h = Harness::new(config, Now::new(T0, 0));
    // 1,000 timers of one tenant due in the same millisecond, then one of
    // another tenant due in that millisecond too, created last (so last in
    // the global (due, id) order).
    for _ in 0..10 {
        let drafts = (0..100).map(|_| after(1_000)).collect();
        let req = h.request(Command::ScheduleBatch(drafts));
        assert!(matches!(h.take_reply(req), Some(Ok(_))));
    }
    let quiet = TimerDraft { tenant_id: Some(tenant("quiet")), ..after(1_000) };
    let req = h.request(Command::Schedule(quiet));
    let quiet = created_id(h.take_reply(req));
    h.published.clear();
    h.advance(1_000);
    let fired: Vec<_> = h.published.iter().filter(|e| e.kind == EventKind::Fired).collect();
    assert_eq!(fired.len(), 1_001);
    let position = fired.iter().position(|e| e.timer_id == quiet).expect("the quiet tenant's timer fired");
    assert!(position < 64, "the quiet tenant's fire is in the first commit, not at {position}");
}

#[test]
fn after_a_restart_overdue_timers_fire_once_under_the_new_epoch() {
    let mut h = harness();
    let req = h.request(Command::Schedule(after(1_000)));
    let id = created_id(h.take_reply(req));
    // Crash, and stay down past the due time.
    h.now.wall_ms += 5_000;
    h.now.mono_ms += 5_000;
    h.restart(99);
    h.advance(10);
    let fire = &h.store.fires()[&(id, 1)];
    assert_eq!(fire.epoch, 2);
    assert_eq!(h.store.fires().len(), 1);
}

#[test]
fn interval_timers_fire_each_occurrence_and_coalesce_missed_ones() {
    let mut h = harness();
    let draft = TimerDraft { tenant_id: Some(tenant("acme")), every_ms: Some(1_000), ..Default::default() };
    let req = h.request(Command::Schedule(draft));
    let id = created_id(h.take_reply(req));
    h.advance(3_000);
    let occurrences: Vec<u32> = h.store.fires().keys().filter(|(t, _)| *t == id).map(|(_, o)| *o).collect();
    assert_eq!(occurrences, vec![1, 2, 3]);
    // Down for 10 s: fire_once coalesces the missed slots into one fire.
    h.now.wall_ms += 10_000;
    h.now.mono_ms += 10_000;
    h.restart(5);
    h.advance(1);
    let count = h.store.fires().keys().filter(|(t, _)| *t == id).count();
    assert_eq!(count, 4, "one catch-up fire, not ten");
    let timer = &h.store.timers()[&id];
    assert!(timer.next_due_ms > h.now.wall_ms);
    assert_eq!(timer.next_occurrence, 5);
}

#[test]
fn wall_clock_steps_do_not_cause_early_or_lost_fires() {
    let mut h = harness();
    let req = h.request(Command::Schedule(after(5_000)));
    let id = created_id(h.take_reply(req));
    // NTP steps this node's clock back a minute; the store's clock did not step.
    h.step_wall(-60_000);
    h.store_skew_ms = 60_000;
    h.advance(5_000);
    assert!(h.store.fires().is_empty(), "due times are wall times: not due yet by this node's clock");
    h.advance(60_000);
    let fire = &h.store.fires()[&(id, 1)];
    assert!(fire.fired_at_ms >= fire.due_ms);
    assert_eq!(h.store.fires().len(), 1);

    // A forward step makes overdue timers fire at the next wake-up (at most idle_tick_ms later).
    let req = h.request(Command::Schedule(after(30_000)));
    let id = created_id(h.take_reply(req));
    h.step_wall(45_000);
    h.store_skew_ms += -45_000;
    h.advance(1_000);
    assert!(h.store.fires().contains_key(&(id, 1)), "noticed within one idle tick");
}

#[test]
fn fire_ops_carry_the_epoch_and_chain_for_recurring_timers() {
    let mut h = harness();
    let draft = TimerDraft { tenant_id: Some(tenant("acme")), every_ms: Some(100), ..Default::default() };
    let req = h.request(Command::Schedule(draft));
    let id = created_id(h.take_reply(req));
    h.advance(100);
    let fire = &h.store.fires()[&(id, 1)];
    assert_eq!((fire.epoch, fire.node_id.as_str()), (1, "node-a"));
    assert_eq!(h.store.timers()[&id].next_due_ms, fire.due_ms + 100);
}

#[test]
fn cancel_text_is_bounded_and_ids_list_in_creation_order() {
    let mut h = harness();
    let ids: Vec<_> = (0..20)
        .map(|_| {
            let req = h.request(Command::Schedule(after(60_000)));
            created_id(h.take_reply(req))
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids created in one millisecond still sort in creation order");
    let req = h.request(Command::Cancel {
        tenant_id: tenant("acme"),
        timer_id: ids[0],
        requested_by: "x".repeat(257),
        reason: None,
    });
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::Invalid(e))) if e.field == "requestedBy"));
}

#[test]
fn the_deadline_table_names_why_the_engine_wakes_and_holds_fires_during_a_backoff() {
    let listed = |h: &Harness| h.engine.deadlines().into_iter().flatten().map(|(d, _)| d).collect::<Vec<_>>();
    let mut h = harness();
    let req = h.request(Command::Schedule(after(100)));
    created_id(h.take_reply(req));
    let deadlines = listed(&h);
    assert!(deadlines.contains(&Deadline::NextFire), "{deadlines:?}");
    assert!(!deadlines.contains(&Deadline::BackoffEnds), "{deadlines:?}");
    let due_at = h.now.mono_ms + 100;
    assert_eq!(h.engine.poll_timeout(), Some(due_at), "the fire is the earliest deadline");

    h.fail_next_commit = Some(CommitFailure::LostRequest);
    h.advance(100);
    let deadlines = listed(&h);
    assert!(deadlines.contains(&Deadline::BackoffEnds), "{deadlines:?}");
    assert!(
        !deadlines.contains(&Deadline::NextFire) && !deadlines.contains(&Deadline::NextLoad),
        "nothing is sent before the backoff ends: {deadlines:?}"
    );
    let backoff_ends = h.engine.deadlines().into_iter().flatten().find(|(d, _)| *d == Deadline::BackoffEnds);
    assert_eq!(h.engine.poll_timeout(), backoff_ends.map(|(_, at)| at));
}

// ---- leadership from outside (external mode) -----------------------------

fn external_harness() -> Harness {
    Harness::new(EngineConfig { mode: LeadershipMode::External, ..config() }, Now::new(T0, 0))
}

fn report(h: &mut Harness, change: LeadershipChange) {
    h.engine.handle_input(h.now, Input::Leadership(change));
    h.run_effects();
}

fn deadline(h: &Harness, which: Deadline) -> Option<u64> {
    h.engine.deadlines().into_iter().flatten().find(|(d, _)| *d == which).map(|(_, at)| at)
}

#[test]
fn an_external_engine_follows_until_told_it_leads_then_leads_until_its_bound() {
    let mut h = external_harness();
    assert_eq!(
        h.engine.leadership(),
        &Leadership::Follower { leader: None },
        "no Open, no lease: it follows"
    );
    assert_eq!(h.store.epoch(), 0, "the engine asked the store for nothing");
    let req = h.request(Command::Schedule(after(100)));
    assert!(
        matches!(h.take_reply(req), Some(Err(ApiError::Unavailable { .. }))),
        "writes wait for leadership"
    );

    // The outside source (a Raft election, say) made epoch 1 current in the store.
    h.store.apply(T0, &StoreOp::Open { node_id: "node-a".into() }).expect("opened");
    let until = h.now.mono_ms + 1_000;
    report(&mut h, LeadershipChange::Leading { epoch: 1, until_mono: Some(until) });
    assert_eq!(h.engine.leadership(), &Leadership::Leader { epoch: 1 });
    assert_eq!(deadline(&h, Deadline::LeadershipEnds), Some(until));
    let id = created_id({
        let req = h.request(Command::Schedule(after(100)));
        h.take_reply(req)
    });
    h.advance(100);
    assert_eq!(h.store.fires().keys().collect::<Vec<_>>(), vec![&(id, 1)], "it fires while it leads");
    assert_eq!(h.store.fires()[&(id, 1)].epoch, 1, "with the epoch it was given");

    // The same epoch again only moves the bound: no new tenure, no reload.
    let later = h.now.mono_ms + 5_000;
    report(&mut h, LeadershipChange::Leading { epoch: 1, until_mono: Some(later) });
    assert_eq!(h.engine.stats().leaderships, 1, "a renewal is not a new leadership");
    assert_eq!(deadline(&h, Deadline::LeadershipEnds), Some(later));

    // The bound passes by the local clock: it steps down on its own.
    let req = h.request(Command::Schedule(after(60_000)));
    created_id(h.take_reply(req));
    h.advance(later - h.now.mono_ms);
    assert_eq!(h.engine.leadership(), &Leadership::Follower { leader: None });
    assert_eq!(h.engine.stats().step_downs, 1);
    assert_eq!(deadline(&h, Deadline::LeadershipEnds), None);
    let req = h.request(Command::Schedule(after(100)));
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::Unavailable { .. }))));
}

#[test]
fn an_external_bound_already_past_ends_the_leadership_at_once() {
    let mut h = external_harness();
    h.store.apply(T0, &StoreOp::Open { node_id: "node-a".into() }).expect("opened");
    h.advance(50);
    let now_mono = h.now.mono_ms;
    report(&mut h, LeadershipChange::Leading { epoch: 1, until_mono: Some(now_mono) });
    assert_eq!(h.engine.leadership(), &Leadership::Follower { leader: None });
    let changes = h.store.outbox().len();
    let req = h.request(Command::Schedule(after(10)));
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::Unavailable { .. }))));
    assert_eq!(h.store.outbox().len(), changes, "nothing was committed");
}

#[test]
fn an_external_leader_whose_commit_outcome_is_unknown_follows_until_told_again() {
    let mut h = external_harness();
    h.store.apply(T0, &StoreOp::Open { node_id: "node-a".into() }).expect("opened");
    report(&mut h, LeadershipChange::Leading { epoch: 1, until_mono: None });
    h.fail_next_commit = Some(CommitFailure::LostReply);
    let req = h.request(Command::Schedule(after(100)));
    assert!(matches!(h.take_reply(req), Some(Err(ApiError::Unavailable { .. }))), "outcome unknown");
    assert_eq!(h.engine.leadership(), &Leadership::Follower { leader: None }, "it stops leading");
    assert_eq!(h.engine.stats().step_downs, 1);
    // The source reports leadership again (after fencing what was in flight): a new tenure.
    report(&mut h, LeadershipChange::Leading { epoch: 1, until_mono: None });
    assert_eq!(h.engine.leadership(), &Leadership::Leader { epoch: 1 });
    assert_eq!(h.engine.stats().leaderships, 2);
    h.advance(200);
    assert_eq!(h.store.fires().len(), 1, "the create applied; the reload armed it and it fired once");
}

#[test]
#[should_panic(expected = "leadership is reported in external mode only")]
fn reporting_leadership_to_an_engine_that_obtains_its_own_is_a_driver_bug() {
    let mut h = harness();
    report(&mut h, LeadershipChange::Leading { epoch: 9, until_mono: None });
}
