//! Health that means something: a watchdog that reports `NOT_SERVING` on
//! `grpc.health.v1` while the database is unreachable or the engine has
//! stopped serving due timers, so that probes catch a scheduler that is
//! stuck without having crashed.
//!
//! Two kinds of services follow the verdict. *Readiness* services turn
//! `NOT_SERVING` for either cause: send no calls here. *Liveness* services
//! turn `NOT_SERVING` only for a stuck engine, which a restart can cure; an
//! unreachable database is not cured by restarting every replica at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::clock::Clock;
use crate::engine::{EngineHandle, Ownership};
use crate::storage::Storage;

/// Each check gets this long to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    /// Time between checks.
    pub interval: Duration,
    /// Due posts waiting this long while nothing is claimed means the engine
    /// is stuck.
    pub stall: Duration,
    /// Services that turn `NOT_SERVING` on any failure.
    pub readiness_services: Vec<String>,
    /// Services that turn `NOT_SERVING` only when the engine is stuck (""
    /// is the server as a whole, which Kubernetes probes ask about by
    /// default).
    pub liveness_services: Vec<String>,
}

/// What a check found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The database does not answer: not ready, but restarting won't help.
    Database(String),
    /// The engine does not serve due posts: a restart may.
    Engine(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Database(reason) | Failure::Engine(reason) => reason,
        }
    }
}

pub struct Watchdog {
    pub storage: Storage,
    pub engine: EngineHandle,
    pub ownership: Arc<Ownership>,
    pub clock: Arc<dyn Clock>,
    pub reporter: HealthReporter,
    pub config: WatchdogConfig,
}

impl Watchdog {
    pub async fn run(self, stop: CancellationToken) {
        let started = Instant::now();
        let mut reported: Result<(), Failure> = Ok(());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
            let verdict = self.check(started).await;
            // Shutdown sets its own status; don't overwrite it.
            if stop.is_cancelled() {
                return;
            }
            if verdict == reported {
                continue;
            }
            let (ready, live) = match &verdict {
                Ok(()) => {
                    tracing::info!("health: SERVING again");
                    (ServingStatus::Serving, ServingStatus::Serving)
                }
                Err(failure) => {
                    tracing::error!(reason = failure.reason(), "health: NOT_SERVING");
                    let live = match failure {
                        Failure::Database(_) => ServingStatus::Serving,
                        Failure::Engine(_) => ServingStatus::NotServing,
                    };
                    (ServingStatus::NotServing, live)
                }
            };
            self.report(&self.config.readiness_services, ready).await;
            self.report(&self.config.liveness_services, live).await;
            reported = verdict;
        }
    }

    async fn report(&self, services: &[String], status: ServingStatus) {
        for service in services {
            self.reporter
                .set_service_status(service.as_str(), status)
                .await;
        }
    }

    async fn check(&self, started: Instant) -> Result<(), Failure> {
        match tokio::time::timeout(CHECK_TIMEOUT, self.storage.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return Err(Failure::Database(format!(
                    "the database is unreachable: {error}"
                )));
            }
            Err(_) => {
                return Err(Failure::Database(
                    "the database did not answer in time".to_owned(),
                ));
            }
        }
        if !self.engine.is_responsive(CHECK_TIMEOUT).await {
            return Err(Failure::Engine("the engine does not respond".to_owned()));
        }
        // Due posts may wait while a backlog is worked off; they may not
        // wait while nothing is claimed at all.
        let claimed_lately =
            self.engine.last_claim().unwrap_or(started).elapsed() < self.config.stall;
        if claimed_lately {
            return Ok(());
        }
        let partitions =
            (!self.ownership.is_exclusive()).then(|| self.ownership.timer_partitions());
        if partitions.as_ref().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        let stall = chrono::Duration::from_std(self.config.stall).unwrap_or(chrono::Duration::MAX);
        let before = self.clock.now() - stall;
        match tokio::time::timeout(
            CHECK_TIMEOUT,
            self.storage
                .has_overdue_posts(before, partitions.as_deref()),
        )
        .await
        {
            Ok(Ok(false)) => Ok(()),
            Ok(Ok(true)) => Err(Failure::Engine(format!(
                "posts are overdue by more than {}s and none was claimed meanwhile: the engine is stuck",
                self.config.stall.as_secs()
            ))),
            Ok(Err(error)) => Err(Failure::Database(format!(
                "the database is unreachable: {error}"
            ))),
            Err(_) => Err(Failure::Database(
                "the database did not answer in time".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::clock::SystemClock;
    use crate::engine::gate::PauseGate;
    use crate::engine::{Engine, EngineConfig, EngineParts};
    use crate::events::EventBus;
    use crate::publisher::{HttpPublisher, HttpPublisherConfig};
    use crate::stats::QueueStatsTracker;
    use crate::storage::StorageOptions;
    use crate::telemetry::Metrics;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_engine_that_stopped_turning_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("health.db").display());
        let storage = Storage::connect(&url, &StorageOptions::default())
            .await
            .expect("open the database");
        let stats = Arc::new(QueueStatsTracker::default());
        let publisher = HttpPublisher::new(HttpPublisherConfig {
            default_url: "http://127.0.0.1:9/publish".to_owned(),
            platform_urls: HashMap::new(),
            secret: None,
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_idle_connections_per_host: 1,
        })
        .expect("publisher");
        let ownership = Arc::new(Ownership::exclusive());
        let engine = Engine::new(
            EngineParts {
                storage: storage.clone(),
                publisher: Arc::new(publisher),
                events: EventBus::new(16, Arc::clone(&stats)),
                clock: Arc::new(SystemClock),
                gate: PauseGate::new(),
                ownership: Arc::clone(&ownership),
                metrics: Metrics::global(stats),
            },
            EngineConfig::default(),
        );
        let (reporter, _service) = tonic_health::server::health_reporter();
        let watchdog = Watchdog {
            storage,
            engine: engine.handle(),
            ownership,
            clock: Arc::new(SystemClock),
            reporter,
            config: WatchdogConfig {
                interval: Duration::from_millis(50),
                stall: Duration::from_secs(60),
                readiness_services: vec!["ready".to_owned()],
                liveness_services: vec![String::new()],
            },
        };

        // The database answers, but nothing serves the engine's commands.
        let verdict = watchdog.check(Instant::now()).await;
        // A restart may cure that: liveness fails too, not only readiness.
        assert!(
            matches!(&verdict, Err(Failure::Engine(reason)) if reason.contains("engine")),
            "{verdict:?}"
        );

        let stop = CancellationToken::new();
        let running = tokio::spawn(engine.run(stop.clone()));
        assert_eq!(watchdog.check(Instant::now()).await, Ok(()));
        stop.cancel();
        running.await.expect("engine task");
    }
}
