//! Scale: memory per pending timer, and start-up time with many pending
//! posts.
//!
//! Memory is compared across two restarts on the same database, so that
//! nothing but the timers differs: once with `--lookahead-horizon 5m` (the
//! pending posts are all further ahead, no timer is armed) and once with a
//! horizon that covers them all. "Timers armed" has no direct signal; it is
//! taken as the moment after which the server's RSS and CPU time stay
//! unchanged for a second (sampled every 20 ms).

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use chrono::Utc;

use crate::api::FALLBACK_BULK_SIZE;
use crate::harness::{self, Backend, Receiver, Server, Startup, TestDatabase};
use crate::precision::CREATE_CONCURRENCY;
use crate::report::{self, Report, Target, Unit};
use crate::{Failures, Options};

const MIB: f64 = 1024.0 * 1024.0;
const QUIET: Duration = Duration::from_secs(1);
/// No pending post of this scenario is due within it (they are at least
/// 8 minutes ahead at the restarts), and it is read again only every 2.5 min.
const BASELINE_HORIZON: &str = "5m";

pub async fn run(
    options: &Options,
    backend: Backend,
    failures: &mut Failures,
) -> anyhow::Result<Vec<Report>> {
    let posts = options
        .posts
        .unwrap_or(if options.smoke { 2_000 } else { 100_000 });
    let mut reports = Vec::new();
    let database = harness::database(backend).await?;
    let result = timers_in_horizon(&database, posts).await;
    reports.push(result?);
    if options.full {
        let database = harness::database(backend).await?;
        let result = million_at_start_up(&database, 1_000_000).await;
        match result {
            Ok(report) => reports.push(report),
            Err(error) => failures.push(format!(
                "scale {} with 1,000,000 posts could not run: {error:#}",
                backend.name()
            )),
        }
    }
    Ok(reports)
}

/// The restart figures shared by both parts.
struct Restarts {
    baseline: Startup,
    baseline_rss: u64,
    loaded: Startup,
    armed: Duration,
    loaded_rss: u64,
    loaded_peak_rss: u64,
}

/// Restarts the server twice on the database: without timers (horizon 1 s)
/// and with the given horizon; measures start-up and memory each time.
async fn restarts(
    database: &TestDatabase,
    receiver: &Receiver,
    horizon: &str,
    limit: Duration,
) -> anyhow::Result<Restarts> {
    let (server, baseline) = Server::start(
        database,
        &receiver.url,
        &["--lookahead-horizon", BASELINE_HORIZON],
    )
    .await?;
    let baseline_rss = wait_rss_stable(&server, Duration::from_secs(60))
        .await
        .context("restart without timers")?;
    server.stop().await?;

    let (server, loaded) =
        Server::start(database, &receiver.url, &["--lookahead-horizon", horizon]).await?;
    let (armed, loaded_rss) = harness::wait_until_quiet(server.pid, server.spawned, QUIET, limit)
        .await
        .context("restart with timers")?;
    let loaded_peak_rss = peak_rss(server.pid).unwrap_or(loaded_rss);
    server.stop().await?;
    Ok(Restarts {
        baseline,
        baseline_rss,
        loaded,
        armed,
        loaded_rss,
        loaded_peak_rss,
    })
}

async fn wait_rss_stable(server: &Server, limit: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    let mut last = server.rss_bytes()?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = server.rss_bytes()?;
        if now.abs_diff(last) > harness::RSS_TOLERANCE {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return Ok(last);
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("RSS did not settle within {limit:?}"));
        }
    }
}

fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no VmHWM"))
}

