//! The gRPC transport: the generated protobuf types, the thin adapter from
//! RPCs to [`SchedulerService`], the error mapping, authentication of calls
//! (`auth`) and load shedding (`load`). The only module that knows protobuf.
//!
//! Every RPC checks the business it touches against the [`Caller`] that
//! authentication put into the request: a business named in the request is
//! checked before the service runs; a post named by id is read first and
//! its business checked. A caller never reads, lists, watches or changes
//! another business's posts.

mod auth;
mod convert;
mod load;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::domain::PostView;
use crate::scheduler::{
    BulkRequest, CreateRequest, ListRequest, PageRequest, RequeueAt, SchedulerError,
    SchedulerService, UpdateRequest, When,
};
use convert::*;

pub use auth::AuthInterceptor;
pub use load::{OverloadError, Shed, shed_beyond};

/// Generated protobuf types and service stubs for `punctual.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]

    /// The packages `punctual.v1` imports, at the paths its generated code
    /// names them by.
    pub mod google {
        pub mod api {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("google.api");
        }
        pub mod r#type {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("google.r#type");
        }
        pub mod rpc {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("google.rpc");
        }
    }

    pub mod punctual {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("punctual.v1");
        }
    }

    pub use google::r#type::DayOfWeek;
    pub use punctual::v1::*;

    use chrono::{DateTime, Utc};

    /// An instant as a protobuf `Timestamp`.
    pub fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: instant.timestamp(),
            nanos: i32::try_from(instant.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }

    /// The instant of a protobuf `Timestamp`, or `None` if its nanoseconds
    /// are out of 0..1e9 or it lies outside the dates chrono represents.
    pub fn instant(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(timestamp.nanos)
            .ok()
            .filter(|nanos| *nanos < 1_000_000_000)?;
        DateTime::from_timestamp(timestamp.seconds, nanos)
    }

    /// Encoded descriptors of `punctual.v1` and every file it imports,
    /// served by gRPC reflection and by `punctual descriptor`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/punctual_descriptor.bin"));

    /// The descriptors of [`FILE_DESCRIPTOR_SET`], decoded once: what the
    /// JSON mapping of messages is driven by.
    pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
        static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> =
            std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            // The set is built from the protos at compile time; a test
            // decodes it, so this never falls back in a build that passed.
            prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap_or_default()
        })
    }
}

pub use pb::scheduler_server::SchedulerServer;

/// The `punctual.v1.Scheduler` service.
pub struct SchedulerApi {
    service: SchedulerService,
    /// Ends open watch streams at shutdown so the server can drain.
    shutdown: CancellationToken,
    /// One permit per open `WatchEvents` stream. Streams outlive the
    /// concurrency bound of `shed_beyond` (they hold its permit only while
    /// they start), so they are capped here instead: each holds an event
    /// buffer, and unbounded watchers would grow memory without limit.
    watchers: Arc<Semaphore>,
    max_watchers: usize,
}

impl SchedulerApi {
    pub fn new(
        service: SchedulerService,
        shutdown: CancellationToken,
        max_watchers: usize,
    ) -> Self {
        Self {
            service,
            shutdown,
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
        }
    }

    /// The message of a call on one post (named by `id`), once its caller
    /// may touch the post's business. A post's business never changes, so
    /// the check cannot go stale before the call's own compare-and-set.
    async fn for_post<T>(
        &self,
        request: Request<T>,
        id: impl FnOnce(&T) -> &String,
    ) -> Result<T, Status> {
        let caller = auth::caller_of(&request)?;
        let request = request.into_inner();
        if !caller.is_unrestricted() {
            let post = self.service.get(id(&request)).await?;
            caller.check_business(&post.business_id)?;
        }
        Ok(request)
    }
}

/// The message of a call on one business (named by `business`), once its
/// caller may touch that business.
fn for_business<T>(request: Request<T>, business: impl FnOnce(&T) -> &String) -> Result<T, Status> {
    let caller = auth::caller_of(&request)?;
    let request = request.into_inner();
    caller.check_business(business(&request))?;
    Ok(request)
}

/// The answer of a call that changes or reads one post: the whole post.
fn full_post(post: crate::domain::Post) -> Response<pb::ScheduledPost> {
    Response::new(post_to_proto(post, PostView::Full))
}

/// The largest message the server sends: the default receive limit of
/// gRPC clients (grpc-go, grpc-python, Punctual's CLI).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The most a list page or a bulk answer may hold, as
/// [`crate::domain::Post::answer_size`] counts it: enough below the 4 MiB
/// that gRPC clients accept by default for the encoding's own overhead.
pub const MAX_ANSWER_BYTES: usize = 3 * 1024 * 1024;

