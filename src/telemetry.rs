//! Telemetry: logs, traces and metrics.
//!
//! This module owns the process's `tracing` subscriber (the log lines, and
//! a layer that turns Punctual's spans into OpenTelemetry spans), the OTLP
//! exporters of traces and metrics, the span of every gRPC call
//! ([`RpcTraceLayer`]) and of every publish attempt ([`publish_span`]), the
//! W3C `traceparent` strings that carry a trace context through the database
//! and to the publishing service, and the metric instruments ([`Metrics`]).
//!
//! Telemetry must never fail a call or an attempt: an exporter that cannot
//! reach its collector logs an error and drops the batch, and a malformed
//! `traceparent` is ignored. Nothing outside this module sees an
//! OpenTelemetry type; the rest of Punctual handles a trace context only as
//! an opaque `traceparent` string.
//!
//! Configuration comes from the standard `OTEL_*` environment variables (see
//! [`TelemetryConfig::from_env`]), read here and by the OpenTelemetry SDK.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument as _;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::domain::{Post, PostStatus};
use crate::stats::QueueStatsTracker;

/// The header, and the column, that carry a W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The name of the tracer, the meter and the default `service.name`.
const SERVICE_NAME: &str = "punctual";

/// Each provider gets this long to export what it holds at shutdown, so an
/// unreachable collector delays exit by a bounded time.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Upper bounds (ms) of the fire lateness buckets: fine below a second,
/// where a healthy service lives, coarse up to the missed-fire window.
const LATENESS_BOUNDS_MS: [f64; 17] = [
    0.0,
    1.0,
    2.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    60_000.0,
    300_000.0,
    3_600_000.0,
];

/// What to turn on, from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `false` when `OTEL_SDK_DISABLED=true`: no OpenTelemetry at all, only
    /// log lines; posts are stored without a trace context and the
    /// publisher gets no `traceparent`.
    pub sdk_enabled: bool,
    /// Export spans over OTLP.
    pub export_traces: bool,
    /// Make OpenTelemetry spans at all: callers' `traceparent` is continued,
    /// stored with posts and passed on to the publisher. On with trace
    /// export; off without it, because spans that go nowhere cost a fifth
    /// of the API's throughput.
    pub trace_contexts: bool,
    /// Export metrics over OTLP; without it the instruments record nothing.
    pub export_metrics: bool,
    /// Bound on each provider's flush at shutdown.
    pub shutdown_timeout: Duration,
}

