//! Errors a program can act on (AIP-193): every refusal carries
//! `google.rpc` details — `ErrorInfo` with a stable reason and its facts, a
//! `BadRequest` naming the field, a `PreconditionFailure` naming the post,
//! `ResourceInfo` for a missing post — beside the human message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::helpers::*;

/// The details of a refusal, checked against the code and reason expected.
fn details_of(status: &Status, code: Code, reason: &str) -> ErrorDetails {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(!status.message().is_empty(), "the human message stays");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "punctual.v1");
    details
}

fn metadata(details: &ErrorDetails) -> HashMap<String, String> {
    details
        .error_info()
        .map(|info| info.metadata.clone())
        .unwrap_or_default()
}

/// The field named by the first `BadRequest` violation.
fn violated_field(details: &ErrorDetails) -> String {
    details
        .bad_request()
        .and_then(|bad_request| bad_request.field_violations.first())
        .map(|violation| violation.field.clone())
        .unwrap_or_default()
}

fn local(business: &str, local_time: &str, zone: &str) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        business_id: business.into(),
        content_id: "c1".into(),
        platform: "instagram".into(),
        when: Some(pb::create_schedule_request::When::LocalTime(
            local_time.into(),
        )),
        time_zone: zone.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_fields_are_named_with_a_stable_reason_and_their_facts() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    let mut missing = post_at("errors-biz", in_millis(3_600_000));
    missing.business_id = String::new();
    let status = client.create_schedule(missing).await.unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "FIELD_REQUIRED");
    assert_eq!(violated_field(&details), "business_id");
    assert_eq!(metadata(&details)["field"], "business_id");

    let status = client
        .create_schedule(local("errors-biz", "2030-06-01T09:00", "Mars/Olympus"))
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "UNKNOWN_ZONE");
    assert_eq!(violated_field(&details), "time_zone");
    assert_eq!(metadata(&details)["time_zone"], "Mars/Olympus");

    // 02:30 does not exist in New York on 2030-03-10: clocks jump 02:00 -> 03:00.
    let status = client
        .create_schedule(local("errors-biz", "2030-03-10T02:30", "America/New_York"))
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "DST_GAP");
    assert_eq!(violated_field(&details), "local_time");
    let facts = metadata(&details);
    assert_eq!(facts["gap_start"], "2030-03-10T02:00:00", "{facts:?}");
    assert_eq!(facts["gap_end"], "2030-03-10T03:00:00", "{facts:?}");
    assert_eq!(facts["time_zone"], "America/New_York");

    let status = client
        .create_schedule(post_at("errors-biz", in_millis(-3_600_000)))
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "PAST_INSTANT");
    assert_eq!(violated_field(&details), "scheduled_for");
    assert!(metadata(&details).contains_key("now"));

    let status = client
        .create_schedule(post_at("errors-biz", in_millis(20 * 366 * 86_400_000)))
        .await
        .unwrap_err();
    details_of(&status, Code::InvalidArgument, "TOO_FAR_AHEAD");

    let mut not_an_object = post_at("errors-biz", in_millis(3_600_000));
    not_an_object.payload_json = "[1, 2]".into();
    let status = client.create_schedule(not_an_object).await.unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "INVALID_PAYLOAD");
    assert_eq!(violated_field(&details), "payload_json");

    let status = client
        .get_schedule(pb::GetScheduleRequest {
            id: "not-a-uuid".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_field(&details), "id");

    let status = client
        .list_schedules(pb::ListSchedulesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
    assert_eq!(violated_field(&details), "page_token");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_request_names_the_element_at_fault() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let request = |content_ids: Vec<String>, zone: &str| pb::BulkScheduleRequest {
        business_id: "errors-bulk".into(),
        platform: "x".into(),
        content_ids,
        recurrence: Some(pb::Recurrence {
            pattern: pb::recurrence::Pattern::Daily as i32,
            start_date: "2031-01-01".into(),
            local_time: "09:00".into(),
            time_zone: zone.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut content_ids: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    content_ids[17] = "  ".into();
    let status = client
        .bulk_schedule(request(content_ids, "Europe/Paris"))
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "FIELD_REQUIRED");
    assert_eq!(violated_field(&details), "content_ids[17]");

    let status = client
        .bulk_schedule(request(vec!["c0".into()], "Nowhere/City"))
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "UNKNOWN_ZONE");
    assert_eq!(violated_field(&details), "recurrence.time_zone");

    let too_many: Vec<String> = (0..10_001).map(|i| format!("c{i}")).collect();
    let status = client
        .bulk_schedule(request(too_many, "Europe/Paris"))
        .await
        .unwrap_err();
    let details = details_of(&status, Code::InvalidArgument, "TOO_MANY_POSTS");
    assert_eq!(violated_field(&details), "content_ids");
    assert_eq!(metadata(&details)["limit"], "10000");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_by_the_state_of_a_post_name_the_post_and_the_facts() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let post = app
        .create(post_at("errors-state", in_millis(3_600_000)))
        .await;

    let status = client
        .cancel_schedule(pb::CancelScheduleRequest {
            id: post.id.clone(),
            expected_version: Some(post.version + 5),
        })
        .await
        .unwrap_err();
    let details = details_of(&status, Code::Aborted, "VERSION_MISMATCH");
    let facts = metadata(&details);
    assert_eq!(facts["current_version"], post.version.to_string());
    assert_eq!(facts["expected_version"], (post.version + 5).to_string());

    let status = client
        .requeue_dead_letter(pb::RequeueDeadLetterRequest {
            id: post.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let details = details_of(&status, Code::FailedPrecondition, "WRONG_STATUS");
    let violation = &details
        .precondition_failure()
        .expect("a PreconditionFailure")
        .violations[0];
    assert_eq!(violation.r#type, "WRONG_STATUS");
    assert_eq!(violation.subject, format!("posts/{}", post.id));
    assert_eq!(metadata(&details)["status"], "SCHEDULED");

    client
        .pause_queue(pb::PauseQueueRequest {
            business_id: "errors-state".into(),
            ..Default::default()
        })
        .await
        .expect("pause");
    let status = client
        .run_now(pb::RunNowRequest {
            id: post.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let details = details_of(&status, Code::FailedPrecondition, "PAUSED");
    assert_eq!(metadata(&details)["business_id"], "errors-state");

    let missing = uuid::Uuid::now_v7().to_string();
    let status = client
        .get_schedule(pb::GetScheduleRequest {
            id: missing.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let details = details_of(&status, Code::NotFound, "POST_NOT_FOUND");
    assert_eq!(
        details.resource_info().expect("ResourceInfo").resource_name,
        format!("posts/{missing}")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_message_never_echoes_a_huge_input() {
    let app = spawn_app().await;
    let huge = "x".repeat(1_000_000);
    let status = app
        .client
        .clone()
        .get_schedule(pb::GetScheduleRequest {
            id: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 512, "{}", status.message().len());
    app.stop().await;
}
