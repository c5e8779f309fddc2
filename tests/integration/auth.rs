//! Bearer tokens bound to businesses: a caller reaches only its own
//! businesses' posts, through every RPC, while health and reflection stay
//! open.

use std::time::Duration;

use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;
use punctual::auth::{TokenDigest, TokenGrant};
use punctual::config::ServeConfig;

/// May touch biz-a only.
const ALPHA: &str = "alpha-7b1f0c";
/// May touch biz-a and biz-b.
const PAIR: &str = "pair-91c2ee";
/// May touch every business.
const ROOT: &str = "root-4d0a77";

fn grant(token: &str, scope: &str) -> TokenGrant {
    TokenGrant::parse_assignment(&format!("{}={scope}", TokenDigest::of(token).to_hex()))
        .expect("valid grant")
}

fn with_tokens(config: &mut ServeConfig) {
    config.auth_token_hashes = vec![
        grant(ALPHA, "biz-a"),
        grant(PAIR, "biz-a,biz-b"),
        grant(ROOT, "*"),
    ];
}

/// `message` sent with `authorization: Bearer <token>`.
fn as_caller<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII token"),
    );
    request
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: Result<Response<T>, Status>, code: Code, what: &str) {
    match result {
        Ok(response) => panic!("{what}: expected {code:?}, got {:?}", response.into_inner()),
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
    }
}

