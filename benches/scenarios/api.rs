//! API throughput: CreateSchedule calls per second with 64 concurrent
//! callers, then BulkSchedule posts per second, from one caller and from
//! several at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use chrono::Utc;
use rand::Rng as _;

use crate::Options;
use crate::harness::{self, Backend, Receiver, Server, TestDatabase};
use crate::report::{self, Report, Target, Unit};

const CALLERS: usize = 64;
const CONNECTIONS: usize = 4;
/// Concurrent BulkSchedule callers, one per connection: one request's
/// database insert overlaps another's planning and encoding.
const BULK_CALLERS: usize = 4;
/// Request size tried when the full size is refused.
pub const FALLBACK_BULK_SIZE: usize = 1_000;

pub async fn run(options: &Options, backend: Backend) -> anyhow::Result<Report> {
    let database = harness::database(backend).await?;
    one_run(options, &database).await
}

async fn one_run(options: &Options, database: &TestDatabase) -> anyhow::Result<Report> {
    let (warm_up, measured) = if options.smoke {
        (Duration::from_millis(200), Duration::from_secs(1))
    } else {
        (Duration::from_millis(500), Duration::from_secs(5))
    };
    let (bulk_requests, bulk_size) = if options.smoke {
        (2, 1_000)
    } else {
        (20, 5_000)
    };
    let mut report = Report::new(
        "api",
        database.backend.name(),
        "api: CreateSchedule and BulkSchedule throughput".into(),
    );
    report.param("create_callers", CALLERS);
    report.param("connections", CONNECTIONS);
    report.param("create_measured_s", measured.as_secs_f64());
    report.param("create_warm_up_s", warm_up.as_secs_f64());
    report.param("bulk_requests", bulk_requests);
    report.param("bulk_posts_per_request", bulk_size);
    report.param("bulk_recurrence", "EVERY_N_HOURS, interval_hours 1");
    report.param("bulk_concurrent_callers", BULK_CALLERS);

    let receiver = Receiver::start();
    let (server, _) = Server::start(database, &receiver.url, &[]).await?;
    let clients = server.clients(CONNECTIONS).await?;

    // CreateSchedule: every caller loops until the end; calls that started
    // after the warm-up and ended before the end are counted.
    let started = Instant::now();
    let end = started + warm_up + measured;
    let mut callers = tokio::task::JoinSet::new();
    let far = Arc::new(Utc::now() + chrono::Duration::days(1));
    for caller in 0..CALLERS {
        let mut client = clients[caller % clients.len()].clone();
        let far = Arc::clone(&far);
        callers.spawn(async move {
            let mut calls = Vec::new();
            let mut errors = 0usize;
            let mut index = 0usize;
            while Instant::now() < end {
                let offset = rand::rng().random_range(0..3_600_000_000i64);
                let at = harness::truncate_to_micros(*far + chrono::Duration::microseconds(offset));
                let request = harness::create_request("bench-api", caller * 1_000_000 + index, at);
                index += 1;
                let call_started = Instant::now();
                match tokio::time::timeout(harness::RPC_TIMEOUT, client.create_schedule(request))
                    .await
                {
                    Ok(Ok(_)) => calls.push((call_started, Instant::now())),
                    _ => errors += 1,
                }
            }
            (calls, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut counted = 0usize;
    let mut errors = 0usize;
    while let Some(joined) = callers.join_next().await {
        let (calls, caller_errors) = joined.context("a CreateSchedule caller panicked")?;
        errors += caller_errors;
        for (call_started, call_ended) in calls {
            if call_started >= started + warm_up && call_ended <= end {
                counted += 1;
                latencies.push((call_ended - call_started).as_secs_f64() * 1e3);
            }
        }
    }
    let create_rate = counted as f64 / measured.as_secs_f64();
    let latencies = report::sorted(&latencies);

    // BulkSchedule: one caller, one request after another. A server that
    // refuses the full request size is measured again with smaller requests.
    let mut bulk_client = clients[0].clone();
    let mut measured_size = bulk_size;
    let (bulk_rate, bulk_latencies) =
        match bulk_phase(&mut bulk_client, bulk_requests, bulk_size, "a").await {
            Ok(measured) => measured,
            Err(error) if bulk_size > FALLBACK_BULK_SIZE => {
                let requests = bulk_requests * bulk_size / FALLBACK_BULK_SIZE;
                eprintln!(
                    "    BulkSchedule of {bulk_size} posts failed ({error:#}); \
                     measuring {requests} requests of {FALLBACK_BULK_SIZE} instead"
                );
                report.notes.push(format!(
                    "BulkSchedule of {} posts per request FAILED ({error:#}); the figures are for \
                     {requests} requests of {} posts",
                    report::thousands(bulk_size as i64),
                    report::thousands(FALLBACK_BULK_SIZE as i64)
                ));
                report.param("bulk_posts_per_request_measured", FALLBACK_BULK_SIZE);
                measured_size = FALLBACK_BULK_SIZE;
                bulk_phase(&mut bulk_client, requests, FALLBACK_BULK_SIZE, "b").await?
            }
            Err(error) => return Err(error),
        };
    let bulk_latencies = report::sorted(&bulk_latencies);

    // The same posts again from several callers at once, each on its own
    // connection and with its own businesses.
    let requests_per_caller = (bulk_requests * bulk_size / measured_size).div_ceil(BULK_CALLERS);
    let concurrent_started = Instant::now();
    let mut bulk_callers = tokio::task::JoinSet::new();
    for caller in 0..BULK_CALLERS {
        let mut client = clients[caller % clients.len()].clone();
        bulk_callers.spawn(async move {
            bulk_phase(
                &mut client,
                requests_per_caller,
                measured_size,
                &format!("c{caller}"),
            )
            .await
        });
    }
    while let Some(joined) = bulk_callers.join_next().await {
        joined.context("a BulkSchedule caller panicked")??;
    }
    let concurrent_bulk_rate = (BULK_CALLERS * requests_per_caller * measured_size) as f64
        / concurrent_started.elapsed().as_secs_f64();

    let problems = server.log_problems();
    drop(clients);
    server.stop().await?;
    drop(receiver);
    for line in problems.iter().take(5) {
        eprintln!("    server: {line}");
    }

    report.metric(
        "create_per_s",
        "CreateSchedule calls/s",
        Unit::PerSecond,
        Some(Target::AtLeast(5_000.0)),
    );
    report.metric(
        "create_p50_ms",
        "CreateSchedule latency p50",
        Unit::Ms,
        None,
    );
    report.metric(
        "create_p99_ms",
        "CreateSchedule latency p99",
        Unit::Ms,
        None,
    );
    report.metric(
        "create_max_ms",
        "CreateSchedule latency max",
        Unit::Ms,
        None,
    );
    report.metric("create_errors", "CreateSchedule errors", Unit::Count, None);
    report.metric(
        "bulk_posts_per_s",
        "BulkSchedule posts/s, 1 caller",
        Unit::PerSecond,
        Some(Target::AtLeast(50_000.0)),
    );
    report.metric(
        "bulk_concurrent_posts_per_s",
        "BulkSchedule posts/s, 4 callers",
        Unit::PerSecond,
        None,
    );
    report.metric("bulk_p50_ms", "BulkSchedule request p50", Unit::Ms, None);
    report.metric("bulk_max_ms", "BulkSchedule request max", Unit::Ms, None);
    report.run(&[
        ("create_per_s", create_rate),
        ("create_p50_ms", report::percentile(&latencies, 50.0)),
        ("create_p99_ms", report::percentile(&latencies, 99.0)),
        ("create_max_ms", report::percentile(&latencies, 100.0)),
        ("create_errors", errors as f64),
        ("bulk_posts_per_s", bulk_rate),
        ("bulk_concurrent_posts_per_s", concurrent_bulk_rate),
        ("bulk_p50_ms", report::percentile(&bulk_latencies, 50.0)),
        ("bulk_max_ms", report::percentile(&bulk_latencies, 100.0)),
    ]);
    Ok(report)
}

/// `requests` BulkSchedule calls of `size` hourly posts each, one after
/// another; returns posts per second and each request's latency (sorted, ms).
async fn bulk_phase(
    client: &mut harness::Client,
    requests: usize,
    size: usize,
    tag: &str,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let start_date = (Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    let mut latencies = Vec::new();
    let started = Instant::now();
    for request in 0..requests {
        let call_started = Instant::now();
        let response = harness::bulk_hourly(
            client,
            &format!("bench-bulk-{tag}-{request}"),
            &format!("bulk-{tag}-{request}"),
            size,
            &start_date,
            "Europe/Paris",
        )
        .await?;
        if response != size {
            return Err(anyhow!(
                "BulkSchedule returned {response} posts, expected {size}"
            ));
        }
        latencies.push(call_started.elapsed().as_secs_f64() * 1e3);
    }
    let rate = (requests * size) as f64 / started.elapsed().as_secs_f64();
    Ok((rate, report::sorted(&latencies)))
}
