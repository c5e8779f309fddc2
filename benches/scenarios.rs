//! Punctual's benchmark scenarios, run against the real binary.
//!
//! ```text
//! cargo bench --bench scenarios -- [precision|burst|api|scale|cost|all]...
//!     [--backend sqlite|postgres|both] [--posts N] [--runs N] [--lead SECONDS]
//!     [--smoke] [--full]
//! ```
//!
//! Each scenario starts `punctual serve` (the release binary cargo built) as
//! a child process on a loopback port, with its own database (a temporary
//! SQLite file, or a fresh PostgreSQL database created on the server named by
//! `PUNCTUAL_BENCH_POSTGRES_URL` and dropped afterwards), and a real HTTP
//! receiver in this process as the publishing service. Tables are printed and
//! written as JSON to `benches/results/<scenario>-<backend>.json`; the
//! precision scenario also draws `benches/results/precision-<backend>.svg`.
//! See BENCHMARKS.md for the method and the latest figures.

#[path = "scenarios/api.rs"]
mod api;
#[path = "scenarios/burst.rs"]
mod burst;
#[path = "scenarios/harness.rs"]
mod harness;
#[path = "scenarios/precision.rs"]
mod precision;
#[path = "scenarios/report.rs"]
mod report;
#[path = "scenarios/scale.rs"]
mod scale;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use anyhow::bail;

use harness::Backend;
use report::Report;

const USAGE: &str = "\
usage: cargo bench --bench scenarios -- [SCENARIO]... [OPTIONS]

scenarios (default: all):
  precision   lateness of posts spread over 30 s (default 2,000 posts)
  burst       posts all due at one instant (default 10,000), API latency meanwhile
  api         CreateSchedule calls/s (64 callers) and BulkSchedule posts/s
  scale       memory per pending timer (default 100,000 posts) and start-up time
  cost        server CPU time per 1,000 published posts (from a precision run)
  all         precision, burst, api and scale (cost comes with precision)

options:
  --backend sqlite|postgres|both   database(s) to run on (default both)
  --posts N     posts in precision, burst or scale (overrides the default)
  --runs N      repeat precision N times and report the medians (default 1)
  --lead S      seconds between the end of creation and the first instant
                (precision, burst; default: from a measured creation rate)
  --smoke       tiny sizes and pass/fail checks, for CI
  --full        scale also measures start-up with 1,000,000 pending posts
  --server-log LEVEL   the server's RUST_LOG (default warn); with info, the
                precision table also splits lateness at the claim
  --quiet       before each scenario, write out pending disk writes
                (CHECKPOINT on PostgreSQL, sync), then wait (at most
                10 min) until the CPUs are less than 15 % busy

environment:
  PUNCTUAL_BENCH_POSTGRES_URL   admin URL of a PostgreSQL server
                                (default postgres://postgres@127.0.0.1:5432/test)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Precision,
    Burst,
    Api,
    Scale,
    Cost,
}

#[derive(Debug, Clone)]
pub struct Options {
    scenarios: Vec<Scenario>,
    backends: Vec<Backend>,
    pub posts: Option<usize>,
    pub runs: usize,
    pub lead: Option<Duration>,
    pub smoke: bool,
    pub full: bool,
    pub quiet: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        scenarios: Vec::new(),
        backends: vec![Backend::Sqlite, Backend::Postgres],
        posts: None,
        runs: 1,
        lead: None,
        smoke: false,
        full: false,
        quiet: false,
    };
    let mut args = std::env::args().skip(1);
    let add = |scenarios: &mut Vec<Scenario>, s: Scenario| {
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "precision" => add(&mut options.scenarios, Scenario::Precision),
            "burst" => add(&mut options.scenarios, Scenario::Burst),
            "api" => add(&mut options.scenarios, Scenario::Api),
            "scale" => add(&mut options.scenarios, Scenario::Scale),
            "cost" => add(&mut options.scenarios, Scenario::Cost),
            "all" => {
                for s in [
                    Scenario::Precision,
                    Scenario::Burst,
                    Scenario::Api,
                    Scenario::Scale,
                ] {
                    add(&mut options.scenarios, s);
                }
            }
            "--backend" => {
                options.backends = match value("--backend")?.as_str() {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" | "postgresql" => vec![Backend::Postgres],
                    "both" => vec![Backend::Sqlite, Backend::Postgres],
                    other => bail!("unknown backend {other:?}\n\n{USAGE}"),
                }
            }
            "--posts" => {
                let posts: usize = value("--posts")?.replace(['_', ','], "").parse()?;
                if posts == 0 {
                    bail!("--posts must be at least 1");
                }
                options.posts = Some(posts);
            }
            "--runs" => options.runs = value("--runs")?.parse::<usize>()?.clamp(1, 20),
            "--lead" => {
                options.lead = Some(Duration::from_secs_f64(
                    value("--lead")?.parse::<f64>()?.clamp(0.5, 600.0),
                ))
            }
            "--smoke" => options.smoke = true,
            "--full" => options.full = true,
            "--quiet" => options.quiet = true,
            "--server-log" => harness::set_server_log_level(&value("--server-log")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if options.scenarios.is_empty() {
        options.scenarios = vec![
            Scenario::Precision,
            Scenario::Burst,
            Scenario::Api,
            Scenario::Scale,
        ];
    }
    Ok(options)
}

/// What went wrong: failed checks and scenarios that could not run.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn push(&mut self, failure: String) {
        eprintln!("FAILED: {failure}");
        self.0.push(failure);
    }
}

