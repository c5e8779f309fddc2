//! What every scenario stands on, beyond the test harness it shares with the
//! tests (`tests/support`: the database, the receiver standing in for the
//! publishing service, the `punctual serve` child process): gRPC clients,
//! requests, and readings of the server's memory and CPU time from /proc.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use diesel_async::SimpleAsyncConnection;
use rand::Rng as _;
use tonic::transport::Channel;

use punctual::grpc::pb;
use punctual::grpc::pb::scheduler_client::SchedulerClient;

pub use crate::support::database::{Backend, TestDatabase};
use crate::support::database::{DEFAULT_POSTGRES_URL, connect_postgres};
pub use crate::support::process::Startup;
use crate::support::process::{Serve, ServerProcess};
pub use crate::support::receiver::{Received, Receiver};
pub use crate::support::timestamp;

pub type Client = SchedulerClient<Channel>;

/// Time limit of one RPC made by the benchmark.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Databases

/// A database of one run, on `backend`: PostgreSQL's on the server of
/// `PUNCTUAL_BENCH_POSTGRES_URL`. Dropped (a PostgreSQL one with `DROP
/// DATABASE`) when the run ends, or when the process is interrupted or runs
/// out of time and drops the scenario in progress.
pub async fn database(backend: Backend) -> anyhow::Result<TestDatabase> {
    TestDatabase::create(backend, &postgres_admin_url(), "bench").await
}

pub fn postgres_admin_url() -> String {
    std::env::var("PUNCTUAL_BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// CPU time (in clock ticks) of the PostgreSQL backends connected to
/// `database`; 0 for SQLite, whose work runs inside the server.
pub async fn backend_cpu_ticks(database: &TestDatabase) -> anyhow::Result<u64> {
    let Some(postgres) = database.postgres_database() else {
        return Ok(0);
    };
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    use diesel_async::RunQueryDsl as _;
    let mut admin = connect_postgres(&postgres.admin_url).await?;
    let pids: Vec<Pid> = diesel::sql_query(format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{}'",
        postgres.name
    ))
    .load(&mut admin)
    .await
    .context("reading pg_stat_activity")?;
    Ok(pids
        .iter()
        .filter_map(|p| cpu_ticks(p.pid as u32).ok())
        .sum())
}

// ---------------------------------------------------------------------------
// What the receiver got

/// What the publisher sent: the post id and its instant.
#[derive(serde::Deserialize)]
pub struct WireBody {
    pub id: String,
    pub scheduled_for: String,
}

/// The post id and instant of a request the receiver got.
pub fn post_and_instant(received: &Received) -> anyhow::Result<(String, DateTime<Utc>)> {
    let body: WireBody = serde_json::from_slice(&received.raw_body).with_context(|| {
        format!(
            "the receiver got a body it cannot read: {}",
            String::from_utf8_lossy(&received.raw_body)
        )
    })?;
    let instant = DateTime::parse_from_rfc3339(&body.scheduled_for)
        .with_context(|| format!("scheduled_for {:?} is not RFC 3339", body.scheduled_for))?
        .with_timezone(&Utc);
    Ok((body.id, instant))
}

// ---------------------------------------------------------------------------
// The server process

static SERVER_LOG: OnceLock<String> = OnceLock::new();

/// The server's RUST_LOG: `warn` unless `--server-log` chose another.
pub fn set_server_log_level(level: &str) {
    let _ = SERVER_LOG.set(level.to_owned());
}

pub fn server_log_level() -> &'static str {
    SERVER_LOG.get().map(String::as_str).unwrap_or("warn")
}

/// From a server logging at `info`: the `lateness_ms` and `latency_ms` of
/// each "publish attempt finished" line (the server's own lateness when it
/// started the publish call, and that call's duration), both in ms.
pub fn attempt_timings(log: &Path) -> (Vec<f64>, Vec<f64>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |line: &str, name: &str| -> Option<f64> {
        let start = line.find(name)? + name.len();
        let rest = &line[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let mut started = Vec::new();
    let mut latency = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.contains("publish attempt finished"))
    {
        if let Some(v) = field(line, " lateness_ms=") {
            started.push(v);
        }
        if let Some(v) = field(line, " latency_ms=") {
            latency.push(v);
        }
    }
    (started, latency)
}

/// A running `punctual serve` (killed if dropped), with the readings the
/// scenarios take of it.
pub struct Server {
    process: ServerProcess,
}

impl std::ops::Deref for Server {
    type Target = ServerProcess;

    fn deref(&self) -> &ServerProcess {
        &self.process
    }
}

impl Server {
    /// Starts the real binary and waits (at most 120 s) until it serves.
    pub async fn start(
        database: &TestDatabase,
        publisher_url: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<(Server, Startup)> {
        let (process, startup) = Serve::new(&database.url, publisher_url, database.dir())
            .args(extra_args)
            .env("RUST_LOG", server_log_level())
            .env("PUNCTUAL_PUBLISHER_SECRET", "benchmark-secret")
            .health_limit(Duration::from_secs(120))
            .start()
            .await?;
        Ok((Server { process }, startup))
    }

    /// `n` clients, each on its own HTTP/2 connection.
    pub async fn clients(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(
                SchedulerClient::new(self.channel().await?)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20),
            );
        }
        Ok(clients)
    }

    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid)
    }

    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        cpu_ticks(self.pid)
    }

    /// Graceful stop (SIGTERM), bounded at 60 s, then SIGKILL. Returns how
    /// long the graceful stop took.
    pub async fn stop(self) -> anyhow::Result<Duration> {
        self.process.stop(Duration::from_secs(60)).await
    }

    /// Warnings and errors the server logged (RUST_LOG=warn), less the
    /// expected ones.
    pub fn log_problems(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// /proc readings

pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / clock_ticks_per_second() as f64
}

