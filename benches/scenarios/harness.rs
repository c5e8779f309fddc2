//! What every scenario stands on: the Punctual binary run as a child
//! process, a database of its own (a temporary SQLite file or a fresh
//! PostgreSQL database), a fast HTTP receiver standing in for the publishing
//! service, gRPC clients, and readings of the server's memory and CPU time
//! from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use axum::body::Bytes;
use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use rand::Rng as _;
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};

use punctual::grpc::pb;
use punctual::grpc::pb::scheduler_client::SchedulerClient;

pub type Client = SchedulerClient<Channel>;

/// Time limit of one RPC made by the benchmark.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

// ---------------------------------------------------------------------------
// Clean-up registry: servers and PostgreSQL databases still alive when the
// process is interrupted or hits its overall time limit.

#[derive(Default)]
struct Live {
    pids: Vec<u32>,
    databases: Vec<(String, String)>,
}

fn live() -> &'static Mutex<Live> {
    static LIVE: OnceLock<Mutex<Live>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// Kills every server still running and drops every database still
/// registered; used on Ctrl-C and when the overall time limit is reached.
pub async fn emergency_cleanup() {
    let (pids, databases) = {
        let mut live = live().lock().unwrap_or_else(|e| e.into_inner());
        (
            std::mem::take(&mut live.pids),
            std::mem::take(&mut live.databases),
        )
    };
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    for (admin_url, name) in databases {
        let _ = tokio::time::timeout(Duration::from_secs(10), drop_pg_database(&admin_url, &name))
            .await;
    }
}

// ---------------------------------------------------------------------------
// Databases

/// Where one run's data lives; shared by the restarts of a run.
pub struct Database {
    pub url: String,
    pub backend: Backend,
    postgres: Option<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

impl Database {
    pub async fn create(backend: Backend) -> anyhow::Result<Database> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("punctual-bench-")
                    .tempdir()
                    .context("cannot create a temporary directory for the SQLite file")?;
                let url = format!("sqlite://{}", dir.path().join("punctual.db").display());
                Ok(Database {
                    url,
                    backend,
                    postgres: None,
                    dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("punctual_bench_{}", uuid::Uuid::now_v7().simple());
                let mut admin = pg_connect(&admin_url).await?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("CREATE DATABASE {name} failed on {admin_url}"))?;
                live()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .databases
                    .push((admin_url.clone(), name.clone()));
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(&admin_url);
                Ok(Database {
                    url: format!("{base}/{name}"),
                    backend,
                    postgres: Some((admin_url.clone(), name)),
                    dir: None,
                })
            }
        }
    }

    /// A directory for server logs that lives as long as the database.
    pub fn scratch_dir(&self) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.path().to_owned(),
            None => std::env::temp_dir(),
        }
    }

    /// CPU time (in clock ticks) of the PostgreSQL backends connected to
    /// this database; 0 for SQLite, whose work runs inside the server.
    pub async fn backend_cpu_ticks(&self) -> anyhow::Result<u64> {
        let Some((admin_url, name)) = &self.postgres else {
            return Ok(0);
        };
        #[derive(diesel::QueryableByName)]
        struct Pid {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            pid: i32,
        }
        use diesel_async::RunQueryDsl as _;
        let mut admin = pg_connect(admin_url).await?;
        let pids: Vec<Pid> = diesel::sql_query(format!(
            "SELECT pid FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .load(&mut admin)
        .await
        .context("reading pg_stat_activity")?;
        Ok(pids
            .iter()
            .filter_map(|p| cpu_ticks(p.pid as u32).ok())
            .sum())
    }

    /// Drops the PostgreSQL database (the SQLite directory goes with `self`).
    pub async fn remove(self) -> anyhow::Result<()> {
        if let Some((admin_url, name)) = &self.postgres {
            drop_pg_database(admin_url, name).await?;
            live()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .databases
                .retain(|(_, n)| n != name);
        }
        Ok(())
    }
}

pub fn postgres_admin_url() -> String {
    std::env::var("PUNCTUAL_BENCH_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

async fn pg_connect(url: &str) -> anyhow::Result<AsyncPgConnection> {
    tokio::time::timeout(Duration::from_secs(10), AsyncPgConnection::establish(url))
        .await
        .map_err(|_| anyhow!("PostgreSQL at {url} did not answer within 10 s"))?
        .with_context(|| {
            format!(
                "PostgreSQL at {url} is unreachable (set PUNCTUAL_BENCH_POSTGRES_URL to an admin URL)"
            )
        })
}

async fn drop_pg_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = pg_connect(admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .with_context(|| format!("DROP DATABASE {name} failed"))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The receiver standing in for the publishing service

/// One request the receiver got: when its head arrived, and its body.
#[derive(Clone)]
pub struct Hit {
    pub at: DateTime<Utc>,
    pub body: Bytes,
}

#[derive(Default)]
struct ReceiverState {
    hits: Mutex<Vec<Hit>>,
    count: AtomicUsize,
}

/// An HTTP server on its own thread and single-threaded runtime, so load
/// generated by the benchmark never delays the receive timestamps. It notes
/// the time a request's head arrived, keeps the body, and answers 200 at once.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> anyhow::Result<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("receiver: cannot bind 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ReceiverState::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        eprintln!("receiver: cannot build a runtime: {error}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            eprintln!("receiver: {error}");
                            return;
                        }
                    };
                    let app = axum::Router::new()
                        .route("/publish", axum::routing::post(receive))
                        .route("/publish/{platform}", axum::routing::post(receive))
                        .with_state(thread_state);
                    use axum::serve::ListenerExt as _;
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(error) = served {
                        eprintln!("receiver: {error}");
                    }
                });
                // Connections still open are dropped with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Receiver {
            url: format!("http://{addr}/publish"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> usize {
        self.state.count.load(Ordering::Acquire)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state
            .hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `count` requests arrived or `deadline` passes; true when
    /// they all arrived.
    pub async fn wait_for(&self, count: usize, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.count() >= count {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Graceful shutdown waits for open keep-alive connections; the
            // server is stopped before the receiver, so they are closed.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<ReceiverState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    // The head has arrived: that is the moment the post reached the service.
    let at = Utc::now();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    state
        .hits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Hit { at, body });
    state.count.fetch_add(1, Ordering::AcqRel);
    axum::response::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"id":"bench"}"#))
        .unwrap_or_default()
}

/// What the publisher sent: the post id and its instant.
#[derive(serde::Deserialize)]
pub struct WireBody {
    pub id: String,
    pub scheduled_for: String,
}

impl Hit {
    pub fn parse(&self) -> anyhow::Result<(String, DateTime<Utc>)> {
        let body: WireBody = serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "the receiver got a body it cannot read: {}",
                String::from_utf8_lossy(&self.body)
            )
        })?;
        let instant = DateTime::parse_from_rfc3339(&body.scheduled_for)
            .with_context(|| format!("scheduled_for {:?} is not RFC 3339", body.scheduled_for))?
            .with_timezone(&Utc);
        Ok((body.id, instant))
    }
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

