//! `minoots timers create|get|list|cancel|watch|fires`: the command-line
//! client of a running server, over gRPC (`minoots.timer.v1.HorologyKernel`).
//! Connection, errors and argument parsers are the shared client's
//! ([`crate::client`]).
//!
//! Output: a compact table for people by default; with `--json` the REST
//! API's camelCase shape (`TimerView`, one object per line for `list`,
//! `fires` and `watch`), so scripts see the same fields on every interface.
//! Errors go to stderr with the gRPC code, the message, and the hints the
//! server puts in metadata (`x-minoots-field`, `retry-after-ms`,
//! `x-minoots-leader`); the process then exits non-zero.

use std::error::Error;
use std::io::Write;

use minoots_core::time::format_wall_ms;
use minoots_node::views::{EventBody, EventEnvelope, FireView, ScheduleView, TimerView};
use minoots_proto::timer_v1::{
    Timer, TimerCancelRequest, TimerEvent, TimerEventStreamRequest, TimerFire, TimerFired, TimerFiresRequest,
    TimerGetRequest, TimerListRequest, TimerScheduleRequest, TimerStatus, timer_event,
    timer_schedule_request,
};

use crate::client::{CallError, ConnectArgs, label_map, parse_duration_ms, parse_instant_ms, parse_label};

/// Widths of the fixed table columns (the last column, labels, is free).
const ID_WIDTH: usize = 36;
const STATUS_WIDTH: usize = 9;
const NAME_WIDTH: usize = 20;
const TIME_WIDTH: usize = 24;
const OCCURRENCE_WIDTH: usize = 10;

// ---------------------------------------------------------------------------
// Argument parsers of `timers create`
// ---------------------------------------------------------------------------

/// An RFC 3339 instant, normalised to UTC with milliseconds as the API wants it.
fn parse_instant_arg(text: &str) -> Result<String, String> {
    parse_instant_ms(text).map(format_wall_ms)
}

/// A JSON document given on the command line: checked here, sent as text.
fn parse_json_arg(text: &str) -> Result<String, String> {
    serde_json::from_str::<serde_json::Value>(text).map_err(|e| format!("not valid JSON: {e}"))?;
    Ok(text.to_owned())
}

// ---------------------------------------------------------------------------
// Command-line surface
// ---------------------------------------------------------------------------

/// `minoots timers ...`
#[derive(Debug, clap::Args)]
pub struct TimersArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Machine output: the timer as JSON (one JSON object per line for list, fires and watch).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TimersCommand,
}

/// Timer commands.
#[derive(Debug, clap::Subcommand)]
pub enum TimersCommand {
    /// Schedule a timer: once (--in / --at) or recurring (--every / --cron).
    Create(Box<CreateArgs>),
    /// Show one timer.
    Get {
        /// Timer id.
        id: String,
    },
    /// List timers, oldest first, a page at a time.
    List(ListArgs),
    /// Cancel a timer (idempotent for an already-cancelled timer).
    Cancel {
        /// Timer id.
        id: String,
        /// Why (kept with the timer).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print events as they happen, until Ctrl-C.
    Watch(WatchArgs),
    /// List a timer's recorded fires, oldest first.
    Fires(FiresArgs),
    /// List a timer's action delivery attempts (over REST).
    Deliveries {
        /// Timer id.
        id: String,
        #[command(flatten)]
        api: crate::dlq_cmd::ApiArgs,
    },
}

/// Misfire policy of a recurring timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Misfire {
    /// Coalesce missed occurrences into one fire (the server's default).
    #[value(name = "fire_once", alias = "fire-once")]
    FireOnce,
    /// Fire every missed occurrence (capped by the server).
    #[value(name = "fire_all", alias = "fire-all")]
    FireAll,
    /// Skip missed occurrences; fire the next slot on time.
    #[value(name = "skip")]
    Skip,
}

impl Misfire {
    fn wire_name(self) -> &'static str {
        match self {
            Misfire::FireOnce => "fire_once",
            Misfire::FireAll => "fire_all",
            Misfire::Skip => "skip",
        }
    }
}

