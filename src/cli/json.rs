//! The JSON form of every response (`--output json`). prost messages do not
//! implement `Serialize`, so each message has an explicit conversion here:
//! fields keep their proto names, enums are written by name (`"SCHEDULED"`;
//! the number if unknown), timestamps as RFC 3339 UTC strings (`null` when
//! absent), and payloads as the JSON text the server holds
//! (`payload_json`), never re-encoded.

use chrono::SecondsFormat;
use serde_json::{Value, json};

use super::time::from_timestamp;
use crate::grpc::pb;

/// An RFC 3339 UTC string, or `null` when absent or malformed.
pub fn timestamp(timestamp: Option<&prost_types::Timestamp>) -> Value {
    timestamp
        .and_then(from_timestamp)
        .map(|instant| Value::String(instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
        .unwrap_or(Value::Null)
}

/// An enum by its proto name, or its number when the name is unknown.
fn enum_value(name: Option<&'static str>, number: i32) -> Value {
    name.map_or_else(|| json!(number), |name| json!(name))
}

/// `SCHEDULED`, `PUBLISHED`, …
pub fn status_name(status: i32) -> Option<&'static str> {
    pb::scheduled_post::Status::try_from(status)
        .ok()
        .map(|status| status.as_str_name())
}

/// `MONDAY`, `TUESDAY`, …
pub fn weekday_name(weekday: i32) -> Option<&'static str> {
    pb::DayOfWeek::try_from(weekday)
        .ok()
        .map(|weekday| weekday.as_str_name())
}

/// `SCHEDULED`, `UPDATED`, … (of a watch event).
pub fn event_type_name(kind: i32) -> Option<&'static str> {
    pb::schedule_event::Type::try_from(kind)
        .ok()
        .map(|kind| kind.as_str_name())
}

pub fn status(status: i32) -> Value {
    enum_value(status_name(status), status)
}

pub fn weekday(weekday: i32) -> Value {
    enum_value(weekday_name(weekday), weekday)
}

pub fn post(post: &pb::ScheduledPost) -> Value {
    json!({
        "id": post.id,
        "business_id": post.business_id,
        "content_id": post.content_id,
        "platform": post.platform,
        // Text, exactly as the server holds it: parsing it here would turn
        // large integers into doubles.
        "payload_json": post.payload_json,
        "labels": post.labels,
        "scheduled_for": timestamp(post.scheduled_for.as_ref()),
        "time_zone": post.time_zone,
        "local_time": post.local_time,
        "status": status(post.status),
        "attempts": post.attempts,
        "last_error": post.last_error,
        "published_at": timestamp(post.published_at.as_ref()),
        "external_id": post.external_id,
        "version": post.version,
        "create_time": timestamp(post.create_time.as_ref()),
        "update_time": timestamp(post.update_time.as_ref()),
        "next_attempt_time": timestamp(post.next_attempt_time.as_ref()),
        "attempt_history": post.attempt_history.iter().map(attempt).collect::<Vec<_>>(),
    })
}

pub fn posts(posts: &[pb::ScheduledPost]) -> Value {
    Value::Array(posts.iter().map(post).collect())
}

pub fn attempt(attempt: &pb::PublishAttempt) -> Value {
    json!({
        "attempt": attempt.attempt,
        "started_time": timestamp(attempt.started_time.as_ref()),
        "latency_ms": attempt.latency_ms,
        "http_status": attempt.http_status,
        "outcome": attempt.outcome,
        "error": attempt.error,
    })
}

pub fn event(event: &pb::ScheduleEvent) -> Value {
    json!({
        "type": enum_value(event_type_name(event.r#type), event.r#type),
        "schedule": event.schedule.as_ref().map_or(Value::Null, post),
        "event_time": timestamp(event.event_time.as_ref()),
    })
}

pub fn calendar(calendar: &pb::Calendar) -> Value {
    let entry = |entry: &pb::CalendarEntry| {
        json!({
            "id": entry.id,
            "local_time": entry.local_time,
            "platform": entry.platform,
            "status": status(entry.status),
            "content_id": entry.content_id,
            "scheduled_for": timestamp(entry.scheduled_for.as_ref()),
        })
    };
    let day = |day: &pb::CalendarDay| {
        json!({
            "date": day.date,
            "weekday": weekday(day.weekday),
            "in_month": day.in_month,
            "is_today": day.is_today,
            "entries": day.entries.iter().map(entry).collect::<Vec<_>>(),
        })
    };
    json!({
        "time_zone": calendar.time_zone,
        "first_date": calendar.first_date,
        "last_date": calendar.last_date,
        "weeks": calendar
            .weeks
            .iter()
            .map(|week| json!({ "days": week.days.iter().map(day).collect::<Vec<_>>() }))
            .collect::<Vec<_>>(),
    })
}

pub fn queue_stats(stats: &pb::QueueStats) -> Value {
    let record = |record: Option<&pb::OnTimeRecord>| {
        record.map_or(Value::Null, |record| {
            json!({
                "fires": record.fires,
                "p50_lateness_ms": record.p50_lateness_ms,
                "p99_lateness_ms": record.p99_lateness_ms,
                "within_one_second": record.within_one_second,
            })
        })
    };
    json!({
        "counts": stats
            .counts
            .iter()
            .map(|count| json!({ "status": status(count.status), "count": count.count }))
            .collect::<Vec<_>>(),
        "next_due_time": timestamp(stats.next_due_time.as_ref()),
        "overdue": stats.overdue,
        "last_hour": record(stats.last_hour.as_ref()),
        "last_day": record(stats.last_day.as_ref()),
    })
}

pub fn pause(pause: &pb::QueuePause) -> Value {
    json!({
        "business_id": pause.business_id,
        "platform": pause.platform,
        "pause_time": timestamp(pause.pause_time.as_ref()),
    })
}

pub fn posting_slots(slots: &pb::PostingSlots) -> Value {
    json!({
        "business_id": slots.business_id,
        "platform": slots.platform,
        "time_zone": slots.time_zone,
        "slots": slots
            .slots
            .iter()
            .map(|slot| json!({ "weekday": weekday(slot.weekday), "local_time": slot.local_time }))
            .collect::<Vec<_>>(),
    })
}

pub fn suggestions(response: &pb::SuggestTimesResponse) -> Value {
    json!({
        "suggestions": response
            .suggestions
            .iter()
            .map(|suggestion| {
                json!({
                    "time": timestamp(suggestion.time.as_ref()),
                    "local_time": suggestion.local_time,
                    "score": suggestion.score,
                    "reason": suggestion.reason,
                })
            })
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_use_proto_names_and_rfc3339() {
        let post = pb::ScheduledPost {
            id: "p1".into(),
            status: pb::scheduled_post::Status::DeadLettered as i32,
            scheduled_for: Some(prost_types::Timestamp {
                seconds: 1_760_529_600,
                nanos: 0,
            }),
            attempt_history: vec![pb::PublishAttempt {
                attempt: 1,
                outcome: "gave_up".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let value = super::post(&post);
        assert_eq!(value["status"], "DEAD_LETTERED");
        assert_eq!(value["scheduled_for"], "2025-10-15T12:00:00Z");
        assert_eq!(value["published_at"], Value::Null);
        assert_eq!(value["attempt_history"][0]["outcome"], "gave_up");
        // Unknown enum numbers survive as numbers.
        assert_eq!(status(42), json!(42));
        // The text form parses back.
        let text = format!("{value:#}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }
}
