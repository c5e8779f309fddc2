//! The JSON form of every response (`--output json`): protobuf's JSON
//! mapping (what grpcurl prints), driven by the API's descriptor set rather
//! than written out per message. Fields keep their proto names
//! (`business_id`), enums are written by name (`"SCHEDULED"`), timestamps
//! as RFC 3339 UTC strings, 64-bit integers as numbers; fields that hold
//! their default value are left out, as grpcurl leaves them out. Payloads
//! are the JSON text the server holds (`payload_json`), never re-encoded.

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::Value;

use crate::grpc::pb;

/// A message of the API, with its full protobuf name.
pub trait Named: prost::Message + Sized {
    const NAME: &'static str;
}

macro_rules! named {
    ($($message:path => $name:literal),+ $(,)?) => {
        $(impl Named for $message {
            const NAME: &'static str = $name;
        })+
    };
}

named! {
    pb::ScheduledPost => "punctual.v1.ScheduledPost",
    pb::ListSchedulesResponse => "punctual.v1.ListSchedulesResponse",
    pb::BulkScheduleResponse => "punctual.v1.BulkScheduleResponse",
    pb::ListDeadLettersResponse => "punctual.v1.ListDeadLettersResponse",
    pb::ScheduleEvent => "punctual.v1.ScheduleEvent",
    pb::Calendar => "punctual.v1.Calendar",
    pb::QueueStats => "punctual.v1.QueueStats",
    pb::QueuePause => "punctual.v1.QueuePause",
    pb::ResumeQueueResponse => "punctual.v1.ResumeQueueResponse",
    pb::ListPausesResponse => "punctual.v1.ListPausesResponse",
    pb::PostingSlots => "punctual.v1.PostingSlots",
    pb::SuggestTimesResponse => "punctual.v1.SuggestTimesResponse",
}

const OPTIONS: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .stringify_64_bit_integers(false);

/// `message` in the JSON mapping. The descriptor set is built from the same
/// protos as the message types, so every [`Named`] message is in it (a test
/// checks each); `null` stands for a message that is not.
pub fn message<M: Named>(message: &M) -> Value {
    let Some(descriptor) = pb::descriptor_pool().get_message_by_name(M::NAME) else {
        return Value::Null;
    };
    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .ok()
        .and_then(|dynamic| {
            dynamic
                .serialize_with_options(serde_json::value::Serializer, &OPTIONS)
                .ok()
        })
        .unwrap_or(Value::Null)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_use_proto_names_rfc3339_and_numbers() {
        let post = pb::ScheduledPost {
            id: "p1".into(),
            status: pb::scheduled_post::Status::DeadLettered as i32,
            scheduled_for: Some(prost_types::Timestamp {
                seconds: 1_760_529_600,
                nanos: 0,
            }),
            version: 7,
            payload_json: r#"{"n":12345678901234567890}"#.into(),
            attempt_history: vec![pb::PublishAttempt {
                attempt: 1,
                outcome: "gave_up".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let value = message(&post);
        assert_eq!(value["status"], "DEAD_LETTERED");
        assert_eq!(value["scheduled_for"], "2025-10-15T12:00:00Z");
        assert_eq!(value["version"], 7);
        assert_eq!(value["payload_json"], r#"{"n":12345678901234567890}"#);
        assert_eq!(value["published_at"], Value::Null);
        assert_eq!(value["attempt_history"][0]["outcome"], "gave_up");
        // Unknown enum numbers survive as numbers.
        let unknown = message(&pb::ScheduledPost {
            status: 42,
            ..Default::default()
        });
        assert_eq!(unknown["status"], 42);
    }

    #[test]
    fn every_named_message_is_in_the_descriptor_set() {
        fn check<M: Named + Default>() {
            assert!(
                pb::descriptor_pool().get_message_by_name(M::NAME).is_some(),
                "{}",
                M::NAME
            );
            assert!(message(&M::default()).is_object(), "{}", M::NAME);
        }
        check::<pb::ScheduledPost>();
        check::<pb::ListSchedulesResponse>();
        check::<pb::BulkScheduleResponse>();
        check::<pb::ListDeadLettersResponse>();
        check::<pb::ScheduleEvent>();
        check::<pb::Calendar>();
        check::<pb::QueueStats>();
        check::<pb::QueuePause>();
        check::<pb::ResumeQueueResponse>();
        check::<pb::ListPausesResponse>();
        check::<pb::PostingSlots>();
        check::<pb::SuggestTimesResponse>();
    }
}