/// RSS changes up to this are noise (allocator, page cache), not growth.
pub const RSS_TOLERANCE: u64 = 128 * 1024;

/// Samples RSS and CPU time every 20 ms until neither changed (RSS by more
/// than [`RSS_TOLERANCE`]) for `quiet`,
/// or until `limit`. Returns the time (since `since`) of the last change and
/// the RSS then.
pub async fn wait_until_quiet(
    pid: u32,
    since: Instant,
    quiet: Duration,
    limit: Duration,
) -> anyhow::Result<(Duration, u64)> {
    let deadline = Instant::now() + limit;
    let mut last = (rss_bytes(pid)?, cpu_ticks(pid)?);
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = (rss_bytes(pid)?, cpu_ticks(pid)?);
        if now.0.abs_diff(last.0) > RSS_TOLERANCE || now.1 != last.1 {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            return Ok((last_change.saturating_duration_since(since), last.0));
        }
        if Instant::now() >= deadline {
            bail!("the server did not go quiet within {limit:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

/// Whole microseconds: what the server stores.
pub fn truncate_to_micros(instant: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(instant.timestamp_micros()).unwrap_or(instant)
}

/// A small, typical payload.
pub fn payload() -> String {
    r#"{"media_url":"https://cdn.example.com/media/autumn-collection.jpg","text":"Our autumn collection is here. Come and see it in store this weekend!"}"#.to_owned()
}

pub fn create_request(
    business: &str,
    index: usize,
    at: DateTime<Utc>,
) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        business_id: business.to_owned(),
        content_id: format!("content-{index}"),
        platform: "instagram".to_owned(),
        payload_json: payload(),
        when: Some(pb::create_schedule_request::When::ScheduledFor(timestamp(
            at,
        ))),
        ..Default::default()
    }
}

/// Uniformly random instants in `[start, start + spread)`, whole microseconds.
pub fn uniform_instants(start: DateTime<Utc>, spread: Duration, n: usize) -> Vec<DateTime<Utc>> {
    let mut rng = rand::rng();
    let spread_us = spread.as_micros().max(1) as i64;
    (0..n)
        .map(|_| {
            truncate_to_micros(
                start + chrono::Duration::microseconds(rng.random_range(0..spread_us)),
            )
        })
        .collect()
}

/// Posts created by [`create_many`].
pub struct Created {
    /// Post id and instant, in the order of the instants given.
    pub posts: Vec<(String, DateTime<Utc>)>,
    pub elapsed: Duration,
}

/// Creates one post per instant with CreateSchedule, `concurrency` callers
/// spread over the clients. Fails on the first error that is not worth a
/// retry (three retries at most per post).
pub async fn create_many(
    clients: &[Client],
    business: &str,
    instants: &[DateTime<Utc>],
    concurrency: usize,
) -> anyhow::Result<Created> {
    let instants = Arc::new(instants.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let mut client = clients[worker % clients.len()].clone();
        let instants = Arc::clone(&instants);
        let next = Arc::clone(&next);
        let business = business.to_owned();
        workers.spawn(async move {
            let mut done = Vec::new();
            let mut retries = 0usize;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(&at) = instants.get(index) else {
                    break;
                };
                let mut tries = 0;
                loop {
                    let call = client.create_schedule(create_request(&business, index, at));
                    let result = tokio::time::timeout(RPC_TIMEOUT, call).await;
                    match result {
                        Ok(Ok(response)) => {
                            done.push((index, response.into_inner().id));
                            break;
                        }
                        Ok(Err(status))
                            if tries < 3
                                && matches!(
                                    status.code(),
                                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                                ) =>
                        {
                            tries += 1;
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(Err(status)) => {
                            return Err(anyhow!("CreateSchedule failed: {status}"));
                        }
                        Err(_) => return Err(anyhow!("CreateSchedule took over {RPC_TIMEOUT:?}")),
                    }
                }
            }
            Ok::<_, anyhow::Error>((done, retries))
        });
    }
    let mut posts = vec![(String::new(), DateTime::<Utc>::MIN_UTC); instants.len()];
    let mut retries = 0;
    while let Some(joined) = workers.join_next().await {
        let (done, worker_retries) = joined.context("a CreateSchedule caller panicked")??;
        retries += worker_retries;
        for (index, id) in done {
            posts[index] = (id, instants[index]);
        }
    }
    if retries > 0 {
        eprintln!("    note: {retries} CreateSchedule call(s) retried after UNAVAILABLE");
    }
    Ok(Created {
        posts,
        elapsed: started.elapsed(),
    })
}

/// One BulkSchedule call: `size` posts an hour apart from `start_date`
/// 09:00 in `zone`. Returns how many posts the server answered with.
pub async fn bulk_hourly(
    client: &mut Client,
    business: &str,
    content_prefix: &str,
    size: usize,
    start_date: &str,
    zone: &str,
) -> anyhow::Result<usize> {
    let call = client.bulk_schedule(pb::BulkScheduleRequest {
        business_id: business.to_owned(),
        platform: "linkedin".into(),
        content_ids: (0..size).map(|i| format!("{content_prefix}-{i}")).collect(),
        payload_json: payload(),
        recurrence: Some(pb::Recurrence {
            pattern: pb::recurrence::Pattern::EveryNHours as i32,
            start_date: start_date.to_owned(),
            local_time: "09:00".into(),
            time_zone: zone.to_owned(),
            interval_hours: 1,
            ..Default::default()
        }),
        ..Default::default()
    });
    let response = tokio::time::timeout(RPC_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("BulkSchedule took over {RPC_TIMEOUT:?}"))?
        .map_err(|status| {
            anyhow!(
                "BulkSchedule of {size} posts failed: {:?}: {}",
                status.code(),
                status.message()
            )
        })?;
    Ok(response.into_inner().schedules.len())
}

/// Counts posts with a status by paging through ListSchedules.
pub async fn count_with_status(
    client: &Client,
    business: &str,
    status: pb::scheduled_post::Status,
) -> anyhow::Result<usize> {
    let mut client = client.clone();
    let mut token = String::new();
    let mut count = 0;
    for _ in 0..10_000 {
        let call = client.list_schedules(pb::ListSchedulesRequest {
            business_id: business.to_owned(),
            statuses: vec![status as i32],
            page_size: 1000,
            page_token: token.clone(),
            ..Default::default()
        });
        let page = tokio::time::timeout(RPC_TIMEOUT, call)
            .await
            .map_err(|_| anyhow!("ListSchedules took over {RPC_TIMEOUT:?}"))?
            .context("ListSchedules failed")?
            .into_inner();
        count += page.schedules.len();
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        token = page.next_page_token;
    }
    bail!("ListSchedules returned more than 10,000 pages")
}

pub fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join("results")
}

