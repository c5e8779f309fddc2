//! Tracing across the service: a caller's trace continues into the call
//! that creates a post and is kept with the post; the publish attempt
//! starts a trace of its own, linked to that one, and passes its context to
//! the publisher. And the binary runs, publishes and stops promptly when
//! its collector cannot be reached.

use std::sync::Once;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::helpers::*;
use crate::support::process::Serve;
use pb::scheduled_post::Status;
use punctual::domain::PostId;
use punctual::storage::{Storage, StorageOptions};
use punctual::telemetry::{Telemetry, TelemetryConfig, parse_traceparent};

const WAIT: Duration = Duration::from_secs(20);
const CALLER_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN_ID: &str = "b7ad6b7169203331";

/// Installs the subscriber `punctual serve` installs, without export, once
/// for the test process. Logs stay off unless `RUST_LOG` asks for them.
fn install_telemetry() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let telemetry = Telemetry::init(
            &TelemetryConfig::without_export(),
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off")),
        )
        .expect("install telemetry");
        // Nothing is exported, so nothing needs flushing: the subscriber
        // stays for the life of the test process.
        std::mem::forget(telemetry);
    });
}

/// `message` as sent by a caller inside trace [`CALLER_TRACE_ID`].
fn from_traced_caller<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .expect("an ASCII header value"),
    );
    request
}

async fn stored_trace_parent(storage: &Storage, id: &str) -> Option<String> {
    storage
        .get(PostId::parse("id", id).expect("a post id"))
        .await
        .expect("read the post")
        .expect("the post exists")
        .trace_parent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_starts_a_trace_of_its_own_and_the_creating_calls_trace_is_kept() {
    install_telemetry();
    let app = spawn_app().await;
    let storage = Storage::connect(&app.database.url, &StorageOptions::default())
        .await
        .expect("open the test database");

    let post = app
        .client
        .clone()
        .create_schedule(from_traced_caller(post_at("trace-biz", in_millis(300))))
        .await
        .expect("create")
        .into_inner();
    let received = app.receiver.wait_for(1, WAIT).await;
    let sent = received[0].header("traceparent");
    let sent = parse_traceparent(&sent)
        .unwrap_or_else(|| panic!("the publisher got no valid traceparent: {sent:?}"));
    assert_ne!(
        sent.trace_id().to_string(),
        CALLER_TRACE_ID,
        "the publish is a new trace, linked to the creation rather than inside it"
    );

    let stored = stored_trace_parent(&storage, &post.id)
        .await
        .expect("the creating call's trace context is stored");
    let stored = parse_traceparent(&stored).expect("a valid stored traceparent");
    assert_eq!(
        stored.trace_id().to_string(),
        CALLER_TRACE_ID,
        "the creating call continued the caller's trace"
    );
    assert_ne!(
        stored.span_id().to_string(),
        CALLER_SPAN_ID,
        "the stored span is the server's, a child of the caller's"
    );
    app.wait_for_status(&post.id, Status::Published).await;

    // A caller without a trace: the server's span starts one.
    let untraced = app.create(post_at("trace-biz", in_millis(300))).await;
    let received = app.receiver.wait_for(2, WAIT).await;
    let stored = stored_trace_parent(&storage, &untraced.id)
        .await
        .and_then(|value| parse_traceparent(&value))
        .expect("a trace context even for an untraced caller");
    assert_ne!(stored.trace_id().to_string(), CALLER_TRACE_ID);
    let sent = parse_traceparent(&received[1].header("traceparent"))
        .expect("a traceparent for the second publish");
    assert_ne!(sent.trace_id(), stored.trace_id());

    // Every post of a bulk call keeps that call's trace.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let bulk = app
        .client
        .clone()
        .bulk_schedule(from_traced_caller(pb::BulkScheduleRequest {
            business_id: "trace-bulk".into(),
            platform: "facebook".into(),
            content_ids: vec!["c0".into(), "c1".into()],
            recurrence: Some(pb::Recurrence {
                pattern: pb::recurrence::Pattern::Daily as i32,
                start_date: tomorrow,
                local_time: "09:00".into(),
                time_zone: "UTC".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .expect("bulk schedule")
        .into_inner();
    assert_eq!(bulk.schedules.len(), 2);
    for post in &bulk.schedules {
        let stored = stored_trace_parent(&storage, &post.id)
            .await
            .and_then(|value| parse_traceparent(&value))
            .expect("a stored trace context for each bulk post");
        assert_eq!(stored.trace_id().to_string(), CALLER_TRACE_ID);
    }
    drop(storage);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_publishes_and_stops_promptly_with_an_unreachable_collector() {
    let database = TestDatabase::for_this_test().await;
    let receiver = Receiver::start();
    // A collector's port nothing listens on.
    let closed_port = crate::support::free_port().port();
    let (process, _) = Serve::new(&database.url, &receiver.url, database.dir())
        .arg("--publisher-secret", SECRET)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{closed_port}"),
        )
        // Export often, so that failed exports happen while the test runs.
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .start()
        .await
        .expect("start the punctual binary");
    let log_path = process.log.clone();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let mut client = process.client().await.expect("connect to the binary");
    let post = client
        .create_schedule(from_traced_caller(post_at("otel-biz", in_millis(300))))
        .await
        .unwrap_or_else(|status| panic!("create failed: {status}; log:\n{}", read_log()))
        .into_inner();
    let received = receiver.wait_for(1, WAIT).await;
    assert_eq!(received[0].post_id(), post.id);
    let sent = parse_traceparent(&received[0].header("traceparent"))
        .unwrap_or_else(|| panic!("no valid traceparent sent; log:\n{}", read_log()));
    assert_ne!(sent.trace_id().to_string(), CALLER_TRACE_ID);
    // Let a few exports fail.
    tokio::time::sleep(Duration::from_millis(500)).await;

    process
        .stop(Duration::from_secs(15))
        .await
        .expect("a clean exit within 15 s of SIGTERM");
    let log = read_log();
    assert!(log.contains("traces_exported=true"), "log:\n{log}");
    assert!(!log.contains("panicked"), "log:\n{log}");
}