/// How long after the spawn the server answered.
#[derive(Debug, Clone, Copy)]
pub struct Startup {
    /// The health service reports `punctual.v1.Scheduler` as SERVING.
    pub health_serving: Duration,
    /// A ListSchedules call answered.
    pub list_answered: Duration,
}

/// A running `punctual serve` child process (killed if dropped).
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub spawned: Instant,
    pub log: PathBuf,
}

impl Server {
    /// Starts the real binary and waits (at most 120 s) until it serves.
    pub async fn start(
        database: &Database,
        publisher_url: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<(Server, Startup)> {
        let addr = free_port()?;
        let log = database.scratch_dir().join(format!(
            "punctual-server-{}.log",
            uuid::Uuid::now_v7().simple()
        ));
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create the server log {}", log.display()))?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_punctual"));
        command
            .arg("serve")
            .args(["--listen-addr", &addr.to_string()])
            .args(["--database-url", &database.url])
            .args(["--publisher-url", publisher_url])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        // The server reads its configuration from PUNCTUAL_* variables too:
        // only the flags above count.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PUNCTUAL_") {
                command.env_remove(key);
            }
        }
        command
            .env("RUST_LOG", server_log_level())
            .env("NO_COLOR", "1")
            .env("PUNCTUAL_PUBLISHER_SECRET", "benchmark-secret");
        let spawned = Instant::now();
        let child = command
            .spawn()
            .context("cannot start the punctual binary")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        live()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pids
            .push(pid);
        let mut server = Server {
            child,
            pid,
            addr,
            spawned,
            log,
        };
        let startup = server.wait_until_serving(Duration::from_secs(120)).await?;
        Ok((server, startup))
    }

    async fn wait_until_serving(&mut self, limit: Duration) -> anyhow::Result<Startup> {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;

        let deadline = self.spawned + limit;
        let mut health_serving = None;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited with {status} before serving:\n{}",
                    self.log_tail()
                );
            }
            let endpoint = endpoint(self.addr)?.connect_timeout(Duration::from_millis(200));
            if let Ok(Ok(channel)) =
                tokio::time::timeout(Duration::from_millis(500), endpoint.connect()).await
            {
                let mut health = HealthClient::new(channel.clone());
                let check = health.check(HealthCheckRequest {
                    service: "punctual.v1.Scheduler".into(),
                });
                if let Ok(Ok(response)) =
                    tokio::time::timeout(Duration::from_millis(500), check).await
                    && response.into_inner().status == ServingStatus::Serving as i32
                {
                    let serving = self.spawned.elapsed();
                    health_serving.get_or_insert(serving);
                    let mut client = SchedulerClient::new(channel);
                    let list = client.list_schedules(pb::ListSchedulesRequest {
                        page_size: 1,
                        ..Default::default()
                    });
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), list).await {
                        return Ok(Startup {
                            health_serving: serving,
                            list_answered: self.spawned.elapsed(),
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        bail!(
            "the server did not serve within {limit:?} (health serving: {health_serving:?}):\n{}",
            self.log_tail()
        )
    }

    /// `n` clients, each on its own HTTP/2 connection.
    pub async fn clients(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let channel = endpoint(self.addr)?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .with_context(|| format!("cannot connect to the server at {}", self.addr))?;
            clients.push(
                SchedulerClient::new(channel)
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
    pub async fn stop(mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let waited = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        live()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pids
            .retain(|pid| *pid != self.pid);
        match waited {
            Ok(Ok(status)) if status.success() => Ok(started.elapsed()),
            Ok(Ok(status)) => bail!("the server exited with {status}:\n{}", self.log_tail()),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the server did not stop within 60 s of SIGTERM; killed")
            }
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Warnings and errors the server logged (RUST_LOG=warn), less the
    /// expected ones.
    pub fn log_problems(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true))
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
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

pub fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: instant.timestamp_subsec_nanos() as i32,
    }
}

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
            let mut admin = pg_connect(&url).await?;
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
