//! Steering the queue: dead letters, pauses, rate limits, queue health and
//! the calendar.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use crate::helpers::*;
use pb::scheduled_post::Status;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_its_history_and_requeues_with_the_same_key() {
    let app = spawn_app().await;
    app.receiver.script(&[500, 503, 502]);
    let post = app.create(post_at("dl-biz", in_millis(200))).await;
    let dead = app.wait_for_status(&post.id, Status::DeadLettered).await;
    let history: Vec<_> = dead
        .attempt_history
        .iter()
        .map(|a| (a.attempt, a.http_status, a.outcome.clone()))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, 500, "retry".to_owned()),
            (2, 503, "retry".to_owned()),
            (3, 502, "gave_up".to_owned())
        ]
    );
    assert!(
        dead.attempt_history
            .iter()
            .all(|a| a.started_time.is_some() && !a.error.is_empty())
    );

    let mut client = app.client.clone();
    let listed = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            business_id: "dl-biz".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.schedules.len(), 1);
    assert_eq!(listed.schedules[0].attempt_history.len(), 3);

    let requeued = client
        .requeue_dead_letter(pb::RequeueDeadLetterRequest {
            id: post.id.clone(),
            now: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(requeued.status, Status::Scheduled as i32);
    let published = app.wait_for_status(&post.id, Status::Published).await;
    let received = app.receiver.received();
    assert_eq!(received.len(), 4);
    assert_eq!(
        received[3].header("idempotency-key"),
        post.id,
        "same idempotency key after requeue"
    );
    assert_eq!(published.attempt_history.len(), 4);
    assert_eq!(published.attempt_history[3].outcome, "published");

    // Only dead letters can be requeued or discarded.
    let error = client
        .discard_dead_letter(pb::DiscardDeadLetterRequest {
            id: post.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);

    app.receiver.always(400);
    let rejected = app.create(post_at("dl-biz", in_millis(200))).await;
    app.wait_for_status(&rejected.id, Status::DeadLettered)
        .await;
    let discarded = client
        .discard_dead_letter(pb::DiscardDeadLetterRequest {
            id: rejected.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(discarded.status, Status::Discarded as i32);
    let listed = client
        .list_dead_letters(pb::ListDeadLettersRequest {
            business_id: "dl-biz".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.schedules.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_after_a_pause_returns_until_resumed() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    // An attempt under way when the pause comes: the pause waits for it.
    app.receiver.delay(Duration::from_millis(800));
    let in_flight = app.create(post_at("paused", in_millis(100))).await;
    app.receiver.wait_for(1, WAIT).await;
    let due_during_pause = app.create(post_at("paused", in_millis(300))).await;
    let other_business = app.create(post_at("free", in_millis(300))).await;
    client
        .pause_queue(pb::PauseQueueRequest {
            business_id: "paused".into(),
            platform: String::new(),
        })
        .await
        .unwrap();
    let paused_requests = |app: &TestApp| {
        app.receiver
            .received()
            .iter()
            .filter(|r| r.body["business_id"] == "paused")
            .count()
    };
    let at_pause = paused_requests(&app);
    assert_eq!(
        app.get(&in_flight.id).await.status,
        Status::Published as i32,
        "the pause waited for the attempt under way"
    );

    app.receiver.delay(Duration::ZERO);
    app.wait_for_status(&other_business.id, Status::Published)
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        paused_requests(&app),
        at_pause,
        "nothing of a paused business is published"
    );
    assert_eq!(
        app.get(&due_during_pause.id).await.status,
        Status::Scheduled as i32
    );

    // The pause survives a restart.
    let (database, receiver) = app.stop().await;
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |_| {},
    )
    .await;
    let mut client = app.client.clone();
    let pauses = client
        .list_pauses(pb::ListPausesRequest {
            business_id: "paused".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pauses.pauses.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.get(&due_during_pause.id).await.status,
        Status::Scheduled as i32
    );

    let resumed = client
        .resume_queue(pb::ResumeQueueRequest {
            business_id: "paused".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.missed, 1);
    app.wait_for_status(&due_during_pause.id, Status::Published)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_can_hold_missed_posts_for_review_or_skip_them() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    for platform in ["instagram", "x"] {
        client
            .pause_queue(pb::PauseQueueRequest {
                business_id: "b".into(),
                platform: platform.into(),
            })
            .await
            .unwrap();
    }
    let mut on_x = post_at("b", in_millis(200));
    on_x.platform = "x".into();
    let on_x = app.create(on_x).await;
    let on_instagram = app.create(post_at("b", in_millis(200))).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    use pb::resume_queue_request::MissedPolicy;
    client
        .resume_queue(pb::ResumeQueueRequest {
            business_id: "b".into(),
            platform: "x".into(),
            missed_policy: MissedPolicy::KeepForReview as i32,
        })
        .await
        .unwrap();
    let held = app.get(&on_x.id).await;
    assert_eq!(held.status, Status::DeadLettered as i32);
    assert!(held.last_error.contains("paused"), "{}", held.last_error);
    // Instagram is still paused.
    assert_eq!(
        app.get(&on_instagram.id).await.status,
        Status::Scheduled as i32
    );
    client
        .resume_queue(pb::ResumeQueueRequest {
            business_id: "b".into(),
            platform: "instagram".into(),
            missed_policy: MissedPolicy::Skip as i32,
        })
        .await
        .unwrap();
    assert_eq!(
        app.get(&on_instagram.id).await.status,
        Status::Cancelled as i32
    );
    assert!(app.receiver.received().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_rate_limit_is_smoothed_in_instant_order() {
    let app = spawn_app_with(|config| {
        config.rate_limits = vec![(
            "x".into(),
            punctual::engine::limits::RateLimit::parse("2/1500ms").unwrap(),
        )];
    })
    .await;
    let due = in_millis(500);
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut request = post_at("limited", due + chrono::Duration::milliseconds(i));
        request.platform = "x".into();
        ids.push(app.create(request).await.id);
    }
    let received = app.receiver.wait_for(5, WAIT).await;
    // Two per window, the earlier instants first.
    let offset = |id: &str| {
        let request = received.iter().find(|r| r.post_id() == id).unwrap();
        (request.at - due).num_milliseconds()
    };
    let offsets: Vec<i64> = ids.iter().map(|id| offset(id)).collect();
    assert!(offsets[0] < 1_000 && offsets[1] < 1_000, "{offsets:?}");
    assert!(
        (1_490..2_900).contains(&offsets[2]) && (1_490..2_900).contains(&offsets[3]),
        "{offsets:?}"
    );
    assert!(offsets[4] >= 2_990, "{offsets:?}");
    assert!(
        app.receiver
            .received()
            .iter()
            .all(|r| r.header("x-punctual-attempt") == "1")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_count_by_status_and_record_punctuality() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let first = app.create(post_at("stats", in_millis(200))).await;
    app.create(post_at("stats", in_millis(3_600_000))).await;
    let cancelled = app.create(post_at("stats", in_millis(3_600_000))).await;
    client
        .cancel_schedule(pb::CancelScheduleRequest {
            id: cancelled.id,
            expected_version: None,
        })
        .await
        .unwrap();
    app.create(post_at("someone-else", in_millis(3_600_000)))
        .await;
    app.wait_for_status(&first.id, Status::Published).await;

    let stats = client
        .get_queue_stats(pb::GetQueueStatsRequest {
            business_id: "stats".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let count = |status: Status| {
        stats
            .counts
            .iter()
            .find(|c| c.status == status as i32)
            .map_or(0, |c| c.count)
    };
    assert_eq!(
        (
            count(Status::Scheduled),
            count(Status::Published),
            count(Status::Cancelled)
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.overdue, 0);
    assert!(stats.next_due_time.is_some());
    let hour = stats.last_hour.unwrap();
    assert_eq!(hour.fires, 1);
    assert_eq!(hour.within_one_second, 1.0);
    assert!(hour.p99_lateness_ms <= 1_000.0);

    // Counts survive a restart (seeded from the database).
    let (database, receiver) = app.stop().await;
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |_| {},
    )
    .await;
    let all = app
        .client
        .clone()
        .get_queue_stats(pb::GetQueueStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let scheduled = all
        .counts
        .iter()
        .find(|c| c.status == Status::Scheduled as i32)
        .unwrap()
        .count;
    assert_eq!(scheduled, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_places_posts_on_their_local_days() {
    use pb::create_schedule_request::When;
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let local =
        |business: &str, time: &str, zone: &str, platform: &str| pb::CreateScheduleRequest {
            business_id: business.into(),
            content_id: "c".into(),
            platform: platform.into(),
            when: Some(When::LocalTime(time.into())),
            time_zone: zone.into(),
            ..Default::default()
        };
    // Paris falls back on 2027-10-31: 23:30 on the 30th and 31st still belong to those days.
    for (time, platform) in [
        ("2027-10-30T23:30:00", "x"),
        ("2027-10-31T23:30:00", "instagram"),
        ("2027-10-31T09:00:00", "x"),
        ("2027-10-01T00:00:00", "x"),
    ] {
        client
            .create_schedule(local("cal", time, "Europe/Paris", platform))
            .await
            .unwrap();
    }
    let calendar = client
        .get_calendar(pb::GetCalendarRequest {
            business_id: "cal".into(),
            year: 2027,
            month: 10,
            time_zone: "Europe/Paris".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(calendar.first_date, "2027-09-27");
    assert_eq!(calendar.last_date, "2027-10-31");
    let days: Vec<_> = calendar.weeks.iter().flat_map(|w| w.days.clone()).collect();
    assert_eq!(days.len() % 7, 0);
    let day = |date: &str| days.iter().find(|d| d.date == date).unwrap().clone();
    let times = |date: &str| {
        day(date)
            .entries
            .iter()
            .map(|e| (e.local_time.clone(), e.platform.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        times("2027-10-30"),
        vec![("23:30".to_owned(), "x".to_owned())]
    );
    assert_eq!(
        times("2027-10-31"),
        vec![
            ("09:00".to_owned(), "x".to_owned()),
            ("23:30".to_owned(), "instagram".to_owned())
        ]
    );
    assert_eq!(
        times("2027-10-01"),
        vec![("00:00".to_owned(), "x".to_owned())]
    );
    assert!(!day("2027-09-30").in_month && day("2027-10-01").in_month);

    // Kathmandu (+05:45): a post at 23:50 local stays on its day in a week view.
    client
        .create_schedule(local("ktm", "2027-01-05T23:50:00", "Asia/Kathmandu", "x"))
        .await
        .unwrap();
    let week = client
        .get_calendar(pb::GetCalendarRequest {
            business_id: "ktm".into(),
            time_zone: "Asia/Kathmandu".into(),
            view: pb::get_calendar_request::View::Week as i32,
            start_date: "2027-01-04".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let days: Vec<_> = week.weeks.iter().flat_map(|w| w.days.clone()).collect();
    assert_eq!(days.len(), 7);
    assert_eq!(days[1].date, "2027-01-05");
    assert_eq!(days[1].entries[0].local_time, "23:50");

    let error = client
        .get_calendar(pb::GetCalendarRequest {
            business_id: "cal".into(),
            year: 2027,
            month: 13,
            time_zone: "Europe/Paris".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_held_by_a_pause_is_not_dead_lettered_as_missed() {
    let app = spawn_app().await;
    app.client
        .clone()
        .pause_queue(pb::PauseQueueRequest {
            business_id: "held".into(),
            platform: String::new(),
        })
        .await
        .unwrap();
    let post = app.create(post_at("held", in_millis(200))).await;
    let (database, receiver) = app.stop().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let app = start(
        database,
        receiver,
        Arc::new(punctual::clock::SystemClock),
        |config| {
            config.missed_fire_window = Duration::from_secs(1);
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.get(&post.id).await.status,
        Status::Scheduled as i32,
        "the pause, not the missed-fire window, decides"
    );
    app.client
        .clone()
        .resume_queue(pb::ResumeQueueRequest {
            business_id: "held".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.wait_for_status(&post.id, Status::Published).await;
    app.stop().await;
}