/// `minoots timers create`
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("schedule").required(true).args(["in_ms", "at", "every_ms", "cron"])))]
#[command(group(clap::ArgGroup::new("recurring").args(["every_ms", "cron"])))]
pub struct CreateArgs {
    /// Fire once after this delay (`30s`, `5m`, `1h 30m`, `250ms`, or plain milliseconds).
    #[arg(long = "in", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub in_ms: Option<u64>,
    /// Fire once at this instant (RFC 3339, e.g. `2026-01-02T03:04:05Z`).
    #[arg(long, value_name = "ISO", value_parser = parse_instant_arg)]
    pub at: Option<String>,
    /// Fire every this often (`5m`, `10s`; at least 10 ms).
    #[arg(long = "every", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub every_ms: Option<u64>,
    /// Fire on a cron schedule (5 fields, or 6 with leading seconds, or `@hourly`-style nicknames).
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// IANA time zone of the cron expression (default UTC).
    #[arg(long = "tz", value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// Recurring: the first slot (RFC 3339).
    #[arg(long, value_name = "ISO", value_parser = parse_instant_arg, requires = "recurring")]
    pub start_at: Option<String>,
    /// Recurring: no slot after this instant (RFC 3339).
    #[arg(long, value_name = "ISO", value_parser = parse_instant_arg, requires = "recurring")]
    pub end_at: Option<String>,
    /// Recurring: stop after this many fires.
    #[arg(long, value_name = "N", requires = "recurring", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_occurrences: Option<u32>,
    /// Recurring: what to do with occurrences missed while the service was down.
    #[arg(long, value_enum, requires = "recurring")]
    pub misfire: Option<Misfire>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// A label `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Client JSON kept with the timer.
    #[arg(long, value_name = "JSON", value_parser = parse_json_arg)]
    pub metadata: Option<String>,
    /// Actions to run on each fire (JSON).
    #[arg(long, value_name = "JSON", value_parser = parse_json_arg)]
    pub action_bundle: Option<String>,
    /// Retrying with the same key returns the same timer, never a second one.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// Status filter of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    /// Waiting for its next occurrence.
    Scheduled,
    /// Fired its last occurrence.
    Fired,
    /// Cancelled.
    Cancelled,
}

impl StatusFilter {
    fn wire_name(self) -> &'static str {
        match self {
            StatusFilter::Scheduled => "scheduled",
            StatusFilter::Fired => "fired",
            StatusFilter::Cancelled => "cancelled",
        }
    }
}

/// `minoots timers list`
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only timers in these statuses (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub status: Vec<StatusFilter>,
    /// Only timers carrying this label `key=value` (repeatable; all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Page size (1–1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Follow the page tokens to the end instead of stopping after one page.
    #[arg(long)]
    pub all: bool,
    /// Start from this page token (printed after a page that has more).
    #[arg(long)]
    pub page_token: Option<String>,
}

/// `minoots timers watch`
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Event types, comma-separated: timer.scheduled, timer.fired, timer.cancelled (default: all).
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Every tenant's events, not only the key's own (needs role operator).
    #[arg(long)]
    pub all_tenants: bool,
}