fn restart_metrics(report: &mut Report, serving_target: bool, loaded_target: Option<f64>) {
    report.metric(
        "bytes_per_post",
        "RSS per pending timer (restarts)",
        Unit::Bytes,
        Some(Target::AtMost(200.0)),
    );
    report.metric(
        "baseline_rss_mib",
        "RSS, no timers (horizon 5 min)",
        Unit::MiB,
        None,
    );
    report.metric("loaded_rss_mib", "RSS, timers armed", Unit::MiB, None);
    report.metric(
        "loaded_peak_rss_mib",
        "peak RSS while loading",
        Unit::MiB,
        None,
    );
    report.metric(
        "serving_s",
        "start-up to SERVING (with timers)",
        Unit::Seconds,
        serving_target.then_some(Target::AtMost(1.0)),
    );
    report.metric(
        "list_answered_s",
        "start-up to first ListSchedules answer",
        Unit::Seconds,
        None,
    );
    report.metric(
        "baseline_serving_s",
        "start-up to SERVING (no timers)",
        Unit::Seconds,
        None,
    );
    report.metric(
        "armed_s",
        "start-up to timers armed (RSS+CPU quiet)",
        Unit::Seconds,
        loaded_target.map(Target::AtMost),
    );
    report.metric(
        "load_rate",
        "timers loaded per second",
        Unit::PerSecond,
        None,
    );
}

fn restart_values(restarts: &Restarts, posts: usize) -> Vec<(&'static str, f64)> {
    let loading = restarts
        .armed
        .saturating_sub(restarts.loaded.health_serving)
        .as_secs_f64();
    vec![
        (
            "bytes_per_post",
            (restarts.loaded_rss as f64 - restarts.baseline_rss as f64) / posts as f64,
        ),
        ("baseline_rss_mib", restarts.baseline_rss as f64 / MIB),
        ("loaded_rss_mib", restarts.loaded_rss as f64 / MIB),
        ("loaded_peak_rss_mib", restarts.loaded_peak_rss as f64 / MIB),
        ("serving_s", restarts.loaded.health_serving.as_secs_f64()),
        (
            "list_answered_s",
            restarts.loaded.list_answered.as_secs_f64(),
        ),
        (
            "baseline_serving_s",
            restarts.baseline.health_serving.as_secs_f64(),
        ),
        ("armed_s", restarts.armed.as_secs_f64()),
        (
            "load_rate",
            if loading > 0.0 {
                posts as f64 / loading
            } else {
                f64::NAN
            },
        ),
    ]
}

/// `posts` pending posts 10 to 50 minutes ahead (inside the default one-hour
/// horizon), created with CreateSchedule on a running server.
async fn timers_in_horizon(database: &TestDatabase, posts: usize) -> anyhow::Result<Report> {
    let backend = database.backend.name();
    let mut report = Report::new(
        "scale",
        backend,
        format!(
            "scale: {} pending posts 10-50 min ahead (default 1 h horizon)",
            report::thousands(posts as i64)
        ),
    );
    report.param("posts", posts);
    report.param("horizon", "1h");

    let receiver = Receiver::start();
    let (server, _) = Server::start(database, &receiver.url, &[]).await?;
    let idle_rss = wait_rss_stable(&server, Duration::from_secs(60))
        .await
        .context("fresh server")?;
    let clients = server.clients(4).await?;
    let start = Utc::now() + chrono::Duration::minutes(10);
    let instants = harness::uniform_instants(start, Duration::from_secs(40 * 60), posts);
    let created =
        harness::create_many(&clients, "bench-scale", &instants, CREATE_CONCURRENCY).await?;
    let create_rate = posts as f64 / created.elapsed.as_secs_f64();
    drop(clients);
    let live_rss = wait_rss_stable(&server, Duration::from_secs(60))
        .await
        .context("after creating the posts")?;
    let shutdown = server.stop().await?;
    if Utc::now() >= start - chrono::Duration::minutes(2) {
        return Err(anyhow!(
            "creating {posts} posts took so long that they are nearly due; use a smaller --posts"
        ));
    }

    let restarts = restarts(database, &receiver, "1h", Duration::from_secs(300)).await?;
    if Utc::now() >= start {
        return Err(anyhow!("the first posts fell due during the measurement"));
    }
    restart_metrics(&mut report, true, None);
    report.metric(
        "live_bytes_per_post",
        "RSS growth per post while creating",
        Unit::Bytes,
        None,
    );
    report.metric(
        "idle_rss_mib",
        "RSS of a fresh idle server",
        Unit::MiB,
        None,
    );
    report.metric(
        "create_rate",
        "creation rate (set-up)",
        Unit::PerSecond,
        None,
    );
    report.metric("shutdown_s", "graceful stop (SIGTERM)", Unit::Seconds, None);
    let mut values = restart_values(&restarts, posts);
    values.extend([
        (
            "live_bytes_per_post",
            (live_rss as f64 - idle_rss as f64) / posts as f64,
        ),
        ("idle_rss_mib", idle_rss as f64 / MIB),
        ("create_rate", create_rate),
        ("shutdown_s", shutdown.as_secs_f64()),
    ]);
    report.run(&values);
    report.notes.push(
        "RSS per pending timer = (RSS after a restart that arms every timer - RSS after a \
         restart with --lookahead-horizon 5m) / posts, same database"
            .into(),
    );
    report.notes.push(
        "live growth includes what creating the posts through the API left behind \
         (allocator caches, connection buffers, SQLite page cache)"
            .into(),
    );
    Ok(report)
}

