//! `minoots-sim`: the simulator's command line.
//!
//! ```text
//! minoots-sim run --seed S --count N [--nodes K] [--faults all|none|clock,partition,crash,pause,db,loss]
//!                 [--plant NAME] [--jobs J] [--check-determinism]
//! minoots-sim reproduce S [same options]          one seed, verbose: plan, outcome, history
//! minoots-sim plant-check [--max-seeds M]         each planted bug must be caught within M seeds
//! minoots-sim regressions FILE                    replay the seeds listed in FILE
//! ```
//!
//! Every seed runs in a fresh thread with its own runtime; `--jobs` seeds
//! run in parallel. A failure prints the violated property, the relevant
//! history and the one command that reproduces it; the exit status is
//! non-zero if any seed failed.

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "minoots-sim runs only in the simulator: build with RUSTFLAGS=\"--cfg madsim\" (or use `cargo sim`)"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(madsim)]
mod cli {
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use clap::{Args, Parser, Subcommand};
    use minoots_core::plant::Plant;
    use minoots_sim::faults::FaultCounts;
    use minoots_sim::options::{DEFAULT_SAFETY_MS, FaultSet, RunOptions};
    use minoots_sim::oracle::Counters;
    use minoots_sim::runner::{SeedReport, run_seed, run_seed_traced};