fn emit(report: &Report, missed: &mut Vec<String>) {
    println!("\n{}", report.table());
    if let Err(error) = report.write_json(&harness::results_dir()) {
        eprintln!("warning: {error:#}");
    }
    missed.extend(report.missed_targets());
}

async fn run_all(options: Options) -> (Failures, Vec<String>) {
    let mut failures = Failures::default();
    let mut missed = Vec::new();
    let precision_selected = options.scenarios.contains(&Scenario::Precision);
    for scenario in options.scenarios.clone() {
        if scenario == Scenario::Cost && precision_selected {
            // The precision run already measured it.
            continue;
        }
        for &backend in &options.backends {
            eprintln!("\n==> {scenario:?} on {}", backend.name());
            if options.quiet {
                harness::settle_disks(options.backends.contains(&Backend::Postgres)).await;
                harness::wait_for_quiet_machine(Duration::from_secs(600)).await;
            }
            let started = std::time::Instant::now();
            let load_before = harness::load_average();
            let cpu_before = harness::machine_cpu();
            let own_before = harness::own_cpu_ticks();
            let result = match scenario {
                Scenario::Precision | Scenario::Cost => {
                    precision::run(&options, backend, &mut failures).await.map(
                        |(precision, cost)| {
                            if scenario == Scenario::Precision {
                                vec![precision, cost]
                            } else {
                                vec![cost]
                            }
                        },
                    )
                }
                Scenario::Burst => burst::run(&options, backend, &mut failures)
                    .await
                    .map(|r| vec![r]),
                Scenario::Api => api::run(&options, backend).await.map(|r| vec![r]),
                Scenario::Scale => scale::run(&options, backend, &mut failures).await,
            };
            let cpu_after = harness::machine_cpu();
            let busy = harness::busy_percent(cpu_before, cpu_after);
            let own = harness::own_cpu_ticks().saturating_sub(own_before);
            let others =
                harness::busy_percent(cpu_before, (cpu_after.0.saturating_sub(own), cpu_after.1));
            match result {
                Ok(mut reports) => {
                    for report in &mut reports {
                        report.param("load_average_before", load_before.clone());
                        report.param("machine_cpu_busy_percent", (busy * 10.0).round() / 10.0);
                        // Everything but this process and the servers it ran
                        // (PostgreSQL included).
                        report.param("other_cpu_busy_percent", (others * 10.0).round() / 10.0);
                        emit(report, &mut missed);
                    }
                }
                Err(error) => failures.push(format!(
                    "{scenario:?} on {} could not run: {error:#}",
                    backend.name()
                )),
            }
            eprintln!(
                "<== {scenario:?} on {} took {:.1} s",
                backend.name(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    (failures, missed)
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error:#}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a runtime: {error}");
            std::process::exit(2);
        }
    };
    // The process always stops on its own: an overall limit on top of the
    // limit of every wait inside the scenarios.
    let limit = if options.smoke {
        Duration::from_secs(10 * 60)
    } else {
        Duration::from_secs(4 * 3600)
    };
    // When the limit or Ctrl-C wins, `select!` drops the scenario in progress
    // before its branch runs: its servers are killed and its databases dropped.
    let code = runtime.block_on(async move {
        tokio::select! {
            (failures, missed) = run_all(options) => {
                println!();
                if missed.is_empty() {
                    println!("every target with a figure was met");
                } else {
                    println!("targets missed:");
                    for line in &missed {
                        println!("  {line}");
                    }
                }
                if failures.0.is_empty() {
                    0
                } else {
                    eprintln!("\n{} check(s) failed:", failures.0.len());
                    for failure in &failures.0 {
                        eprintln!("  {failure}");
                    }
                    1
                }
            }
            _ = tokio::time::sleep(limit) => {
                eprintln!("overall time limit of {limit:?} reached; stopped");
                3
            }
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted; servers stopped and databases dropped");
                130
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(code);
}
