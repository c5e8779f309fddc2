//! Protection against overload: a bound on calls in flight that sheds the
//! excess at once, a cap on event watchers, deadlines, and a bound on the
//! size of a request.

use std::time::Duration;

use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);
/// A refused call must come back at once; generous for a busy machine.
const PROMPT: Duration = Duration::from_secs(3);

/// Starts a publish attempt that the receiver holds for `hold`, and returns
/// once it is under way: a pause of `business` then waits for it, which
/// makes PauseQueue a call that is slow for a known reason.
async fn publish_in_flight(app: &TestApp, business: &str, hold: Duration) {
    app.receiver.delay(hold);
    app.create(post_at(business, in_millis(200))).await;
    app.receiver.wait_for(1, WAIT).await;
}

fn pause(business: &str) -> pb::PauseQueueRequest {
    pb::PauseQueueRequest {
        business_id: business.to_owned(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_concurrency_limit_are_shed_at_once() {
    let app = spawn_app_with(|config| config.max_concurrent_requests = 1).await;
    let post = app
        .create(post_at("shed-other", in_millis(3_600_000)))
        .await;
    publish_in_flight(&app, "shed-biz", Duration::from_secs(6)).await;

    // The slow call takes the only slot. A probe below may hold it for a
    // moment, so the slow call retries while it is shed.
    let mut slow_client = app.client.clone();
    let slow = tokio::spawn(async move {
        loop {
            match slow_client.pause_queue(pause("shed-biz")).await {
                Err(status) if status.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    });

    let deadline = tokio::time::Instant::now() + WAIT;
    let shed = loop {
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(
            PROMPT,
            app.client.clone().get_schedule(pb::GetScheduleRequest {
                id: post.id.clone(),
                ..Default::default()
            }),
        )
        .await
        .expect("a call is answered promptly, never queued");
        match answer {
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(started.elapsed() < PROMPT);
                break status;
            }
            Err(status) => panic!("unexpected refusal: {status:?}"),
            Ok(_) => {
                assert!(
                    !slow.is_finished(),
                    "the slow call ended before any call was shed"
                );
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no call was shed while the slot was taken"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(shed.message().contains("limit of 1 calls"), "{shed:?}");
    // What a client acts on: the reason and when to retry.
    use tonic_types::StatusExt as _;
    let details = shed.get_error_details();
    assert_eq!(
        details.error_info().map(|info| info.reason.as_str()),
        Some("OVERLOADED"),
        "{shed:?}"
    );
    assert!(details.retry_info().is_some(), "{shed:?}");

    // Health is not counted: a busy server is not a dead one.
    let mut health = HealthClient::new(app.channel().await);
    let status = tokio::time::timeout(
        PROMPT,
        health.check(tonic_health::pb::HealthCheckRequest {
            service: "punctual.v1.Scheduler".into(),
        }),
    )
    .await
    .expect("health answers while saturated")
    .expect("health check")
    .into_inner()
    .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // The slow call completes, and its slot is free again.
    tokio::time::timeout(WAIT, slow)
        .await
        .expect("the slow call finishes")
        .expect("task")
        .expect("the pause succeeds");
    app.get(&post.id).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_deadline_cuts_a_slow_call_short() {
    let app = spawn_app().await;
    publish_in_flight(&app, "deadline-biz", Duration::from_secs(6)).await;
    let mut request = Request::new(pause("deadline-biz"));
    request.set_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let status = tokio::time::timeout(WAIT, app.client.clone().pause_queue(request))
        .await
        .expect("the call ends")
        .expect_err("the deadline passes before the attempt finishes");
    // tonic's server answers an expired deadline with CANCELLED ("Timeout
    // expired"); a client that watches its own deadline reports
    // DEADLINE_EXCEEDED. Either way the server stopped well before the 6 s
    // the call would otherwise take.
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_have_their_own_cap_and_do_not_hold_call_slots() {
    let app = spawn_app_with(|config| {
        config.max_concurrent_requests = 1;
        config.max_watchers = 1;
    })
    .await;
    let mut client = app.client.clone();
    let first = client
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .expect("the first watcher is admitted")
        .into_inner();

    // The open stream does not hold the only call slot.
    let post = app.create(post_at("watch-biz", in_millis(3_600_000))).await;
    app.get(&post.id).await;

    let second = client.watch_events(pb::WatchEventsRequest::default()).await;
    match second {
        Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        Ok(_) => panic!("a second watcher beyond the cap was admitted"),
    }

    // Closing the first stream frees its place (the server learns of it
    // asynchronously).
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.watch_events(pb::WatchEventsRequest::default()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the closed watcher's place was never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("unexpected refusal: {status:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_before_it_is_read() {
    let app = spawn_app_with(|config| config.max_request_bytes = 4096).await;
    let text = |length: usize| format!("{{\"text\":\"{}\"}}", "x".repeat(length));
    let mut oversized = post_at("size-biz", in_millis(3_600_000));
    oversized.payload_json = text(8_000);
    let status = app
        .client
        .clone()
        .create_schedule(oversized)
        .await
        .expect_err("an 8 kB request is over the 4 kB limit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    let mut small = post_at("size-biz", in_millis(3_600_000));
    small.payload_json = text(1_000);
    app.create(small).await;
    app.stop().await;
}
