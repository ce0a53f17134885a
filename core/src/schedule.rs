//! Schedule arithmetic: the slots of interval and cron schedules, and the
//! plan of what to record when an occurrence comes due (misfire policies).
//! Also the cron parser that validation uses ([`parse_cron`]).
//!
//! Cron expressions have 5 fields (`min hour dom month dow`) or 6 with a
//! leading seconds field, plus nicknames (`@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@hourly`). They are evaluated in the timer's IANA
//! time zone: the expression picks local wall-clock times (whole seconds),
//! and each picked local time becomes one slot, an instant, as follows.
//!
//! DST rules (documented to users in README.md):
//! - **Spring forward (a local time that does not exist).** A slot whose
//!   wall-clock time falls in the gap fires at the first instant after the gap
//!   (e.g. `30 2 * * *` in Europe/Paris on the change day fires at 03:00 local).
//!   Several slots in one gap (e.g. `*/15 * * * *`) all land on that instant
//!   and fire there once.
//! - **Fall back (a local time that happens twice).** A slot whose local time
//!   occurs twice fires once, at its first (earlier, DST) instant. This holds
//!   for every expression, stepped and wildcard ones included: `0 * * * *` in
//!   Europe/Paris on the change day fires at 02:00 CEST and next at 03:00 CET,
//!   two hours later, and nothing fires during the repeated hour's second pass.
//! - Interval schedules are absolute (UTC milliseconds) and ignore DST.
//!
//! (The `croner` crate alone would run wildcard/stepped expressions on both
//! passes of a repeated hour and drop their slots inside a gap. To keep the
//! rules above true for every expression, croner is only asked for matching
//! *local* times; mapping local times to instants is done here.)
//!
//! Every search is bounded: croner gives up past its year limit (5000), gap
//! and overlap edges are found by bisection, and `fire_all` stops at
//! [`crate::timer::MISFIRE_FIRE_ALL_CAP`]. No input makes these functions panic.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::error::ValidationError;
use crate::ids::TimerId;
use crate::limits::TEXT_LEN_MAX;
use crate::store::{AfterFire, FireOp, Recurrence};
use crate::time::WallMs;
use crate::timer::{MISFIRE_FIRE_ALL_CAP, MISFIRE_GRACE_MS, MisfirePolicy, Schedule};

/// A parsed cron expression with its time zone: what [`parse_cron`] returns.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

/// Parses a cron expression and an IANA time-zone name, as validation does.
///
/// Errors name `cron` (not 5 or 6 fields or a nickname, a bad field, longer
/// than 256 characters) or `timeZone` (not a known IANA name, case-sensitive).
pub fn parse_cron(expression: &str, time_zone: &str) -> Result<CronSchedule, ValidationError> {
    CronSchedule::parse(expression, time_zone)
}

impl CronSchedule {
    /// See [`parse_cron`].
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ValidationError> {
        const SHAPE: &str = "must be a cron expression of 5 fields (minute hour day-of-month month day-of-week), \
             6 with a leading seconds field, or a nickname like @daily";
        if expression.chars().count() > TEXT_LEN_MAX {
            return Err(ValidationError::new("cron", "must be at most 256 characters"));
        }
        let trimmed = expression.trim();
        let field_count = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&field_count) {
            return Err(ValidationError::new("cron", SHAPE));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = parser
            .parse(trimmed)
            .map_err(|error| ValidationError::new("cron", format!("{SHAPE} ({error})")))?;
        let zone: Tz = time_zone.parse().map_err(|_| {
            ValidationError::new("timeZone", "must be a known IANA time zone like Europe/Paris or UTC")
        })?;
        Ok(Self { cron, zone })
    }

    /// The time zone the expression is evaluated in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first slot strictly after `after_ms` (no start or end bound), or
    /// `None` if there is none before 5001-01-01 (croner's year limit).
    /// Searches start no earlier than 0001-01-01T00:00:00Z.
    pub fn slot_after(&self, after_ms: WallMs) -> Option<WallMs> {
        // Slots are whole seconds, so `slot × 1000 > after_ms` ⟺ `slot > ⌊after_ms / 1000⌋`.
        let after_s = after_ms.div_euclid(1000);
        if after_s >= LATEST_SEARCH_S {
            return None;
        }
        // Croner searches years 1..=5000; starting no earlier than year 1 also
        // keeps the local-time conversions below far from chrono's range limits.
        let after_s = after_s.max(EARLIEST_SEARCH_S);
        let after_local = DateTime::from_timestamp(after_s, 0)?.with_timezone(&self.zone).naive_local();

        // Local times map to instants monotonically (non-decreasing), and
        // `after_local` maps to `after_s` itself or (on the later pass of a
        // repeated range) to an earlier instant. So every local time at or
        // before `after_local` maps at or before `after_s`, and the search
        // starts after it. On the later pass, the rest of the repeated range
        // maps to its earlier pass, before `after_s`: skip to its end.
        let (mut cursor, mut inclusive) = match self.zone.from_local_datetime(&after_local) {
            LocalResult::Ambiguous(_, later) if later.timestamp() == after_s => {
                let end = first_local_where(after_local, |local| {
                    !matches!(self.zone.from_local_datetime(local), LocalResult::Ambiguous(..))
                })?;
                (end, true)
            }
            _ => (after_local, false),
        };

        // By the argument above the first match already qualifies; the loop
        // is a bounded guard against time-zone data breaking monotonicity.
        for _ in 0..SLOT_SEARCH_STEPS {
            let local_slot = self.cron.find_next_occurrence(&cursor, inclusive).ok()?;
            let slot_s = self.instant_of(local_slot)?;
            if slot_s > after_s {
                return slot_s.checked_mul(1000);
            }
            cursor = local_slot;
            inclusive = false;
        }
        None
    }