fn ids(posts: &[pb::ScheduledPost]) -> Vec<String> {
    let mut ids: Vec<_> = posts.iter().map(|post| post.id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reaches_only_the_posts_of_its_businesses() {
    let app = spawn_app_with(with_tokens).await;
    let mut client = app.client.clone();
    let later = in_millis(3_600_000);
    let a_post = client
        .create_schedule(as_caller(ROOT, post_at("biz-a", later)))
        .await
        .expect("root creates in biz-a")
        .into_inner();
    let b_post = client
        .create_schedule(as_caller(ROOT, post_at("biz-b", later)))
        .await
        .expect("root creates in biz-b")
        .into_inner();

    // Its own business: allowed.
    let got = client
        .get_schedule(as_caller(
            ALPHA,
            pb::GetScheduleRequest {
                id: a_post.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("alpha reads its own post")
        .into_inner();
    assert_eq!(got.id, a_post.id);

    // Posts named by id.
    let b_id = b_post.id.clone();
    let denied = Code::PermissionDenied;
    assert_code(
        client
            .get_schedule(as_caller(
                ALPHA,
                pb::GetScheduleRequest {
                    id: b_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "get",
    );
    assert_code(
        client
            .update_schedule(as_caller(
                ALPHA,
                pb::UpdateScheduleRequest {
                    id: b_id.clone(),
                    platform: "x".into(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "update",
    );
    assert_code(
        client
            .cancel_schedule(as_caller(
                ALPHA,
                pb::CancelScheduleRequest {
                    id: b_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "cancel",
    );
    assert_code(
        client
            .requeue_dead_letter(as_caller(
                ALPHA,
                pb::RequeueDeadLetterRequest {
                    id: b_id.clone(),
                    now: true,
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "requeue",
    );
    assert_code(
        client
            .discard_dead_letter(as_caller(
                ALPHA,
                pb::DiscardDeadLetterRequest {
                    id: b_id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "discard",
    );
    assert_code(
        client
            .record_engagement(as_caller(
                ALPHA,
                pb::RecordEngagementRequest {
                    post_id: b_id.clone(),
                    impressions: 1,
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "record engagement",
    );

    // Requests that name the business.
    let biz_b = || "biz-b".to_owned();
    assert_code(
        client
            .create_schedule(as_caller(ALPHA, post_at("biz-b", later)))
            .await,
        denied,
        "create",
    );
    let mut batch = crate::bulk(
        pb::recurrence::Pattern::Daily,
        "2099-01-01",
        "09:00",
        "UTC",
        3,
    );
    batch.business_id = biz_b();
    assert_code(
        client.bulk_schedule(as_caller(ALPHA, batch)).await,
        denied,
        "bulk",
    );
    assert_code(
        client
            .list_schedules(as_caller(
                ALPHA,
                pb::ListSchedulesRequest {
                    business_id: biz_b(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "list",
    );
    assert_code(
        client
            .get_calendar(as_caller(
                ALPHA,
                pb::GetCalendarRequest {
                    business_id: biz_b(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "calendar",
    );
    assert_code(
        client
            .get_queue_stats(as_caller(
                ALPHA,
                pb::GetQueueStatsRequest {
                    business_id: biz_b(),
                },
            ))
            .await,
        denied,
        "queue stats",
    );
    assert_code(
        client
            .list_dead_letters(as_caller(
                ALPHA,
                pb::ListDeadLettersRequest {
                    business_id: biz_b(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "dead letters",
    );
    assert_code(
        client
            .pause_queue(as_caller(
                ALPHA,
                pb::PauseQueueRequest {
                    business_id: biz_b(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "pause",
    );
    assert_code(
        client
            .resume_queue(as_caller(
                ALPHA,
                pb::ResumeQueueRequest {
                    business_id: biz_b(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "resume",
    );
    assert_code(
        client
            .list_pauses(as_caller(
                ALPHA,
                pb::ListPausesRequest {
                    business_id: biz_b(),
                },
            ))
            .await,
        denied,
        "list pauses",
    );
    assert_code(
        client
            .set_posting_slots(as_caller(
                ALPHA,
                pb::SetPostingSlotsRequest {
                    business_id: biz_b(),
                    platform: "instagram".into(),
                    time_zone: "UTC".into(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "set slots",
    );
    assert_code(
        client
            .get_posting_slots(as_caller(
                ALPHA,
                pb::GetPostingSlotsRequest {
                    business_id: biz_b(),
                    platform: "instagram".into(),
                },
            ))
            .await,
        denied,
        "get slots",
    );
    assert_code(
        client
            .suggest_times(as_caller(
                ALPHA,
                pb::SuggestTimesRequest {
                    business_id: biz_b(),
                    platform: "instagram".into(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "suggest",
    );
    assert_code(
        client
            .watch_events(as_caller(
                ALPHA,
                pb::WatchEventsRequest {
                    business_id: biz_b(),
                    ..Default::default()
                },
            ))
            .await,
        denied,
        "watch",
    );

    // Nothing of biz-b changed, and the refused batch wrote nothing.
    let b_now = client
        .get_schedule(as_caller(
            ROOT,
            pb::GetScheduleRequest {
                id: b_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("root reads biz-b")
        .into_inner();
    assert_eq!(b_now.version, b_post.version, "{b_now:?}");
    assert_eq!(b_now.status, b_post.status);
    assert_eq!(b_now.platform, "instagram");
    let list = |token: &'static str, business: &str| {
        let mut client = app.client.clone();
        let request = as_caller(
            token,
            pb::ListSchedulesRequest {
                business_id: business.to_owned(),
                page_size: 100,
                ..Default::default()
            },
        );
        async move { client.list_schedules(request).await }
    };
    let b_listed = list(ROOT, "biz-b").await.expect("root lists biz-b");
    assert_eq!(ids(&b_listed.into_inner().schedules), vec![b_id.clone()]);
    let paused = client
        .list_pauses(as_caller(ROOT, pb::ListPausesRequest::default()))
        .await
        .expect("root lists every pause")
        .into_inner();
    assert!(paused.pauses.is_empty(), "{paused:?}");

    // Without a business filter, a one-business token sees its business
    // only; a token of several businesses must name one; `*` sees all.
    let alpha_all = list(ALPHA, "").await.expect("alpha lists").into_inner();
    assert_eq!(ids(&alpha_all.schedules), vec![a_post.id.clone()]);
    let alpha_stats = client
        .get_queue_stats(as_caller(ALPHA, pb::GetQueueStatsRequest::default()))
        .await
        .expect("alpha's queue stats")
        .into_inner();
    let counted: i64 = alpha_stats.counts.iter().map(|count| count.count).sum();
    assert_eq!(counted, 1, "only biz-a's post: {alpha_stats:?}");
    assert_code(
        list(PAIR, "").await,
        denied,
        "pair lists without a business",
    );
    assert_code(
        client
            .get_queue_stats(as_caller(PAIR, pb::GetQueueStatsRequest::default()))
            .await,
        denied,
        "pair's queue-wide stats",
    );
    let pair_b = list(PAIR, "biz-b").await.expect("pair lists biz-b");
    assert_eq!(ids(&pair_b.into_inner().schedules), vec![b_id.clone()]);
    let everything = list(ROOT, "").await.expect("root lists all").into_inner();
    let mut both = vec![a_post.id.clone(), b_id.clone()];
    both.sort();
    assert_eq!(ids(&everything.schedules), both);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_without_a_filter_sees_only_its_businesses() {
    let app = spawn_app_with(with_tokens).await;
    let mut client = app.client.clone();
    let mut events = client
        .watch_events(as_caller(ALPHA, pb::WatchEventsRequest::default()))
        .await
        .expect("alpha watches")
        .into_inner();
    let later = in_millis(3_600_000);
    client
        .create_schedule(as_caller(ROOT, post_at("biz-b", later)))
        .await
        .expect("create in biz-b");
    let a_post = client
        .create_schedule(as_caller(ROOT, post_at("biz-a", later)))
        .await
        .expect("create in biz-a")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .expect("an event arrives")
        .expect("the stream is healthy")
        .expect("the stream is open");
    let post = first.schedule.expect("the event carries the post");
    assert_eq!(post.business_id, "biz-a", "biz-b's event was filtered out");
    assert_eq!(post.id, a_post.id);
    drop(events);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_known_token_are_unauthenticated_while_probes_stay_open() {
    let app = spawn_app_with(with_tokens).await;
    let mut client = app.client.clone();
    let get = || pb::GetScheduleRequest {
        id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    assert_code(
        client.get_schedule(Request::new(get())).await,
        Code::Unauthenticated,
        "no token",
    );
    assert_code(
        client.get_schedule(as_caller("not-a-token", get())).await,
        Code::Unauthenticated,
        "unknown token",
    );
    let mut basic = Request::new(get());
    basic
        .metadata_mut()
        .insert("authorization", format!("Basic {ROOT}").parse().unwrap());
    assert_code(
        client.get_schedule(basic).await,
        Code::Unauthenticated,
        "not a bearer token",
    );
    assert_code(
        client
            .watch_events(Request::new(pb::WatchEventsRequest::default()))
            .await,
        Code::Unauthenticated,
        "watch without a token",
    );
    // A known token passes authentication (the post does not exist).
    assert_code(
        client.get_schedule(as_caller(ROOT, get())).await,
        Code::NotFound,
        "root token",
    );

    let mut health = HealthClient::new(app.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "punctual.v1.Scheduler".into(),
        })
        .await
        .expect("health needs no token")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection needs no token")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("a reflection answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(services)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    assert!(
        services
            .service
            .iter()
            .any(|service| service.name == "punctual.v1.Scheduler"),
        "{services:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_address_without_tokens_is_refused_at_start() {
    let database = TestDatabase::for_this_test().await;
    let mut config = test_config(&database.url, "http://127.0.0.1:9/publish");
    config.listen_addr = "0.0.0.0:0".parse().unwrap();
    let error = match punctual::app::Application::build(config).await {
        Ok(_) => panic!("an open server on a network address must not start"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("not a loopback address"), "{error}");
}