impl TelemetryConfig {
    /// Reads the switches from the environment. Export is on only for a
    /// signal whose endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`,
    /// or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`), and not turned off with
    /// `OTEL_TRACES_EXPORTER=none` / `OTEL_METRICS_EXPORTER=none`: a service
    /// started without a collector sends nothing rather than logging failed
    /// exports to localhost:4317. The exporters themselves read the other
    /// standard variables (headers, timeout, compression), the SDK reads
    /// the sampler (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), the
    /// batch and export intervals, and the resource (`OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).is_some_and(|value| !value.trim().is_empty());
        let is = |name: &str, wanted: &str| {
            lookup(name).is_some_and(|value| value.trim().eq_ignore_ascii_case(wanted))
        };
        let any_endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        let export_traces = (any_endpoint || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            && !is("OTEL_TRACES_EXPORTER", "none");
        Self {
            sdk_enabled: !is("OTEL_SDK_DISABLED", "true"),
            export_traces,
            trace_contexts: export_traces,
            export_metrics: (any_endpoint || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
                && !is("OTEL_METRICS_EXPORTER", "none"),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Trace contexts without any export: what a process gets with no
    /// collector configured.
    pub fn without_export() -> Self {
        Self {
            sdk_enabled: true,
            export_traces: false,
            trace_contexts: true,
            export_metrics: false,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("could not build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("could not install the tracing subscriber: {0}")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
    #[error("OTLP export needs a tokio runtime to run on; set telemetry up inside one")]
    NoRuntime,
}

/// The installed telemetry. Dropping it (or [`Telemetry::shutdown`]) flushes
/// and stops the exporters, each within the configured bound.
///
/// The OTLP exporters run their network I/O on the tokio runtime that was
/// current at [`Telemetry::init`], so shut telemetry down before that
/// runtime is dropped.
#[must_use = "dropping the guard stops the exporters"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    shutdown_timeout: Duration,
}

impl Telemetry {
    /// Installs the global `tracing` subscriber: log lines filtered by
    /// `log_filter`, and (unless the SDK is disabled) the OpenTelemetry
    /// layer, which sees only Punctual's own spans at `INFO` and above, so
    /// that the HTTP and gRPC clients of the exporters never trace
    /// themselves and a quieter log level does not lose spans. Also
    /// installs the W3C trace context propagator and the global meter
    /// provider.
    ///
    /// With export on, call this inside a tokio runtime: the gRPC channels
    /// of the exporters are bound to it.
    pub fn init(config: &TelemetryConfig, log_filter: EnvFilter) -> Result<Self, TelemetryError> {
        let fmt = tracing_subscriber::fmt::layer().with_filter(log_filter);
        if !config.sdk_enabled {
            tracing_subscriber::registry()
                .with(fmt)
                .try_init()
                .map_err(TelemetryError::Subscriber)?;
            return Ok(Self {
                tracer_provider: None,
                meter_provider: None,
                shutdown_timeout: config.shutdown_timeout,
            });
        }
        // The exporters' gRPC channels spawn their connection tasks on the
        // current runtime, and would panic without one.
        if (config.export_traces || config.export_metrics)
            && tokio::runtime::Handle::try_current().is_err()
        {
            return Err(TelemetryError::NoRuntime);
        }
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = resource();

        let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
        if config.export_traces {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|source| TelemetryError::Exporter {
                    signal: "trace",
                    source,
                })?;
            tracer_builder = tracer_builder.with_batch_exporter(exporter);
        }
        let tracer_provider = tracer_builder.build();
        opentelemetry::global::set_tracer_provider(tracer_provider.clone());

        let meter_provider = if config.export_metrics {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .map_err(|source| TelemetryError::Exporter {
                    signal: "metrics",
                    source,
                })?;
            let provider = SdkMeterProvider::builder()
                .with_resource(resource)
                .with_periodic_exporter(exporter)
                .build();
            opentelemetry::global::set_meter_provider(provider.clone());
            Some(provider)
        } else {
            None
        };

        let otel = config.trace_contexts.then(|| {
            tracing_opentelemetry::layer()
                .with_tracer(tracer_provider.tracer(SERVICE_NAME))
                .with_threads(false)
                .with_filter(Targets::new().with_target(SERVICE_NAME, LevelFilter::INFO))
        });
        tracing_subscriber::registry()
            .with(fmt)
            .with(otel)
            .try_init()
            .map_err(TelemetryError::Subscriber)?;
        tracing::info!(
            traces_exported = config.export_traces,
            metrics_exported = config.export_metrics,
            "telemetry initialised"
        );
        Ok(Self {
            tracer_provider: Some(tracer_provider),
            meter_provider,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// Flushes and stops the exporters, each within the configured bound.
    pub fn shutdown(mut self) {
        self.shutdown_providers();
    }

    fn shutdown_providers(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown_with_timeout(self.shutdown_timeout)
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
        // The SDK bounds this flush itself (5 s).
        if let Some(provider) = self.meter_provider.take()
            && let Err(error) = provider.shutdown_with_timeout(self.shutdown_timeout)
        {
            tracing::warn!(%error, "could not flush the last metrics");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown_providers();
    }
}

/// `service.name` is `punctual` unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` names it.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder().with_service_name(SERVICE_NAME).build()
    }
}

// ---------------------------------------------------------------------------
// W3C trace context

/// The `traceparent` value of a span context, exactly as the installed
/// [`TraceContextPropagator`] writes it (a test holds the two equal):
/// `00-{trace id}-{parent id}-{flags}`, lower-case hex, with only the
/// sampled flag. `None` for an invalid (all-zero) context. Written here
/// rather than through the propagator, which would build a context and a
/// header map for every publish attempt and every new post.
pub fn format_traceparent(context: &SpanContext) -> Option<String> {
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            (context.trace_flags() & TraceFlags::SAMPLED).to_u8()
        )
    })
}

/// Parses a `traceparent` value with the [`TraceContextPropagator`]: `None`
/// if it is malformed (the forbidden version `ff`, a trailing field in
/// version `00`, upper-case or non-hex digits) or names the all-zero trace
/// or parent. A later version's trailing fields are ignored, and only the
/// sampled flag is kept. The context is remote, and carries no `tracestate`.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim();
    // The propagator reads each field as a number without checking its
    // length, so it would take a 31-digit trace id or a `+` sign; the W3C
    // recommendation refuses both.
    // It also drops an empty last field, so a version 00 value with a
    // trailing `-` is refused here.
    let mut fields = value.split('-');
    let well_formed = [2, 32, 16, 2].iter().all(|len| {
        fields.next().is_some_and(|field| {
            field.len() == *len
                && field
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        })
    });
    if !well_formed || (value.starts_with("00-") && fields.next().is_some()) {
        return None;
    }
    let headers = HashMap::from([(TRACEPARENT_HEADER.to_owned(), value.to_owned())]);
    let context = TraceContextPropagator::new().extract(&headers);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The `traceparent` of the current span: what a post created now stores,
/// and what a publish attempt sends. `None` without the OpenTelemetry
/// layer (e.g. `OTEL_SDK_DISABLED=true`).
pub fn current_trace_parent() -> Option<String> {
    let context = tracing::Span::current().context();
    format_traceparent(context.span().span_context())
}

// ---------------------------------------------------------------------------
// Spans

/// The span of one publish attempt. A root span, in a trace of its own:
/// the attempt happens long after, and independently of, the call that
/// created the post, so it is *linked* to that call's trace (stored with
/// the post) rather than made its child. The publishing service receives
/// this span as the parent of its own work through the `traceparent`
/// header.
pub fn publish_span(post: &Post, lateness: Duration) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "publish",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        post.id = %post.id,
        post.business_id = %post.business_id,
        post.platform = %post.platform,
        post.attempt = i64::from(post.attempts),
        lateness_ms = lateness.as_secs_f64() * 1e3,
        publish.outcome = tracing::field::Empty,
    );
    if let Some(creation) = post.trace_parent.as_deref().and_then(parse_traceparent) {
        span.add_link(creation);
    }
    span
}

/// A tower layer for the gRPC server: one `INFO` span per call, named
/// `package.Service/Method` for OpenTelemetry, with `rpc.system`,
/// `rpc.service`, `rpc.method` and `rpc.grpc.status_code`. The span
/// continues the caller's trace when the call carries a valid
/// `traceparent`, and the handler's own spans and events nest inside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcTraceLayer;

impl<S> tower::Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

/// The service made by [`RpcTraceLayer`].
#[derive(Debug, Clone)]
pub struct RpcTrace<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for RpcTrace<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResponseBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let span = rpc_span(request.uri().path(), request.headers());
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let result = response.instrument(span.clone()).await;
            let code = match &result {
                // A failed unary call answers with its status in the
                // headers; a successful one only in the trailers.
                Ok(response) => tonic::Status::from_header_map(response.headers())
                    .map_or(tonic::Code::Ok, |status| status.code()),
                Err(_) => tonic::Code::Unknown,
            };
            span.record("rpc.grpc.status_code", code as i32);
            if is_server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
            result
        })
    }
}