    /// The instant (Unix seconds) of a local slot, by the DST rules.
    fn instant_of(&self, local: NaiveDateTime) -> Option<i64> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(instant) => Some(instant.timestamp()),
            LocalResult::Ambiguous(earlier, _) => Some(earlier.timestamp()),
            LocalResult::None => {
                let after_gap = first_local_where(local, |candidate| {
                    !matches!(self.zone.from_local_datetime(candidate), LocalResult::None)
                })?;
                self.zone.from_local_datetime(&after_gap).earliest().map(|instant| instant.timestamp())
            }
        }
    }
}

/// 0001-01-01T00:00:00Z: cron searches start no earlier (croner's lower year limit).
const EARLIEST_SEARCH_S: i64 = -62_135_596_800;
/// 5001-01-01T00:00:00Z: past croner's upper year limit, no slot is found.
const LATEST_SEARCH_S: i64 = 95_649_120_000;

/// How many local matches one cron search looks at before giving up.
const SLOT_SEARCH_STEPS: u32 = 16;

/// The longest stretch of local time (a DST gap or a repeated range) that
/// [`first_local_where`] crosses: 8 days, far more than any zone has had.
const TRANSITION_SPAN_MAX_S: i64 = 8 * 24 * 3600;

/// The first local second after `start` where `holds` is true, given that it
/// is false from `start` up to that point (a gap or repeated range, which is
/// contiguous). Exponential probing, then bisection: about 40 zone lookups.
fn first_local_where(start: NaiveDateTime, holds: impl Fn(&NaiveDateTime) -> bool) -> Option<NaiveDateTime> {
    let at = |offset_s: i64| start.checked_add_signed(TimeDelta::try_seconds(offset_s)?);
    let mut false_offset_s = 0;
    let mut step_s = 1;
    let mut true_offset_s = loop {
        if step_s > TRANSITION_SPAN_MAX_S {
            return None;
        }
        let probe_s = false_offset_s + step_s;
        if holds(&at(probe_s)?) {
            break probe_s;
        }
        false_offset_s = probe_s;
        step_s *= 2;
    };
    while true_offset_s - false_offset_s > 1 {
        let middle_s = false_offset_s + (true_offset_s - false_offset_s) / 2;
        if holds(&at(middle_s)?) {
            true_offset_s = middle_s;
        } else {
            false_offset_s = middle_s;
        }
    }
    at(true_offset_s)
}

/// A schedule's slot generator, with the cron expression parsed once.
enum Slots {
    Once {
        fire_at_ms: WallMs,
    },
    Interval {
        every_ms: i128,
        start_at_ms: WallMs,
        end_at_ms: Option<WallMs>,
    },
    Cron {
        cron: Box<CronSchedule>,
        start_at_ms: WallMs,
        end_at_ms: Option<WallMs>,
    },
    /// A cron schedule whose expression or zone no longer parses: no slots.
    Unparsable,
}

impl Slots {
    fn of(schedule: &Schedule) -> Self {
        match schedule {
            Schedule::Once { fire_at_ms, .. } => Slots::Once { fire_at_ms: *fire_at_ms },
            Schedule::Interval { every_ms, start_at_ms, end_at_ms, .. } => Slots::Interval {
                every_ms: i128::from(*every_ms),
                start_at_ms: *start_at_ms,
                end_at_ms: *end_at_ms,
            },
            Schedule::Cron { expression, time_zone, start_at_ms, end_at_ms, .. } => {
                match CronSchedule::parse(expression, time_zone) {
                    Ok(cron) => {
                        Slots::Cron { cron: Box::new(cron), start_at_ms: *start_at_ms, end_at_ms: *end_at_ms }
                    }
                    Err(_) => Slots::Unparsable,
                }
            }
        }
    }

    fn after(&self, after_ms: WallMs) -> Option<WallMs> {
        match self {
            Slots::Once { fire_at_ms } => (*fire_at_ms > after_ms).then_some(*fire_at_ms),
            Slots::Interval { every_ms, start_at_ms, end_at_ms } => {
                let slot_ms = if after_ms < *start_at_ms {
                    *start_at_ms
                } else {
                    if *every_ms <= 0 {
                        return None;
                    }
                    let start = i128::from(*start_at_ms);
                    let periods = (i128::from(after_ms) - start) / every_ms + 1;
                    WallMs::try_from(start + periods * every_ms).ok()?
                };
                within(slot_ms, *end_at_ms)
            }
            Slots::Cron { cron, start_at_ms, end_at_ms } => {
                // Slots are at or after the start: search after max(after, start − 1).
                let search_after_ms = after_ms.max(start_at_ms.saturating_sub(1));
                within(cron.slot_after(search_after_ms)?, *end_at_ms)
            }
            Slots::Unparsable => None,
        }
    }
}

fn within(slot_ms: WallMs, end_at_ms: Option<WallMs>) -> Option<WallMs> {
    match end_at_ms {
        Some(end_at_ms) if slot_ms > end_at_ms => None,
        _ => Some(slot_ms),
    }
}

