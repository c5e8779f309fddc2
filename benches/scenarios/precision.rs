//! Precision: posts at random instants spread over 30 s, all created before
//! the first is due; lateness = receive time - scheduled instant. Also the
//! cost scenario: the server's CPU time over the same run.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::harness::{self, Backend, Receiver, Server, TestDatabase};
use crate::report::{self, Report, Target, Unit};
use crate::{Failures, Options};

/// Concurrent CreateSchedule callers used to set a scenario up.
pub const CREATE_CONCURRENCY: usize = 64;

struct Run {
    lateness_ms: Vec<f64>,
    values: Vec<(&'static str, f64)>,
    cost: Vec<(&'static str, f64)>,
}

pub async fn run(
    options: &Options,
    backend: Backend,
    failures: &mut Failures,
) -> anyhow::Result<(Report, Report)> {
    let (posts, spread) = if options.smoke {
        (options.posts.unwrap_or(50), Duration::from_secs(3))
    } else {
        (options.posts.unwrap_or(2_000), Duration::from_secs(30))
    };
    let mut report = Report::new(
        "precision",
        backend.name(),
        format!(
            "precision: {} posts at random instants over {} s",
            report::thousands(posts as i64),
            spread.as_secs()
        ),
    );
    report.param("posts", posts);
    report.param("spread_s", spread.as_secs());
    report.param("create_concurrency", CREATE_CONCURRENCY);
    report.param("runs", options.runs);
    let (p50_target, p99_target, max_target) = match backend {
        Backend::Sqlite => (
            Some(Target::AtMost(1.5)),
            Target::AtMost(3.0),
            Some(Target::AtMost(15.0)),
        ),
        Backend::Postgres => (None, Target::AtMost(5.0), None),
    };
    report.metric("lateness_p50_ms", "lateness p50", Unit::Ms, p50_target);
    report.metric("lateness_p90_ms", "lateness p90", Unit::Ms, None);
    report.metric(
        "lateness_p99_ms",
        "lateness p99",
        Unit::Ms,
        Some(p99_target),
    );
    report.metric("lateness_max_ms", "lateness max", Unit::Ms, max_target);
    report.metric("lateness_min_ms", "lateness min", Unit::Ms, None);
    report.metric("lateness_mean_ms", "lateness mean", Unit::Ms, None);
    report.metric(
        "early",
        "early (< 0)",
        Unit::Count,
        Some(Target::AtMost(0.0)),
    );
    report.metric("missing", "missing", Unit::Count, Some(Target::AtMost(0.0)));
    report.metric(
        "duplicates",
        "received twice",
        Unit::Count,
        Some(Target::AtMost(0.0)),
    );
    report.metric("published", "status PUBLISHED", Unit::Count, None);
    report.metric(
        "create_rate",
        "creation rate (set-up)",
        Unit::PerSecond,
        None,
    );
    report.metric(
        "lead_s",
        "creation end to first instant",
        Unit::Seconds,
        None,
    );
    if harness::server_log_level() != "warn" {
        // Only a server logging each attempt tells these.
        report.metric(
            "attempt_start_p50_ms",
            "server-side lateness at the publish call, p50",
            Unit::Ms,
            None,
        );
        report.metric(
            "attempt_start_p99_ms",
            "server-side lateness at the publish call, p99",
            Unit::Ms,
            None,
        );
        report.metric(
            "publish_call_p50_ms",
            "publish HTTP call (server) p50",
            Unit::Ms,
            None,
        );
        report.metric(
            "publish_call_p99_ms",
            "publish HTTP call (server) p99",
            Unit::Ms,
            None,
        );
        report.notes.push(format!(
            "server logging at {}: every attempt is logged, which itself costs time",
            harness::server_log_level()
        ));
    }

    let mut cost = Report::new(
        "cost",
        backend.name(),
        format!(
            "cost: CPU time over the precision run ({} posts)",
            report::thousands(posts as i64)
        ),
    );
    cost.param("posts", posts);
    cost.param("clock_ticks_per_second", harness::clock_ticks_per_second());
    cost.param("runs", options.runs);
    cost.metric(
        "server_cpu_ms_per_1000_published",
        "server CPU per 1,000 published",
        Unit::Ms,
        None,
    );
    cost.metric(
        "server_cpu_ms_per_1000_created",
        "server CPU per 1,000 CreateSchedule",
        Unit::Ms,
        None,
    );
    if backend == Backend::Postgres {
        cost.metric(
            "db_cpu_ms_per_1000_published",
            "PostgreSQL backends CPU per 1,000 published",
            Unit::Ms,
            None,
        );
        cost.metric(
            "db_cpu_ms_per_1000_created",
            "PostgreSQL backends CPU per 1,000 CreateSchedule",
            Unit::Ms,
            None,
        );
        cost.notes.push(
            "PostgreSQL's work runs in its own processes: the backends serving this \
             database are measured separately (WAL writer and checkpointer not included)"
                .into(),
        );
    } else {
        cost.notes
            .push("SQLite runs inside the server process: its work is in the server's CPU".into());
    }
    cost.notes.push(format!(
        "CPU time is utime+stime from /proc/<pid>/stat, in ticks of {} ms",
        1000 / harness::clock_ticks_per_second()
    ));

    let mut histograms = Vec::new();
    for index in 0..options.runs {
        if options.runs > 1 {
            eprintln!("    run {} of {}", index + 1, options.runs);
        }
        let database = harness::database(backend).await?;
        let result = one_run(options, &database, posts, spread, failures).await;
        let run = result?;
        report.run(&run.values);
        cost.run(&run.cost);
        histograms.push(run.lateness_ms);
    }

    // The histogram of the run whose p99 is the median one.
    let mut by_p99: Vec<(f64, usize)> = histograms
        .iter()
        .enumerate()
        .map(|(i, lateness)| (report::percentile(&report::sorted(lateness), 99.0), i))
        .collect();
    by_p99.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(&(_, chosen)) = by_p99.get(by_p99.len() / 2) {
        let path = harness::results_dir().join(format!("precision-{}.svg", backend.name()));
        let title = format!("Punctual lateness, {}", backend.name());
        match report::lateness_histogram(&path, &title, &histograms[chosen]) {
            Ok(()) => report.notes.push(format!(
                "histogram of run {}: {}",
                chosen + 1,
                path.display()
            )),
            Err(error) => eprintln!("warning: {error:#}"),
        }
    }
    Ok((report, cost))
}

/// Picks a lead (time from the end of creation to the first instant) from
/// a measured creation rate: twice the expected creation time, plus slack.
pub async fn lead_for(
    options: &Options,
    clients: &[harness::Client],
    posts: usize,
    minimum: Duration,
) -> anyhow::Result<(Duration, f64)> {
    let sample = if options.smoke { 50 } else { 500 };
    let far = Utc::now() + chrono::Duration::days(1);
    let instants = harness::uniform_instants(far, Duration::from_secs(3600), sample);
    let created =
        harness::create_many(clients, "bench-warm-up", &instants, CREATE_CONCURRENCY).await?;
    let rate = sample as f64 / created.elapsed.as_secs_f64();
    let lead = match options.lead {
        Some(lead) => lead,
        None => minimum.max(Duration::from_secs_f64(2.0 * posts as f64 / rate + 1.0)),
    };
    Ok((lead, rate))
}

async fn one_run(
    options: &Options,
    database: &TestDatabase,
    posts: usize,
    spread: Duration,
    failures: &mut Failures,
) -> anyhow::Result<Run> {
    let backend = database.backend.name();
    let receiver = Receiver::start();
    let (server, _) = Server::start(database, &receiver.url, &[]).await?;
    let clients = server.clients(4).await?;
    let minimum = if options.smoke {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let (lead, _) = lead_for(options, &clients, posts, minimum).await?;

    let business = "bench-precision";
    let start = Utc::now() + chrono::Duration::from_std(lead)?;
    let instants = harness::uniform_instants(start, spread, posts);
    let first_due = instants.iter().min().copied().unwrap_or(start);
    let last_due = instants.iter().max().copied().unwrap_or(start);

    let cpu_before = server.cpu_ticks()?;
    let db_before = harness::backend_cpu_ticks(database).await?;
    let created = harness::create_many(&clients, business, &instants, CREATE_CONCURRENCY).await?;
    let created_at = Utc::now();
    let cpu_created = server.cpu_ticks()?;
    let db_created = harness::backend_cpu_ticks(database).await?;
    let create_rate = posts as f64 / created.elapsed.as_secs_f64();
    let slack = (first_due - created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    if created_at >= first_due {
        failures.push(format!(
            "precision {backend}: creation ended {:.3} s after the first instant; use a longer --lead",
            -slack
        ));
    }

    let wait = (last_due - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(10);
    receiver
        .arrived_by(posts, tokio::time::Instant::now() + wait)
        .await;
    // Let the last outcomes be recorded before reading CPU time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_published = server.cpu_ticks()?;
    let db_published = harness::backend_cpu_ticks(database).await?;
    let published = harness::count_with_status(
        &clients[0],
        business,
        punctual::grpc::pb::scheduled_post::Status::Published,
    )
    .await?;
    let problems = server.log_problems();
    drop(clients);
    let log = server.log.clone();
    server.stop().await?;
    let (attempt_started_ms, publish_call_ms) = harness::attempt_timings(&log);
    let hits = receiver.received();
    drop(receiver);
    for line in problems.iter().take(5) {
        eprintln!("    server: {line}");
    }

    let expected: HashMap<&str, DateTime<Utc>> = created
        .posts
        .iter()
        .map(|(id, at)| (id.as_str(), *at))
        .collect();
    let mut seen = HashSet::new();
    let mut lateness_ms = Vec::with_capacity(hits.len());
    let mut duplicates = 0usize;
    let mut unknown = 0usize;
    let mut mismatched = 0usize;
    for hit in &hits {
        let (id, instant) = harness::post_and_instant(hit)?;
        let Some(&sent) = expected.get(id.as_str()) else {
            unknown += 1;
            continue;
        };
        if sent != instant {
            mismatched += 1;
        }
        if !seen.insert(id) {
            duplicates += 1;
            continue;
        }
        lateness_ms.push((hit.at - instant).num_microseconds().context("lateness")? as f64 / 1e3);
    }
    let missing = posts - seen.len();
    let sorted = report::sorted(&lateness_ms);
    let early = sorted.iter().filter(|v| **v < 0.0).count();
    for (count, what) in [
        (early, "early"),
        (missing, "missing"),
        (duplicates, "received twice"),
        (unknown, "unknown ids received"),
        (mismatched, "received with another instant"),
    ] {
        if count > 0 {
            failures.push(format!("precision {backend}: {count} post(s) {what}"));
        }
    }
    let per_1000 = |ticks: u64| harness::ticks_to_ms(ticks) / posts as f64 * 1000.0;
    Ok(Run {
        values: vec![
            ("lateness_p50_ms", report::percentile(&sorted, 50.0)),
            ("lateness_p90_ms", report::percentile(&sorted, 90.0)),
            ("lateness_p99_ms", report::percentile(&sorted, 99.0)),
            ("lateness_max_ms", report::percentile(&sorted, 100.0)),
            (
                "lateness_min_ms",
                sorted.first().copied().unwrap_or(f64::NAN),
            ),
            ("lateness_mean_ms", report::mean(&sorted)),
            ("early", early as f64),
            ("missing", missing as f64),
            ("duplicates", duplicates as f64),
            ("published", published as f64),
            ("create_rate", create_rate),
            ("lead_s", slack),
            (
                "attempt_start_p50_ms",
                percentile_of(&attempt_started_ms, 50.0),
            ),
            (
                "attempt_start_p99_ms",
                percentile_of(&attempt_started_ms, 99.0),
            ),
            ("publish_call_p50_ms", percentile_of(&publish_call_ms, 50.0)),
            ("publish_call_p99_ms", percentile_of(&publish_call_ms, 99.0)),
        ],
        cost: vec![
            (
                "server_cpu_ms_per_1000_published",
                per_1000(cpu_published.saturating_sub(cpu_created)),
            ),
            (
                "server_cpu_ms_per_1000_created",
                per_1000(cpu_created.saturating_sub(cpu_before)),
            ),
            (
                "db_cpu_ms_per_1000_published",
                per_1000(db_published.saturating_sub(db_created)),
            ),
            (
                "db_cpu_ms_per_1000_created",
                per_1000(db_created.saturating_sub(db_before)),
            ),
        ],
        lateness_ms,
    })
}

fn percentile_of(values: &[f64], p: f64) -> f64 {
    report::percentile(&report::sorted(values), p)
}