fn rpc_span(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    // gRPC paths are `/package.Service/Method`.
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("unknown", path));
    let span = tracing::info_span!(
        "rpc",
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    if let Some(caller) = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_traceparent)
    {
        // Fails only without the OpenTelemetry layer, where there is no
        // trace to continue.
        let _ = span.set_parent(Context::new().with_remote_span_context(caller));
    }
    span
}

/// The codes the OpenTelemetry conventions count as a server's failure;
/// the others are the caller's mistakes.
fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

// ---------------------------------------------------------------------------
// Metrics

/// How a publish attempt ended, as counted by `punctual.publish.attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptLabel {
    Published,
    Retry,
    GaveUp,
    Rejected,
    /// Found later than the missed-fire window and dead-lettered unsent.
    Missed,
}

impl AttemptLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptLabel::Published => "published",
            AttemptLabel::Retry => "retry",
            AttemptLabel::GaveUp => "gave_up",
            AttemptLabel::Rejected => "rejected",
            AttemptLabel::Missed => "missed",
        }
    }
}

impl From<crate::domain::AttemptOutcome> for AttemptLabel {
    fn from(outcome: crate::domain::AttemptOutcome) -> Self {
        use crate::domain::AttemptOutcome;
        match outcome {
            AttemptOutcome::Published => AttemptLabel::Published,
            AttemptOutcome::Retry => AttemptLabel::Retry,
            AttemptOutcome::GaveUp => AttemptLabel::GaveUp,
            AttemptOutcome::Rejected => AttemptLabel::Rejected,
        }
    }
}