/// `minoots timers fires`
#[derive(Debug, clap::Args)]
pub struct FiresArgs {
    /// Timer id.
    pub id: String,
    /// Page size (1–1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Follow the pages to the last fire instead of stopping after one page.
    #[arg(long)]
    pub all: bool,
    /// Start after this occurrence (0 = from the first).
    #[arg(long, default_value_t = 0)]
    pub after: u32,
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// Runs a timer command.
pub async fn run(args: TimersArgs) -> Result<(), Box<dyn Error>> {
    match run_inner(args).await {
        // `minoots timers list | head` is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn run_inner(args: TimersArgs) -> Result<(), Box<dyn Error>> {
    let json = args.json;
    match args.command {
        TimersCommand::Deliveries { id, api } => crate::dlq_cmd::deliveries(&api, &id, json).await,
        TimersCommand::Create(create) => {
            let request = create_request(&create)?;
            let mut client = args.connect.connect().await?;
            let reply = client
                .schedule_timer(request)
                .await
                .map_err(|s| CallError::new("schedule timer", s))?
                .into_inner();
            let timer = reply.timer.ok_or("schedule timer: the server replied without a timer")?;
            if !reply.created {
                eprintln!("note: the idempotency key matched an existing timer; nothing new was created");
            }
            print_timers(&[timer], json, true)
        }
        TimersCommand::Get { id } => {
            let mut client = args.connect.connect().await?;
            let timer = client
                .get_timer(TimerGetRequest { tenant_id: String::new(), timer_id: id })
                .await
                .map_err(|s| CallError::new("get timer", s))?
                .into_inner();
            print_timers(&[timer], json, true)
        }
        TimersCommand::Cancel { id, reason } => {
            let mut client = args.connect.connect().await?;
            let request = TimerCancelRequest {
                tenant_id: String::new(),
                timer_id: id,
                requested_by: String::new(),
                reason: reason.unwrap_or_default(),
            };
            let timer = client
                .cancel_timer(request)
                .await
                .map_err(|s| CallError::new("cancel timer", s))?
                .into_inner();
            print_timers(&[timer], json, true)
        }
        TimersCommand::List(list) => list_timers(&args.connect, &list, json).await,
        TimersCommand::Watch(watch) => watch_events(&args.connect, &watch, json).await,
        TimersCommand::Fires(fires) => list_fires(&args.connect, &fires, json).await,
    }
}

/// The `ScheduleTimer` request for `create`'s flags.
fn create_request(args: &CreateArgs) -> Result<TimerScheduleRequest, Box<dyn Error>> {
    use timer_schedule_request::ScheduleTime;
    if args.time_zone.is_some() && args.cron.is_none() {
        return Err("--tz applies only to --cron".into());
    }
    let schedule_time = match (args.in_ms, &args.at) {
        (Some(ms), _) => Some(ScheduleTime::DurationMs(ms)),
        (None, Some(at)) => Some(ScheduleTime::FireTimeIso(at.clone())),
        (None, None) => None,
    };
    Ok(TimerScheduleRequest {
        name: args.name.clone().unwrap_or_default(),
        schedule_time,
        action_bundle_json: args.action_bundle.clone().unwrap_or_default(),
        labels: label_map(&args.labels).map_err(|e| format!("--label: {e}"))?,
        metadata_json: args.metadata.clone().unwrap_or_default(),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        every_ms: args.every_ms,
        cron: args.cron.clone().unwrap_or_default(),
        time_zone: args.time_zone.clone().unwrap_or_default(),
        start_at_iso: args.start_at.clone().unwrap_or_default(),
        end_at_iso: args.end_at.clone().unwrap_or_default(),
        max_occurrences: args.max_occurrences,
        misfire_policy: args.misfire.map(|m| m.wire_name().to_owned()).unwrap_or_default(),
        ..Default::default()
    })
}

async fn list_timers(connect: &ConnectArgs, args: &ListArgs, json: bool) -> Result<(), Box<dyn Error>> {
    let labels = label_map(&args.labels).map_err(|e| format!("--label: {e}"))?;
    let mut client = connect.connect().await?;
    let mut page_token = args.page_token.clone().unwrap_or_default();
    let mut first_page = true;
    // Bounded by the server's data: each page is a real cursor that advances,
    // and an empty token ends the walk.
    loop {
        let request = TimerListRequest {
            tenant_id: String::new(),
            page_size: args.limit,
            page_token: page_token.clone(),
            statuses: args.status.iter().map(|s| s.wire_name().to_owned()).collect(),
            labels: labels.clone(),
        };
        let page =
            client.list_timers(request).await.map_err(|s| CallError::new("list timers", s))?.into_inner();
        print_timers(&page.timers, json, first_page)?;
        first_page = false;
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        if page.next_page_token == page_token {
            return Err("list timers: the server returned the same page token twice".into());
        }
        if !args.all {
            eprintln!("more timers: add --all, or continue with --page-token {}", page.next_page_token);
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn list_fires(connect: &ConnectArgs, args: &FiresArgs, json: bool) -> Result<(), Box<dyn Error>> {
    let mut client = connect.connect().await?;
    let mut after = args.after;
    let mut first_page = true;
    // Bounded: `next_after_occurrence` must grow, else the walk stops.
    loop {
        let request = TimerFiresRequest {
            tenant_id: String::new(),
            timer_id: args.id.clone(),
            after_occurrence: after,
            page_size: args.limit,
        };
        let page =
            client.list_timer_fires(request).await.map_err(|s| CallError::new("list fires", s))?.into_inner();
        print_fires(&page.fires, json, first_page)?;
        first_page = false;
        let next = page.next_after_occurrence;
        if next == 0 {
            return Ok(());
        }
        if next <= after {
            return Err("list fires: the server's next page does not advance".into());
        }
        if !args.all {
            eprintln!("more fires: add --all, or continue with --after {next}");
            return Ok(());
        }
        after = next;
    }
}

async fn watch_events(connect: &ConnectArgs, args: &WatchArgs, json: bool) -> Result<(), Box<dyn Error>> {
    let mut client = connect.connect().await?;
    let request = TimerEventStreamRequest {
        tenant_id: if args.all_tenants { "__all__".to_owned() } else { String::new() },
        topics: args.topics.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect(),
    };
    let mut stream = client
        .stream_timer_events(request)
        .await
        .map_err(|s| CallError::new("watch events", s))?
        .into_inner();
    eprintln!("watching events (Ctrl-C to stop)");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            message = stream.message() => match message {
                Ok(Some(event)) => {
                    let line = if json { serde_json::to_string(&event_envelope(&event))? } else { event_line(&event) };
                    write_lines(&[line])?;
                }
                Ok(None) => return Err("watch events: the server closed the stream".into()),
                Err(status) => return Err(CallError::new("watch events", status).into()),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Writes whole lines to stdout and flushes (so `watch` output appears at once).
fn write_lines(lines: &[String]) -> Result<(), Box<dyn Error>> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn print_timers(timers: &[Timer], json: bool, header: bool) -> Result<(), Box<dyn Error>> {
    let mut lines = Vec::with_capacity(timers.len() + 1);
    if json {
        for timer in timers {
            lines.push(serde_json::to_string(&timer_view(timer))?);
        }
    } else {
        if header {
            lines.push(table_line(&["ID", "STATUS", "NAME", "NEXT/FIRE AT", "OCCURRENCE", "LABELS"]));
        }
        for timer in timers {
            let row = timer_row(timer);
            lines.push(table_line(&row.each_ref().map(String::as_str)));
        }
    }
    write_lines(&lines)
}

fn print_fires(fires: &[TimerFire], json: bool, header: bool) -> Result<(), Box<dyn Error>> {
    let mut lines = Vec::with_capacity(fires.len() + 1);
    if json {
        for fire in fires {
            lines.push(serde_json::to_string(&fire_view(fire))?);
        }
    } else {
        if header {
            lines.push(format!(
                "{:<OCCURRENCE_WIDTH$}  {:<TIME_WIDTH$}  {:<TIME_WIDTH$}  {:>10}  {:>6}  NODE",
                "OCCURRENCE", "DUE AT", "FIRED AT", "LATENESS", "EPOCH"
            ));
        }
        for fire in fires {
            let lateness = lateness_ms(&fire.due_at_iso, &fire.fired_at_iso)
                .map_or_else(|| "?".to_owned(), |ms| format!("{ms} ms"));
            lines.push(format!(
                "{:<OCCURRENCE_WIDTH$}  {:<TIME_WIDTH$}  {:<TIME_WIDTH$}  {:>10}  {:>6}  {}",
                fire.occurrence, fire.due_at_iso, fire.fired_at_iso, lateness, fire.epoch, fire.node_id
            ));
        }
    }
    write_lines(&lines)
}

/// One table line: fixed-width columns, labels last (free width).
fn table_line(cells: &[&str; 6]) -> String {
    let line = format!(
        "{:<ID_WIDTH$}  {:<STATUS_WIDTH$}  {:<NAME_WIDTH$}  {:<TIME_WIDTH$}  {:<OCCURRENCE_WIDTH$}  {}",
        cells[0],
        cells[1],
        truncate(cells[2], NAME_WIDTH),
        cells[3],
        cells[4],
        cells[5]
    );
    line.trim_end().to_owned()
}

/// The table cells of a timer: ID, STATUS, NAME, NEXT/FIRE AT, OCCURRENCE, LABELS.
/// OCCURRENCE is the occurrence the next fire will carry while scheduled, and
/// the number of fires recorded otherwise (`3/5` when a fire limit is set).
fn timer_row(timer: &Timer) -> [String; 6] {
    let status = status_name(timer.status);
    let occurrence = if status == "scheduled" { timer.next_occurrence } else { timer.fired_count };
    let occurrence = if timer.max_occurrences > 0 {
        format!("{occurrence}/{}", timer.max_occurrences)
    } else {
        occurrence.to_string()
    };
    let labels = timer.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let name = if timer.name.is_empty() { "-".to_owned() } else { timer.name.clone() };
    [timer.id.clone(), status, name, timer.fire_at_iso.clone(), occurrence, labels]
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `scheduled`, `fired`, `cancelled`, … from the wire enum.
fn status_name(status: i32) -> String {
    match TimerStatus::try_from(status) {
        Ok(TimerStatus::Scheduled | TimerStatus::Armed) => "scheduled".into(),
        Ok(TimerStatus::Fired) => "fired".into(),
        Ok(TimerStatus::Cancelled) => "cancelled".into(),
        Ok(TimerStatus::Failed) => "failed".into(),
        Ok(TimerStatus::Unspecified) => "unknown".into(),
        Err(_) => format!("status-{status}"),
    }
}

/// `fired − due` in milliseconds, when both parse.
fn lateness_ms(due_iso: &str, fired_iso: &str) -> Option<i64> {
    Some(parse_instant_ms(fired_iso).ok()? - parse_instant_ms(due_iso).ok()?)
}

fn non_empty(text: &str) -> Option<String> {
    if text.is_empty() { None } else { Some(text.to_owned()) }
}

/// A JSON payload carried as text: parsed when it is JSON, kept as a string otherwise.
fn json_field(text: &str) -> Option<serde_json::Value> {
    if text.is_empty() {
        return None;
    }
    Some(serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned())))
}

/// The REST API's view of a gRPC timer, so `--json` prints the same shape as `/api/timers`.
fn timer_view(t: &Timer) -> TimerView {
    let kind = if t.schedule_kind.is_empty() { "once".to_owned() } else { t.schedule_kind.clone() };
    let duration_ms = if kind != "once" {
        None
    } else if t.duration_ms > 0 {
        Some(t.duration_ms)
    } else {
        lateness_ms(&t.created_at_iso, &t.fire_at_iso).and_then(|ms| u64::try_from(ms).ok())
    };
    TimerView {
        id: t.id.clone(),
        tenant_id: t.tenant_id.clone(),
        name: non_empty(&t.name),
        status: status_name(t.status),
        duration_ms,
        created_at: t.created_at_iso.clone(),
        fire_at: t.fire_at_iso.clone(),
        requested_by: t.requested_by.clone(),
        metadata: json_field(&t.metadata_json),
        labels: t.labels.clone().into_iter().collect(),
        action_bundle: json_field(&t.action_bundle_json),
        agent_binding: json_field(&t.agent_binding_json),
        fired_at: non_empty(&t.fired_at_iso),
        cancelled_at: non_empty(&t.cancelled_at_iso),
        cancel_reason: non_empty(&t.cancel_reason),
        cancelled_by: non_empty(&t.cancelled_by),
        schedule: ScheduleView {
            kind,
            every: (t.every_ms > 0).then_some(t.every_ms),
            cron: non_empty(&t.cron),
            time_zone: non_empty(&t.time_zone),
            start_at: non_empty(&t.start_at_iso),
            end_at: non_empty(&t.end_at_iso),
            max_occurrences: (t.max_occurrences > 0).then_some(t.max_occurrences),
        },
        // gRPC leaves it empty for one-shot timers; REST shows the default.
        misfire_policy: if t.misfire_policy.is_empty() {
            "fire_once".to_owned()
        } else {
            t.misfire_policy.clone()
        },
        next_occurrence: t.next_occurrence,
        fired_count: t.fired_count,
        idempotency_key: non_empty(&t.idempotency_key),
    }
}

fn fire_view(f: &TimerFire) -> FireView {
    FireView {
        timer_id: f.timer_id.clone(),
        occurrence: f.occurrence,
        epoch: f.epoch,
        node_id: f.node_id.clone(),
        due_at: f.due_at_iso.clone(),
        fired_at: f.fired_at_iso.clone(),
        lateness_ms: lateness_ms(&f.due_at_iso, &f.fired_at_iso)
            .and_then(|ms| u64::try_from(ms).ok())
            .unwrap_or(0),
    }
}

fn fired_view(timer_id: &str, f: &TimerFired) -> FireView {
    fire_view(&TimerFire {
        timer_id: timer_id.to_owned(),
        occurrence: f.occurrence,
        epoch: f.epoch,
        node_id: f.node_id.clone(),
        due_at_iso: f.due_at_iso.clone(),
        fired_at_iso: f.fired_at_iso.clone(),
    })
}

/// The event in the envelope shape the SSE stream uses.
fn event_envelope(e: &TimerEvent) -> EventEnvelope {
    let (timer, fire) = match &e.event {
        Some(timer_event::Event::Scheduled(s)) => (s.timer.as_ref(), None),
        Some(timer_event::Event::Fired(f)) => {
            let fire = f.timer.as_ref().map(|t| fired_view(&t.id, f));
            (f.timer.as_ref(), fire)
        }
        Some(timer_event::Event::Cancelled(c)) => (c.timer.as_ref(), None),
        None => (None, None),
    };
    EventEnvelope {
        envelope_id: e.envelope_id.clone(),
        tenant_id: e.tenant_id.clone(),
        occurred_at: e.occurred_at_iso.clone(),
        dedupe_key: e.dedupe_key.clone(),
        seq: e.seq,
        event: EventBody {
            kind: e.event_type.clone(),
            timer: timer_view(timer.unwrap_or(&Timer::default())),
            fire,
        },
    }
}

/// One human line per event: when, what, which timer, and the fire's lateness.
fn event_line(e: &TimerEvent) -> String {
    let kind = if e.event_type.is_empty() { "event" } else { e.event_type.as_str() };
    let mut line = format!("{:<TIME_WIDTH$}  {:<15}", e.occurred_at_iso, kind);
    let timer = match &e.event {
        Some(timer_event::Event::Scheduled(s)) => s.timer.as_ref(),
        Some(timer_event::Event::Fired(f)) => f.timer.as_ref(),
        Some(timer_event::Event::Cancelled(c)) => c.timer.as_ref(),
        None => None,
    };
    if let Some(t) = timer {
        line.push_str(&format!("  {:<ID_WIDTH$}", t.id));
    }
    match &e.event {
        Some(timer_event::Event::Scheduled(s)) => {
            if let Some(t) = &s.timer {
                line.push_str(&format!("  due={}", t.fire_at_iso));
            }
        }
        Some(timer_event::Event::Fired(f)) => {
            line.push_str(&format!("  occurrence={}  due={}", f.occurrence, f.due_at_iso));
            if let Some(ms) = lateness_ms(&f.due_at_iso, &f.fired_at_iso) {
                line.push_str(&format!("  late={ms}ms"));
            }
        }
        Some(timer_event::Event::Cancelled(c)) if !c.reason.is_empty() => {
            line.push_str(&format!("  reason={:?}", c.reason));
        }
        Some(timer_event::Event::Cancelled(_)) | None => {}
    }
    if let Some(t) = timer
        && !t.name.is_empty()
    {
        line.push_str(&format!("  name={:?}", t.name));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TestCommand {
        Timers(TimersArgs),
    }

    fn parse(args: &[&str]) -> Result<TimersArgs, clap::Error> {
        let argv = ["minoots", "timers"].into_iter().chain(args.iter().copied());
        TestCli::try_parse_from(argv).map(|c| match c.command {
            TestCommand::Timers(t) => t,
        })
    }

    #[test]
    fn instants_normalise_to_utc_milliseconds() {
        assert_eq!(parse_instant_ms("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_instant_arg("2023-11-14T23:13:20.5+01:00"),
            Ok("2023-11-14T22:13:20.500Z".to_owned())
        );
        assert_eq!(
            parse_instant_ms("yesterday"),
            Err("`yesterday` must be an ISO-8601 instant like 2026-01-02T03:04:05Z".to_owned()),
            "the API's rule, worded for the command line"
        );
    }

    #[test]
    fn create_flags_build_the_request() {
        let args = parse(&[
            "create",
            "--every",
            "5m",
            "--name",
            "tea",
            "--label",
            "team=ops",
            "--label",
            "env=dev",
            "--misfire",
            "skip",
            "--max-occurrences",
            "3",
            "--metadata",
            r#"{"a":1}"#,
        ])
        .expect("parses");
        let TimersCommand::Create(create) = args.command else { panic!("create") };
        let req = create_request(&create).expect("request");
        assert_eq!(req.every_ms, Some(300_000));
        assert_eq!(req.schedule_time, None);
        assert_eq!(req.name, "tea");
        assert_eq!(req.labels.len(), 2);
        assert_eq!(req.misfire_policy, "skip");
        assert_eq!(req.max_occurrences, Some(3));
        assert_eq!(req.metadata_json, r#"{"a":1}"#);

        let args = parse(&["create", "--in", "30s"]).expect("parses");
        let TimersCommand::Create(create) = args.command else { panic!("create") };
        let req = create_request(&create).expect("request");
        assert_eq!(req.schedule_time, Some(timer_schedule_request::ScheduleTime::DurationMs(30_000)));
    }

    #[test]
    fn create_flag_rules_are_enforced_before_any_call() {
        assert!(parse(&["create"]).is_err(), "a schedule is required");
        assert!(parse(&["create", "--in", "1s", "--every", "5s"]).is_err(), "one schedule only");
        let tz_alone = parse(&["create", "--in", "1s", "--tz", "Europe/Paris"]).expect("parses");
        let TimersCommand::Create(create) = tz_alone.command else { panic!("create") };
        assert!(create_request(&create).is_err(), "--tz needs --cron");
        assert!(parse(&["create", "--in", "1s", "--max-occurrences", "2"]).is_err(), "recurring only");
        assert!(parse(&["create", "--cron", "0 * * * * *", "--tz", "Europe/Paris"]).is_ok());
        assert!(parse(&["create", "--in", "1s", "--metadata", "{nope"]).is_err(), "metadata must be JSON");
        assert!(parse(&["create", "--in", "1s", "--label", "nolabel"]).is_err());
        assert!(parse(&["list", "--limit", "0"]).is_err());
        assert!(parse(&["list", "--status", "fired,cancelled", "--all"]).is_ok());
    }

    #[test]
    fn table_rows_are_compact_and_fixed_width() {
        let timer = Timer {
            id: "01900000-0000-7000-8000-000000000001".into(),
            name: "a very long timer name that does not fit".into(),
            status: TimerStatus::Scheduled as i32,
            fire_at_iso: "2023-11-14T22:13:20.000Z".into(),
            next_occurrence: 2,
            max_occurrences: 5,
            labels: [("team".to_owned(), "ops".to_owned())].into_iter().collect(),
            ..Default::default()
        };
        let row = timer_row(&timer);
        assert_eq!(row[1], "scheduled");
        assert_eq!(row[4], "2/5");
        assert_eq!(row[5], "team=ops");
        let line = table_line(&row.each_ref().map(String::as_str));
        let header = table_line(&["ID", "STATUS", "NAME", "NEXT/FIRE AT", "OCCURRENCE", "LABELS"]);
        let column = |text: &str, needle: &str| text.find(needle).map(|at| text[..at].chars().count());
        assert_eq!(column(&line, "2023-"), column(&header, "NEXT/FIRE AT"), "columns line up");
        assert_eq!(column(&line, "team=ops"), column(&header, "LABELS"), "columns line up");
        assert!(line.contains("a very long timer n…"), "{line}");
    }

    #[test]
    fn json_view_uses_the_rest_shape() {
        let timer = Timer {
            id: "t1".into(),
            status: TimerStatus::Fired as i32,
            created_at_iso: "2023-11-14T22:13:20.000Z".into(),
            fire_at_iso: "2023-11-14T22:13:50.000Z".into(),
            fired_at_iso: "2023-11-14T22:13:50.004Z".into(),
            metadata_json: r#"{"a":1}"#.into(),
            ..Default::default()
        };
        let json = serde_json::to_value(timer_view(&timer)).expect("serializes");
        assert_eq!(json["status"], "fired");
        assert_eq!(json["durationMs"], 30_000, "derived from fireAt − createdAt");
        assert_eq!(json["metadata"]["a"], 1);
        assert_eq!(json["schedule"]["kind"], "once");
        assert_eq!(json["firedAt"], "2023-11-14T22:13:50.004Z");
        assert_eq!(json["cancelledAt"], serde_json::Value::Null);
        assert_eq!(json["misfirePolicy"], "fire_once", "as REST shows a one-shot timer");
    }
}
