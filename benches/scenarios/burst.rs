//! Burst: many posts due at the same instant, and GetSchedule latency from a
//! separate caller meanwhile.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::harness::{self, Backend, Receiver, Server, TestDatabase};
use crate::precision::{CREATE_CONCURRENCY, lead_for};
use crate::report::{self, Report, Target, Unit};
use crate::{Failures, Options};

const MAX_CONCURRENT_PUBLISHES: &str = "64";

/// Smoke: every post must be received within this of the instant.
const SMOKE_LIMIT: Duration = Duration::from_secs(30);

pub async fn run(
    options: &Options,
    backend: Backend,
    failures: &mut Failures,
) -> anyhow::Result<Report> {
    let posts = options
        .posts
        .unwrap_or(if options.smoke { 300 } else { 10_000 });
    let database = harness::database(backend).await?;
    one_run(options, &database, posts, failures).await
}

struct Sample {
    started: DateTime<Utc>,
    latency_ms: f64,
    ok: bool,
}

async fn one_run(
    options: &Options,
    database: &TestDatabase,
    posts: usize,
    failures: &mut Failures,
) -> anyhow::Result<Report> {
    let backend = database.backend.name();
    let mut report = Report::new(
        "burst",
        backend,
        format!(
            "burst: {} posts due at one instant",
            report::thousands(posts as i64)
        ),
    );
    report.param("posts", posts);
    report.param("max_concurrent_publishes", 64);
    report.param("create_concurrency", CREATE_CONCURRENCY);

    let receiver = Receiver::start();
    let (server, _) = Server::start(
        database,
        &receiver.url,
        &["--max-concurrent-publishes", MAX_CONCURRENT_PUBLISHES],
    )
    .await?;
    let clients = server.clients(4).await?;
    let minimum = if options.smoke {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let (lead, _) = lead_for(options, &clients, posts, minimum).await?;

    // The post read during the burst: not part of it, and far ahead.
    let probe = harness::create_many(
        &clients,
        "bench-probe",
        &[Utc::now() + chrono::Duration::days(1)],
        1,
    )
    .await?;
    let probe_id = probe.posts[0].0.clone();

    let business = "bench-burst";
    let instant = harness::truncate_to_micros(Utc::now() + chrono::Duration::from_std(lead)?);
    let instants = vec![instant; posts];
    let created = harness::create_many(&clients, business, &instants, CREATE_CONCURRENCY).await?;
    let created_at = Utc::now();
    // CPU time from here (the server is idle until the instant) to 1 s after
    // the last post: the work of the burst.
    let cpu_before = server.cpu_ticks()?;
    let db_before = harness::backend_cpu_ticks(database).await?;
    let create_rate = posts as f64 / created.elapsed.as_secs_f64();
    let slack = (instant - created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    if created_at >= instant {
        failures.push(format!(
            "burst {backend}: creation ended {:.3} s after the instant; use a longer --lead",
            -slack
        ));
    }

    // GetSchedule in a loop on its own connection, from now until the burst
    // is over (bounded).
    let reader_client = server.clients(1).await?.remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let reader_stop = Arc::clone(&stop);
    let reader_deadline = Instant::now()
        + (instant - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(120);
    let reader = tokio::spawn(async move {
        let mut client = reader_client;
        let mut samples = Vec::new();
        while !reader_stop.load(Ordering::Relaxed) && Instant::now() < reader_deadline {
            let started = Utc::now();
            let clock = Instant::now();
            let call = client.get_schedule(punctual::grpc::pb::GetScheduleRequest {
                id: probe_id.clone(),
                ..Default::default()
            });
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(10), call).await,
                Ok(Ok(_))
            );
            samples.push(Sample {
                started,
                latency_ms: clock.elapsed().as_secs_f64() * 1e3,
                ok,
            });
            // About 500 calls a second: enough samples, little load.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples
    });

    let limit = if options.smoke {
        SMOKE_LIMIT
    } else {
        Duration::from_secs(120)
    };
    let wait = (instant - Utc::now()).to_std().unwrap_or_default() + limit;
    receiver
        .arrived_by(posts, tokio::time::Instant::now() + wait)
        .await;
    stop.store(true, Ordering::Relaxed);
    let samples = reader.await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_ms = harness::ticks_to_ms(server.cpu_ticks()?.saturating_sub(cpu_before));
    let db_cpu_ms = harness::ticks_to_ms(
        harness::backend_cpu_ticks(database)
            .await?
            .saturating_sub(db_before),
    );
    let published = harness::count_with_status(
        &clients[0],
        business,
        punctual::grpc::pb::scheduled_post::Status::Published,
    )
    .await?;
    let problems = server.log_problems();
    drop(clients);
    server.stop().await?;
    let hits = receiver.received();
    drop(receiver);
    for line in problems.iter().take(5) {
        eprintln!("    server: {line}");
    }

    let ids: HashSet<&str> = created.posts.iter().map(|(id, _)| id.as_str()).collect();
    let mut seen = HashSet::new();
    let mut lateness_ms = Vec::with_capacity(hits.len());
    let mut duplicates = 0usize;
    let mut last_at = None::<DateTime<Utc>>;
    for hit in &hits {
        let (id, at) = harness::post_and_instant(hit)?;
        if !ids.contains(id.as_str()) {
            continue;
        }
        if at != instant {
            failures.push(format!(
                "burst {backend}: post {id} was sent with instant {at}"
            ));
        }
        if !seen.insert(id) {
            duplicates += 1;
            continue;
        }
        lateness_ms.push((hit.at - instant).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e3);
        last_at = Some(last_at.map_or(hit.at, |last| last.max(hit.at)));
    }
    let missing = posts - seen.len();
    let sorted = report::sorted(&lateness_ms);
    let early = sorted.iter().filter(|v| **v < 0.0).count();
    let all_received_s = match (missing, last_at) {
        (0, Some(last)) => (last - instant).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => f64::NAN,
    };
    let throughput = if all_received_s > 0.0 {
        posts as f64 / all_received_s
    } else {
        f64::NAN
    };
    for (count, what) in [
        (early, "early"),
        (missing, "missing"),
        (duplicates, "received twice"),
    ] {
        if count > 0 {
            failures.push(format!("burst {backend}: {count} post(s) {what}"));
        }
    }
    // NaN (not all received) is not within the limit either.
    let within_limit = all_received_s <= SMOKE_LIMIT.as_secs_f64();
    if options.smoke && !within_limit {
        failures.push(format!(
            "burst {backend}: not all received within {SMOKE_LIMIT:?} of the instant"
        ));
    }

    let end = last_at.unwrap_or_else(Utc::now);
    let during: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok && s.started >= instant && s.started <= end)
        .map(|s| s.latency_ms)
        .collect();
    let before: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok && s.started < instant)
        .map(|s| s.latency_ms)
        .collect();
    let errors = samples.iter().filter(|s| !s.ok).count();
    let during = report::sorted(&during);
    let before = report::sorted(&before);

    report.metric(
        "all_received_s",
        "instant to last received",
        Unit::Seconds,
        Some(Target::AtMost(2.0)),
    );
    report.metric(
        "throughput",
        "posts delivered per second",
        Unit::PerSecond,
        None,
    );
    report.metric("lateness_p50_ms", "lateness p50", Unit::Ms, None);
    report.metric("lateness_p99_ms", "lateness p99", Unit::Ms, None);
    report.metric(
        "lateness_min_ms",
        "lateness min (first received)",
        Unit::Ms,
        None,
    );
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
        "server_cpu_ms_per_1000",
        "server CPU per 1,000 posts",
        Unit::Ms,
        None,
    );
    report.metric(
        "server_cores",
        "server CPU use, instant to last + 1 s",
        Unit::Cores,
        None,
    );
    if database.backend == Backend::Postgres {
        report.metric(
            "db_cpu_ms_per_1000",
            "PostgreSQL backends CPU per 1,000 posts",
            Unit::Ms,
            None,
        );
    }
    report.metric(
        "get_samples",
        "GetSchedule calls during burst",
        Unit::Count,
        None,
    );
    report.metric("get_p50_ms", "GetSchedule p50 during burst", Unit::Ms, None);
    report.metric(
        "get_p99_ms",
        "GetSchedule p99 during burst",
        Unit::Ms,
        Some(Target::Below(50.0)),
    );
    report.metric("get_max_ms", "GetSchedule max during burst", Unit::Ms, None);
    report.metric("get_errors", "GetSchedule errors", Unit::Count, None);
    report.metric(
        "get_idle_p50_ms",
        "GetSchedule p50 before burst",
        Unit::Ms,
        None,
    );
    report.metric(
        "get_idle_p99_ms",
        "GetSchedule p99 before burst",
        Unit::Ms,
        None,
    );
    report.metric(
        "create_rate",
        "creation rate (set-up)",
        Unit::PerSecond,
        None,
    );
    report.metric("lead_s", "creation end to instant", Unit::Seconds, None);
    report.run(&[
        ("all_received_s", all_received_s),
        ("throughput", throughput),
        ("lateness_p50_ms", report::percentile(&sorted, 50.0)),
        ("lateness_p99_ms", report::percentile(&sorted, 99.0)),
        (
            "lateness_min_ms",
            sorted.first().copied().unwrap_or(f64::NAN),
        ),
        ("early", early as f64),
        ("missing", missing as f64),
        ("duplicates", duplicates as f64),
        ("published", published as f64),
        ("server_cpu_ms_per_1000", cpu_ms / posts as f64 * 1000.0),
        ("server_cores", cpu_ms / 1000.0 / (all_received_s + 1.0)),
        ("db_cpu_ms_per_1000", db_cpu_ms / posts as f64 * 1000.0),
        ("get_samples", during.len() as f64),
        ("get_p50_ms", report::percentile(&during, 50.0)),
        ("get_p99_ms", report::percentile(&during, 99.0)),
        ("get_max_ms", report::percentile(&during, 100.0)),
        ("get_errors", errors as f64),
        ("get_idle_p50_ms", report::percentile(&before, 50.0)),
        ("get_idle_p99_ms", report::percentile(&before, 99.0)),
        ("create_rate", create_rate),
        ("lead_s", slack),
    ]);
    Ok(report)
}