/// `posts` pending posts inserted with BulkSchedule (10,000 per request,
/// hourly, so they span 417 days), then a restart with a horizon that
/// covers them all.
async fn million_at_start_up(database: &TestDatabase, posts: usize) -> anyhow::Result<Report> {
    let backend = database.backend.name();
    let mut report = Report::new(
        "scale-startup",
        backend,
        format!(
            "scale: start-up with {} pending posts (horizon 420 days)",
            report::thousands(posts as i64)
        ),
    );
    report.param("posts", posts);
    report.param("horizon", "420days");
    report.param(
        "inserted_with",
        "BulkSchedule, 10,000 hourly posts per request",
    );

    let receiver = Receiver::start();
    let (server, _) = Server::start(database, &receiver.url, &[]).await?;
    let mut client = server.clients(1).await?.remove(0);
    let start_date = (Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let mut per_request = 10_000usize;
    let inserted_started = Instant::now();
    let mut inserted = 0usize;
    let mut request = 0usize;
    while inserted < posts {
        let size = per_request.min(posts - inserted);
        let result = harness::bulk_hourly(
            &mut client,
            &format!("bench-startup-{request}"),
            &format!("startup-{request}"),
            size,
            &start_date,
            "UTC",
        )
        .await;
        request += 1;
        match result {
            Ok(_) => inserted += size,
            Err(error) if inserted == 0 && per_request > FALLBACK_BULK_SIZE => {
                eprintln!(
                    "    {error:#}; inserting {FALLBACK_BULK_SIZE} posts per request instead"
                );
                report.notes.push(format!(
                    "BulkSchedule of {} posts per request FAILED ({error:#}); inserted with \
                     requests of {} posts",
                    report::thousands(per_request as i64),
                    report::thousands(FALLBACK_BULK_SIZE as i64)
                ));
                per_request = FALLBACK_BULK_SIZE;
            }
            Err(error) => return Err(error),
        }
        if inserted.is_multiple_of(100_000) && inserted > 0 {
            eprintln!("    {inserted} posts inserted");
        }
    }
    let insert_rate = posts as f64 / inserted_started.elapsed().as_secs_f64();
    drop(client);
    server.stop().await?;

    let restarts = restarts(database, &receiver, "420days", Duration::from_secs(900)).await?;
    restart_metrics(&mut report, true, Some(5.0));
    report.metric(
        "insert_rate",
        "BulkSchedule posts/s (set-up)",
        Unit::PerSecond,
        None,
    );
    let mut values = restart_values(&restarts, posts);
    values.push(("insert_rate", insert_rate));
    report.run(&values);
    Ok(report)
}
