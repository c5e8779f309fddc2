//! The built `punctual` binary as a child process: `punctual serve` on a
//! free loopback port, waited on until it is healthy, signalled and stopped
//! as an operator would; and the client commands.
//!
//! A child starts with an empty environment: only what the test sets
//! reaches it, never the developer's `PUNCTUAL_*` (or `OTEL_*`) variables.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use punctual::grpc::pb;
use punctual::grpc::pb::scheduler_client::SchedulerClient;

/// The readiness service of the health protocol.
pub const SCHEDULER_SERVICE: &str = "punctual.v1.Scheduler";

/// `punctual` with an empty environment and no standard input.
pub fn punctual() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_punctual"));
    command.env_clear().stdin(Stdio::null());
    command
}

/// How long after the spawn the server answered.
#[derive(Debug, Clone, Copy)]
pub struct Startup {
    /// The health service reports `punctual.v1.Scheduler` as SERVING.
    pub health_serving: Duration,
    /// A ListSchedules call answered.
    pub list_answered: Duration,
}

/// What `punctual serve` is started with, beyond its address.
pub struct Serve {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log_dir: PathBuf,
    log_name: String,
    health_limit: Duration,
}

impl Serve {
    /// `punctual serve --database-url … --publisher-url …`, logging at
    /// `warn` into a file in `log_dir` (the database's directory, say).
    pub fn new(database_url: &str, publisher_url: &str, log_dir: &Path) -> Serve {
        Serve {
            args: [
                "--database-url",
                database_url,
                "--publisher-url",
                publisher_url,
            ]
            .map(OsString::from)
            .into(),
            env: vec![
                ("RUST_LOG".into(), "warn".into()),
                ("NO_COLOR".into(), "1".into()),
            ],
            log_dir: log_dir.to_owned(),
            log_name: format!("punctual-{}.log", uuid::Uuid::now_v7().simple()),
            health_limit: Duration::from_secs(60),
        }
    }

    /// Another flag and its value (`--replica-id r1`).
    pub fn arg(mut self, flag: &str, value: impl Into<OsString>) -> Serve {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    /// Flags as given (`["--lookahead-horizon", "1h"]`).
    pub fn args(mut self, args: &[&str]) -> Serve {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// A variable of the child's otherwise empty environment.
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Serve {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Names the log file (`<name>.log` in the log directory).
    pub fn log_name(mut self, name: &str) -> Serve {
        self.log_name = format!("{name}.log");
        self
    }

    /// How long [`Serve::start`] waits for the server to be healthy.
    pub fn health_limit(mut self, limit: Duration) -> Serve {
        self.health_limit = limit;
        self
    }

    /// Starts the server and waits until it serves: health reports the
    /// Scheduler SERVING and a ListSchedules call answers.
    pub async fn start(self) -> anyhow::Result<(ServerProcess, Startup)> {
        let limit = self.health_limit;
        let mut server = self.spawn()?;
        let startup = server.wait_until_serving(limit).await?;
        Ok((server, startup))
    }

    /// Starts the server without waiting for it.
    pub fn spawn(self) -> anyhow::Result<ServerProcess> {
        let addr = super::free_port();
        let log = self.log_dir.join(&self.log_name);
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create the server log {}", log.display()))?;
        let mut command = punctual();
        command
            .arg("serve")
            .args(["--listen-addr", &addr.to_string()])
            .args(&self.args)
            .envs(self.env)
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let child = command
            .spawn()
            .context("cannot start the punctual binary")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        Ok(ServerProcess {
            child,
            pid,
            addr,
            spawned,
            log,
        })
    }
}

/// A running `punctual serve` child process, killed if dropped (and its
/// log printed, if the test is failing).
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub spawned: Instant,
    pub log: PathBuf,
}

impl ServerProcess {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("a valid endpoint")
            .tcp_nodelay(true)
    }

    /// A new connection to the server.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        self.endpoint()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("cannot connect to the server at {}", self.addr))
    }

    pub async fn client(&self) -> anyhow::Result<SchedulerClient<Channel>> {
        Ok(SchedulerClient::new(self.channel().await?))
    }

    /// The status health reports for `service` ("" is the process as a
    /// whole: liveness); None when the server does not answer.
    pub async fn health_of(&self, service: &str) -> Option<ServingStatus> {
        let channel = self
            .endpoint()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(response.into_inner().status).ok()
    }

    /// Waits until health reports `wanted` for `service`.
    pub async fn wait_health_of(
        &self,
        service: &str,
        wanted: ServingStatus,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.health_of(service).await == Some(wanted) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server was not {wanted:?} for {service:?} within {limit:?}; its log ends:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_until_serving(&mut self, limit: Duration) -> anyhow::Result<Startup> {
        let deadline = self.spawned + limit;
        let mut health_serving = None;
        while Instant::now() < deadline {
            self.check_running()?;
            let endpoint = self.endpoint().connect_timeout(Duration::from_millis(200));
            if let Ok(Ok(channel)) =
                tokio::time::timeout(Duration::from_millis(500), endpoint.connect()).await
            {
                let mut health = HealthClient::new(channel.clone());
                let check = health.check(HealthCheckRequest {
                    service: SCHEDULER_SERVICE.into(),
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
            // Short: the benchmarks measure start-up with it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        bail!(
            "the server did not serve within {limit:?} (health serving after {health_serving:?}); its log ends:\n{}",
            self.log_tail()
        )
    }

    /// An error, with the log, if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!(
                "the server exited with {status}; its log ends:\n{}",
                self.log_tail()
            ),
            None => Ok(()),
        }
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL the server");
    }

    /// A graceful stop (SIGTERM) within `limit`, then SIGKILL. Returns how
    /// long the graceful stop took; an error unless it exited cleanly.
    pub async fn stop(mut self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.signal("TERM");
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(started.elapsed()),
            Ok(Ok(status)) => bail!(
                "the server exited with {status} after SIGTERM; its log ends:\n{}",
                self.log_tail()
            ),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "the server did not stop within {limit:?} of SIGTERM; killed. Its log ends:\n{}",
                    self.log_tail()
                )
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 20 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the end of punctual's log ({}) ---\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}