    #[derive(Parser)]
    #[command(name = "minoots-sim", about = "Deterministic simulation of a MINOOTS cluster")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Run a range of seeds.
        Run {
            /// First seed.
            #[arg(long, default_value_t = 1)]
            seed: u64,
            /// Number of seeds.
            #[arg(long, default_value_t = 100)]
            count: u64,
            #[command(flatten)]
            options: OptionArgs,
            /// Seeds run in parallel.
            #[arg(long, default_value_t = 2)]
            jobs: usize,
            /// Run each seed twice and require identical trace hashes.
            #[arg(long)]
            check_determinism: bool,
            /// Print every seed's plan and counters.
            #[arg(long)]
            verbose: bool,
        },
        /// Run each seed twice (fresh threads) and require identical trace hashes; ignores verdicts.
        Determinism {
            /// First seed.
            #[arg(long, default_value_t = 1)]
            seed: u64,
            /// Number of seeds.
            #[arg(long, default_value_t = 20)]
            count: u64,
            #[command(flatten)]
            options: OptionArgs,
            /// Seeds run in parallel.
            #[arg(long, default_value_t = 2)]
            jobs: usize,
        },
        /// Run one seed verbosely (the command a failure prints).
        Reproduce {
            /// The seed.
            seed: u64,
            #[command(flatten)]
            options: OptionArgs,
            /// Also print every history line containing one of these strings (repeatable; `*` for all).
            #[arg(long)]
            grep: Vec<String>,
        },
        /// Each planted bug must be caught within `--max-seeds` seeds.
        PlantCheck {
            /// Seeds tried per planted bug before declaring it missed.
            #[arg(long, default_value_t = 300)]
            max_seeds: u64,
            /// First seed.
            #[arg(long, default_value_t = 1)]
            seed: u64,
            /// Nodes.
            #[arg(long, default_value_t = 3)]
            nodes: usize,
            /// Seeds run in parallel.
            #[arg(long, default_value_t = 2)]
            jobs: usize,
        },
        /// Replay the seeds listed in a file (`SEED [flags]` per line; `#` comments).
        Regressions {
            /// The list.
            file: std::path::PathBuf,
        },
    }

    #[derive(Args, Clone)]
    struct OptionArgs {
        /// Timer nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Faults: all, none, or a list of clock,partition,crash,pause,db,loss.
        #[arg(long, default_value = "all")]
        faults: String,
        /// A planted bug: no-fencing, no-due-check, early-stepdown-off, ack-before-commit.
        #[arg(long)]
        plant: Option<String>,
        /// Simulated length of the safety phase, ms.
        #[arg(long, default_value_t = DEFAULT_SAFETY_MS)]
        safety_ms: u64,
    }

    impl OptionArgs {
        fn resolve(&self) -> Result<RunOptions, String> {
            if !(RunOptions::NODES_MIN..=RunOptions::NODES_MAX).contains(&self.nodes) {
                return Err(format!(
                    "--nodes must be {} to {}",
                    RunOptions::NODES_MIN,
                    RunOptions::NODES_MAX
                ));
            }
            if let Some(plant) = &self.plant
                && Plant::parse(plant).is_none()
            {
                return Err(format!("unknown --plant {plant:?}: one of {}", Plant::NAMES.join(", ")));
            }
            if self.safety_ms < 1_000 {
                return Err("--safety-ms must be at least 1000".into());
            }
            Ok(RunOptions {
                nodes: self.nodes,
                faults: FaultSet::parse(&self.faults)?,
                plant: self.plant.clone(),
                safety_ms: self.safety_ms,
            })
        }
    }

    /// Wall-clock stopwatch for the summary (outside the simulation).
    struct Stopwatch(std::time::Instant);

    impl Stopwatch {
        #[allow(clippy::disallowed_methods)] // Real elapsed time of the sweep, for the summary only.
        fn start() -> Self {
            Stopwatch(std::time::Instant::now())
        }

        fn elapsed(&self) -> Duration {
            self.0.elapsed()
        }
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        let result = match cli.command {
            Command::Run { seed, count, options, jobs, check_determinism, verbose } => {
                options.resolve().map(|o| run(seed, count, &o, jobs, check_determinism, verbose))
            }
            Command::Determinism { seed, count, options, jobs } => {
                options.resolve().map(|o| determinism(seed, count, &o, jobs))
            }
            Command::Reproduce { seed, options, grep } => {
                options.resolve().map(|o| reproduce(seed, &o, &grep))
            }
            Command::PlantCheck { max_seeds, seed, nodes, jobs } => {
                Ok(plant_check(seed, max_seeds, nodes, jobs))
            }
            Command::Regressions { file } => regressions(&file),
        };
        match result {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("minoots-sim: {e}");
                ExitCode::from(2)
            }
        }
    }

    /// Totals over a set of runs.
    #[derive(Default)]
    struct Totals {
        seeds: u64,
        failed: u64,
        sim_ms: u64,
        counters: Counters,
        faults: FaultCounts,
    }

    impl Totals {
        fn add(&mut self, report: &SeedReport) {
            self.seeds += 1;
            self.failed += u64::from(!report.passed());
            self.sim_ms += report.sim_ms;
            let (c, t) = (&report.counters, &mut self.counters);
            t.leader_changes += c.leader_changes;
            t.lease_steals += c.lease_steals;
            t.stale_fires_rejected += c.stale_fires_rejected;
            t.early_fires_rejected += c.early_fires_rejected;
            t.fires_recorded += c.fires_recorded;
            t.client_ops += c.client_ops;
            t.client_acks += c.client_acks;
            t.client_give_ups += c.client_give_ups;
            t.events_relayed += c.events_relayed;
            t.relay_lags += c.relay_lags;
            t.events_streamed += c.events_streamed;
            let (f, t) = (&report.faults, &mut self.faults);
            t.crashes += f.crashes;
            t.pauses += f.pauses;
            t.partitions += f.partitions;
            t.clock_steps += f.clock_steps;
            t.db_faults += f.db_faults;
            t.loss_phases += f.loss_phases;
            t.successors += f.successors;
        }

        fn print(&self, wall: Duration) {
            let wall_s = wall.as_secs_f64().max(1e-9);
            let c = &self.counters;
            let f = &self.faults;
            println!("--- summary ---");
            println!(
                "seeds run: {} ({} failed) in {:.1} s wall: {:.0} seeds/minute, {:.1} simulated s per wall s",
                self.seeds,
                self.failed,
                wall_s,
                self.seeds as f64 * 60.0 / wall_s,
                self.sim_ms as f64 / 1_000.0 / wall_s
            );
            println!(
                "leader changes: {}, lease steals: {}, stale fires rejected: {}, early fires rejected: {}",
                c.leader_changes, c.lease_steals, c.stale_fires_rejected, c.early_fires_rejected
            );
            println!(
                "faults: crashes {}, pauses {}, partitions {}, clock steps {}, db faults {}, loss phases {}, \
                 successors beside a frozen predecessor {}",
                f.crashes, f.pauses, f.partitions, f.clock_steps, f.db_faults, f.loss_phases, f.successors
            );
            println!(
                "client ops: {} ({} acknowledged, {} gave up); fires recorded: {}; events relayed: {} ({} lags), \
                 received on gRPC streams: {}",
                c.client_ops,
                c.client_acks,
                c.client_give_ups,
                c.fires_recorded,
                c.events_relayed,
                c.relay_lags,
                c.events_streamed
            );
        }
    }

    fn print_failure(report: &SeedReport, options: &RunOptions) {
        println!("FAIL seed {}", report.seed);
        for v in &report.violations {
            println!("  violated {v}");
        }
        println!("  derived options:");
        for line in report.plan.lines() {
            println!("    {line}");
        }
        println!("  relevant history (last {} events):", report.history.len());
        for line in &report.history {
            println!("    {line}");
        }
        println!("  reproduce: {}", options.reproduce_command(report.seed));
    }

    /// Runs `count` seeds from `first` on `jobs` threads; `each` sees every report as it arrives.
    fn sweep(first: u64, count: u64, options: &RunOptions, jobs: usize, each: impl FnMut(&SeedReport)) {
        par_seeds(first, count, jobs, |seed| Some(run_seed(seed, options)), false, each);
    }

    /// Calls `work` on seeds `first..first + count` from `jobs` threads (each
    /// seed's simulation gets its own fresh thread inside `run_seed`); `each`
    /// sees every `Some` result. With `stop_at_first`, no new seed starts
    /// after the first `Some` (seeds already running finish).
    fn par_seeds<R: Send>(
        first: u64,
        count: u64,
        jobs: usize,
        work: impl Fn(u64) -> Option<R> + Sync,
        stop_at_first: bool,
        mut each: impl FnMut(&R),
    ) {
        let next = AtomicU64::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<R>();
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1) {
                let tx = tx.clone();
                let (next, stop, work) = (&next, &stop, &work);
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Some(result) = work(first + i) else { continue };
                        if stop_at_first {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send(result).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for result in rx {
                each(&result);
            }
        });
    }

    fn run(
        first: u64,
        count: u64,
        options: &RunOptions,
        jobs: usize,
        determinism: bool,
        verbose: bool,
    ) -> bool {
        println!(
            "running seeds {first}..{} with {} (jobs {jobs}{})",
            first + count,
            options.flags(),
            if determinism { ", determinism check" } else { "" }
        );
        let watch = Stopwatch::start();
        let mut totals = Totals::default();
        let mut hashes = std::collections::BTreeMap::new();
        sweep(first, count, options, jobs, |report| {
            totals.add(report);
            hashes.insert(report.seed, report.trace_hash);
            if verbose {
                print!("{}", report.plan);
                println!(
                    "  -> {} trace {:016x}",
                    if report.passed() { "ok" } else { "FAIL" },
                    report.trace_hash
                );
            }
            if !report.passed() {
                print_failure(report, options);
            }
        });
        let mut nondeterministic = Vec::new();
        if determinism {
            // The second run of each seed, in another fresh thread, must replay the same history.
            sweep(first, count, options, jobs, |again| {
                let first_hash = hashes.get(&again.seed).copied().unwrap_or_default();
                if again.trace_hash != first_hash {
                    println!(
                        "NONDETERMINISTIC seed {}: trace {first_hash:016x} then {:016x}; reproduce: {}",
                        again.seed,
                        again.trace_hash,
                        options.reproduce_command(again.seed)
                    );
                    nondeterministic.push(again.seed);
                }
            });
            println!(
                "determinism: {} of {count} seeds replayed identically",
                count - nondeterministic.len() as u64
            );
        }
        totals.print(watch.elapsed());
        totals.failed == 0 && nondeterministic.is_empty()
    }

    fn determinism(first: u64, count: u64, options: &RunOptions, jobs: usize) -> bool {
        let watch = Stopwatch::start();
        let mut hashes = std::collections::BTreeMap::new();
        sweep(first, count, options, jobs, |r| {
            hashes.insert(r.seed, r.trace_hash);
        });
        let mut bad = 0u64;
        sweep(first, count, options, jobs, |again| {
            let first_hash = hashes.get(&again.seed).copied().unwrap_or_default();
            if again.trace_hash != first_hash {
                bad += 1;
                println!(
                    "NONDETERMINISTIC seed {}: trace {first_hash:016x} then {:016x}; reproduce: {}",
                    again.seed,
                    again.trace_hash,
                    options.reproduce_command(again.seed)
                );
            }
        });
        println!(
            "determinism: {} of {count} seeds replayed identically ({:.1} s)",
            count - bad,
            watch.elapsed().as_secs_f64()
        );
        bad == 0
    }

    fn reproduce(seed: u64, options: &RunOptions, grep: &[String]) -> bool {
        let report = run_seed_traced(seed, options, !grep.is_empty());
        if !grep.is_empty() {
            println!("history matching {grep:?}:");
            for line in
                report.trace.iter().filter(|l| grep.iter().any(|g| g == "*" || l.contains(g.as_str())))
            {
                println!("  {line}");
            }
        }
        print!("{}", report.plan);
        println!("trace hash {:016x}, simulated {} ms", report.trace_hash, report.sim_ms);
        println!("counters: {:?}", report.counters);
        println!("faults: {:?}", report.faults);
        if report.passed() {
            println!("ok: every property held");
            true
        } else {
            print_failure(&report, options);
            false
        }
    }

    /// The property a planted bug must break to count as caught.
    fn target_property(plant: &str) -> &'static str {
        match plant {
            "no-fencing" => "fire-fenced",
            "no-due-check" => "never-early",
            "early-stepdown-off" => "deposed-never-acts",
            "ack-before-commit" => "acked-durable",
            "node-keeps-epoch" => "lease-exclusive",
            other => unreachable!("no target property for planted bug {other}"),
        }
    }

    /// A planted bug counts as caught at a seed only if that seed breaks the
    /// bug's target property with the bug planted and does not without it
    /// (so a real bug elsewhere is never credited to the checker).
    fn plant_check(first: u64, max_seeds: u64, nodes: usize, jobs: usize) -> bool {
        let watch = Stopwatch::start();
        let mut all_caught = true;
        let mut summary = Vec::new();
        for name in Plant::NAMES {
            let planted = RunOptions {
                nodes,
                faults: FaultSet::ALL,
                plant: Some(name.to_owned()),
                safety_ms: DEFAULT_SAFETY_MS,
            };
            let clean = RunOptions { plant: None, ..planted.clone() };
            let target = target_property(name);
            let breaks = |r: &SeedReport| r.violations.iter().find(|v| v.property == target).cloned();
            let mut caught: Option<(u64, minoots_sim::invariants::Violation)> = None;
            par_seeds(
                first,
                max_seeds,
                jobs,
                |seed| {
                    let violation = breaks(&run_seed(seed, &planted))?;
                    breaks(&run_seed(seed, &clean)).is_none().then_some((seed, violation))
                },
                true,
                |(seed, violation)| {
                    if caught.as_ref().is_none_or(|(s, _)| seed < s) {
                        caught = Some((*seed, violation.clone()));
                    }
                },
            );
            match caught {
                Some((seed, violation)) => {
                    let tried = seed - first + 1;
                    println!(
                        "plant {name}: caught by {target} after {tried} seeds (seed {seed}): {}",
                        violation.message.lines().next().unwrap_or("")
                    );
                    println!("  reproduce: {}", planted.reproduce_command(seed));
                    summary.push(format!("{name}: {tried} seeds"));
                }
                None => {
                    all_caught = false;
                    println!("plant {name}: NOT caught by {target} in {max_seeds} seeds");
                    summary.push(format!("{name}: not caught"));
                }
            }
        }
        println!("plant check: {} ({:.1} s)", summary.join(", "), watch.elapsed().as_secs_f64());
        all_caught
    }

    fn regressions(file: &std::path::Path) -> Result<bool, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut ok = true;
        let mut count = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut words = vec!["minoots-sim", "reproduce"];
            words.extend(line.split_whitespace());
            let Command::Reproduce { seed, options, .. } =
                Cli::try_parse_from(&words).map_err(|e| format!("{line}: {e}"))?.command
            else {
                unreachable!("parsed as reproduce");
            };
            let options = options.resolve()?;
            let report = run_seed(seed, &options);
            count += 1;
            if !report.passed() {
                ok = false;
                print_failure(&report, &options);
            }
        }
        println!("regressions: {count} seeds replayed, {}", if ok { "all passed" } else { "some FAILED" });
        Ok(ok)
    }
}