// ---------------------------------------------------------------------------
// The machine

/// (busy, total) jiffies of all CPUs, from /proc/stat.
pub fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// CPU time of this process and of its children that were waited for (the
/// servers), in clock ticks.
pub fn own_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    after
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Percent of all CPUs busy between two [`machine_cpu`] readings.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1) as f64;
    if total > 0.0 {
        100.0 * busy / total
    } else {
        f64::NAN
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes out what earlier scenarios left for the disks to do: a
/// `CHECKPOINT` on PostgreSQL (whose checkpointer otherwise spreads the
/// previous scenario's pages over minutes of background writes) and a
/// `sync`, so that a scenario does not measure the write-back of another.
pub async fn settle_disks(with_postgres: bool) {
    if with_postgres {
        let url = postgres_admin_url();
        let checkpoint = async {
            let mut admin = connect_postgres(&url).await?;
            admin
                .batch_execute("CHECKPOINT")
                .await
                .context("CHECKPOINT failed")
        };
        if let Err(error) = checkpoint.await {
            eprintln!("    warning: {error:#}");
        }
    }
    match tokio::process::Command::new("sync").status().await {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("    warning: sync exited with {status}"),
        Err(error) => eprintln!("    warning: cannot run sync: {error}"),
    }
}

/// Waits (at most `limit`) until the machine's CPUs are less than 15 % busy
/// over 3 s, so that a measurement does not share the CPUs with a build.
pub async fn wait_for_quiet_machine(limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut told = false;
    loop {
        let before = machine_cpu();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let busy = busy_percent(before, machine_cpu());
        if busy < 15.0 || busy.is_nan() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("    the machine is still {busy:.0} % busy; measuring anyway");
            return;
        }
        if !told {
            eprintln!("    waiting for the machine to be quiet ({busy:.0} % busy)");
            told = true;
        }
    }
}