/// The metric instruments. Cheap to clone; every clone records into the
/// same instruments and reads the same gauges.
///
/// Attributes stay low in cardinality: status, outcome and platform, never
/// a business or a post.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `punctual.fire.lateness`: how late each attempt started, in ms.
    lateness: Histogram<f64>,
    /// `punctual.publish.attempts`: attempts by outcome and platform.
    attempts: Counter<u64>,
    /// Read by the `punctual.timers.held` gauge; written by the engine.
    timers_held: Arc<AtomicUsize>,
    /// Read by the `punctual.partitions.owned` gauge.
    partitions_owned: Arc<AtomicUsize>,
}

impl Metrics {
    /// Registers the instruments on `meter`. The `punctual.posts` gauge
    /// reads `stats` at each collection, summed over businesses.
    ///
    /// Until partitioning assigns partitions, this process owns the one
    /// partition there is: `punctual.partitions.owned` reads 1 until
    /// [`Metrics::set_partitions_owned`] says otherwise.
    pub fn new(meter: &Meter, stats: Arc<QueueStatsTracker>) -> Self {
        let timers_held = Arc::new(AtomicUsize::new(0));
        let partitions_owned = Arc::new(AtomicUsize::new(1));
        // Observable instruments stay registered for the meter provider's
        // life; the handles need not be kept.
        meter
            .i64_observable_gauge("punctual.posts")
            .with_description("Posts by status, as this process has seen them change")
            .with_unit("{post}")
            .with_callback(move |observer| {
                for (status, count) in stats.counts_by_status() {
                    observer.observe(count, &[status_attribute(status)]);
                }
            })
            .build();
        let held = Arc::clone(&timers_held);
        meter
            .u64_observable_gauge("punctual.timers.held")
            .with_description("Timers held by the engine for posts due within the horizon")
            .with_unit("{timer}")
            .with_callback(move |observer| {
                observer.observe(held.load(Ordering::Relaxed) as u64, &[]);
            })
            .build();
        let owned = Arc::clone(&partitions_owned);
        meter
            .u64_observable_gauge("punctual.partitions.owned")
            .with_description("Partitions of the posts this process fires")
            .with_unit("{partition}")
            .with_callback(move |observer| {
                observer.observe(owned.load(Ordering::Relaxed) as u64, &[]);
            })
            .build();
        Self {
            lateness: meter
                .f64_histogram("punctual.fire.lateness")
                .with_description("How long after its instant each publish attempt started")
                .with_unit("ms")
                .with_boundaries(LATENESS_BOUNDS_MS.to_vec())
                .build(),
            attempts: meter
                .u64_counter("punctual.publish.attempts")
                .with_description("Publish attempts by outcome and platform")
                .with_unit("{attempt}")
                .build(),
            timers_held,
            partitions_owned,
        }
    }

    /// Instruments bound to the global meter provider: real ones once
    /// [`Telemetry::init`] exported metrics, inert otherwise.
    pub fn global(stats: Arc<QueueStatsTracker>) -> Self {
        Self::new(&opentelemetry::global::meter(SERVICE_NAME), stats)
    }

    /// An attempt started `lateness` after its instant.
    pub fn record_lateness(&self, lateness: Duration, platform: &str) {
        self.lateness.record(
            lateness.as_secs_f64() * 1e3,
            &[KeyValue::new("platform", platform.to_owned())],
        );
    }

