//! Conversions between protobuf messages and domain or request types.
//! Malformed wire values become field errors naming the field.

use chrono::{DateTime, Utc};

use super::pb;
use crate::domain::calendar::CalendarView;
use crate::domain::slots::WeeklySlot;
use crate::domain::suggest::Suggestion;
use crate::domain::time::{DstPolicy, GapPolicy, OverlapPolicy, format_local};
use crate::domain::{FieldError, Labels, Post, PostStatus, PostView};
use crate::events::{EventKind, PostEvent};
use crate::scheduler::{
    Calendar, CalendarRequest, MissedPolicy, PatternKind, QueueStats, SchedulerError, SlotsView,
};
use crate::stats::OnTime;
use crate::storage::PauseRecord;

pub type ConvertResult<T> = Result<T, SchedulerError>;

fn invalid(field: &str, message: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidArgument(FieldError::new(field, message))
}

pub fn timestamp_to_datetime(
    field: &str,
    timestamp: &prost_types::Timestamp,
) -> ConvertResult<DateTime<Utc>> {
    pb::instant(timestamp).ok_or_else(|| {
        if (0..1_000_000_000).contains(&timestamp.nanos) {
            invalid(field, "is out of the supported range")
        } else {
            invalid(field, "nanos must be between 0 and 999,999,999")
        }
    })
}

pub fn optional_timestamp(
    field: &str,
    timestamp: Option<&prost_types::Timestamp>,
) -> ConvertResult<Option<DateTime<Utc>>> {
    timestamp
        .map(|ts| timestamp_to_datetime(field, ts))
        .transpose()
}

/// The view a request asked for, or `default` when it named none.
pub fn view_from_proto(value: i32, default: PostView) -> ConvertResult<PostView> {
    match pb::ScheduleView::try_from(value) {
        Ok(pb::ScheduleView::Unspecified) => Ok(default),
        Ok(pb::ScheduleView::Summary) => Ok(PostView::Summary),
        Ok(pb::ScheduleView::Basic) => Ok(PostView::Basic),
        Ok(pb::ScheduleView::Full) => Ok(PostView::Full),
        Err(_) => Err(invalid(
            "view",
            format!(
                "unknown view {value}; use SCHEDULE_VIEW_SUMMARY, SCHEDULE_VIEW_BASIC or SCHEDULE_VIEW_FULL"
            ),
        )),
    }
}

/// Labels as the request types take them.
pub fn labels_from_proto(
    labels: std::collections::HashMap<String, String>,
) -> Vec<(String, String)> {
    labels.into_iter().collect()
}

