//! Punctual end to end: the real server, a real database and a real HTTP
//! receiver. Runs on SQLite by default and on PostgreSQL when
//! `PUNCTUAL_TEST_DATABASE_URL=postgres://…` is set.

mod auth;
mod contract;
mod errors;
mod helpers;
mod limits;
mod planning;
mod queue;
#[path = "../support/mod.rs"]
mod support;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tonic::Code;

use helpers::*;
use pb::scheduled_post::Status;
use punctual::clock::{Clock, OffsetClock};
use punctual::publisher::HttpPublisher;
use support::process::Serve;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reaches_the_publisher_at_its_instant_exactly_once() {
    let app = spawn_app().await;
    let due = in_millis(1_000);
    let mut request = post_at("biz-1", due);
    request.payload_json = r#"{"text":"hello"}"#.to_owned();
    let post = app.create(request).await;
    assert_eq!(post.status, Status::Scheduled as i32);
    let scheduled_for = instant(&post.scheduled_for);

    let received = app.receiver.wait_for(1, WAIT).await;
    let published = app.wait_for_status(&post.id, Status::Published).await;
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.receiver.received().len(), 1, "published exactly once");

    let request = &received[0];
    assert!(
        request.at >= scheduled_for,
        "received {} before its instant {}",
        request.at,
        scheduled_for
    );
    assert_eq!(request.header("idempotency-key"), post.id);
    assert_eq!(request.header("x-punctual-attempt"), "1");
    assert_eq!(request.body["business_id"], "biz-1");
    assert_eq!(request.body["platform"], "instagram");
    assert_eq!(request.body["payload"]["text"], "hello");
    assert_eq!(request.body["attempt"], 1);
    let sent_instant: chrono::DateTime<Utc> = request.body["scheduled_for"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sent_instant, scheduled_for,
        "full precision instant in the body"
    );
    let timestamp: i64 = request.header("x-punctual-timestamp").parse().unwrap();
    assert_eq!(
        request.header("x-punctual-signature"),
        HttpPublisher::sign(SECRET.as_bytes(), timestamp, &request.raw_body)
    );

    assert_eq!(published.attempts, 1);
    assert_eq!(published.external_id, format!("ext-{}", post.id));
    assert!(published.published_at.is_some());
    assert!(published.version > post.version);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescheduling_moves_the_timer_later_and_earlier() {
    let app = spawn_app().await;
    let later = app.create(post_at("biz", in_millis(800))).await;
    let earlier = app.create(post_at("biz", in_millis(60_000))).await;

    let new_later = in_millis(2_500);
    let updated = app
        .client
        .clone()
        .update_schedule(pb::UpdateScheduleRequest {
            id: later.id.clone(),
            scheduled_for: Some(timestamp(new_later)),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["scheduled_for".into()],
            }),
            expected_version: Some(later.version),
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.version, later.version + 1);
    let new_earlier = in_millis(1_200);
    app.client
        .clone()
        .update_schedule(pb::UpdateScheduleRequest {
            id: earlier.id.clone(),
            scheduled_for: Some(timestamp(new_earlier)),
            ..Default::default()
        })
        .await
        .expect("update without a mask");

    let received = app.receiver.wait_for(2, WAIT).await;
    let by_id = |id: &str| {
        received
            .iter()
            .find(|r| r.post_id() == id)
            .cloned()
            .unwrap()
    };
    assert!(
        by_id(&later.id).at >= instant(&updated.scheduled_for),
        "fired at the old instant"
    );
    assert!(by_id(&earlier.id).at >= new_earlier);
    assert!(by_id(&earlier.id).at < new_earlier + chrono::Duration::seconds(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.receiver.received().len(), 2);

    // A stale version is refused, an edit after publishing too.
    let stale = app
        .client
        .clone()
        .update_schedule(pb::UpdateScheduleRequest {
            id: later.id.clone(),
            platform: "x".into(),
            expected_version: Some(later.version),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    app.wait_for_status(&later.id, Status::Published).await;
    let published = app
        .client
        .clone()
        .update_schedule(pb::UpdateScheduleRequest {
            id: later.id.clone(),
            platform: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(published.code(), Code::FailedPrecondition, "{published:?}");
    let cancel = app
        .client
        .clone()
        .cancel_schedule(pb::CancelScheduleRequest {
            id: later.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_post_is_never_published() {
    let app = spawn_app().await;
    let post = app.create(post_at("biz", in_millis(700))).await;
    let kept = app.create(post_at("biz", in_millis(1_400))).await;
    let mut client = app.client.clone();
    let cancelled = client
        .cancel_schedule(pb::CancelScheduleRequest {
            id: post.id.clone(),
            expected_version: Some(post.version),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, Status::Cancelled as i32);
    let again = client
        .cancel_schedule(pb::CancelScheduleRequest {
            id: post.id.clone(),
            expected_version: Some(post.version),
        })
        .await
        .expect("cancelling twice is harmless")
        .into_inner();
    assert_eq!(again.version, cancelled.version);

    // The other post fires after the cancelled one's instant: by then the
    // cancelled one would have been published.
    let received = app.receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.receiver.received().len(), 1);
    assert_eq!(received[0].post_id(), kept.id);
    assert_eq!(app.get(&post.id).await.status, Status::Cancelled as i32);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_stay_correct_while_posts_are_added() {
    let app = spawn_app().await;
    let base = Utc::now() + chrono::Duration::hours(2);
    let mut created = Vec::new();
    for i in 0..25 {
        let mut request = post_at("lister", base + chrono::Duration::minutes(i));
        if i % 5 == 0 {
            request.platform = "linkedin".into();
        }
        created.push(app.create(request).await.id);
    }
    app.create(post_at("someone-else", base)).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .client
            .clone()
            .list_schedules(pb::ListSchedulesRequest {
                business_id: "lister".into(),
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.schedules.iter().map(|p| p.id.clone()));
        // Rows added before and after the cursor while paging.
        app.create(post_at("lister", base - chrono::Duration::minutes(pages)))
            .await;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let originals: Vec<_> = seen
        .iter()
        .filter(|id| created.contains(id))
        .cloned()
        .collect();
    assert_eq!(
        originals, created,
        "every original post once, in instant order"
    );
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no post twice");

    let filtered = app
        .client
        .clone()
        .list_schedules(pb::ListSchedulesRequest {
            business_id: "lister".into(),
            platform: "linkedin".into(),
            from_time: Some(timestamp(base)),
            to_time: Some(timestamp(base + chrono::Duration::minutes(12))),
            statuses: vec![Status::Scheduled as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = filtered.schedules.iter().map(|p| p.id.clone()).collect();
    assert_eq!(
        ids,
        vec![created[0].clone(), created[5].clone(), created[10].clone()]
    );

    let bad_token = app
        .client
        .clone()
        .list_schedules(pb::ListSchedulesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    assert!(bad_token.message().contains("page_token"));
    app.stop().await;
}

fn bulk(
    pattern: pb::recurrence::Pattern,
    start_date: &str,
    local_time: &str,
    zone: &str,
    count: usize,
) -> pb::BulkScheduleRequest {
    pb::BulkScheduleRequest {
        business_id: "bulk-biz".into(),
        platform: "facebook".into(),
        content_ids: (0..count).map(|i| format!("c{i}")).collect(),
        recurrence: Some(pb::Recurrence {
            pattern: pattern as i32,
            start_date: start_date.into(),
            local_time: local_time.into(),
            time_zone: zone.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `count` posts an hour apart from 2027-06-01 00:00 UTC.
fn hourly_bulk(count: usize) -> pb::BulkScheduleRequest {
    let mut request = bulk(
        pb::recurrence::Pattern::EveryNHours,
        "2027-06-01",
        "00:00",
        "UTC",
        count,
    );
    if let Some(recurrence) = request.recurrence.as_mut() {
        recurrence.interval_hours = 1;
    }
    request
}

async fn count_posts(app: &TestApp, business: &str) -> usize {
    app.client
        .clone()
        .list_schedules(pb::ListSchedulesRequest {
            business_id: business.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .schedules
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_scheduling_keeps_wall_clock_time_across_dst_and_is_atomic() {
    use pb::recurrence::Pattern;
    let app = spawn_app().await;
    let mut client = app.client.clone();

    // Europe/Paris springs forward on 2027-03-28: 09:00 stays 09:00 local.
    let response = client
        .bulk_schedule(bulk(
            Pattern::Daily,
            "2027-03-26",
            "09:00",
            "Europe/Paris",
            4,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.schedules.len(), 4);
    let hours: Vec<_> = response
        .schedules
        .iter()
        .map(|p| {
            (
                p.local_time.clone(),
                instant(&p.scheduled_for).format("%H:%M").to_string(),
            )
        })
        .collect();
    assert_eq!(
        hours,
        vec![
            ("2027-03-26T09:00:00".into(), "08:00".into()),
            ("2027-03-27T09:00:00".into(), "08:00".into()),
            ("2027-03-28T09:00:00".into(), "07:00".into()),
            ("2027-03-29T09:00:00".into(), "07:00".into()),
        ]
    );
    assert!(
        response
            .schedules
            .iter()
            .all(|p| !p.id.is_empty() && p.status == Status::Scheduled as i32)
    );
    assert_eq!(count_posts(&app, "bulk-biz").await, 4);

    // 02:30 does not exist in New York on 2027-03-14: the whole batch is refused.
    let mut gap = bulk(Pattern::Daily, "2027-03-12", "02:30", "America/New_York", 5);
    gap.business_id = "gap-biz".into();
    let error = client.bulk_schedule(gap.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("does not exist"),
        "{}",
        error.message()
    );
    assert_eq!(
        count_posts(&app, "gap-biz").await,
        0,
        "nothing of a refused batch is saved"
    );

    // Asked to, the gap shifts forward; validate_only saves nothing.
    gap.dst_gap_policy = pb::DstGapPolicy::DstGapShiftForward as i32;
    gap.validate_only = true;
    let planned = client.bulk_schedule(gap).await.unwrap().into_inner();
    assert_eq!(planned.schedules[2].local_time, "2027-03-14T03:30:00");
    assert!(planned.schedules.iter().all(|p| p.id.is_empty()));
    assert_eq!(count_posts(&app, "gap-biz").await, 0);

    // A batch starting in the past names its first refused occurrence.
    let mut past = bulk(Pattern::Daily, "2020-01-01", "09:00", "Europe/Paris", 3);
    past.business_id = "past-biz".into();
    let error = client.bulk_schedule(past).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error
            .message()
            .contains("recurrence (occurrence 0, 2020-01-01 09:00:00)")
            && error.message().contains("is in the past"),
        "{}",
        error.message()
    );
    assert_eq!(count_posts(&app, "past-biz").await, 0);

    // WEEKLY on Tuesday and Thursday.
    let mut weekly = bulk(Pattern::Weekly, "2027-01-04", "18:30", "Asia/Kathmandu", 3);
    weekly.business_id = "weekly-biz".into();
    if let Some(recurrence) = weekly.recurrence.as_mut() {
        recurrence.weekdays = vec![
            pb::DayOfWeek::Tuesday as i32,
            pb::DayOfWeek::Thursday as i32,
        ];
    }
    let weekly = client.bulk_schedule(weekly).await.unwrap().into_inner();
    let locals: Vec<_> = weekly
        .schedules
        .iter()
        .map(|p| p.local_time.clone())
        .collect();
    assert_eq!(
        locals,
        vec![
            "2027-01-05T18:30:00",
            "2027-01-07T18:30:00",
            "2027-01-12T18:30:00"
        ]
    );
    assert_eq!(
        instant(&weekly.schedules[0].scheduled_for).to_rfc3339(),
        "2027-01-05T12:45:00+00:00"
    );

    // A retried bulk request with the same request_id does not schedule twice.
    let mut retried = bulk(Pattern::EveryNHours, "2027-02-01", "10:00", "UTC", 3);
    retried.business_id = "retry-biz".into();
    retried.request_id = "bulk-req-1".into();
    if let Some(recurrence) = retried.recurrence.as_mut() {
        recurrence.interval_hours = 6;
    }
    let first = client
        .bulk_schedule(retried.clone())
        .await
        .unwrap()
        .into_inner();
    let second = client.bulk_schedule(retried).await.unwrap().into_inner();
    let ids =
        |r: &pb::BulkScheduleResponse| r.schedules.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&second));
    assert_eq!(count_posts(&app, "retry-biz").await, 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_publisher_is_retried_then_published() {
    let app = spawn_app().await;
    app.receiver.script(&[500, 500, 200]);
    let post = app.create(post_at("biz", in_millis(300))).await;
    let published = app.wait_for_status(&post.id, Status::Published).await;
    assert_eq!(published.attempts, 3);
    let received = app.receiver.received();
    assert_eq!(received.len(), 3);
    assert!(
        received
            .iter()
            .all(|r| r.header("idempotency-key") == post.id),
        "stable idempotency key"
    );
    let attempts: Vec<_> = received
        .iter()
        .map(|r| r.header("x-punctual-attempt"))
        .collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);
    assert!(received[1].at > received[0].at && received[2].at > received[1].at);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_keeps_failing_dead_letters_after_three_attempts() {
    let app = spawn_app().await;
    app.receiver.always(503);
    let post = app.create(post_at("biz", in_millis(300))).await;
    let dead = app.wait_for_status(&post.id, Status::DeadLettered).await;
    assert_eq!(dead.attempts, 3);
    assert!(dead.last_error.contains("503"), "{}", dead.last_error);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.receiver.received().len(), 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_post_dead_letters_after_one_attempt() {
    let app = spawn_app().await;
    app.receiver.always(400);
    let post = app.create(post_at("biz", in_millis(300))).await;
    let dead = app.wait_for_status(&post.id, Status::DeadLettered).await;
    assert_eq!(dead.attempts, 1);
    assert!(dead.last_error.contains("400"), "{}", dead.last_error);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.receiver.received().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_posts_fire_at_their_instants_after_a_restart() {
    let app = spawn_app().await;
    let first = app.create(post_at("biz", in_millis(2_000))).await;
    let second = app.create(post_at("biz", in_millis(3_000))).await;
    let (database, receiver) = app.stop().await;
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |_| {},
    )
    .await;
    let received = app.receiver.wait_for(2, WAIT).await;
    for post in [&first, &second] {
        let request = received
            .iter()
            .find(|r| r.post_id() == post.id)
            .expect("published after restart");
        assert!(request.at >= instant(&post.scheduled_for));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_missed_during_downtime_fire_at_once_or_are_dead_lettered() {
    let app = spawn_app().await;
    let recent = app.create(post_at("biz", in_millis(300))).await;
    let (database, receiver) = app.stop().await;
    // Down while `recent` fell due: within the window it is published at once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |_| {},
    )
    .await;
    app.wait_for_status(&recent.id, Status::Published).await;
    let old = app.create(post_at("biz", in_millis(300))).await;
    let (database, receiver) = app.stop().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Beyond the window (1 s here) it is kept for review instead.
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |config| {
            config.missed_fire_window = Duration::from_secs(1);
        },
    )
    .await;
    let dead = app.wait_for_status(&old.id, Status::DeadLettered).await;
    assert!(dead.last_error.starts_with("missed"), "{}", dead.last_error);
    assert!(
        app.receiver
            .received()
            .iter()
            .all(|r| r.post_id() != old.id)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_stepped_back_rearms_instead_of_publishing_early() {
    let database = Arc::new(TestDatabase::for_this_test().await);
    let receiver = Receiver::start();
    let clock = Arc::new(OffsetClock::new());
    let app = start(database, receiver, clock.clone(), |_| {}).await;
    let post = app
        .create(post_at(
            "biz",
            clock.now() + chrono::Duration::milliseconds(1_000),
        ))
        .await;
    let real_start = Utc::now();
    // The timer was set for ~1 s from now; the wall clock then goes back 2 s.
    clock.step(chrono::Duration::seconds(-2));
    let received = app.receiver.wait_for(1, WAIT).await;
    let waited = received[0].at - real_start;
    assert!(
        waited >= chrono::Duration::milliseconds(2_900),
        "published after {waited}, before the wall clock reached the instant"
    );
    assert_eq!(received[0].post_id(), post.id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_published_with_bounded_concurrency() {
    let app = spawn_app_with(|config| config.max_concurrent_publishes = 4).await;
    app.receiver.delay(Duration::from_millis(20));
    let due = in_millis(1_000);
    let mut client = app.client.clone();
    // 120 posts due at the same instant.
    for _ in 0..120 {
        client.create_schedule(post_at("burst", due)).await.unwrap();
    }
    let received = app.receiver.wait_for(120, Duration::from_secs(60)).await;
    assert!(received.iter().all(|r| r.at >= due));
    assert!(
        app.receiver.max_concurrent() <= 4,
        "saw {} concurrent requests",
        app.receiver.max_concurrent()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_attempt_in_flight_finish() {
    let app = spawn_app().await;
    app.receiver.delay(Duration::from_millis(1_500));
    let post = app.create(post_at("biz", in_millis(200))).await;
    app.receiver.wait_for(1, WAIT).await;
    let (database, receiver) = app.stop().await;
    // Restart only to read the post back.
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |_| {},
    )
    .await;
    let post = app.get(&post.id).await;
    assert_eq!(post.status, Status::Published as i32, "{post:?}");
    assert_eq!(app.receiver.received().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_with_the_same_request_id_schedules_once() {
    let app = spawn_app().await;
    let mut request = post_at("biz", in_millis(3_600_000));
    request.request_id = "req-42".into();
    let first = app.create(request.clone()).await;
    let second = app.create(request).await;
    assert_eq!(first.id, second.id);
    assert_eq!(count_posts(&app, "biz").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_state_change_of_their_business() {
    use pb::schedule_event::Type;
    let app = spawn_app().await;
    let mut events = app
        .client
        .clone()
        .watch_events(pb::WatchEventsRequest {
            business_id: "watched".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    app.create(post_at("other", in_millis(3_600_000))).await;
    let cancelled = app.create(post_at("watched", in_millis(3_600_000))).await;
    app.client
        .clone()
        .update_schedule(pb::UpdateScheduleRequest {
            id: cancelled.id.clone(),
            platform: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.client
        .clone()
        .cancel_schedule(pb::CancelScheduleRequest {
            id: cancelled.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    app.receiver.script(&[500]);
    let published = app.create(post_at("watched", in_millis(300))).await;

    let mut seen = Vec::new();
    while seen.len() < 7 {
        let event = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        let post = event.schedule.unwrap();
        assert_eq!(post.business_id, "watched");
        seen.push((
            Type::try_from(event.r#type).unwrap(),
            post.id == cancelled.id,
        ));
    }
    assert_eq!(
        seen,
        vec![
            (Type::Scheduled, true),
            (Type::Updated, true),
            (Type::Cancelled, true),
            (Type::Scheduled, false),
            (Type::Publishing, false),
            (Type::RetryScheduled, false),
            (Type::Publishing, false),
        ]
    );
    let next = tokio::time::timeout(WAIT, events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.r#type, Type::Published as i32);
    assert_eq!(next.schedule.unwrap().id, published.id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_status_naming_the_field() {
    use pb::create_schedule_request::When;
    let app = spawn_app_with(|config| config.max_payload_bytes = 1_000).await;
    let mut client = app.client.clone();
    let ahead = in_millis(3_600_000);
    let valid = post_at("biz", ahead);
    let local = |time: &str, zone: &str| pb::CreateScheduleRequest {
        when: Some(When::LocalTime(time.into())),
        time_zone: zone.into(),
        ..valid.clone()
    };
    let big = format!("{{\"text\":\"{}\"}}", "a".repeat(2_000));
    let cases: Vec<(&str, pb::CreateScheduleRequest, &str)> = vec![
        (
            "empty business",
            pb::CreateScheduleRequest {
                business_id: " ".into(),
                ..valid.clone()
            },
            "business_id",
        ),
        (
            "empty content",
            pb::CreateScheduleRequest {
                content_id: String::new(),
                ..valid.clone()
            },
            "content_id",
        ),
        (
            "bad platform",
            pb::CreateScheduleRequest {
                platform: "my platform!".into(),
                ..valid.clone()
            },
            "platform",
        ),
        (
            "no instant",
            pb::CreateScheduleRequest {
                when: None,
                ..valid.clone()
            },
            "scheduled_for",
        ),
        ("past", post_at("biz", in_millis(-60_000)), "in the past"),
        (
            "too far",
            post_at("biz", Utc::now() + chrono::Duration::days(365 * 30)),
            "too far ahead",
        ),
        (
            "bad nanos",
            pb::CreateScheduleRequest {
                when: Some(When::ScheduledFor(prost_types::Timestamp {
                    seconds: ahead.timestamp(),
                    nanos: -5,
                })),
                ..valid.clone()
            },
            "scheduled_for",
        ),
        (
            "huge year",
            pb::CreateScheduleRequest {
                when: Some(When::ScheduledFor(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                })),
                ..valid.clone()
            },
            "scheduled_for",
        ),
        (
            "unknown zone",
            local("2030-01-01T10:00:00", "Mars/Olympus_Mons"),
            "time_zone",
        ),
        (
            "missing zone",
            local("2030-01-01T10:00:00", ""),
            "time_zone",
        ),
        (
            "bad local time",
            local("2030-02-30T10:00:00", "Europe/Paris"),
            "local_time",
        ),
        (
            "dst gap",
            local("2030-03-10T02:30:00", "America/New_York"),
            "does not exist",
        ),
        (
            "oversized payload",
            pb::CreateScheduleRequest {
                payload_json: big,
                ..valid.clone()
            },
            "payload_json",
        ),
        (
            "unknown gap policy",
            pb::CreateScheduleRequest {
                dst_gap_policy: 99,
                ..valid.clone()
            },
            "dst_gap_policy",
        ),
        (
            "long request id",
            pb::CreateScheduleRequest {
                request_id: "r".repeat(500),
                ..valid.clone()
            },
            "request_id",
        ),
    ];
    for (name, request, expected) in cases {
        let error = client.create_schedule(request).await.expect_err(name);
        assert_eq!(error.code(), Code::InvalidArgument, "{name}: {error:?}");
        assert!(
            error.message().contains(expected),
            "{name}: {:?} should mention {expected:?}",
            error.message()
        );
    }

    // Zones with odd offsets and DST rules resolve exactly.
    let kolkata = client
        .create_schedule(local("2030-01-01T10:00:00", "Asia/Kolkata"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        instant(&kolkata.scheduled_for).to_rfc3339(),
        "2030-01-01T04:30:00+00:00"
    );
    let mut later = local("2030-11-03T01:30:00", "America/New_York");
    later.dst_overlap_policy = pb::DstOverlapPolicy::DstOverlapLater as i32;
    let overlap = client.create_schedule(later).await.unwrap().into_inner();
    assert_eq!(
        instant(&overlap.scheduled_for).to_rfc3339(),
        "2030-11-03T06:30:00+00:00"
    );
    let earlier = client
        .create_schedule(local("2030-11-03T01:30:00", "America/New_York"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        instant(&earlier.scheduled_for).to_rfc3339(),
        "2030-11-03T05:30:00+00:00"
    );

    let not_found = client
        .get_schedule(pb::GetScheduleRequest {
            id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);
    let bad_id = client
        .get_schedule(pb::GetScheduleRequest {
            id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    let bad_status = client
        .list_schedules(pb::ListSchedulesRequest {
            statuses: vec![42],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_status.code(), Code::InvalidArgument);
    assert!(bad_status.message().contains("statuses"));
    let bad_mask = client
        .update_schedule(pb::UpdateScheduleRequest {
            id: kolkata.id.clone(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["status".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_mask.code(), Code::InvalidArgument);
    assert!(bad_mask.message().contains("update_mask"));
    let missing_recurrence = client
        .bulk_schedule(pb::BulkScheduleRequest {
            business_id: "b".into(),
            platform: "x".into(),
            content_ids: vec!["c".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing_recurrence.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_left_publishing_by_a_killed_process_is_published_again_with_the_same_key() {
    let database = Arc::new(TestDatabase::for_this_test().await);
    let receiver = Receiver::start();
    // The publisher holds the first request until the process is gone.
    receiver.delay(Duration::from_secs(30));
    let (mut process, _) = Serve::new(&database.url, &receiver.url, database.dir())
        .arg("--publisher-secret", SECRET)
        .start()
        .await
        .expect("start the punctual binary");
    let mut client = process.client().await.expect("connect to the binary");
    let post = client
        .create_schedule(post_at("biz", in_millis(300)))
        .await
        .unwrap()
        .into_inner();
    let first = receiver.wait_for(1, WAIT).await;
    // SIGKILL mid-attempt.
    process.kill().await;

    receiver.delay(Duration::ZERO);
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |_| {},
    )
    .await;
    let published = app.wait_for_status(&post.id, Status::Published).await;
    let received = app.receiver.received();
    assert_eq!(received.len(), 2, "the interrupted attempt and its replay");
    assert_eq!(first[0].header("idempotency-key"), post.id);
    assert_eq!(
        received[1].header("idempotency-key"),
        post.id,
        "same idempotency key after the restart"
    );
    assert_eq!(
        published.attempts, 1,
        "the interrupted attempt is not counted"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_beyond_the_horizon_is_read_in_and_fires_on_time() {
    // With a 2 s horizon, a post 3.5 s ahead has no timer at creation; the
    // read of the next stretch brings it in before it is due.
    let app = spawn_app_with(|config| config.lookahead_horizon = Duration::from_secs(2)).await;
    let far = app.create(post_at("biz", in_millis(3_500))).await;
    let received = app.receiver.wait_for(1, WAIT).await;
    assert_eq!(received[0].post_id(), far.id);
    let due = instant(&far.scheduled_for);
    assert!(received[0].at >= due);
    assert!(
        received[0].at < due + chrono::Duration::seconds(1),
        "fired late: {}",
        received[0].at - due
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_request_of_the_largest_size_is_saved_whole() {
    let app = spawn_app().await;
    let request = hourly_bulk(10_000);
    let response = app
        .client
        .clone()
        .bulk_schedule(request)
        .await
        .expect("bulk of 10,000")
        .into_inner();
    assert_eq!(response.schedules.len(), 10_000);
    let page = app
        .client
        .clone()
        .list_schedules(pb::ListSchedulesRequest {
            business_id: "bulk-biz".into(),
            page_size: 1,
            from_time: response.schedules[9_999].scheduled_for,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.schedules[0].id, response.schedules[9_999].id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_request_id_schedule_one_post_and_spare_the_others() {
    let app = spawn_app().await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let mut client = app.client.clone();
        let mut request = post_at("concurrent", in_millis(3_600_000));
        if i % 2 == 0 {
            request.request_id = "same-request".into();
        }
        calls.spawn(async move {
            (
                i % 2 == 0,
                client
                    .create_schedule(request)
                    .await
                    .map(|r| r.into_inner().id),
            )
        });
    }
    let mut shared = std::collections::BTreeSet::new();
    let mut others = std::collections::BTreeSet::new();
    while let Some(joined) = calls.join_next().await {
        let (same, result) = joined.unwrap();
        let id = result.expect("every create succeeds");
        if same {
            shared.insert(id);
        } else {
            others.insert(id);
        }
    }
    assert_eq!(shared.len(), 1, "one post for one request id");
    assert_eq!(others.len(), 15);
    assert_eq!(count_posts(&app, "concurrent").await, 16);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_are_read_in_pages_that_miss_and_repeat_nothing() {
    use punctual::storage::{Storage, StorageOptions};
    let app = spawn_app().await;
    let mut request = hourly_bulk(10_000);
    app.client
        .clone()
        .bulk_schedule(request.clone())
        .await
        .unwrap();
    // A second batch at the same instants: pages must break ties by id.
    request.business_id = "bulk-twin".into();
    app.client.clone().bulk_schedule(request).await.unwrap();
    let storage = Storage::connect(&app.database.url, &StorageOptions::default())
        .await
        .unwrap();
    let until = Utc::now() + chrono::Duration::days(3_000);
    let (mut after, mut seen) = (None, Vec::new());
    loop {
        let page = storage
            .pending_due_in(None, until, after, 3_000, None)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        seen.extend(page);
    }
    assert_eq!(seen.len(), 20_000);
    assert!(
        seen.windows(2)
            .all(|pair| (pair[0].due, pair[0].id) < (pair[1].due, pair[1].id)),
        "strictly increasing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_copies_sqlites_log_into_the_database_file_after_writes() {
    // On SQLite whatever the suite runs on: PostgreSQL checkpoints by
    // itself, and the task exists on SQLite only.
    let database = Arc::new(TestDatabase::sqlite().expect("a temporary SQLite database"));
    let path = std::path::PathBuf::from(
        database
            .url
            .strip_prefix("sqlite://")
            .expect("a sqlite:// URL"),
    );
    let app = start(
        database,
        Receiver::start(),
        Arc::new(punctual::clock::SystemClock),
        |_| {},
    )
    .await;
    let file_len = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
    let before = file_len(&path);
    app.client
        .clone()
        .bulk_schedule(hourly_bulk(5_000))
        .await
        .unwrap();
    // 5,000 posts are a few MiB of log, far below the 10,000 pages at which
    // the committing writer would copy the log itself.
    let deadline = tokio::time::Instant::now() + WAIT;
    while file_len(&path) < before + 1_000_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database file is still {} bytes ({before} before the posts)",
            file_len(&path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_outcomes_records_each_attempt_that_still_holds_its_claim() {
    use punctual::domain::PostId;
    use punctual::storage::{FinishedAttempt, Storage, StorageOptions};
    let app = spawn_app().await;
    let due = Utc::now() + chrono::Duration::hours(1);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let created = app.create(post_at("outcome-batch", due)).await;
        ids.push(PostId::parse("id", &created.id).unwrap());
    }
    let storage = Storage::connect(&app.database.url, &StorageOptions::default())
        .await
        .unwrap();
    let now = Utc::now();
    let mut claims = storage
        .claim_many(&ids, due + chrono::Duration::seconds(1), now)
        .await
        .unwrap();
    assert_eq!(claims.len(), 3);
    claims.sort_by_key(|claim| ids.iter().position(|id| *id == claim.post.id));
    let finished = |post: &punctual::domain::Post| FinishedAttempt {
        id: post.id,
        claimed_version: post.version,
        attempts: post.attempts,
        transition: punctual::domain::Transition::Publish,
        next_attempt_at: post.next_attempt_at,
        published_at: Some(now),
        external_id: Some(format!("ext-{}", post.id)),
        last_error: None,
        attempt_history: Vec::new(),
    };
    let published = finished(&claims[0].post);
    // Computed from an older version: someone changed the post meanwhile.
    let stale = FinishedAttempt {
        claimed_version: claims[1].post.version - 1,
        ..finished(&claims[1].post)
    };
    let retry_at = punctual::domain::truncate_to_micros(due + chrono::Duration::minutes(5));
    let retried = FinishedAttempt {
        transition: punctual::domain::Transition::Retry,
        next_attempt_at: retry_at,
        published_at: None,
        external_id: None,
        last_error: Some("HTTP 503".into()),
        ..finished(&claims[2].post)
    };
    let results = storage
        .finish_attempts(&[published, stale, retried], now)
        .await
        .unwrap();
    let statuses: Vec<_> = results
        .iter()
        .map(|result| result.as_ref().map(|post| post.status))
        .collect();
    use punctual::domain::PostStatus as S;
    assert_eq!(
        statuses,
        vec![Some(S::Published), None, Some(S::RetryScheduled)]
    );
    let stored = [
        storage.get(ids[0]).await.unwrap().unwrap(),
        storage.get(ids[1]).await.unwrap().unwrap(),
        storage.get(ids[2]).await.unwrap().unwrap(),
    ];
    assert_eq!(stored[0].status, S::Published);
    assert_eq!(stored[0].external_id, Some(format!("ext-{}", ids[0])));
    assert_eq!(stored[0].version, claims[0].post.version + 1);
    assert_eq!(
        stored[1].status,
        S::Publishing,
        "a stale outcome changes nothing"
    );
    assert_eq!(stored[1].version, claims[1].post.version);
    assert_eq!(stored[2].status, S::RetryScheduled);
    assert_eq!(stored[2].next_attempt_at, retry_at);
    assert_eq!(stored[2].last_error.as_deref(), Some("HTTP 503"));
    // An empty batch is no statement at all.
    assert!(storage.finish_attempts(&[], now).await.unwrap().is_empty());
    app.stop().await;
}