/// The first slot of `schedule` strictly after `after_ms`, honouring
/// `start_at_ms` and `end_at_ms` (not `max_occurrences`, which is counted by
/// the caller). `None` when no slot remains. `Once` schedules: their
/// `fire_at_ms` if it is after `after_ms`.
pub fn slot_after(schedule: &Schedule, after_ms: WallMs) -> Option<WallMs> {
    Slots::of(schedule).after(after_ms)
}

/// What to record when occurrence `occurrence`, due at `due_ms`, of a timer is
/// taken for firing at engine time `now_ms` (≥ `due_ms`).
///
/// - One-shot timers (`recurrence` = `None`, or a `Once` schedule): one fire,
///   then `Finished`.
/// - Recurring timers: occurrence numbers count fires (1-based); a timer with
///   `max_occurrences = n` finishes after fire n; `end_at_ms` bounds slots.
///   - `fire_once`: fire this occurrence; the next is the first slot after `now_ms`
///     (every missed slot in between is coalesced into this one fire).
///   - `fire_all`: fire this occurrence and then every further slot ≤ `now_ms`,
///     each as its own occurrence, up to [`crate::timer::MISFIRE_FIRE_ALL_CAP`]
///     fires (the oldest ones: this occurrence first); the next is the first
///     slot after `now_ms`, so missed slots beyond the cap are dropped.
///   - `skip`: if `now_ms − due_ms` > [`crate::timer::MISFIRE_GRACE_MS`], record no
///     fire (`skipped = true`, occurrence unchanged) and move to the first slot
///     after `now_ms`; otherwise as `fire_once`.
///
/// The ops chain: each op's `then` is `Next { due_ms }` equal to the following
/// op's `due_ms`; the last op's `then` is `Finished` or the next future slot.
/// Every op's due is ≤ `now_ms`: if `due_ms > now_ms` (not yet due) the plan is
/// empty. A timer at occurrence `u32::MAX` finishes after that fire.
pub fn plan_fires(
    timer_id: TimerId,
    occurrence: u32,
    due_ms: WallMs,
    recurrence: Option<&Recurrence>,
    now_ms: WallMs,
) -> Vec<FireOp> {
    if due_ms > now_ms {
        return Vec::new();
    }
    let fire = |occurrence: u32, due_ms: WallMs, then: AfterFire| FireOp {
        timer_id,
        occurrence,
        due_ms,
        then,
        skipped: false,
    };
    let Some(recurrence) = recurrence.filter(|recurrence| recurrence.schedule.is_recurring()) else {
        return vec![fire(occurrence, due_ms, AfterFire::Finished)];
    };

    let slots = Slots::of(&recurrence.schedule);
    let next_after = |after_ms: WallMs| match slots.after(after_ms) {
        Some(due_ms) => AfterFire::Next { due_ms },
        None => AfterFire::Finished,
    };
    let max_occurrences = max_occurrences(&recurrence.schedule);
    let is_last =
        |occurrence: u32| occurrence == u32::MAX || max_occurrences.is_some_and(|max| occurrence >= max);

    let late_ms = now_ms.saturating_sub(due_ms);
    match recurrence.misfire {
        MisfirePolicy::Skip if late_ms > MISFIRE_GRACE_MS => {
            vec![FireOp { timer_id, occurrence, due_ms, then: next_after(now_ms), skipped: true }]
        }
        MisfirePolicy::FireOnce | MisfirePolicy::Skip => {
            let then = if is_last(occurrence) { AfterFire::Finished } else { next_after(now_ms) };
            vec![fire(occurrence, due_ms, then)]
        }
        MisfirePolicy::FireAll => {
            let mut ops = Vec::new();
            let (mut occurrence, mut due_ms) = (occurrence, due_ms);
            loop {
                if is_last(occurrence) {
                    ops.push(fire(occurrence, due_ms, AfterFire::Finished));
                    break;
                }
                if ops.len() + 1 >= MISFIRE_FIRE_ALL_CAP as usize {
                    ops.push(fire(occurrence, due_ms, next_after(now_ms)));
                    break;
                }
                match slots.after(due_ms) {
                    Some(next_ms) if next_ms <= now_ms => {
                        ops.push(fire(occurrence, due_ms, AfterFire::Next { due_ms: next_ms }));
                        // `is_last` above rules out u32::MAX.
                        occurrence = occurrence.saturating_add(1);
                        due_ms = next_ms;
                    }
                    // The first slot after `due_ms` is past `now_ms`: it is
                    // also the first slot after `now_ms`.
                    Some(next_ms) => {
                        ops.push(fire(occurrence, due_ms, AfterFire::Next { due_ms: next_ms }));
                        break;
                    }
                    None => {
                        ops.push(fire(occurrence, due_ms, AfterFire::Finished));
                        break;
                    }
                }
            }
            ops
        }
    }
}

