//! The API contract of `punctual.v1` as a client sees it: payloads that
//! reach the publisher byte for byte, the views of a post (AIP-157),
//! answers that fit the 4 MiB a gRPC client accepts by default, labels and
//! their filter, RunNow, and conditional requeue and discard of dead
//! letters.
//!
//! Every call here goes through the harness's client, which keeps tonic's
//! default 4 MiB limit on decoded messages: an answer the server failed to
//! bound fails the call, and so the test.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{Datelike as _, TimeZone as _, Utc};
use prost::Message as _;
use tonic::{Code, Status};

use crate::helpers::*;
use pb::ScheduleView;
use pb::scheduled_post::Status as PostStatus;

const WAIT: Duration = Duration::from_secs(20);
/// The default receive limit of gRPC clients, tonic's included.
const CLIENT_LIMIT: usize = 4 * 1024 * 1024;

// The error details a status may carry (`google.rpc.Status` holding a
// `google.rpc.BadRequest`), declared here to read the fields they name.

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    field_violations: Vec<FieldViolation>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FieldViolation {
    #[prost(string, tag = "1")]
    field: String,
    #[prost(string, tag = "2")]
    description: String,
}

/// The fields a refusal names: those of its `google.rpc.BadRequest`
/// detail, and the one its message starts with (`field: what is wrong`).
fn named_fields(status: &Status) -> Vec<String> {
    let mut fields = Vec::new();
    if let Ok(details) = RpcStatus::decode(status.details()) {
        for detail in details
            .details
            .iter()
            .filter(|detail| detail.type_url.ends_with("google.rpc.BadRequest"))
        {
            if let Ok(bad_request) = BadRequest::decode(detail.value.as_slice()) {
                fields.extend(bad_request.field_violations.into_iter().map(|v| v.field));
            }
        }
    }
    if let Some((field, _)) = status.message().split_once(": ") {
        fields.push(field.to_owned());
    }
    fields
}

