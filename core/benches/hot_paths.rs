//! Criterion benches for the engine's hot paths, the CPU a schedule or a
//! fire costs before any I/O: validating a timer as the APIs receive it,
//! planning one commit for a batch of 1,000 schedules, the due index, and
//! the next slot of a cron schedule in a zone with daylight saving time.
//!
//! `cargo bench -p minoots-core --bench hot_paths` (numbers only).

use std::collections::BTreeMap;

use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use minoots_core::action::ActionPolicy;
use minoots_core::draft::TimerDraft;
use minoots_core::due_index::DueIndex;
use minoots_core::engine::{Command, Effect, Engine, EngineConfig, Input};
use minoots_core::ids::IdGenerator;
use minoots_core::limits::PAST_FIRE_TOLERANCE_DEFAULT_MS;
use minoots_core::schedule::CronSchedule;
use minoots_core::store::{DueTimer, StoreOp, StoreReply};
use minoots_core::validate::validate;
use minoots_core::{Now, TenantId};

const T0: i64 = 1_790_000_000_000;

/// A timer as a client sends it: an instant, two labels, one webhook.
fn webhook_timer(offset_ms: i64) -> TimerDraft {
    TimerDraft {
        tenant_id: Some(TenantId::parse("tenantId", "acme").expect("valid tenant")),
        fire_at_ms: Some(T0 + 5_000 + offset_ms),
        labels: BTreeMap::from([("team".into(), "ops".into()), ("run".into(), "bench".into())]),
        action_bundle: Some(serde_json::json!({
            "actions": [{"id": "notify", "kind": "webhook", "parameters": {"url": "https://example.com/hook"}}]
        })),
        ..Default::default()
    }
}

/// An engine that leads (its store opened at epoch 1), with its horizon load in flight.
fn leading_engine() -> Engine {
    let now = Now::new(T0, 0);
    let mut engine = Engine::new(EngineConfig::new("bench", 7), now);
    let _open = engine.poll_output();
    engine.handle_input(now, Input::StoreDone { io: 1, result: Ok(StoreReply::Opened { epoch: 1 }) });
    let _load = engine.poll_output();
    engine
}

fn validation(c: &mut Criterion) {
    let draft = webhook_timer(0);
    let policy = ActionPolicy::default();
    let now = Now::new(T0, 0);
    c.bench_function("validate a timer with labels and a webhook", |b| {
        b.iter(|| validate(black_box(&draft), now, &policy, PAST_FIRE_TOLERANCE_DEFAULT_MS).expect("valid"))
    });
}

fn commit_planning(c: &mut Criterion) {
    let drafts: Vec<TimerDraft> = (0..1_000).map(webhook_timer).collect();
    let now = Now::new(T0, 0);
    c.bench_function("plan one commit for a batch of 1,000 schedules", |b| {
        b.iter_batched(
            || (leading_engine(), drafts.clone()),
            |(mut engine, drafts)| {
                engine.handle_input(now, Input::Request { req: 1, command: Command::ScheduleBatch(drafts) });
                let Some(Effect::Store { op: StoreOp::Commit(batch), .. }) = engine.poll_output() else {
                    panic!("expected a commit")
                };
                assert_eq!(batch.creates.len(), 1_000);
                batch
            },
            BatchSize::SmallInput,
        )
    });
}

fn due_index(c: &mut Criterion) {
    let mut ids = IdGenerator::from_seed(3);
    let timers: Vec<DueTimer> = (0..10_000)
        .map(|i| DueTimer {
            timer_id: ids.next_id(T0),
            tenant_id: TenantId::parse("tenantId", ["a", "b", "c"][i as usize % 3]).expect("tenant"),
            occurrence: 1,
            due_ms: T0 + (i * 7_919) % 60_000,
            recurrence: None,
        })
        .collect();
    c.bench_function("due index: insert 10,000, then pop them due", |b| {
        b.iter_batched(
            || timers.clone(),
            |timers| {
                let mut index = DueIndex::default();
                for timer in timers {
                    index.insert(timer);
                }
                let mut popped = 0;
                while !index.is_empty() {
                    popped += index.pop_due(T0 + 60_000, 1_000).len();
                }
                popped
            },
            BatchSize::SmallInput,
        )
    });
}

fn cron_slots(c: &mut Criterion) {
    let cron = CronSchedule::parse("*/5 * * * *", "Europe/Paris").expect("valid cron");
    // 2026-03-29 00:20 UTC: the night clocks go forward in Paris.
    let before_gap = 1_774_743_600_000;
    c.bench_function("cron slot after, Europe/Paris around a DST gap", |b| {
        b.iter(|| cron.slot_after(black_box(before_gap)))
    });
}

criterion_group!(benches, validation, commit_planning, due_index, cron_slots);
criterion_main!(benches);