fn max_occurrences(schedule: &Schedule) -> Option<u32> {
    match schedule {
        Schedule::Once { .. } => Some(1),
        Schedule::Interval { max_occurrences, .. } | Schedule::Cron { max_occurrences, .. } => {
            *max_occurrences
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use proptest::prelude::*;

    fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> WallMs {
        Utc.with_ymd_and_hms(year, month, day, hour, minute, second)
            .single()
            .expect("valid UTC time")
            .timestamp_millis()
    }

    fn cron(expression: &str, time_zone: &str) -> CronSchedule {
        parse_cron(expression, time_zone).expect("valid cron")
    }

    fn timer_id() -> TimerId {
        TimerId(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
    }

    fn interval(every_ms: u64, start_at_ms: WallMs, end_at_ms: Option<WallMs>, max: Option<u32>) -> Schedule {
        Schedule::Interval { every_ms, start_at_ms, end_at_ms, max_occurrences: max }
    }

    fn cron_schedule(expression: &str, time_zone: &str, start_at_ms: WallMs) -> Schedule {
        Schedule::Cron {
            expression: expression.into(),
            time_zone: time_zone.into(),
            start_at_ms,
            end_at_ms: None,
            max_occurrences: None,
        }
    }

    fn recurring(schedule: Schedule, misfire: MisfirePolicy) -> Recurrence {
        Recurrence { schedule, misfire }
    }

    fn fire(occurrence: u32, due_ms: WallMs, then: AfterFire) -> FireOp {
        FireOp { timer_id: timer_id(), occurrence, due_ms, then, skipped: false }
    }

    fn next(due_ms: WallMs) -> AfterFire {
        AfterFire::Next { due_ms }
    }

    // ---- parsing -------------------------------------------------------

    #[test]
    fn parses_five_and_six_fields_and_nicknames() {
        for expression in
            ["*/5 * * * *", "0 30 9 * * MON-FRI", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"]
        {
            assert!(parse_cron(expression, "UTC").is_ok(), "{expression}");
        }
        let hourly = cron("@hourly", "UTC");
        assert_eq!(hourly.slot_after(utc(2026, 1, 1, 10, 20, 0)), Some(utc(2026, 1, 1, 11, 0, 0)));
        let daily = cron("@daily", "UTC");
        assert_eq!(daily.slot_after(utc(2026, 1, 1, 10, 20, 0)), Some(utc(2026, 1, 2, 0, 0, 0)));
    }

    #[test]
    fn rejects_bad_expressions_naming_cron() {
        for expression in
            ["", "* * * *", "0 0 0 1 1 * 2030", "61 * * * *", "* * * * * * * *", "@reboot", "x y z a b"]
        {
            let error = parse_cron(expression, "UTC").expect_err(expression);
            assert_eq!(error.field, "cron", "{expression}");
        }
        let too_long = format!("0 0 * * {}", "1,".repeat(200));
        let error = parse_cron(&too_long, "UTC").expect_err("too long");
        assert_eq!(error, ValidationError::new("cron", "must be at most 256 characters"));
    }

    #[test]
    fn rejects_unknown_zones_naming_time_zone() {
        for zone in ["", "Mars/Olympus", "europe/paris", "UTC+2"] {
            let error = parse_cron("0 * * * *", zone).expect_err(zone);
            assert_eq!(error.field, "timeZone", "{zone}");
        }
        assert_eq!(cron("0 * * * *", "America/New_York").zone(), chrono_tz::America::New_York);
    }

    // ---- cron slots ----------------------------------------------------

    #[test]
    fn cron_with_seconds_field() {
        let every_ten_seconds = cron("*/10 * * * * *", "UTC");
        assert_eq!(every_ten_seconds.slot_after(utc(2026, 5, 1, 8, 0, 3)), Some(utc(2026, 5, 1, 8, 0, 10)));
        let at_second_30 = cron("30 15 10 * * *", "UTC");
        assert_eq!(at_second_30.slot_after(utc(2026, 5, 1, 8, 0, 0)), Some(utc(2026, 5, 1, 10, 15, 30)));
    }

    #[test]
    fn cron_slot_after_is_strictly_after_to_the_millisecond() {
        let minutely = cron("* * * * *", "UTC");
        let slot = utc(2026, 5, 1, 8, 1, 0);
        assert_eq!(minutely.slot_after(slot - 1), Some(slot));
        assert_eq!(minutely.slot_after(slot), Some(slot + 60_000));
        assert_eq!(minutely.slot_after(slot + 999), Some(slot + 60_000));
        // Before the epoch (negative milliseconds) floors correctly.
        assert_eq!(minutely.slot_after(-1), Some(0));
        assert_eq!(minutely.slot_after(-60_001), Some(-60_000));
    }

    #[test]
    fn cron_in_a_zone_uses_local_time() {
        // 09:00 in Paris is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST).
        let nine = cron("0 9 * * *", "Europe/Paris");
        assert_eq!(nine.slot_after(utc(2026, 1, 15, 12, 0, 0)), Some(utc(2026, 1, 16, 8, 0, 0)));
        assert_eq!(nine.slot_after(utc(2026, 7, 15, 12, 0, 0)), Some(utc(2026, 7, 16, 7, 0, 0)));
    }

    #[test]
    fn paris_spring_forward_gap_fires_at_the_first_instant_after_it() {
        // 2024-03-31: 02:00 CET (01:00Z) jumps to 03:00 CEST; 02:30 does not exist.
        let half_past_two = cron("30 2 * * *", "Europe/Paris");
        assert_eq!(half_past_two.slot_after(utc(2024, 3, 30, 12, 0, 0)), Some(utc(2024, 3, 31, 1, 0, 0)));
        // The day after, 02:30 CEST exists again (00:30Z).
        assert_eq!(half_past_two.slot_after(utc(2024, 3, 31, 1, 0, 0)), Some(utc(2024, 4, 1, 0, 30, 0)));
    }

    #[test]
    fn several_slots_in_a_gap_fire_once_at_its_end() {
        // 15 and 45 past 02:00 fall in the gap; both land on 03:00 CEST (01:00Z), once.
        let quarter_to_and_past = cron("15,45 * * * *", "Europe/Paris");
        assert_eq!(
            quarter_to_and_past.slot_after(utc(2024, 3, 31, 0, 45, 0)),
            Some(utc(2024, 3, 31, 1, 0, 0))
        );
        assert_eq!(
            quarter_to_and_past.slot_after(utc(2024, 3, 31, 1, 0, 0)),
            Some(utc(2024, 3, 31, 1, 15, 0))
        );
        // A stepped hour field that names the missing hour (0, 2, 4, …).
        let every_two_hours = cron("0 */2 * * *", "Europe/Paris");
        assert_eq!(every_two_hours.slot_after(utc(2024, 3, 30, 23, 0, 0)), Some(utc(2024, 3, 31, 1, 0, 0)));
        assert_eq!(every_two_hours.slot_after(utc(2024, 3, 31, 1, 0, 0)), Some(utc(2024, 3, 31, 2, 0, 0)));
    }

    #[test]
    fn paris_fall_back_fires_once_at_the_earlier_instant() {
        // 2024-10-27: 03:00 CEST (01:00Z) goes back to 02:00 CET; 02:30 happens at 00:30Z and 01:30Z.
        let half_past_two = cron("30 2 * * *", "Europe/Paris");
        assert_eq!(half_past_two.slot_after(utc(2024, 10, 26, 12, 0, 0)), Some(utc(2024, 10, 27, 0, 30, 0)));
        // Not again at 01:30Z: next is the following day, 02:30 CET (01:30Z on the 28th).
        assert_eq!(half_past_two.slot_after(utc(2024, 10, 27, 0, 30, 0)), Some(utc(2024, 10, 28, 1, 30, 0)));
    }

    #[test]
    fn hourly_cron_skips_the_second_pass_of_a_repeated_hour() {
        let hourly = cron("0 * * * *", "Europe/Paris");
        // 02:00 CEST is 00:00Z; 02:00 CET (01:00Z) is its repeat; next is 03:00 CET (02:00Z).
        assert_eq!(hourly.slot_after(utc(2024, 10, 26, 23, 30, 0)), Some(utc(2024, 10, 27, 0, 0, 0)));
        assert_eq!(hourly.slot_after(utc(2024, 10, 27, 0, 0, 0)), Some(utc(2024, 10, 27, 2, 0, 0)));
        // Searching from inside the second pass (02:15 CET = 01:15Z) skips the rest of it.
        let half_hourly = cron("*/30 * * * *", "Europe/Paris");
        assert_eq!(half_hourly.slot_after(utc(2024, 10, 27, 1, 15, 0)), Some(utc(2024, 10, 27, 2, 0, 0)));
        // From inside the first pass (02:15 CEST = 00:15Z) the rest of the first pass still counts.
        assert_eq!(half_hourly.slot_after(utc(2024, 10, 27, 0, 15, 0)), Some(utc(2024, 10, 27, 0, 30, 0)));
    }

    #[test]
    fn croner_alone_would_fire_both_passes_which_is_why_local_times_are_mapped_here() {
        // Guards the reason for the wrapper: if croner changes, revisit the module doc.
        let raw: Cron = "0 * * * *".parse().expect("valid");
        let after = chrono_tz::Europe::Paris
            .timestamp_opt(utc(2024, 10, 27, 0, 0, 0) / 1000, 0)
            .single()
            .expect("valid");
        let croner_next = raw.find_next_occurrence(&after, false).expect("a slot").timestamp_millis();
        assert_eq!(croner_next, utc(2024, 10, 27, 1, 0, 0));
    }

    #[test]
    fn new_york_transitions() {
        // 2024-03-10: 02:00 EST (07:00Z) jumps to 03:00 EDT.
        let half_past_two = cron("30 2 * * *", "America/New_York");
        assert_eq!(half_past_two.slot_after(utc(2024, 3, 9, 12, 0, 0)), Some(utc(2024, 3, 10, 7, 0, 0)));
        assert_eq!(half_past_two.slot_after(utc(2024, 3, 10, 7, 0, 0)), Some(utc(2024, 3, 11, 6, 30, 0)));
        // 2024-11-03: 02:00 EDT (06:00Z) goes back to 01:00 EST; 01:30 happens at 05:30Z and 06:30Z.
        let half_past_one = cron("30 1 * * *", "America/New_York");
        assert_eq!(half_past_one.slot_after(utc(2024, 11, 2, 12, 0, 0)), Some(utc(2024, 11, 3, 5, 30, 0)));
        assert_eq!(half_past_one.slot_after(utc(2024, 11, 3, 5, 30, 0)), Some(utc(2024, 11, 4, 6, 30, 0)));
    }

    #[test]
    fn a_skipped_calendar_day_lands_on_the_first_instant_after_it() {
        // Samoa skipped 2011-12-30: 2011-12-29T24:00-10:00 became 2011-12-31T00:00+14:00 (10:00Z on the 30th).
        let noon = cron("0 12 * * *", "Pacific/Apia");
        assert_eq!(noon.slot_after(utc(2011, 12, 29, 23, 0, 0)), Some(utc(2011, 12, 30, 10, 0, 0)));
        assert_eq!(noon.slot_after(utc(2011, 12, 30, 10, 0, 0)), Some(utc(2011, 12, 30, 22, 0, 0)));
    }

    #[test]
    fn cron_without_any_slot_or_out_of_range_gives_none() {
        let february_thirtieth = cron("0 0 30 2 *", "UTC");
        assert_eq!(february_thirtieth.slot_after(utc(2026, 1, 1, 0, 0, 0)), None);
        let minutely = cron("* * * * *", "Europe/Paris");
        assert_eq!(minutely.slot_after(WallMs::MAX), None);
        // Searches start no earlier than 0001-01-01T00:00:00Z, which is 00:09:21 local
        // (Paris mean time, +00:09:21): the first minute slot is 00:10:00 local, 39 s later.
        assert_eq!(minutely.slot_after(WallMs::MIN), Some(EARLIEST_SEARCH_S * 1000 + 39_000));
        // At chrono's range limits, in the zones with the largest offsets: no panic.
        let (earliest_ms, latest_ms) =
            (DateTime::<Utc>::MIN_UTC.timestamp_millis(), DateTime::<Utc>::MAX_UTC.timestamp_millis());
        for zone in ["Pacific/Kiritimati", "Etc/GMT+12", "UTC"] {
            let every_second = cron("* * * * * *", zone);
            for at_ms in [earliest_ms, earliest_ms + 1, latest_ms - 1, latest_ms] {
                let slot = every_second.slot_after(at_ms);
                assert!(slot.is_none_or(|slot_ms| slot_ms > at_ms), "{zone} {at_ms}");
            }
            assert_eq!(every_second.slot_after(latest_ms), None);
        }
    }

    // ---- slot_after over schedules ---------------------------------------

    #[test]
    fn once_slot_is_its_fire_time_only_while_ahead() {
        let once = Schedule::Once { fire_at_ms: 5_000, duration_ms: None };
        assert_eq!(slot_after(&once, 4_999), Some(5_000));
        assert_eq!(slot_after(&once, 5_000), None);
    }

    #[test]
    fn interval_slots_are_start_plus_multiples_of_every() {
        let every_ten = interval(10, 1_000, None, None);
        assert_eq!(slot_after(&every_ten, 0), Some(1_000));
        assert_eq!(slot_after(&every_ten, 999), Some(1_000));
        assert_eq!(slot_after(&every_ten, 1_000), Some(1_010));
        assert_eq!(slot_after(&every_ten, 1_005), Some(1_010));
        assert_eq!(slot_after(&every_ten, 1_009), Some(1_010));
        assert_eq!(slot_after(&every_ten, 1_010), Some(1_020));
        assert_eq!(slot_after(&every_ten, 1_000_000), Some(1_000_010));
    }

    #[test]
    fn interval_end_is_inclusive() {
        let bounded = interval(10, 1_000, Some(1_020), None);
        assert_eq!(slot_after(&bounded, 1_010), Some(1_020));
        assert_eq!(slot_after(&bounded, 1_020), None);
        let ends_before_start = interval(10, 1_000, Some(999), None);
        assert_eq!(slot_after(&ends_before_start, 0), None);
    }

    #[test]
    fn interval_arithmetic_never_overflows() {
        let near_the_end = interval(u64::MAX, WallMs::MAX - 5, None, None);
        assert_eq!(slot_after(&near_the_end, 0), Some(WallMs::MAX - 5));
        assert_eq!(slot_after(&near_the_end, WallMs::MAX - 5), None);
        let from_the_start = interval(1, WallMs::MIN, None, None);
        assert_eq!(slot_after(&from_the_start, WallMs::MAX - 1), Some(WallMs::MAX));
        assert_eq!(slot_after(&from_the_start, WallMs::MAX), None);
        let zero_period = interval(0, 100, None, None);
        assert_eq!(slot_after(&zero_period, 50), Some(100));
        assert_eq!(slot_after(&zero_period, 100), None);
    }

    #[test]
    fn cron_schedule_honours_start_and_end() {
        let start = utc(2026, 1, 1, 10, 0, 0);
        let mut schedule = cron_schedule("0 * * * *", "UTC", start);
        // The start itself is a slot when it matches.
        assert_eq!(slot_after(&schedule, 0), Some(start));
        assert_eq!(slot_after(&schedule, start - 1), Some(start));
        assert_eq!(slot_after(&schedule, start), Some(utc(2026, 1, 1, 11, 0, 0)));
        if let Schedule::Cron { end_at_ms, .. } = &mut schedule {
            *end_at_ms = Some(utc(2026, 1, 1, 11, 0, 0));
        }
        assert_eq!(slot_after(&schedule, start), Some(utc(2026, 1, 1, 11, 0, 0)));
        assert_eq!(slot_after(&schedule, utc(2026, 1, 1, 11, 0, 0)), None);
        // A start between slots: the first slot after it.
        let mid_hour = cron_schedule("0 * * * *", "UTC", start + 1);
        assert_eq!(slot_after(&mid_hour, 0), Some(utc(2026, 1, 1, 11, 0, 0)));
    }

    #[test]
    fn unparsable_stored_cron_has_no_slots() {
        let broken = cron_schedule("not cron", "UTC", 0);
        assert_eq!(slot_after(&broken, 0), None);
        let bad_zone = cron_schedule("* * * * *", "Nowhere/Land", 0);
        assert_eq!(slot_after(&bad_zone, 0), None);
    }

    // ---- plan_fires ------------------------------------------------------

    #[test]
    fn one_shot_fires_once_and_finishes() {
        assert_eq!(plan_fires(timer_id(), 1, 1_000, None, 1_500), vec![fire(1, 1_000, AfterFire::Finished)]);
        let once =
            recurring(Schedule::Once { fire_at_ms: 1_000, duration_ms: Some(10) }, MisfirePolicy::FireAll);
        assert_eq!(
            plan_fires(timer_id(), 1, 1_000, Some(&once), 9_000),
            vec![fire(1, 1_000, AfterFire::Finished)]
        );
    }

    #[test]
    fn nothing_is_planned_before_it_is_due() {
        let every = recurring(interval(100, 1_000, None, None), MisfirePolicy::FireAll);
        assert_eq!(plan_fires(timer_id(), 1, 1_000, Some(&every), 999), vec![]);
        assert_eq!(plan_fires(timer_id(), 1, 1_000, None, 999), vec![]);
    }

    #[test]
    fn fire_once_on_time_moves_to_the_next_slot() {
        let every = recurring(interval(100, 1_000, None, None), MisfirePolicy::FireOnce);
        assert_eq!(plan_fires(timer_id(), 1, 1_000, Some(&every), 1_000), vec![fire(1, 1_000, next(1_100))]);
    }

    #[test]
    fn fire_once_coalesces_missed_slots() {
        // Due at 1_000, now 1_350: slots 1_100, 1_200, 1_300 were missed.
        let every = recurring(interval(100, 1_000, None, None), MisfirePolicy::FireOnce);
        assert_eq!(plan_fires(timer_id(), 3, 1_000, Some(&every), 1_350), vec![fire(3, 1_000, next(1_400))]);
    }

    #[test]
    fn fire_once_finishes_at_max_occurrences_and_at_end() {
        let limited = recurring(interval(100, 1_000, None, Some(3)), MisfirePolicy::FireOnce);
        assert_eq!(
            plan_fires(timer_id(), 2, 1_100, Some(&limited), 1_100),
            vec![fire(2, 1_100, next(1_200))]
        );
        assert_eq!(
            plan_fires(timer_id(), 3, 1_200, Some(&limited), 1_200),
            vec![fire(3, 1_200, AfterFire::Finished)]
        );
        let ending = recurring(interval(100, 1_000, Some(1_250), None), MisfirePolicy::FireOnce);
        assert_eq!(
            plan_fires(timer_id(), 2, 1_100, Some(&ending), 1_200),
            vec![fire(2, 1_100, AfterFire::Finished)]
        );
    }

    #[test]
    fn fire_all_fires_every_missed_slot_as_its_own_occurrence() {
        let every = recurring(interval(100, 1_000, None, None), MisfirePolicy::FireAll);
        assert_eq!(
            plan_fires(timer_id(), 5, 1_000, Some(&every), 1_350),
            vec![
                fire(5, 1_000, next(1_100)),
                fire(6, 1_100, next(1_200)),
                fire(7, 1_200, next(1_300)),
                fire(8, 1_300, next(1_400)),
            ]
        );
    }

    #[test]
    fn fire_all_stops_at_max_occurrences_and_end() {
        let limited = recurring(interval(100, 1_000, None, Some(6)), MisfirePolicy::FireAll);
        assert_eq!(
            plan_fires(timer_id(), 5, 1_000, Some(&limited), 1_350),
            vec![fire(5, 1_000, next(1_100)), fire(6, 1_100, AfterFire::Finished)]
        );
        let ending = recurring(interval(100, 1_000, Some(1_200), None), MisfirePolicy::FireAll);
        assert_eq!(
            plan_fires(timer_id(), 1, 1_000, Some(&ending), 1_350),
            vec![
                fire(1, 1_000, next(1_100)),
                fire(2, 1_100, next(1_200)),
                fire(3, 1_200, AfterFire::Finished)
            ]
        );
    }

    #[test]
    fn fire_all_is_capped_and_then_jumps_past_now() {
        let every = recurring(interval(10, 0, None, None), MisfirePolicy::FireAll);
        let ops = plan_fires(timer_id(), 1, 0, Some(&every), 100_005);
        assert_eq!(ops.len(), MISFIRE_FIRE_ALL_CAP as usize);
        assert_eq!(ops[0], fire(1, 0, next(10)));
        assert_eq!(ops[98], fire(99, 980, next(990)));
        assert_eq!(ops[99], fire(100, 990, next(100_010)));
    }

    #[test]
    fn skip_drops_a_late_occurrence_without_consuming_its_number() {
        let every = recurring(interval(100, 1_000, None, None), MisfirePolicy::Skip);
        let late = 1_000 + MISFIRE_GRACE_MS + 1;
        assert_eq!(
            plan_fires(timer_id(), 4, 1_000, Some(&every), late),
            vec![FireOp {
                timer_id: timer_id(),
                occurrence: 4,
                due_ms: 1_000,
                then: next(2_100),
                skipped: true
            }]
        );
    }

    #[test]
    fn skip_within_grace_fires_like_fire_once() {
        let every = recurring(interval(100, 1_000, None, None), MisfirePolicy::Skip);
        let just_in_time = 1_000 + MISFIRE_GRACE_MS;
        assert_eq!(
            plan_fires(timer_id(), 4, 1_000, Some(&every), just_in_time),
            vec![fire(4, 1_000, next(2_100))]
        );
    }

    #[test]
    fn skip_past_the_end_finishes_without_a_fire() {
        let ending = recurring(interval(100, 1_000, Some(1_500), None), MisfirePolicy::Skip);
        assert_eq!(
            plan_fires(timer_id(), 2, 1_000, Some(&ending), 5_000),
            vec![FireOp {
                timer_id: timer_id(),
                occurrence: 2,
                due_ms: 1_000,
                then: AfterFire::Finished,
                skipped: true
            }]
        );
    }

    #[test]
    fn the_last_occurrence_number_finishes() {
        let every = recurring(interval(100, 1_000, None, None), MisfirePolicy::FireAll);
        assert_eq!(
            plan_fires(timer_id(), u32::MAX, 1_000, Some(&every), 1_500),
            vec![fire(u32::MAX, 1_000, AfterFire::Finished)]
        );
    }

    #[test]
    fn cron_fire_all_across_spring_forward() {
        // Hourly at :30 in Paris, down from 00:30Z (01:30 CET) to 02:10Z (04:10 CEST) on 2024-03-31:
        // 01:30 CET (00:30Z), 02:30 → gap → 03:00 CEST (01:00Z), 03:30 CEST (01:30Z); next 04:30 CEST (02:30Z).
        let schedule = cron_schedule("30 * * * *", "Europe/Paris", 0);
        let catch_up = recurring(schedule, MisfirePolicy::FireAll);
        assert_eq!(
            plan_fires(
                timer_id(),
                1,
                utc(2024, 3, 31, 0, 30, 0),
                Some(&catch_up),
                utc(2024, 3, 31, 2, 10, 0)
            ),
            vec![
                fire(1, utc(2024, 3, 31, 0, 30, 0), next(utc(2024, 3, 31, 1, 0, 0))),
                fire(2, utc(2024, 3, 31, 1, 0, 0), next(utc(2024, 3, 31, 1, 30, 0))),
                fire(3, utc(2024, 3, 31, 1, 30, 0), next(utc(2024, 3, 31, 2, 30, 0))),
            ]
        );
    }

    fn any_schedule() -> impl Strategy<Value = Schedule> {
        let bound = -4_000_000_000_000i64..4_000_000_000_000i64;
        prop_oneof![
            (any::<i64>(), proptest::option::of(any::<u64>()))
                .prop_map(|(fire_at_ms, duration_ms)| Schedule::Once { fire_at_ms, duration_ms }),
            (
                prop_oneof![0u64..5, 1u64..100_000, any::<u64>()],
                prop_oneof![bound.clone(), any::<i64>()],
                proptest::option::of(any::<i64>()),
                proptest::option::of(0u32..300),
            )
                .prop_map(|(every_ms, start_at_ms, end_at_ms, max)| interval(
                    every_ms,
                    start_at_ms,
                    end_at_ms,
                    max
                )),
            (
                prop_oneof![
                    Just("* * * * *"),
                    Just("*/7 * * * * *"),
                    Just("30 2 * * *"),
                    Just("0 * * * *"),
                    Just("0 0 30 2 *"),
                    Just("bad"),
                ],
                prop_oneof![Just("UTC"), Just("Europe/Paris"), Just("America/New_York"), Just("Nowhere")],
                bound,
                proptest::option::of(any::<i64>()),
                proptest::option::of(0u32..300),
            )
                .prop_map(|(expression, zone, start_at_ms, end_at_ms, max_occurrences)| {
                    Schedule::Cron {
                        expression: expression.into(),
                        time_zone: zone.into(),
                        start_at_ms,
                        end_at_ms,
                        max_occurrences,
                    }
                }),
        ]
    }

    fn any_misfire() -> impl Strategy<Value = MisfirePolicy> {
        prop_oneof![Just(MisfirePolicy::FireOnce), Just(MisfirePolicy::FireAll), Just(MisfirePolicy::Skip)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn plans_are_never_early_and_chain_forward(
            schedule in any_schedule(),
            misfire in any_misfire(),
            one_shot in any::<bool>(),
            occurrence in prop_oneof![1u32..400, any::<u32>()],
            due_ms in prop_oneof![-4_000_000_000_000i64..4_000_000_000_000i64, any::<i64>()],
            late_ms in prop_oneof![0i64..10_000_000, any::<i64>()],
        ) {
            let now_ms = due_ms.saturating_add(late_ms);
            let recurrence = Recurrence { schedule, misfire };
            let ops = plan_fires(timer_id(), occurrence, due_ms, (!one_shot).then_some(&recurrence), now_ms);
            if due_ms > now_ms {
                prop_assert!(ops.is_empty());
                return Ok(());
            }
            prop_assert!(!ops.is_empty());
            prop_assert!(ops.len() <= MISFIRE_FIRE_ALL_CAP as usize);
            prop_assert_eq!(ops[0].occurrence, occurrence);
            prop_assert_eq!(ops[0].due_ms, due_ms);
            for (index, op) in ops.iter().enumerate() {
                prop_assert!(op.due_ms <= now_ms);
                prop_assert_eq!(op.timer_id, timer_id());
                if let AfterFire::Next { due_ms: next_due_ms } = op.then {
                    prop_assert!(next_due_ms > op.due_ms);
                    if let Some(following) = ops.get(index + 1) {
                        prop_assert_eq!(following.due_ms, next_due_ms);
                        prop_assert_eq!(following.occurrence, op.occurrence + 1);
                    } else {
                        prop_assert!(next_due_ms > now_ms);
                    }
                } else {
                    prop_assert_eq!(index + 1, ops.len());
                }
            }
        }

        #[test]
        fn slot_after_is_strictly_after_and_never_panics(schedule in any_schedule(), after_ms in any::<i64>()) {
            if let Some(slot_ms) = slot_after(&schedule, after_ms) {
                prop_assert!(slot_ms > after_ms);
            }
        }
    }
}
