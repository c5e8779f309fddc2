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

use crate::auth::Authenticator;
use crate::clock::{Clock, SystemClock};
use crate::cluster::{ClusterConfig, Coordinator};
use crate::config::ServeConfig;
use crate::engine::gate::PauseGate;
use crate::engine::{Engine, EngineConfig, EngineParts, Ownership};
use crate::events::EventBus;
use crate::grpc::{AuthInterceptor, SchedulerApi, SchedulerServer, pb, shed_beyond};
use crate::health::{Watchdog, WatchdogConfig};
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
    /// Present when replicas share the database (PostgreSQL).
    coordinator: Option<Coordinator>,
    ownership: Arc<Ownership>,
    clock: Arc<dyn Clock>,
    authenticator: Authenticator,
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
        // Checked first: a server that must not run open should fail before
        // it touches the database.
        let authenticator = Authenticator::from_config(
            config.auth_tokens_file.as_deref(),
            &config.auth_token_hashes,
            config.listen_addr,
            config.allow_unauthenticated,
        )?;
        let replica_id = config
            .replica_id
            .clone()
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(crate::cluster::default_replica_id);
        let storage_options = StorageOptions {
            max_connections: config.database_max_connections,
            replica_id: Some(replica_id.clone()),
            ..StorageOptions::default()
        };
        let storage = Storage::connect(&config.database_url, &storage_options)
            .await
            .context("could not open the database")?;
        // A shared database (PostgreSQL) may have several replicas: each
        // fires only the partitions it leases. A SQLite file has one
        // process, owning all.
        let cluster = storage.shared().cloned().map(|shared| {
            let cluster = ClusterConfig {
                replica_id,
                lease_duration: config.lease_duration,
            };
            (shared, cluster)
        });
        let ownership = Arc::new(match &cluster {
            Some(_) => Ownership::leased(),
            None => Ownership::exclusive(),
        });
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
        if cluster.is_none() {
            // With leases, each partition's attempts are recovered by whoever
            // takes it.
            let recovered = storage
                .recover_interrupted(clock.now())
                .await
                .context("could not recover interrupted attempts")?;
            for post in &recovered {
                tracing::warn!(post.id = %post.id, "attempt interrupted by a restart; publishing again with the same idempotency key");
            }
        }
        stats.seed(
            storage
                .count_by_business_and_status()
                .await
                .context("could not count the posts")?,
        );
        let metrics = Metrics::global(Arc::clone(&stats));
        if cluster.is_none() {
            metrics.set_partitions_owned(usize::from(crate::domain::PARTITION_COUNT));
        }
        let (relay, relayed) = tokio::sync::mpsc::unbounded_channel();
        let events = match &cluster {
            // Watchers of every replica see every replica's events.
            Some(_) => EventBus::new(EVENT_BUFFER, stats).relayed_to(relay),
            None => EventBus::new(EVENT_BUFFER, stats),
        };

        let gate = PauseGate::new();
        for pause in storage
            .list_pauses(None)
            .await
            .context("could not read the pauses")?
        {
            gate.pause(&pause.business_id, pause.platform.as_deref());
        }
        let engine = Engine::new(
            EngineParts {
                storage: storage.clone(),
                publisher,
                events: events.clone(),
                clock: Arc::clone(&clock),
                gate: Arc::clone(&gate),
                ownership: Arc::clone(&ownership),
                metrics: metrics.clone(),
            },
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
        );
        let coordinator = cluster.map(|(shared, cluster)| {
            Coordinator::new(
                storage.clone(),
                shared,
                engine.handle(),
                Arc::clone(&ownership),
                cluster,
                metrics.clone(),
                events.clone(),
                relayed,
            )
        });
        let service = SchedulerService::new(
            storage.clone(),
            engine.handle(),
            events,
            Arc::clone(&clock),
            gate,
            Limits {
                past_grace: config.past_grace,
                max_ahead: config.max_schedule_ahead,
                max_payload_bytes: config.max_payload_bytes,
                pause_wait: config.publish_timeout + std::time::Duration::from_secs(5),
                ..Limits::default()
            },
        )
        .with_suggest_config(config.suggest_config());
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("could not listen on {}", config.listen_addr))?;
        Ok(Self {
            listener,
            config,
            engine,
            service,
            storage,
            coordinator,
            ownership,
            clock,
            authenticator,
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
            coordinator,
            ownership,
            clock,
            authenticator,
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

        let watchdog_stop = shutdown.child_token();
        let watchdog = tokio::spawn(
            Watchdog {
                storage: storage.clone(),
                engine: engine.handle(),
                ownership,
                clock,
                reporter: health_reporter.clone(),
                config: WatchdogConfig {
                    interval: config.health_check_interval,
                    stall: config.health_stall,
                    readiness_services: vec![
                        <SchedulerServer<SchedulerApi> as tonic::server::NamedService>::NAME
                            .to_owned(),
                    ],
                    liveness_services: vec![String::new()],
                },
            }
            .run(watchdog_stop.clone()),
        );

        // SQLite's WAL checkpoints. Stopped after the engine, so that the
        // engine's last writes are checkpointed too; what is left SQLite
        // checkpoints when its last connection closes.
        let checkpoint_stop = CancellationToken::new();
        let checkpoint_task = storage
            .checkpointer()
            .map(|checkpointer| tokio::spawn(checkpointer.run(checkpoint_stop.clone())));
        let engine_stop = CancellationToken::new();
        let engine_task = tokio::spawn(engine.run(engine_stop.clone()));
        // Stopped only after the engine: leases are renewed while attempts
        // in flight finish, then released for the other replicas at once.
        let cluster_stop = CancellationToken::new();
        let cluster_task =
            coordinator.map(|coordinator| tokio::spawn(coordinator.run(cluster_stop.clone())));

        let api = SchedulerApi::new(service, shutdown.clone(), config.max_watchers);
        tracing::info!(
            listen_addr = %address,
            database = storage.backend_name(),
            publisher_url = %config.publisher_url,
            authentication = if authenticator.is_open() { "none" } else { "bearer tokens" },
            max_concurrent_requests = config.max_concurrent_requests,
            "punctual is serving"
        );
        // The size bound applies to each decoded message, before it is
        // buffered; the interceptor runs before the message is read at all.
        // Answers are bounded by construction (views, pages cut by size) to
        // fit the 4 MiB that gRPC clients accept by default; the send limit
        // is the backstop. gzip is accepted, and used for answers when the
        // caller says it accepts it.
        // Calls are authenticated first, so a caller without a valid token
        // never takes one of the `max_concurrent_requests` places.
        let scheduler = tonic::service::interceptor::InterceptedService::new(
            shed_beyond(
                SchedulerServer::new(api)
                    .max_decoding_message_size(config.max_request_bytes)
                    .max_encoding_message_size(crate::grpc::MAX_MESSAGE_BYTES)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .send_compressed(tonic::codec::CompressionEncoding::Gzip),
                config.max_concurrent_requests,
            ),
            AuthInterceptor::new(authenticator),
        );
        let server_shutdown = shutdown.clone();
        // Without TCP_NODELAY a small response waits for the peer's delayed
        // ACK: ~40 ms added to every call.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // `timeout` bounds each call by the shorter of the server's limit and
        // the caller's `grpc-timeout`; tonic then answers CANCELLED ("Timeout
        // expired") and the caller's own deadline reports DEADLINE_EXCEEDED.
        let served = tonic::transport::Server::builder()
            .timeout(config.request_timeout)
            .layer(RpcTraceLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(scheduler)
            .serve_with_incoming_shutdown(incoming, async move {
                server_shutdown.cancelled().await;
                watchdog_stop.cancel();
                let _ = watchdog.await;
                health_reporter
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
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
        cluster_stop.cancel();
        if let Some(cluster_task) = cluster_task
            && let Err(error) = cluster_task.await
        {
            tracing::error!(%error, "the cluster task failed");
        }
        checkpoint_stop.cancel();
        if let Some(checkpoint_task) = checkpoint_task
            && let Err(error) = checkpoint_task.await
        {
            tracing::error!(%error, "the WAL checkpoint task failed");
        }
        tracing::info!("punctual stopped");
        served.context("the gRPC server failed")
    }
}