fn page_request(page_size: i32, page_token: String, view: PostView) -> PageRequest {
    PageRequest {
        page_size,
        page_token,
        max_bytes: MAX_ANSWER_BYTES,
        view,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ScheduleEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerApi {
    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::ScheduledPost>, Status> {
        let request = for_business(request, |request| &request.business_id)?;
        let when = match request.when {
            Some(pb::create_schedule_request::When::ScheduledFor(ts)) => {
                Some(When::Instant(timestamp_to_datetime("scheduled_for", &ts)?))
            }
            Some(pb::create_schedule_request::When::LocalTime(local)) => Some(When::Local(local)),
            Some(pb::create_schedule_request::When::NextFreeSlot(true)) => Some(When::NextFreeSlot),
            Some(pb::create_schedule_request::When::NextFreeSlot(false)) | None => None,
        };
        let post = self
            .service
            .create(CreateRequest {
                business_id: request.business_id,
                content_id: request.content_id,
                platform: request.platform,
                payload_json: request.payload_json,
                labels: labels_from_proto(request.labels),
                when,
                time_zone: request.time_zone,
                dst_policy: dst_policy(request.dst_gap_policy, request.dst_overlap_policy)?,
                request_id: request.request_id,
            })
            .await?;
        Ok(full_post(post))
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::ScheduledPost>, Status> {
        let caller = auth::caller_of(&request)?;
        let request = request.into_inner();
        let view = view_from_proto(request.view, PostView::Full)?;
        let post = self.service.get(&request.id).await?;
        caller.check_business(&post.business_id)?;
        Ok(Response::new(post_to_proto(post, view)))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let caller = auth::caller_of(&request)?;
        let request = request.into_inner();
        let statuses = request
            .statuses
            .iter()
            .enumerate()
            .map(|(index, value)| status_from_proto(&format!("statuses[{index}]"), *value))
            .collect::<Result<Vec<_>, _>>()?;
        let view = view_from_proto(request.view, PostView::Basic)?;
        let page = self
            .service
            .list(ListRequest {
                business_id: caller.business_filter(&request.business_id)?,
                from: optional_timestamp("from_time", request.from_time.as_ref())?,
                to: optional_timestamp("to_time", request.to_time.as_ref())?,
                statuses,
                platform: request.platform,
                filter: request.filter,
                page: page_request(request.page_size, request.page_token, view),
            })
            .await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: page
                .posts
                .into_iter()
                .map(|post| post_to_proto(post, view))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_schedule(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::ScheduledPost>, Status> {
        let request = self.for_post(request, |request| &request.id).await?;
        let post = self
            .service
            .update(UpdateRequest {
                id: request.id,
                update_mask: request
                    .update_mask
                    .map(|mask| mask.paths)
                    .unwrap_or_default(),
                scheduled_for: optional_timestamp("scheduled_for", request.scheduled_for.as_ref())?,
                local_time: request.local_time,
                time_zone: request.time_zone,
                payload_json: request.payload_json,
                platform: request.platform,
                labels: labels_from_proto(request.labels),
                expected_version: request.expected_version,
                dst_policy: dst_policy(request.dst_gap_policy, request.dst_overlap_policy)?,
            })
            .await?;
        Ok(full_post(post))
    }

    async fn cancel_schedule(
        &self,
        request: Request<pb::CancelScheduleRequest>,
    ) -> Result<Response<pb::ScheduledPost>, Status> {
        let request = self.for_post(request, |request| &request.id).await?;
        let post = self
            .service
            .cancel(&request.id, request.expected_version)
            .await?;
        Ok(full_post(post))
    }

    async fn bulk_schedule(
        &self,
        request: Request<pb::BulkScheduleRequest>,
    ) -> Result<Response<pb::BulkScheduleResponse>, Status> {
        let caller = auth::caller_of(&request)?;
        let request = request.into_inner();
        // A batch names one business: refusing it here refuses every post
        // of it, before any is written.
        caller.check_business(&request.business_id)?;
        let recurrence = request.recurrence.ok_or_else(|| {
            SchedulerError::InvalidArgument(crate::domain::FieldError::required(
                "recurrence",
                "is required",
            ))
        })?;
        let weekdays = recurrence
            .weekdays
            .iter()
            .enumerate()
            .map(|(index, value)| weekday_from_proto(index, *value))
            .collect::<Result<Vec<_>, _>>()?;
        let validate_only = request.validate_only;
        let view = view_from_proto(request.view, PostView::Summary)?;
        let posts = self
            .service
            .bulk(BulkRequest {
                business_id: request.business_id,
                platform: request.platform,
                content_ids: request.content_ids,
                payload_json: request.payload_json,
                labels: labels_from_proto(request.labels),
                pattern: pattern_from_proto(recurrence.pattern)?,
                start_date: recurrence.start_date,
                local_time: recurrence.local_time,
                time_zone: recurrence.time_zone,
                weekdays,
                interval_hours: recurrence.interval_hours,
                window_end: recurrence.window_end,
                dst_policy: dst_policy(request.dst_gap_policy, request.dst_overlap_policy)?,
                validate_only,
                request_id: request.request_id,
                view,
                max_answer_bytes: MAX_ANSWER_BYTES,
            })
            .await?;
        let to_proto = if validate_only {
            planned_post_to_proto
        } else {
            post_to_proto
        };
        Ok(Response::new(pb::BulkScheduleResponse {
            schedules: posts.into_iter().map(|post| to_proto(post, view)).collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = auth::caller_of(&request)?;
        let request = request.into_inner();
        let view = view_from_proto(request.view, PostView::Full)?;
        let business_id = request.business_id.trim().to_owned();
        if !business_id.is_empty() {
            caller.check_business(&business_id)?;
        }
        let watcher = Arc::clone(&self.watchers)
            .try_acquire_owned()
            .map_err(|_| OverloadError::TooManyWatchers {
                limit: self.max_watchers,
            })?;
        let events = BroadcastStream::new(self.service.events().subscribe());
        let stream = events
            .filter_map(move |item| {
                // The stream owns the permit: it returns when the stream is
                // dropped, however it ends.
                let _watcher = &watcher;
                let item = match item {
                    Ok(event)
                        if (business_id.is_empty() || event.post.business_id == business_id)
                            && caller.may_access(&event.post.business_id) =>
                    {
                        Some(Ok(event_to_proto(&event, view)))
                    }
                    Ok(_) => None,
                    Err(BroadcastStreamRecvError::Lagged(missed)) => {
                        Some(Err(status::watcher_lagged(missed)))
                    }
                };
                std::future::ready(item)
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_calendar(
        &self,
        request: Request<pb::GetCalendarRequest>,
    ) -> Result<Response<pb::Calendar>, Status> {
        let request = for_business(request, |request| &request.business_id)?;
        let calendar = self.service.calendar(calendar_request(request)?).await?;
        let answer = calendar_to_proto(&calendar);
        // A read: the answer is measured exactly before it is sent.
        let size = prost::Message::encoded_len(&answer);
        if size > MAX_MESSAGE_BYTES {
            return Err(SchedulerError::FailedPrecondition(
                crate::domain::Refusal::new(
                    crate::domain::ErrorReason::AnswerTooLarge,
                    "calendar",
                    format!(
                        "this calendar is {} KiB, over the {} KiB an answer may hold; ask for a week (view WEEK) instead of a month",
                        size / 1024,
                        MAX_MESSAGE_BYTES / 1024
                    ),
                )
                .with_metadata("answer_bytes", size.to_string())
                .with_metadata("limit_bytes", MAX_MESSAGE_BYTES.to_string()),
            )
            .into());
        }
        Ok(Response::new(answer))
    }

    async fn get_queue_stats(
        &self,
        request: Request<pb::GetQueueStatsRequest>,
    ) -> Result<Response<pb::QueueStats>, Status> {
        let caller = auth::caller_of(&request)?;
        let business_id = caller.business_filter(&request.into_inner().business_id)?;
        let stats = self.service.queue_stats(&business_id).await?;
        Ok(Response::new(queue_stats_to_proto(&stats)))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let caller = auth::caller_of(&request)?;
        let request = request.into_inner();
        let business_id = caller.business_filter(&request.business_id)?;
        let view = view_from_proto(request.view, PostView::Full)?;
        let page = self
            .service
            .list_dead_letters(
                &business_id,
                &page_request(request.page_size, request.page_token, view),
            )
            .await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            schedules: page
                .posts
                .into_iter()
                .map(|post| post_to_proto(post, view))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn requeue_dead_letter(
        &self,
        request: Request<pb::RequeueDeadLetterRequest>,
    ) -> Result<Response<pb::ScheduledPost>, Status> {
        let request = self.for_post(request, |request| &request.id).await?;
        let at = match (request.at, request.now) {
            (Some(at), false) => RequeueAt::At(timestamp_to_datetime("at", &at)?),
            (Some(_), true) => {
                return Err(
                    SchedulerError::InvalidArgument(crate::domain::FieldError::new(
                        "at",
                        "give either at or now, not both",
                    ))
                    .into(),
                );
            }
            (None, _) => RequeueAt::Now,
        };
        let post = self
            .service
            .requeue_dead_letter(&request.id, at, request.expected_version)
            .await?;
        Ok(full_post(post))
    }

    async fn discard_dead_letter(
        &self,
        request: Request<pb::DiscardDeadLetterRequest>,
    ) -> Result<Response<pb::ScheduledPost>, Status> {
        let request = self.for_post(request, |request| &request.id).await?;
        let post = self
            .service
            .discard_dead_letter(&request.id, request.expected_version)
            .await?;
        Ok(full_post(post))
    }

    async fn run_now(
        &self,
        request: Request<pb::RunNowRequest>,
    ) -> Result<Response<pb::ScheduledPost>, Status> {
        let request = self.for_post(request, |request| &request.id).await?;
        let post = self
            .service
            .run_now(&request.id, request.expected_version)
            .await?;
        Ok(full_post(post))
    }

    async fn pause_queue(
        &self,
        request: Request<pb::PauseQueueRequest>,
    ) -> Result<Response<pb::QueuePause>, Status> {
        let request = for_business(request, |request| &request.business_id)?;
        let pause = self
            .service
            .pause(&request.business_id, &request.platform)
            .await?;
        Ok(Response::new(pause_to_proto(&pause)))
    }

    async fn resume_queue(
        &self,
        request: Request<pb::ResumeQueueRequest>,
    ) -> Result<Response<pb::ResumeQueueResponse>, Status> {
        let request = for_business(request, |request| &request.business_id)?;
        let policy = missed_policy(request.missed_policy)?;
        let missed = self
            .service
            .resume(&request.business_id, &request.platform, policy)
            .await?;
        Ok(Response::new(pb::ResumeQueueResponse {
            missed: i64::try_from(missed).unwrap_or(i64::MAX),
        }))
    }

    async fn list_pauses(
        &self,
        request: Request<pb::ListPausesRequest>,
    ) -> Result<Response<pb::ListPausesResponse>, Status> {
        let caller = auth::caller_of(&request)?;
        let business_id = caller.business_filter(&request.into_inner().business_id)?;
        let pauses = self.service.list_pauses(&business_id).await?;
        Ok(Response::new(pb::ListPausesResponse {
            pauses: pauses.iter().map(pause_to_proto).collect(),
        }))
    }

    async fn set_posting_slots(
        &self,
        request: Request<pb::SetPostingSlotsRequest>,
    ) -> Result<Response<pb::PostingSlots>, Status> {
        let request = for_business(request, |request| &request.business_id)?;
        let slots = request
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| slot_from_proto(index, slot))
            .collect::<Result<Vec<_>, _>>()?;
        let view = self
            .service
            .set_slots(
                &request.business_id,
                &request.platform,
                &request.time_zone,
                slots,
            )
            .await?;
        Ok(Response::new(slots_to_proto(&view)))
    }

    async fn get_posting_slots(
        &self,
        request: Request<pb::GetPostingSlotsRequest>,
    ) -> Result<Response<pb::PostingSlots>, Status> {
        let request = for_business(request, |request| &request.business_id)?;
        let view = self
            .service
            .get_slots(&request.business_id, &request.platform)
            .await?;
        Ok(Response::new(slots_to_proto(&view)))
    }

    async fn suggest_times(
        &self,
        request: Request<pb::SuggestTimesRequest>,
    ) -> Result<Response<pb::SuggestTimesResponse>, Status> {
        let request = for_business(request, |request| &request.business_id)?;
        let (zone, suggestions) = self
            .service
            .suggest_times(
                &request.business_id,
                &request.platform,
                request.count,
                optional_timestamp("from_time", request.from_time.as_ref())?,
                optional_timestamp("to_time", request.to_time.as_ref())?,
                &request.time_zone,
            )
            .await?;
        Ok(Response::new(pb::SuggestTimesResponse {
            suggestions: suggestions
                .iter()
                .map(|suggestion| suggestion_to_proto(suggestion, zone))
                .collect(),
        }))
    }

    async fn record_engagement(
        &self,
        request: Request<pb::RecordEngagementRequest>,
    ) -> Result<Response<pb::RecordEngagementResponse>, Status> {
        let request = self.for_post(request, |request| &request.post_id).await?;
        self.service
            .record_engagement(
                &request.post_id,
                request.impressions,
                request.clicks,
                request.reactions,
            )
            .await?;
        Ok(Response::new(pb::RecordEngagementResponse {}))
    }
}
