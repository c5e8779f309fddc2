//! Picking times: posting slots, spreading posts over the week, suggestions.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{Datelike, Timelike, Utc};
use tonic::Code;

use crate::helpers::*;
use pb::scheduled_post::Status;

fn slot(weekday: pb::DayOfWeek, time: &str) -> pb::PostingSlot {
    pb::PostingSlot {
        weekday: weekday as i32,
        local_time: time.into(),
    }
}

fn every_weekday_at(times: &[&str]) -> Vec<pb::PostingSlot> {
    use pb::DayOfWeek::*;
    [Monday, Tuesday, Wednesday, Thursday, Friday]
        .into_iter()
        .flat_map(|day| times.iter().map(move |time| slot(day, time)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_take_the_next_free_slot_and_never_share_one() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let next_free = |business: &str| pb::CreateScheduleRequest {
        business_id: business.into(),
        content_id: "c".into(),
        platform: "linkedin".into(),
        when: Some(pb::create_schedule_request::When::NextFreeSlot(true)),
        ..Default::default()
    };
    let error = client
        .create_schedule(next_free("slotted"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");

    let saved = client
        .set_posting_slots(pb::SetPostingSlotsRequest {
            business_id: "slotted".into(),
            platform: "linkedin".into(),
            time_zone: "Europe/Paris".into(),
            slots: every_weekday_at(&["17:00", "09:00", "12:30"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(saved.slots.len(), 15);
    assert_eq!(
        saved.slots[0].local_time, "09:00",
        "sorted: Monday first, then by time"
    );
    let read = client
        .get_posting_slots(pb::GetPostingSlotsRequest {
            business_id: "slotted".into(),
            platform: "linkedin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, saved);

    let mut instants = BTreeSet::new();
    for _ in 0..6 {
        let post = client
            .create_schedule(next_free("slotted"))
            .await
            .unwrap()
            .into_inner();
        let time = post.local_time[11..16].to_owned();
        assert!(
            ["09:00", "12:30", "17:00"].contains(&time.as_str()),
            "{}",
            post.local_time
        );
        assert_eq!(post.time_zone, "Europe/Paris");
        assert!(
            instants.insert(instant(&post.scheduled_for)),
            "two posts in one slot"
        );
    }
    // The six slots are the first six after now, in order.
    let first = *instants.iter().next().unwrap();
    assert!(first > Utc::now());

    let bad = client
        .set_posting_slots(pb::SetPostingSlotsRequest {
            business_id: "slotted".into(),
            platform: "linkedin".into(),
            time_zone: "Europe/Paris".into(),
            slots: vec![slot(pb::DayOfWeek::Monday, "25:00")],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("slots[0]"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributing_across_the_week_spreads_posts_over_free_slots() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    client
        .set_posting_slots(pb::SetPostingSlotsRequest {
            business_id: "spread".into(),
            platform: "x".into(),
            time_zone: "America/New_York".into(),
            slots: every_weekday_at(&["09:00", "12:30", "17:00"]),
        })
        .await
        .unwrap();
    let start = (Utc::now() + chrono::Duration::days(14)).date_naive();
    // One slot is already taken by a post of the platform.
    let taken = client
        .create_schedule(pb::CreateScheduleRequest {
            business_id: "spread".into(),
            content_id: "existing".into(),
            platform: "x".into(),
            when: Some(pb::create_schedule_request::When::NextFreeSlot(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let distribute = |business: &str, count: usize| pb::BulkScheduleRequest {
        business_id: business.into(),
        platform: "x".into(),
        content_ids: (0..count).map(|i| format!("c{i}")).collect(),
        recurrence: Some(pb::Recurrence {
            pattern: pb::recurrence::Pattern::DistributeAcrossWeek as i32,
            start_date: start.format("%Y-%m-%d").to_string(),
            time_zone: "America/New_York".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spread = client
        .bulk_schedule(distribute("spread", 5))
        .await
        .unwrap()
        .into_inner();
    let days: BTreeSet<_> = spread
        .schedules
        .iter()
        .map(|p| p.local_time[..10].to_owned())
        .collect();
    assert!(days.len() >= 4, "spread over the week, got {days:?}");
    let twenty = client
        .bulk_schedule(distribute("spread", 20))
        .await
        .unwrap()
        .into_inner();
    let mut all: Vec<_> = spread
        .schedules
        .iter()
        .chain(&twenty.schedules)
        .map(|p| instant(&p.scheduled_for))
        .collect();
    all.push(instant(&taken.scheduled_for));
    let unique: BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "never two posts of one platform in one slot"
    );
    for post in spread.schedules.iter().chain(&twenty.schedules) {
        let time = &post.local_time[11..16];
        assert!(
            ["09:00", "12:30", "17:00"].contains(&time),
            "{}",
            post.local_time
        );
    }

    // Without slots: an even spread over a daily window.
    let mut windowed = distribute("no-slots", 7);
    if let Some(recurrence) = windowed.recurrence.as_mut() {
        recurrence.local_time = "10:00".into();
        recurrence.window_end = "16:00".into();
    }
    let windowed = client.bulk_schedule(windowed).await.unwrap().into_inner();
    let days: BTreeSet<_> = windowed
        .schedules
        .iter()
        .map(|p| p.local_time[..10].to_owned())
        .collect();
    assert_eq!(days.len(), 7, "one a day: {days:?}");
    for post in &windowed.schedules {
        let time = &post.local_time[11..16];
        assert!(("10:00"..="15:30").contains(&time), "{}", post.local_time);
    }

    // A start in the past is refused, as for every other pattern, instead
    // of becoming "now".
    for past in ["0001-01-01", "2020-06-01"] {
        let mut request = distribute("no-slots", 3);
        if let Some(recurrence) = request.recurrence.as_mut() {
            recurrence.start_date = past.into();
        }
        let status = client.bulk_schedule(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("recurrence.start_date: "),
            "{status:?}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_follow_the_business_own_engagement() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let now = Utc::now();
    let window = |count| pb::SuggestTimesRequest {
        business_id: "engaged".into(),
        platform: "linkedin".into(),
        count,
        from_time: Some(timestamp(now + chrono::Duration::days(6))),
        to_time: Some(timestamp(now + chrono::Duration::days(8))),
        time_zone: "UTC".into(),
    };
    let before = client.suggest_times(window(3)).await.unwrap().into_inner();
    assert_eq!(before.suggestions.len(), 3);
    assert!(
        before
            .suggestions
            .iter()
            .all(|s| !s.reason.is_empty() && (0.0..=1.0).contains(&s.score))
    );

    // Twenty posts published now do very well.
    let mut published = Vec::new();
    for _ in 0..20 {
        published.push(
            app.create(post_at_on("engaged", "linkedin", in_millis(200)))
                .await
                .id,
        );
    }
    let mut hours = BTreeSet::new();
    for id in &published {
        let post = app.wait_for_status(id, Status::Published).await;
        let at = instant(&post.published_at);
        hours.insert((at.weekday().num_days_from_monday(), at.hour()));
        client
            .record_engagement(pb::RecordEngagementRequest {
                post_id: id.clone(),
                impressions: 100,
                clicks: 40,
                reactions: 30,
            })
            .await
            .unwrap();
    }
    let after = client.suggest_times(window(3)).await.unwrap().into_inner();
    let best = instant(&after.suggestions[0].time);
    assert!(
        hours.contains(&(best.weekday().num_days_from_monday(), best.hour())),
        "best {best} should be in the engaged hour {hours:?}"
    );
    assert!(
        after.suggestions[0].reason.contains("your posts"),
        "{}",
        after.suggestions[0].reason
    );

    let unpublished = app
        .create(post_at_on("engaged", "linkedin", in_millis(3_600_000)))
        .await;
    let error = client
        .record_engagement(pb::RecordEngagementRequest {
            post_id: unpublished.id,
            impressions: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    let error = client
        .record_engagement(pb::RecordEngagementRequest {
            post_id: published[0].clone(),
            clicks: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.stop().await;
}

fn post_at_on(
    business: &str,
    platform: &str,
    at: chrono::DateTime<Utc>,
) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        platform: platform.into(),
        ..post_at(business, at)
    }
}
