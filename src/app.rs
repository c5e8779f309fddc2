//! Wiring: builds every component from the configuration, serves gRPC on an
//! already-bound listener, and shuts down in order when told to.
//!
//! Shutdown order: stop accepting calls and end watch streams, stop the
//! engine (it lets attempts in flight finish, bounded by the grace period),
//! then return. Posts are never lost: whatever was not finished is still
//! pending, or `PUBLISHING` and recovered at the next start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::clock::{Clock, SystemClock};
use crate::config::ServeConfig;
use crate::engine::gate::PauseGate;
use crate::engine::{Engine, EngineConfig};
use crate::events::EventBus;
use crate::grpc::{SchedulerApi, SchedulerServer, pb};
use crate::publisher::{HttpPublisher, HttpPublisherConfig, Publisher, RetryPolicy};
use crate::scheduler::{Limits, SchedulerService};
use crate::stats::QueueStatsTracker;
use crate::storage::{Storage, StorageOptions};
use crate::telemetry::{Metrics, RpcTraceLayer};

/// Events buffered per watcher before it is told it fell behind.
const EVENT_BUFFER: usize = 16_384;

/// A built, not yet running, Punctual service.
pub struct Application {
    listener: TcpListener,
    config: ServeConfig,
    engine: Engine,
    service: SchedulerService,
    storage: Storage,
    metrics: Metrics,
}

impl Application {
    /// Connects to the database (running migrations), recovers posts left
    /// mid-attempt, and binds the listen address.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        config: ServeConfig,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let storage_options = StorageOptions {
            max_connections: config.database_max_connections,
            ..StorageOptions::default()
        };
        let storage = Storage::connect(&config.database_url, &storage_options)
            .await
            .context("could not open the database")?;
        let publisher: Arc<dyn Publisher> = Arc::new(
            HttpPublisher::new(HttpPublisherConfig {
                default_url: config.publisher_url.clone(),
                platform_urls: config.platform_urls(),
                secret: config
                    .publisher_secret
                    .clone()
                    .filter(|secret| !secret.is_empty()),
                request_timeout: config.publish_timeout,
                connect_timeout: config
                    .publish_timeout
                    .min(std::time::Duration::from_secs(5)),
                max_idle_connections_per_host: config.max_concurrent_publishes,
            })
            .context("invalid publisher configuration")?,
        );
        if config.publisher_secret.as_deref().is_none_or(str::is_empty) {
            tracing::warn!(
                "no publisher secret configured: requests to the publisher are not signed"
            );
        }

        let stats = Arc::new(QueueStatsTracker::default());
        let recovered = storage
            .recover_interrupted(clock.now())
            .await
            .context("could not recover interrupted attempts")?;
        for post in &recovered {
            tracing::warn!(post.id = %post.id, "attempt interrupted by a restart; publishing again with the same idempotency key");
        }
        stats.seed(
            storage
                .count_by_business_and_status()
                .await
                .context("could not count the posts")?,
        );
        let metrics = Metrics::global(Arc::clone(&stats));
        let events = EventBus::new(EVENT_BUFFER, stats);

        let gate = PauseGate::new();
        for pause in storage
            .list_pauses(None)
            .await
            .context("could not read the pauses")?
        {
            gate.pause(&pause.business_id, pause.platform.as_deref());
        }
        let engine = Engine::new(
            storage.clone(),
            publisher,
            events.clone(),
            Arc::clone(&clock),
            Arc::clone(&gate),
            EngineConfig {
                horizon: config.lookahead_horizon,
                missed_fire_window: config.missed_fire_window,
                max_concurrent_publishes: config.max_concurrent_publishes,
                claim_lead: config.claim_lead,
                max_concurrent_outcome_writes: (config.database_max_connections / 2).max(1),
                retry: RetryPolicy {
                    max_attempts: config.max_attempts,
                    base_delay: config.retry_base_delay,
                    max_delay: config.retry_max_delay,
                },
                shutdown_grace: config.shutdown_grace,
                rate_limits: config.rate_limits(),
            },
            metrics.clone(),
        );
        let service = SchedulerService::new(
            storage.clone(),
            engine.handle(),
            events,
            clock,
            gate,
            Limits {
                past_grace: config.past_grace,
                max_ahead: config.max_schedule_ahead,
                max_payload_bytes: config.max_payload_bytes,
                pause_wait: config.publish_timeout + std::time::Duration::from_secs(5),
                ..Limits::default()
            },
        )
        .with_suggest_config(
            config
                .suggest_config()
                .map_err(|error| anyhow::anyhow!("invalid suggestion settings: {error}"))?,
        );
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("could not listen on {}", config.listen_addr))?;
        Ok(Self {
            listener,
            config,
            engine,
            service,
            storage,
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The metric instruments, for components that report into them (such
    /// as the owner of partitions, through
    /// [`Metrics::set_partitions_owned`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Serves until `shutdown` is cancelled, then drains and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            config,
            engine,
            service,
            storage,
            metrics: _,
        } = self;
        let address = listener.local_addr()?;

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<SchedulerServer<SchedulerApi>>()
            .await;

        // grpcurl 1.8 speaks only reflection v1alpha; newer clients use v1.
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let engine_stop = CancellationToken::new();
        let engine_task = tokio::spawn(engine.run(engine_stop.clone()));

        let api = SchedulerApi::new(service, shutdown.clone());
        tracing::info!(
            listen_addr = %address,
            database = storage.backend_name(),
            publisher_url = %config.publisher_url,
            "punctual is serving"
        );
        let server_shutdown = shutdown.clone();
        // Without TCP_NODELAY a small response waits for the peer's delayed
        // ACK: ~40 ms added to every call.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let served = tonic::transport::Server::builder()
            .timeout(config.request_timeout)
            .layer(RpcTraceLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(SchedulerServer::new(api))
            .serve_with_incoming_shutdown(incoming, async move {
                server_shutdown.cancelled().await;
                health_reporter
                    .set_not_serving::<SchedulerServer<SchedulerApi>>()
                    .await;
            })
            .await;

        tracing::info!("no longer accepting calls; stopping the engine");
        engine_stop.cancel();
        if let Err(error) = engine_task.await {
            tracing::error!(%error, "the engine task failed");
        }
        tracing::info!("punctual stopped");
        served.context("the gRPC server failed")
    }
}