    /// Counts an attempt's outcome, and marks it on the current (publish)
    /// span.
    pub fn record_attempt(&self, outcome: AttemptLabel, platform: &str) {
        self.attempts.add(
            1,
            &[
                KeyValue::new("outcome", outcome.as_str()),
                KeyValue::new("platform", platform.to_owned()),
            ],
        );
        let span = tracing::Span::current();
        span.record("publish.outcome", outcome.as_str());
        if outcome != AttemptLabel::Published {
            span.record("otel.status_code", "ERROR");
        }
    }

    pub fn set_timers_held(&self, timers: usize) {
        self.timers_held.store(timers, Ordering::Relaxed);
    }

    /// The hook for partition ownership: whoever assigns partitions to this
    /// process reports how many it now owns.
    pub fn set_partitions_owned(&self, partitions: usize) {
        self.partitions_owned.store(partitions, Ordering::Relaxed);
    }
}

fn status_attribute(status: PostStatus) -> KeyValue {
    KeyValue::new("status", status.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

    use super::*;

    fn span_context(sampled: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn traceparent_is_formatted_as_w3c_version_00() {
        assert_eq!(
            format_traceparent(&span_context(true)).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(
            format_traceparent(&span_context(false)).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        );
        assert_eq!(format_traceparent(&SpanContext::empty_context()), None);
    }

    #[test]
    fn traceparent_round_trips() {
        for sampled in [true, false] {
            let original = span_context(sampled);
            let text = format_traceparent(&original).unwrap();
            let parsed = parse_traceparent(&text).unwrap();
            assert_eq!(parsed.trace_id(), original.trace_id());
            assert_eq!(parsed.span_id(), original.span_id());
            assert_eq!(parsed.is_sampled(), sampled);
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_known_fields() {
        let parsed =
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-next")
                .unwrap();
        assert_eq!(parsed.span_id(), span_context(true).span_id());
        assert!(parsed.is_sampled());
        assert_eq!(
            format_traceparent(&parsed).as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "unknown flags are not passed on"
        );
        assert!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_none()
        );
    }

    #[test]
    fn traceparent_is_written_as_the_propagator_writes_it() {
        for sampled in [true, false] {
            let context = span_context(sampled);
            let mut headers = HashMap::new();
            TraceContextPropagator::new().inject_context(
                &Context::new().with_remote_span_context(context.clone()),
                &mut headers,
            );
            assert_eq!(
                format_traceparent(&context),
                headers.remove(TRACEPARENT_HEADER)
            );
        }
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            // All-zero trace id, then all-zero span id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is forbidden.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Short trace id; non-hex span id.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            // Upper-case hex; a trailing field in version 00.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn export_follows_the_standard_variables() {
        let config = |vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            TelemetryConfig::from_lookup(|name| vars.get(name).cloned())
        };
        let quiet = config(&[]);
        assert!(quiet.sdk_enabled && !quiet.export_traces && !quiet.export_metrics);
        assert!(!quiet.trace_contexts, "no spans are made that go nowhere");

        let both = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        assert!(both.sdk_enabled && both.export_traces && both.export_metrics);
        assert!(both.trace_contexts);

        let traces = config(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]);
        assert!(traces.export_traces && !traces.export_metrics);

        let metrics = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert!(!metrics.export_traces && metrics.export_metrics);

        let blank = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]);
        assert!(!blank.export_traces && !blank.export_metrics);

        let disabled = config(&[("OTEL_SDK_DISABLED", "TRUE")]);
        assert!(!disabled.sdk_enabled);
    }

    /// Runs `run` with a subscriber whose OpenTelemetry layer exports to
    /// memory, and returns what it exported.
    fn traced<T>(run: impl FnOnce() -> T) -> (T, Vec<SpanData>) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let output = tracing::subscriber::with_default(subscriber, run);
        provider.force_flush().unwrap();
        (output, exporter.get_finished_spans().unwrap())
    }

    fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
        span.attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == key)
            .map(|attribute| attribute.value.clone())
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_rpc_span_continues_the_callers_trace_and_records_the_status() {
        use tower::{Layer as _, Service as _};
        // Not the futures executor: the in-memory export blocks on one.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (handler_trace_parent, spans) = traced(|| {
            runtime.block_on(async {
                let mut service =
                    RpcTraceLayer.layer(tower::service_fn(|_request: http::Request<()>| async {
                        let response = http::Response::builder()
                            .header("grpc-status", "13")
                            .body(current_trace_parent())
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }));
                let request = http::Request::builder()
                    .uri("/punctual.v1.Scheduler/GetSchedule")
                    .header(TRACEPARENT_HEADER, CALLER)
                    .body(())
                    .unwrap();
                service.call(request).await.unwrap().into_body()
            })
        });
        let caller = parse_traceparent(CALLER).unwrap();
        let [span] = spans.as_slice() else {
            panic!("expected one span, got {spans:?}");
        };
        assert_eq!(span.name, "punctual.v1.Scheduler/GetSchedule");
        assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(span.span_context.trace_id(), caller.trace_id());
        assert_eq!(span.parent_span_id, caller.span_id());
        assert_eq!(attribute(span, "rpc.system"), Some("grpc".into()));
        assert_eq!(
            attribute(span, "rpc.service"),
            Some("punctual.v1.Scheduler".into())
        );
        assert_eq!(attribute(span, "rpc.method"), Some("GetSchedule".into()));
        assert_eq!(attribute(span, "rpc.grpc.status_code"), Some(13i64.into()));
        assert!(matches!(
            span.status,
            opentelemetry::trace::Status::Error { .. }
        ));
        let inside = parse_traceparent(&handler_trace_parent.unwrap()).unwrap();
        assert_eq!(
            inside.span_id(),
            span.span_context.span_id(),
            "the handler runs inside the RPC span"
        );
    }

    #[test]
    fn a_publish_span_starts_a_new_trace_linked_to_the_creation() {
        let creation = parse_traceparent(CALLER).unwrap();
        let now = chrono::Utc::now();
        let post = Post {
            id: crate::domain::PostId::new(),
            business_id: "biz".to_owned(),
            content_id: "content".to_owned(),
            platform: "x".to_owned(),
            payload: crate::domain::Payload::empty(),
            labels: crate::domain::Labels::default(),
            scheduled_for: now,
            time_zone: crate::domain::time::TimeZone::UTC,
            status: PostStatus::Publishing,
            attempts: 2,
            last_error: None,
            next_attempt_at: now,
            published_at: None,
            external_id: None,
            version: 3,
            request_id: None,
            create_time: now,
            update_time: now,
            attempt_history: Vec::new(),
            trace_parent: Some(CALLER.to_owned()),
        };
        let metrics = Metrics::global(Arc::default());
        let (sent, spans) = traced(|| {
            let span = publish_span(&post, Duration::from_millis(12));
            span.in_scope(|| {
                metrics.record_attempt(AttemptLabel::GaveUp, &post.platform);
                current_trace_parent()
            })
        });
        let [span] = spans.as_slice() else {
            panic!("expected one span, got {spans:?}");
        };
        assert_eq!(span.name, "publish");
        assert_eq!(span.parent_span_id, SpanId::INVALID, "a root span");
        assert_ne!(span.span_context.trace_id(), creation.trace_id());
        let [link] = span.links.links.as_slice() else {
            panic!("expected one link, got {:?}", span.links);
        };
        assert_eq!(link.span_context.trace_id(), creation.trace_id());
        assert_eq!(link.span_context.span_id(), creation.span_id());
        assert_eq!(attribute(span, "post.id"), Some(post.id.to_string().into()));
        assert_eq!(attribute(span, "post.attempt"), Some(2i64.into()));
        assert_eq!(attribute(span, "publish.outcome"), Some("gave_up".into()));
        let sent = parse_traceparent(&sent.unwrap()).unwrap();
        assert_eq!(sent.trace_id(), span.span_context.trace_id());
        assert_eq!(sent.span_id(), span.span_context.span_id());
    }

    #[test]
    fn metrics_carry_the_documented_names_and_attributes() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::InMemoryMetricExporter;
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};

        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_periodic_exporter(exporter.clone())
            .build();
        let stats = Arc::new(QueueStatsTracker::default());
        stats.on_change("biz-a", None, PostStatus::Scheduled);
        stats.on_change("biz-b", None, PostStatus::Scheduled);
        stats.on_change("biz-b", None, PostStatus::Published);
        let metrics = Metrics::new(&provider.meter("test"), stats);
        metrics.record_lateness(Duration::from_millis(12), "x");
        metrics.record_attempt(AttemptLabel::Retry, "x");
        metrics.record_attempt(AttemptLabel::Retry, "x");
        metrics.record_attempt(AttemptLabel::Published, "y");
        metrics.set_timers_held(7);
        provider.force_flush().unwrap();

        let mut points: Vec<(String, Vec<String>, f64)> = Vec::new();
        for resource in exporter.get_finished_metrics().unwrap() {
            for scope in resource.scope_metrics() {
                for metric in scope.metrics() {
                    let name = metric.name().to_owned();
                    let mut push = |attributes: Vec<&KeyValue>, value: f64| {
                        let mut attributes: Vec<String> = attributes
                            .iter()
                            .map(|kv| format!("{}={}", kv.key, kv.value))
                            .collect();
                        attributes.sort();
                        points.push((name.clone(), attributes, value));
                    };
                    match metric.data() {
                        AggregatedMetrics::I64(MetricData::Gauge(gauge)) => {
                            for point in gauge.data_points() {
                                push(point.attributes().collect(), point.value() as f64);
                            }
                        }
                        AggregatedMetrics::U64(MetricData::Gauge(gauge)) => {
                            for point in gauge.data_points() {
                                push(point.attributes().collect(), point.value() as f64);
                            }
                        }
                        AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                            for point in sum.data_points() {
                                push(point.attributes().collect(), point.value() as f64);
                            }
                        }
                        AggregatedMetrics::F64(MetricData::Histogram(histogram)) => {
                            for point in histogram.data_points() {
                                push(point.attributes().collect(), point.sum());
                            }
                        }
                        other => panic!("unexpected data for {name}: {other:?}"),
                    }
                }
            }
        }
        let value = |name: &str, attributes: &[&str]| {
            points
                .iter()
                .find(|(n, a, _)| n == name && a == attributes)
                .map(|(_, _, value)| *value)
        };
        assert_eq!(value("punctual.posts", &["status=SCHEDULED"]), Some(2.0));
        assert_eq!(value("punctual.posts", &["status=PUBLISHED"]), Some(1.0));
        assert_eq!(
            value(
                "punctual.publish.attempts",
                &["outcome=retry", "platform=x"]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                "punctual.publish.attempts",
                &["outcome=published", "platform=y"]
            ),
            Some(1.0)
        );
        assert_eq!(value("punctual.fire.lateness", &["platform=x"]), Some(12.0));
        assert_eq!(value("punctual.timers.held", &[]), Some(7.0));
        assert_eq!(value("punctual.partitions.owned", &[]), Some(1.0));
        metrics.set_partitions_owned(4);
        exporter.reset();
        provider.force_flush().unwrap();
        let exported = exporter.get_finished_metrics().unwrap();
        let owned = exported
            .iter()
            .flat_map(|resource| resource.scope_metrics())
            .flat_map(|scope| scope.metrics())
            .find(|metric| metric.name() == "punctual.partitions.owned")
            .map(|metric| match metric.data() {
                AggregatedMetrics::U64(MetricData::Gauge(gauge)) => {
                    gauge.data_points().map(|point| point.value()).sum::<u64>()
                }
                other => panic!("unexpected data: {other:?}"),
            });
        assert_eq!(owned, Some(4));
    }

    #[test]
    fn rpc_errors_of_the_server_are_told_from_the_callers() {
        assert!(is_server_error(tonic::Code::Internal));
        assert!(is_server_error(tonic::Code::Unavailable));
        assert!(!is_server_error(tonic::Code::Ok));
        assert!(!is_server_error(tonic::Code::InvalidArgument));
        assert!(!is_server_error(tonic::Code::NotFound));
    }
}