fn labels_to_proto(labels: &Labels) -> std::collections::HashMap<String, String> {
    labels
        .iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

pub fn dst_policy(gap: i32, overlap: i32) -> ConvertResult<DstPolicy> {
    let gap = match pb::DstGapPolicy::try_from(gap) {
        Ok(pb::DstGapPolicy::Unspecified | pb::DstGapPolicy::DstGapReject) => GapPolicy::Reject,
        Ok(pb::DstGapPolicy::DstGapShiftForward) => GapPolicy::ShiftForward,
        Err(_) => return Err(invalid("dst_gap_policy", format!("unknown value {gap}"))),
    };
    let overlap = match pb::DstOverlapPolicy::try_from(overlap) {
        Ok(pb::DstOverlapPolicy::Unspecified | pb::DstOverlapPolicy::DstOverlapEarlier) => {
            OverlapPolicy::Earlier
        }
        Ok(pb::DstOverlapPolicy::DstOverlapLater) => OverlapPolicy::Later,
        Err(_) => {
            return Err(invalid(
                "dst_overlap_policy",
                format!("unknown value {overlap}"),
            ));
        }
    };
    Ok(DstPolicy { gap, overlap })
}

pub fn status_from_proto(field: &str, value: i32) -> ConvertResult<PostStatus> {
    use pb::scheduled_post::Status;
    match Status::try_from(value) {
        Ok(Status::Scheduled) => Ok(PostStatus::Scheduled),
        Ok(Status::Publishing) => Ok(PostStatus::Publishing),
        Ok(Status::Published) => Ok(PostStatus::Published),
        Ok(Status::RetryScheduled) => Ok(PostStatus::RetryScheduled),
        Ok(Status::DeadLettered) => Ok(PostStatus::DeadLettered),
        Ok(Status::Cancelled) => Ok(PostStatus::Cancelled),
        Ok(Status::Discarded) => Ok(PostStatus::Discarded),
        Ok(Status::Unspecified) | Err(_) => Err(invalid(
            field,
            format!(
                "unknown status {value}; use SCHEDULED, PUBLISHING, PUBLISHED, RETRY_SCHEDULED, DEAD_LETTERED, CANCELLED or DISCARDED"
            ),
        )),
    }
}

fn status_to_proto(status: PostStatus) -> pb::scheduled_post::Status {
    use pb::scheduled_post::Status;
    match status {
        PostStatus::Scheduled => Status::Scheduled,
        PostStatus::Publishing => Status::Publishing,
        PostStatus::Published => Status::Published,
        PostStatus::RetryScheduled => Status::RetryScheduled,
        PostStatus::DeadLettered => Status::DeadLettered,
        PostStatus::Cancelled => Status::Cancelled,
        PostStatus::Discarded => Status::Discarded,
    }
}

pub fn pattern_from_proto(value: i32) -> ConvertResult<Option<PatternKind>> {
    use pb::recurrence::Pattern;
    match Pattern::try_from(value) {
        Ok(Pattern::Unspecified) => Ok(None),
        Ok(Pattern::Daily) => Ok(Some(PatternKind::Daily)),
        Ok(Pattern::Weekdays) => Ok(Some(PatternKind::Weekdays)),
        Ok(Pattern::Weekly) => Ok(Some(PatternKind::Weekly)),
        Ok(Pattern::EveryNHours) => Ok(Some(PatternKind::EveryNHours)),
        Ok(Pattern::DistributeAcrossWeek) => Ok(Some(PatternKind::DistributeAcrossWeek)),
        Err(_) => Err(invalid(
            "recurrence.pattern",
            format!("unknown pattern {value}"),
        )),
    }
}

pub fn weekday_from_proto(index: usize, value: i32) -> ConvertResult<chrono::Weekday> {
    use chrono::Weekday as W;
    match pb::DayOfWeek::try_from(value) {
        Ok(pb::DayOfWeek::Monday) => Ok(W::Mon),
        Ok(pb::DayOfWeek::Tuesday) => Ok(W::Tue),
        Ok(pb::DayOfWeek::Wednesday) => Ok(W::Wed),
        Ok(pb::DayOfWeek::Thursday) => Ok(W::Thu),
        Ok(pb::DayOfWeek::Friday) => Ok(W::Fri),
        Ok(pb::DayOfWeek::Saturday) => Ok(W::Sat),
        Ok(pb::DayOfWeek::Sunday) => Ok(W::Sun),
        Ok(pb::DayOfWeek::Unspecified) | Err(_) => Err(invalid(
            &format!("recurrence.weekdays[{index}]"),
            format!("unknown weekday {value}; use MONDAY to SUNDAY"),
        )),
    }
}

fn weekday_to_proto(day: chrono::Weekday) -> pb::DayOfWeek {
    use chrono::Weekday as W;
    match day {
        W::Mon => pb::DayOfWeek::Monday,
        W::Tue => pb::DayOfWeek::Tuesday,
        W::Wed => pb::DayOfWeek::Wednesday,
        W::Thu => pb::DayOfWeek::Thursday,
        W::Fri => pb::DayOfWeek::Friday,
        W::Sat => pb::DayOfWeek::Saturday,
        W::Sun => pb::DayOfWeek::Sunday,
    }
}

pub fn calendar_request(request: pb::GetCalendarRequest) -> ConvertResult<CalendarRequest> {
    use pb::get_calendar_request::View;
    let week_start = match request.week_start {
        0 => chrono::Weekday::Mon,
        value => weekday_from_proto(0, value)
            .map_err(|_| invalid("week_start", format!("unknown weekday {value}")))?,
    };
    let view = match View::try_from(request.view) {
        Ok(View::Unspecified | View::Month) => CalendarView::Month {
            year: request.year,
            month: u32::try_from(request.month).unwrap_or(0),
        },
        Ok(View::Week) => CalendarView::Week {
            start: crate::domain::time::parse_local_date(&request.start_date)
                .map_err(|error| error.for_field("start_date"))?,
        },
        Err(_) => return Err(invalid("view", format!("unknown view {}", request.view))),
    };
    Ok(CalendarRequest {
        business_id: request.business_id,
        view,
        time_zone: request.time_zone,
        week_start,
    })
}

pub fn calendar_to_proto(calendar: &Calendar) -> pb::Calendar {
    let date = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let days = || calendar.weeks.iter().flatten();
    pb::Calendar {
        time_zone: calendar.zone.name().to_owned(),
        first_date: days().next().map(|day| date(day.date)).unwrap_or_default(),
        last_date: days().last().map(|day| date(day.date)).unwrap_or_default(),
        weeks: calendar
            .weeks
            .iter()
            .map(|week| pb::CalendarWeek {
                days: week
                    .iter()
                    .map(|day| pb::CalendarDay {
                        date: date(day.date),
                        weekday: weekday_to_proto(chrono::Datelike::weekday(&day.date)) as i32,
                        in_month: day.in_month,
                        is_today: day.is_today,
                        entries: day
                            .entries
                            .iter()
                            .map(|entry| pb::CalendarEntry {
                                id: entry.post.id.to_string(),
                                local_time: entry.local_time.clone(),
                                platform: entry.post.platform.clone(),
                                status: status_to_proto(entry.post.status) as i32,
                                content_id: entry.post.content_id.clone(),
                                scheduled_for: Some(pb::timestamp(entry.post.scheduled_for)),
                                labels: labels_to_proto(&entry.post.labels),
                                version: entry.post.version,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn on_time_to_proto(record: &OnTime) -> pb::OnTimeRecord {
    pb::OnTimeRecord {
        fires: i64::try_from(record.fires).unwrap_or(i64::MAX),
        p50_lateness_ms: record.p50_ms,
        p99_lateness_ms: record.p99_ms,
        within_one_second: record.within_one_second,
    }
}

pub fn queue_stats_to_proto(stats: &QueueStats) -> pb::QueueStats {
    pb::QueueStats {
        counts: stats
            .snapshot
            .counts
            .iter()
            .map(|(status, count)| pb::StatusCount {
                status: status_to_proto(*status) as i32,
                count: *count,
            })
            .collect(),
        next_due_time: stats.next_due.map(pb::timestamp),
        overdue: stats.overdue,
        last_hour: Some(on_time_to_proto(&stats.snapshot.last_hour)),
        last_day: Some(on_time_to_proto(&stats.snapshot.last_day)),
    }
}

pub fn pause_to_proto(pause: &PauseRecord) -> pb::QueuePause {
    pb::QueuePause {
        business_id: pause.business_id.clone(),
        platform: pause.platform.clone().unwrap_or_default(),
        pause_time: Some(pb::timestamp(pause.paused_at)),
    }
}

pub fn missed_policy(value: i32) -> ConvertResult<MissedPolicy> {
    use pb::resume_queue_request::MissedPolicy as Policy;
    match Policy::try_from(value) {
        Ok(Policy::Unspecified | Policy::PublishNow) => Ok(MissedPolicy::PublishNow),
        Ok(Policy::KeepForReview) => Ok(MissedPolicy::KeepForReview),
        Ok(Policy::Skip) => Ok(MissedPolicy::Skip),
        Err(_) => Err(invalid("missed_policy", format!("unknown policy {value}"))),
    }
}

pub fn slot_from_proto(index: usize, slot: &pb::PostingSlot) -> ConvertResult<WeeklySlot> {
    let field = format!("slots[{index}]");
    let weekday = weekday_from_proto(index, slot.weekday)
        .map_err(|_| invalid(&field, format!("unknown weekday {}", slot.weekday)))?;
    let time = crate::domain::time::parse_time_of_day(&slot.local_time)
        .map_err(|error| error.for_field(field))?;
    Ok(WeeklySlot { weekday, time })
}

pub fn slots_to_proto(view: &SlotsView) -> pb::PostingSlots {
    pb::PostingSlots {
        business_id: view.business_id.clone(),
        platform: view.platform.clone(),
        time_zone: view.schedule.zone().name().to_owned(),
        slots: view
            .schedule
            .slots()
            .iter()
            .map(|slot| pb::PostingSlot {
                weekday: weekday_to_proto(slot.weekday) as i32,
                local_time: slot.time.format("%H:%M").to_string(),
            })
            .collect(),
    }
}

pub fn suggestion_to_proto(
    suggestion: &Suggestion,
    zone: crate::domain::time::TimeZone,
) -> pb::SuggestedTime {
    pb::SuggestedTime {
        time: Some(pb::timestamp(suggestion.instant)),
        local_time: format_local(suggestion.instant, zone),
        score: suggestion.score,
        reason: suggestion.reason.clone(),
    }
}

/// Takes the post by value: its strings move into the message (a bulk
/// response carries thousands of posts). `view` leaves out what it does
/// not carry.
pub fn post_to_proto(post: Post, view: PostView) -> pb::ScheduledPost {
    let summary = pb::ScheduledPost {
        id: post.id.to_string(),
        local_time: format_local(post.scheduled_for, post.time_zone),
        time_zone: post.time_zone.name().to_owned(),
        content_id: post.content_id,
        scheduled_for: Some(pb::timestamp(post.scheduled_for)),
        status: status_to_proto(post.status) as i32,
        version: post.version,
        ..pb::ScheduledPost::default()
    };
    if view == PostView::Summary {
        return summary;
    }
    let full = view == PostView::Full;
    pb::ScheduledPost {
        business_id: post.business_id,
        platform: post.platform,
        payload_json: if full {
            post.payload.as_str().to_owned()
        } else {
            String::new()
        },
        labels: labels_to_proto(&post.labels),
        attempts: i32::try_from(post.attempts).unwrap_or(i32::MAX),
        last_error: post.last_error.unwrap_or_default(),
        published_at: post.published_at.map(pb::timestamp),
        external_id: post.external_id.unwrap_or_default(),
        create_time: Some(pb::timestamp(post.create_time)),
        update_time: Some(pb::timestamp(post.update_time)),
        next_attempt_time: Some(pb::timestamp(post.next_attempt_at)),
        attempt_history: if full {
            post.attempt_history
        } else {
            Vec::new()
        }
        .into_iter()
        .map(|record| pb::PublishAttempt {
            attempt: i32::try_from(record.attempt).unwrap_or(i32::MAX),
            started_time: Some(pb::timestamp(record.started_at)),
            latency_ms: i64::try_from(record.latency_ms).unwrap_or(i64::MAX),
            http_status: record.http_status.map(i32::from).unwrap_or(0),
            outcome: record.outcome.as_str().to_owned(),
            error: record.error.unwrap_or_default(),
        })
        .collect(),
        ..summary
    }
}

/// A post computed by a dry run has no identity or state yet.
pub fn planned_post_to_proto(post: Post, view: PostView) -> pb::ScheduledPost {
    pb::ScheduledPost {
        id: String::new(),
        status: pb::scheduled_post::Status::Unspecified as i32,
        version: 0,
        create_time: None,
        update_time: None,
        ..post_to_proto(post, view)
    }
}

pub fn event_to_proto(event: &PostEvent, view: PostView) -> pb::ScheduleEvent {
    use pb::schedule_event::Type;
    let kind = match event.kind {
        EventKind::Scheduled => Type::Scheduled,
        EventKind::Updated => Type::Updated,
        EventKind::Cancelled => Type::Cancelled,
        EventKind::Publishing => Type::Publishing,
        EventKind::Published => Type::Published,
        EventKind::RetryScheduled => Type::RetryScheduled,
        EventKind::DeadLettered => Type::DeadLettered,
        EventKind::Discarded => Type::Discarded,
    };
    pb::ScheduleEvent {
        r#type: kind as i32,
        schedule: Some(post_to_proto(event.post.clone(), view)),
        event_time: Some(pb::timestamp(event.at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_timestamps_name_the_field() {
        let error = timestamp_to_datetime(
            "scheduled_for",
            &prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            },
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("scheduled_for:"), "{error}");
        assert!(
            timestamp_to_datetime(
                "scheduled_for",
                &prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0
                }
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_enum_values_are_refused() {
        assert!(dst_policy(9, 0).is_err());
        assert!(dst_policy(0, 9).is_err());
        assert!(status_from_proto("statuses[0]", 42).is_err());
        assert!(pattern_from_proto(42).is_err());
        assert!(weekday_from_proto(0, 0).is_err());
    }
}