/// Asserts an INVALID_ARGUMENT that names a field `names` accepts.
#[track_caller]
fn assert_invalid_naming(
    case: &str,
    result: Result<impl std::fmt::Debug, Status>,
    names: impl Fn(&str) -> bool,
) {
    let status = match result {
        Ok(answer) => panic!("{case}: accepted: {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    let fields = named_fields(&status);
    assert!(
        fields.iter().any(|field| names(field)),
        "{case}: names {fields:?}, not the expected field: {status:?}"
    );
}

#[track_caller]
fn assert_invalid_field(case: &str, result: Result<impl std::fmt::Debug, Status>, field: &str) {
    assert_invalid_naming(case, result, |named| named == field);
}

/// A JSON object that a parse-and-reserialise round trip would change:
/// integers beyond 2^53, `-0`, `1e308`, `0.1`, unsorted keys, emoji and
/// right-to-left text, escapes, 40 levels of nesting, odd spacing.
fn exotic_payload() -> String {
    let nested = format!("{}\"bottom\"{}", "{\"d\":".repeat(38), "}".repeat(38));
    format!(
        "{{\"zeta\": 1798765432109876543,\n  \"big\":9007199254740993 , \"neg_zero\": -0,\
         \"huge\": 1e308,\r\n\t\"tenth\": 0.1, \"three\": 3, \"alpha\": \"🎉✨ مرحبا بالعالم שלום עולם\",\
         \"escaped\": \"caf\\u00e9 \\\"quoted\\\"\\n\", \"deep\": [{nested}], \"nothing\": null  }}"
    )
}

fn bulk_request(business: &str, count: usize) -> pb::BulkScheduleRequest {
    pb::BulkScheduleRequest {
        business_id: business.to_owned(),
        platform: "linkedin".to_owned(),
        content_ids: (0..count).map(|i| format!("content-{i:05}")).collect(),
        recurrence: Some(pb::Recurrence {
            pattern: pb::recurrence::Pattern::EveryNHours as i32,
            start_date: format!("{}-02-01", Utc::now().year() + 1),
            local_time: "08:00".to_owned(),
            time_zone: "UTC".to_owned(),
            interval_hours: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn get_in_view(app: &TestApp, id: &str, view: ScheduleView) -> pb::ScheduledPost {
    app.client
        .clone()
        .get_schedule(pb::GetScheduleRequest {
            id: id.to_owned(),
            view: view as i32,
        })
        .await
        .expect("get")
        .into_inner()
}

/// Every post of a business, walking all pages, with the size of each page.
async fn list_all(
    app: &TestApp,
    request: pb::ListSchedulesRequest,
) -> (Vec<pb::ScheduledPost>, Vec<usize>) {
    let mut posts = Vec::new();
    let mut page_sizes = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .clone()
            .list_schedules(pb::ListSchedulesRequest {
                page_token: token,
                ..request.clone()
            })
            .await
            .expect("a page within the client's 4 MiB limit")
            .into_inner();
        page_sizes.push(page.encoded_len());
        posts.extend(page.schedules);
        if page.next_page_token.is_empty() {
            return (posts, page_sizes);
        }
        assert!(page_sizes.len() < 1_000, "the pages never end");
        token = page.next_page_token;
    }
}

fn ids(posts: &[pb::ScheduledPost]) -> Vec<String> {
    posts.iter().map(|post| post.id.clone()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_reaches_the_publisher_and_every_reader_byte_for_byte() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let text = exotic_payload();
    let mut events = client
        .watch_events(pb::WatchEventsRequest {
            business_id: "payload-biz".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();

    let mut request = post_at("payload-biz", in_millis(1_000));
    request.payload_json = text.clone();
    let post = app.create(request).await;
    assert_eq!(post.payload_json, text, "the created post");
    let empty = app.create(post_at("payload-biz", in_millis(1_000))).await;

    assert_eq!(app.get(&post.id).await.payload_json, text, "GetSchedule");

    let received = app.receiver.wait_for(2, WAIT).await;
    let body_of = |id: &str| {
        let request = received
            .iter()
            .find(|r| r.post_id() == id)
            .unwrap_or_else(|| panic!("no request for {id}"));
        String::from_utf8(request.raw_body.clone()).expect("UTF-8 body")
    };
    let body = body_of(&post.id);
    assert!(
        body.contains(&format!("\"payload\":{text}")),
        "the payload was not forwarded byte for byte:\n{body}"
    );
    let body = body_of(&empty.id);
    assert!(
        body.contains("\"payload\":{}"),
        "an empty payload_json is {{}}: {body}"
    );

    // The stream shows the payload on every change of the post, up to
    // its publication.
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, events.message())
            .await
            .expect("an event in time")
            .expect("the stream")
            .expect("an open stream");
        let changed = event.schedule.expect("the post");
        if changed.id != post.id {
            continue;
        }
        assert_eq!(changed.payload_json, text, "event {:?}", event.r#type);
        seen.push(event.r#type);
        if event.r#type == pb::schedule_event::Type::Published as i32 {
            break;
        }
    }
    assert_eq!(
        seen.first(),
        Some(&(pb::schedule_event::Type::Scheduled as i32))
    );

    let mut bulk = bulk_request("payload-biz", 3);
    bulk.payload_json = text.clone();
    bulk.view = ScheduleView::Full as i32;
    let saved = client
        .bulk_schedule(bulk)
        .await
        .expect("bulk")
        .into_inner()
        .schedules;
    assert_eq!(saved.len(), 3);
    for post in &saved {
        assert_eq!(post.payload_json, text, "the bulk answer");
        assert_eq!(app.get(&post.id).await.payload_json, text, "a bulk post");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_not_one_small_shallow_json_object_is_refused() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let nested = |levels: usize| format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels));
    // `{"text":""}` is 11 bytes; the default limit is 64 KiB.
    let sized = |bytes: usize| format!("{{\"text\":\"{}\"}}", "x".repeat(bytes - 11));
    let ahead = in_millis(3_600_000);
    for (case, payload) in [
        ("an array", "[1]".to_owned()),
        ("a string", "\"x\"".to_owned()),
        ("truncated", "{".to_owned()),
        ("nested 65 levels", nested(65)),
        ("one byte over 64 KiB", sized(64 * 1024 + 1)),
    ] {
        let mut request = post_at("bad-payload", ahead);
        request.payload_json = payload.clone();
        assert_invalid_field(case, client.create_schedule(request).await, "payload_json");
        let mut bulk = bulk_request("bad-payload", 2);
        bulk.payload_json = payload;
        assert_invalid_field(case, client.bulk_schedule(bulk).await, "payload_json");
    }
    let listed = client
        .list_schedules(pb::ListSchedulesRequest {
            business_id: "bad-payload".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.schedules.is_empty(), "{:?}", ids(&listed.schedules));

    // The limits themselves are allowed.
    for payload in [nested(64), sized(64 * 1024)] {
        let mut request = post_at("bad-payload", ahead);
        request.payload_json = payload.clone();
        let post = app.create(request).await;
        assert_eq!(app.get(&post.id).await.payload_json, payload);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_view_carries_exactly_its_fields_and_each_method_has_its_default() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let mut request = post_at("views", in_millis(500));
    request.payload_json = r#"{"text":"views"}"#.into();
    request.labels = labels(&[("campaign", "spring")]);
    request.time_zone = "Europe/Paris".into();
    let created = app.create(request).await;
    app.wait_for_status(&created.id, PostStatus::Published)
        .await;

    let full = app.get(&created.id).await;
    assert_eq!(full.payload_json, r#"{"text":"views"}"#);
    assert_eq!(full.attempt_history.len(), 1, "{full:?}");
    assert_eq!(full.labels, labels(&[("campaign", "spring")]));
    assert_eq!(full.platform, "instagram");
    assert_eq!(full.business_id, "views");
    assert_eq!(
        get_in_view(&app, &created.id, ScheduleView::Full).await,
        full,
        "GetSchedule's default is FULL"
    );

    let basic = pb::ScheduledPost {
        payload_json: String::new(),
        attempt_history: Vec::new(),
        ..full.clone()
    };
    assert_eq!(
        get_in_view(&app, &created.id, ScheduleView::Basic).await,
        basic
    );
    let summary = pb::ScheduledPost {
        id: full.id.clone(),
        content_id: full.content_id.clone(),
        scheduled_for: full.scheduled_for,
        time_zone: full.time_zone.clone(),
        local_time: full.local_time.clone(),
        status: full.status,
        version: full.version,
        ..Default::default()
    };
    assert_eq!(
        get_in_view(&app, &created.id, ScheduleView::Summary).await,
        summary
    );

    let list = |view: ScheduleView| pb::ListSchedulesRequest {
        business_id: "views".into(),
        view: view as i32,
        ..Default::default()
    };
    let listed = client
        .list_schedules(list(ScheduleView::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.schedules,
        vec![basic],
        "ListSchedules' default is BASIC"
    );
    let listed = client
        .list_schedules(list(ScheduleView::Full))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.schedules, vec![full]);

    let mut bulk = bulk_request("views", 3);
    bulk.payload_json = r#"{"text":"bulk"}"#.into();
    bulk.labels = labels(&[("campaign", "bulk")]);
    let answered = client.bulk_schedule(bulk).await.unwrap().into_inner();
    assert_eq!(answered.schedules.len(), 3);
    for post in &answered.schedules {
        assert!(!post.id.is_empty());
        assert_eq!(
            *post,
            get_in_view(&app, &post.id, ScheduleView::Summary).await,
            "BulkSchedule's default is SUMMARY"
        );
    }

    let unknown = 9;
    assert_invalid_field(
        "GetSchedule",
        client
            .get_schedule(pb::GetScheduleRequest {
                id: created.id.clone(),
                view: unknown,
            })
            .await,
        "view",
    );
    assert_invalid_field(
        "ListSchedules",
        client
            .list_schedules(pb::ListSchedulesRequest {
                view: unknown,
                ..list(ScheduleView::Unspecified)
            })
            .await,
        "view",
    );
    let mut bulk = bulk_request("views-unknown", 2);
    bulk.view = unknown;
    assert_invalid_field("BulkSchedule", client.bulk_schedule(bulk).await, "view");
    assert_invalid_field(
        "WatchEvents",
        client
            .watch_events(pb::WatchEventsRequest {
                business_id: String::new(),
                view: unknown,
            })
            .await
            .map(|_| "a stream"),
        "view",
    );
    assert_invalid_field(
        "ListDeadLetters",
        client
            .list_dead_letters(pb::ListDeadLettersRequest {
                view: unknown,
                ..Default::default()
            })
            .await,
        "view",
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_list_pages_of_large_payloads_stay_within_four_mib_and_miss_nothing() {
    let app = spawn_app_with(|config| config.max_payload_bytes = 64 * 1024).await;
    let base = Utc::now() + chrono::Duration::hours(2);
    let payload = |i: usize| format!("{{\"index\":{i},\"text\":\"{}\"}}", "x".repeat(60_000));
    let mut created = Vec::new();
    for i in 0..80 {
        // Two posts share each instant: the order falls back on the id.
        let mut request = post_at(
            "large-pages",
            base + chrono::Duration::minutes(i as i64 / 2),
        );
        request.payload_json = payload(i);
        created.push(app.create(request).await);
    }
    created.sort_by_key(|post| (instant(&post.scheduled_for), post.id.clone()));

    let (listed, page_sizes) = list_all(
        &app,
        pb::ListSchedulesRequest {
            business_id: "large-pages".into(),
            view: ScheduleView::Full as i32,
            page_size: 1_000,
            ..Default::default()
        },
    )
    .await;
    assert!(
        page_sizes.len() >= 2,
        "80 posts of 60 kB cannot fit one page: {page_sizes:?}"
    );
    assert!(
        page_sizes.iter().all(|&size| size < CLIENT_LIMIT),
        "{page_sizes:?}"
    );
    assert_eq!(ids(&listed), ids(&created), "every post once, in order");
    for (listed, created) in listed.iter().zip(&created) {
        assert_eq!(listed.payload_json, created.payload_json);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_answer_too_large_for_its_view_is_refused_before_saving_and_the_default_fits() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let mut request = bulk_request("big-bulk", 10_000);
    request.payload_json = format!("{{\"text\":\"{}\"}}", "p".repeat(1_000));
    request.request_id = "big-bulk-1".into();

    // 10,000 posts of 1 kB each would answer over 10 MB in FULL.
    let full = pb::BulkScheduleRequest {
        view: ScheduleView::Full as i32,
        ..request.clone()
    };
    assert_invalid_field("FULL view", client.bulk_schedule(full).await, "view");
    let (listed, _) = list_all(
        &app,
        pb::ListSchedulesRequest {
            business_id: "big-bulk".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(listed.is_empty(), "{} posts were saved", listed.len());

    // Nothing was saved, not even the request id: the same request in the
    // default view goes through.
    let first = client
        .bulk_schedule(request.clone())
        .await
        .expect("the default view fits")
        .into_inner();
    assert_eq!(first.schedules.len(), 10_000);
    assert!(
        first.encoded_len() < CLIENT_LIMIT,
        "{} bytes",
        first.encoded_len()
    );
    let retry = client
        .bulk_schedule(request)
        .await
        .expect("the retry")
        .into_inner();
    assert_eq!(ids(&retry.schedules), ids(&first.schedules));

    let (listed, _) = list_all(
        &app,
        pb::ListSchedulesRequest {
            business_id: "big-bulk".into(),
            page_size: 1_000,
            view: ScheduleView::Summary as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&listed), ids(&first.schedules), "saved once, in order");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_kept_filtered_on_replaced_and_shown_in_the_calendar() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let year = Utc::now().year() + 1;
    let at = |day: u32| Utc.with_ymd_and_hms(year, 6, day, 10, 0, 0).unwrap();
    let create = |day: u32, pairs: &[(&str, &str)]| {
        let mut request = post_at("labelled", at(day));
        request.labels = labels(pairs);
        request
    };
    let spring_draft = app
        .create(create(1, &[("campaign", "spring"), ("draft", "")]))
        .await;
    let autumn = app.create(create(2, &[("campaign", "autumn")])).await;
    let longer = app.create(create(3, &[("campaign", "spring-sale")])).await;
    let spring = app.create(create(4, &[("campaign", "spring")])).await;
    let unlabelled = app.create(create(5, &[])).await;
    assert_eq!(
        app.get(&spring_draft.id).await.labels,
        labels(&[("campaign", "spring"), ("draft", "")])
    );
    assert!(app.get(&unlabelled.id).await.labels.is_empty());

    let filtered = |filter: &str| {
        let mut client = app.client.clone();
        let filter = filter.to_owned();
        async move {
            let page = client
                .list_schedules(pb::ListSchedulesRequest {
                    business_id: "labelled".into(),
                    filter: filter.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|status| panic!("{filter}: {status:?}"))
                .into_inner();
            ids(&page.schedules)
        }
    };
    assert_eq!(
        filtered(r#"labels.campaign = "spring""#).await,
        vec![spring_draft.id.clone(), spring.id.clone()],
        "not autumn, and not spring-sale: values match whole"
    );
    assert_eq!(
        filtered(r#"labels.campaign = "autumn""#).await,
        vec![autumn.id.clone()]
    );
    assert_eq!(
        filtered("labels.draft:*").await,
        vec![spring_draft.id.clone()]
    );
    assert_eq!(
        filtered(r#"labels.campaign = "spring" AND labels.draft:*"#).await,
        vec![spring_draft.id.clone()]
    );
    assert_eq!(
        filtered("labels.campaign:*").await,
        vec![
            spring_draft.id.clone(),
            autumn.id.clone(),
            longer.id.clone(),
            spring.id.clone()
        ]
    );
    assert!(filtered(r#"labels.campaign = "spr_ng""#).await.is_empty());
    assert!(filtered(r#"labels.campaign = "spr%""#).await.is_empty());

    for filter in ["campaign = x", "labels.Bad:*"] {
        assert_invalid_field(
            filter,
            client
                .list_schedules(pb::ListSchedulesRequest {
                    filter: filter.into(),
                    ..Default::default()
                })
                .await,
            "filter",
        );
    }

    let seventeen: Vec<(String, String)> = (0..17)
        .map(|i| (format!("key{i}"), "v".to_owned()))
        .collect();
    let too_long = "v".repeat(64);
    let bad_labels = [
        ("an upper-case key", labels(&[("Bad", "v")])),
        ("17 labels", seventeen.into_iter().collect()),
        (
            "a value of 64 bytes",
            labels(&[("campaign", too_long.as_str())]),
        ),
    ];
    for (case, bad) in bad_labels {
        let mut request = create(6, &[]);
        request.labels = bad.clone();
        assert_invalid_naming(case, client.create_schedule(request).await, |field| {
            field.starts_with("labels")
        });
        let mut bulk = bulk_request("labelled-bad", 2);
        bulk.labels = bad.clone();
        assert_invalid_naming(case, client.bulk_schedule(bulk).await, |field| {
            field.starts_with("labels")
        });
        assert_invalid_naming(
            case,
            client
                .update_schedule(pb::UpdateScheduleRequest {
                    id: spring.id.clone(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["labels".into()],
                    }),
                    labels: bad,
                    ..Default::default()
                })
                .await,
            |field| field.starts_with("labels"),
        );
    }
    assert_eq!(
        app.get(&spring.id).await.labels,
        labels(&[("campaign", "spring")])
    );

    let replace = |id: &str, pairs: &[(&str, &str)]| pb::UpdateScheduleRequest {
        id: id.to_owned(),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["labels".into()],
        }),
        labels: labels(pairs),
        ..Default::default()
    };
    let replaced = client
        .update_schedule(replace(&spring_draft.id, &[("campaign", "summer")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.labels, labels(&[("campaign", "summer")]));
    assert_eq!(
        app.get(&spring_draft.id).await.labels,
        labels(&[("campaign", "summer")])
    );
    assert!(filtered("labels.draft:*").await.is_empty());
    assert_eq!(
        filtered(r#"labels.campaign = "summer""#).await,
        vec![spring_draft.id.clone()]
    );
    let cleared = client
        .update_schedule(replace(&autumn.id, &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.labels.is_empty(), "{:?}", cleared.labels);
    assert!(app.get(&autumn.id).await.labels.is_empty());
    assert!(filtered(r#"labels.campaign = "autumn""#).await.is_empty());

    let calendar = client
        .get_calendar(pb::GetCalendarRequest {
            business_id: "labelled".into(),
            year,
            month: 6,
            time_zone: "UTC".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let entries: HashMap<String, HashMap<String, String>> = calendar
        .weeks
        .iter()
        .flat_map(|week| &week.days)
        .flat_map(|day| &day.entries)
        .map(|entry| (entry.id.clone(), entry.labels.clone()))
        .collect();
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert_eq!(entries[&spring_draft.id], labels(&[("campaign", "summer")]));
    assert_eq!(entries[&longer.id], labels(&[("campaign", "spring-sale")]));
    assert!(entries[&autumn.id].is_empty());
    assert!(entries[&unlabelled.id].is_empty());

    let mut bulk = bulk_request("labelled", 3);
    bulk.labels = labels(&[("campaign", "bulk"), ("wave", "1")]);
    let saved = client.bulk_schedule(bulk).await.unwrap().into_inner();
    for post in &saved.schedules {
        assert_eq!(
            app.get(&post.id).await.labels,
            labels(&[("campaign", "bulk"), ("wave", "1")])
        );
    }
    assert_eq!(
        filtered(r#"labels.campaign = "bulk" AND labels.wave = "1""#).await,
        ids(&saved.schedules)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_filter_matches_values_case_exactly() {
    let app = spawn_app().await;
    let at = in_millis(3_600_000);
    let mut lower = post_at("label-case", at);
    lower.labels = labels(&[("campaign", "spring")]);
    let lower = app.create(lower).await;
    let mut upper = post_at("label-case", at);
    upper.labels = labels(&[("campaign", "Spring")]);
    let upper = app.create(upper).await;
    let filtered = |filter: &str| pb::ListSchedulesRequest {
        business_id: "label-case".into(),
        filter: filter.into(),
        ..Default::default()
    };
    let mut client = app.client.clone();
    for (filter, expected) in [
        (r#"labels.campaign = "spring""#, vec![lower.id.clone()]),
        (r#"labels.campaign = "Spring""#, vec![upper.id.clone()]),
        (r#"labels.campaign = "SPRING""#, vec![]),
    ] {
        let page = client
            .list_schedules(filtered(filter))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ids(&page.schedules), expected, "{filter}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_publishes_a_pending_post_at_once_keeping_its_instant_and_key() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let hour_ahead = in_millis(3_600_000);
    let run_now = |id: &str, expected_version: Option<i64>| pb::RunNowRequest {
        id: id.to_owned(),
        expected_version,
    };

    // A paused business: refused, and (checked below) never published.
    client
        .pause_queue(pb::PauseQueueRequest {
            business_id: "run-paused".into(),
            platform: String::new(),
        })
        .await
        .unwrap();
    let paused = app.create(post_at("run-paused", hour_ahead)).await;
    let error = client
        .run_now(run_now(&paused.id, None))
        .await
        .expect_err("a paused business");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");

    let cancelled = app.create(post_at("run-biz", hour_ahead)).await;
    client
        .cancel_schedule(pb::CancelScheduleRequest {
            id: cancelled.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let error = client
        .run_now(run_now(&cancelled.id, None))
        .await
        .expect_err("a cancelled post");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");

    let post = app.create(post_at("run-biz", hour_ahead)).await;
    let error = client
        .run_now(run_now(&post.id, Some(post.version + 1)))
        .await
        .expect_err("a wrong version");
    assert_eq!(error.code(), Code::Aborted, "{error:?}");
    assert_eq!(app.get(&post.id).await.version, post.version);

    let asked = Utc::now();
    let ran = client
        .run_now(run_now(&post.id, Some(post.version)))
        .await
        .expect("run now")
        .into_inner();
    assert_eq!(ran.scheduled_for, post.scheduled_for);
    assert!(ran.version > post.version);

    let received = app.receiver.wait_for(1, WAIT).await;
    let published = app.wait_for_status(&post.id, PostStatus::Published).await;
    assert!(
        received[0].at - asked < chrono::Duration::seconds(10),
        "published {} after RunNow",
        received[0].at - asked
    );
    assert_eq!(received[0].post_id(), post.id);
    assert_eq!(received[0].header("idempotency-key"), post.id);
    assert_eq!(published.scheduled_for, post.scheduled_for);
    // Give a duplicate, or a publish of the refused posts, every chance.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.receiver.received().len(), 1, "published exactly once");
    assert_eq!(
        app.get(&paused.id).await.status,
        PostStatus::Scheduled as i32
    );

    let error = client
        .run_now(run_now(&post.id, None))
        .await
        .expect_err("a published post");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_and_discard_apply_only_at_the_expected_version() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    app.receiver.always(400);
    let to_requeue = app.create(post_at("dl-version", in_millis(200))).await;
    let to_discard = app.create(post_at("dl-version", in_millis(200))).await;
    let to_requeue = app
        .wait_for_status(&to_requeue.id, PostStatus::DeadLettered)
        .await;
    let to_discard = app
        .wait_for_status(&to_discard.id, PostStatus::DeadLettered)
        .await;
    let attempts_before = app.receiver.received().len();

    for wrong in [to_requeue.version - 1, to_requeue.version + 1] {
        let error = client
            .requeue_dead_letter(pb::RequeueDeadLetterRequest {
                id: to_requeue.id.clone(),
                now: true,
                expected_version: Some(wrong),
                ..Default::default()
            })
            .await
            .expect_err("a wrong version");
        assert_eq!(error.code(), Code::Aborted, "{error:?}");
    }
    for wrong in [to_discard.version - 1, to_discard.version + 1] {
        let error = client
            .discard_dead_letter(pb::DiscardDeadLetterRequest {
                id: to_discard.id.clone(),
                expected_version: Some(wrong),
            })
            .await
            .expect_err("a wrong version");
        assert_eq!(error.code(), Code::Aborted, "{error:?}");
    }
    assert_eq!(app.get(&to_requeue.id).await, to_requeue, "unchanged");
    assert_eq!(app.get(&to_discard.id).await, to_discard, "unchanged");

    app.receiver.always(200);
    let requeued = client
        .requeue_dead_letter(pb::RequeueDeadLetterRequest {
            id: to_requeue.id.clone(),
            now: true,
            expected_version: Some(to_requeue.version),
            ..Default::default()
        })
        .await
        .expect("requeue at the right version")
        .into_inner();
    assert_eq!(requeued.status, PostStatus::Scheduled as i32);
    app.wait_for_status(&to_requeue.id, PostStatus::Published)
        .await;
    let received = app.receiver.received();
    assert_eq!(received.len(), attempts_before + 1);
    assert_eq!(
        received[attempts_before].header("idempotency-key"),
        to_requeue.id
    );

    let discarded = client
        .discard_dead_letter(pb::DiscardDeadLetterRequest {
            id: to_discard.id.clone(),
            expected_version: Some(to_discard.version),
        })
        .await
        .expect("discard at the right version")
        .into_inner();
    assert_eq!(discarded.status, PostStatus::Discarded as i32);
    assert_eq!(
        app.get(&to_discard.id).await.status,
        PostStatus::Discarded as i32
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_calls_and_answers_work_both_ways() {
    use tonic::codec::CompressionEncoding::Gzip;
    let app = spawn_app().await;
    let mut client = pb::scheduler_client::SchedulerClient::new(app.channel().await)
        .send_compressed(Gzip)
        .accept_compressed(Gzip);
    let mut request = post_at("gzip-biz", in_millis(3_600_000));
    // Large and repetitive: what compression is for.
    request.payload_json = format!("{{\"text\":\"{}\"}}", "spring ".repeat(5_000));
    let created = client
        .create_schedule(request.clone())
        .await
        .expect("a gzip-compressed request is accepted")
        .into_inner();
    let read = client
        .get_schedule(pb::GetScheduleRequest {
            id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect("a gzip-compressed answer is read back")
        .into_inner();
    assert_eq!(read.payload_json, request.payload_json);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_request_id_reused_for_another_batch_is_refused() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let mut first = bulk_request("reuse-biz", 3);
    first.request_id = "batch-1".into();
    let created = client
        .bulk_schedule(first.clone())
        .await
        .unwrap()
        .into_inner();
    // The same request again: the same posts.
    let again = client
        .bulk_schedule(first.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&again.schedules), ids(&created.schedules));
    // Fewer posts, or other content ids, under the same request id.
    let mut fewer = first.clone();
    fewer.content_ids.truncate(2);
    let mut other = first.clone();
    other.content_ids[1] = "another-content".into();
    for (case, request) in [("fewer", fewer), ("other content", other)] {
        let status = client.bulk_schedule(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{case}: {status:?}"
        );
        assert!(
            status.message().contains("request_id"),
            "{case}: {status:?}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_are_checked_and_statuses_are_a_set() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    for i in 0..3 {
        app.create(post_at("set-biz", in_millis(3_600_000 + i)))
            .await;
    }
    let page = |statuses: Vec<PostStatus>, page_token: String| pb::ListSchedulesRequest {
        business_id: "set-biz".into(),
        statuses: statuses.into_iter().map(|status| status as i32).collect(),
        page_size: 1,
        page_token,
        ..Default::default()
    };
    let first = client
        .list_schedules(page(
            vec![PostStatus::Scheduled, PostStatus::Published],
            String::new(),
        ))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .list_schedules(page(
            vec![PostStatus::Published, PostStatus::Scheduled],
            first.next_page_token,
        ))
        .await
        .expect("the same statuses in another order are the same filter")
        .into_inner();
    assert_eq!(second.schedules.len(), 1);

    // A business id that is not one is refused by name, not answered INTERNAL.
    let status = client
        .list_schedules(pb::ListSchedulesRequest {
            business_id: "a\u{0}b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("business_id"), "{status:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_too_large_for_one_answer_is_refused_with_its_reason() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    // The most labels a post may hold, at their longest: about 2 KiB each.
    let labels: HashMap<String, String> = (0..16)
        .map(|i| (format!("k{i:02}{}", "k".repeat(60)), "v".repeat(63)))
        .collect();
    let year = Utc::now().year() + 1;
    for platform in ["x", "linkedin", "instagram"] {
        let mut request = bulk_request("big-calendar", 700);
        request.platform = platform.into();
        request.labels = labels.clone();
        if let Some(recurrence) = request.recurrence.as_mut() {
            recurrence.start_date = format!("{year}-03-01");
        }
        client.bulk_schedule(request).await.expect("bulk");
    }
    let month = |view: pb::get_calendar_request::View| pb::GetCalendarRequest {
        business_id: "big-calendar".into(),
        year,
        month: 3,
        time_zone: "UTC".into(),
        view: view as i32,
        start_date: format!("{year}-03-02"),
        ..Default::default()
    };
    let status = client
        .get_calendar(month(pb::get_calendar_request::View::Month))
        .await
        .expect_err("2,100 posts with 2 KiB of labels each exceed 4 MiB");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    use tonic_types::StatusExt as _;
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|info| info.reason.clone()),
        Some("ANSWER_TOO_LARGE".to_owned())
    );
    // A week of the same posts fits.
    let week = client
        .get_calendar(month(pb::get_calendar_request::View::Week))
        .await
        .expect("a week fits")
        .into_inner();
    assert!(week.encoded_len() < 4 * 1024 * 1024);
    app.stop().await;
}
