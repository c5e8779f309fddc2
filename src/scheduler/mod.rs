//! The application service behind every RPC: turns caller input into valid
//! domain values, writes through [`Storage`] with compare-and-set, tells the
//! engine, and emits events. Transport-neutral: the gRPC layer converts
//! protobuf into the request types here and maps [`SchedulerError`] to a
//! status in one place.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::domain::recurrence::{Pattern, Recurrence, RecurrenceError};
use crate::domain::time::{
    DstPolicy, TimeZone, format_local, parse_local_date, parse_local_datetime, parse_time_of_day,
    resolve_local,
};
use crate::domain::{
    ErrorReason, ExternalId, FieldError, Labels, Payload, Platform, Post, PostId, PostStatus,
    PostView, Refusal, Transition, parse_label_filter, truncate_to_micros,
};
use crate::engine::EngineHandle;
use crate::engine::gate::PauseGate;
use crate::events::EventBus;
use crate::lifecycle::LifeCycle;
use crate::storage::{Change, ListCursor, ListFilter, PostPatch, Storage, StorageError};

mod planning;
mod queue;
pub use planning::*;
pub use queue::*;

/// Errors a caller can act on. Mapped to a gRPC status in `grpc::status`,
/// where each variant becomes one status code and its reason, field and
/// facts become the status's error details.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A field of the request is wrong (`INVALID_ARGUMENT`).
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    /// The post does not exist (`NOT_FOUND`).
    #[error("post {0} not found")]
    NotFound(String),
    /// The request is valid but the state of the post or queue forbids it
    /// (`FAILED_PRECONDITION`): retrying the same call does not help.
    #[error(transparent)]
    FailedPrecondition(Refusal),
    /// The post changed under the call (`ABORTED`): read it again and retry.
    #[error(transparent)]
    Aborted(Refusal),
    /// The call could not be served now (`UNAVAILABLE`): retry it.
    #[error(transparent)]
    Unavailable(Refusal),
    /// Something failed inside the server (`INTERNAL`); the detail, its
    /// source, is logged, never sent.
    #[error("internal error")]
    Internal(#[source] crate::storage::Cause),
}

impl From<StorageError> for SchedulerError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Unavailable(cause) => {
                // The cause names hosts and users: logged, never sent.
                tracing::warn!(error = %cause, "the database is unavailable");
                SchedulerError::Unavailable(Refusal::new(
                    ErrorReason::DatabaseUnavailable,
                    "database",
                    "the database is unavailable; retry the call",
                ))
            }
            other => SchedulerError::Internal(Box::new(other)),
        }
    }
}

/// The resource name of a post in error details.
pub(crate) fn post_subject(id: impl std::fmt::Display) -> String {
    format!("posts/{id}")
}

/// The resource name of a business in error details.
pub(crate) fn business_subject(business_id: &str) -> String {
    format!("businesses/{business_id}")
}

/// A post whose status does not allow the operation.
pub(crate) fn wrong_status(post: &Post, message: String) -> SchedulerError {
    SchedulerError::FailedPrecondition(
        Refusal::new(ErrorReason::WrongStatus, post_subject(post.id), message)
            .with_metadata("status", post.status.as_str()),
    )
}

/// A post that kept changing while a call tried to change it.
pub(crate) fn concurrent_change(id: PostId, message: String) -> SchedulerError {
    SchedulerError::Aborted(Refusal::new(
        ErrorReason::ConcurrentChange,
        post_subject(id),
        message,
    ))
}

pub(crate) fn required(field: &str, message: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidArgument(FieldError::required(field, message))
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidArgument(FieldError::new(field, message))
}

/// Bounds on what a request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// An instant this far in the past is still accepted (and fires at once),
    /// so a caller's clock skew or a slow network does not fail a request.
    pub past_grace: Duration,
    /// The furthest ahead a post may be scheduled.
    pub max_ahead: Duration,
    /// Largest payload accepted, as JSON bytes.
    pub max_payload_bytes: usize,
    /// Most posts in one bulk request.
    pub max_bulk_posts: usize,
    /// How long a pause waits for attempts already under way to finish.
    pub pause_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            past_grace: Duration::from_secs(5),
            max_ahead: Duration::from_secs(10 * 366 * 24 * 3600),
            max_payload_bytes: 64 * 1024,
            max_bulk_posts: 10_000,
            pause_wait: Duration::from_secs(15),
        }
    }
}

/// When a post is due, as the caller gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Instant(DateTime<Utc>),
    /// Wall-clock time in the request's `time_zone`.
    Local(String),
    /// The next free posting slot of the business on the platform.
    NextFreeSlot,
}

#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub business_id: String,
    pub content_id: String,
    pub platform: String,
    /// JSON object text; empty means `{}`.
    pub payload_json: String,
    pub labels: Vec<(String, String)>,
    pub when: Option<When>,
    pub time_zone: String,
    pub dst_policy: DstPolicy,
    pub request_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    pub id: String,
    /// Field paths to change; empty means "every field set below".
    pub update_mask: Vec<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub local_time: String,
    pub time_zone: String,
    /// JSON object text; empty means "unchanged" unless the mask names it.
    pub payload_json: String,
    pub platform: String,
    /// Replaces every label; empty means "unchanged" unless the mask names
    /// it.
    pub labels: Vec<(String, String)>,
    pub expected_version: Option<i64>,
    pub dst_policy: DstPolicy,
}

#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub business_id: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub statuses: Vec<PostStatus>,
    pub platform: String,
    /// Label conditions (`labels.KEY = "VALUE" AND labels.KEY:*`).
    pub filter: String,
    pub page: PageRequest,
}

/// Which page of a listing to answer, and how large it may be.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// At most this many posts; 0 for the default.
    pub page_size: i32,
    /// Where the previous page ended; empty for the first page.
    pub page_token: String,
    /// How many bytes of posts (as [`Post::answer_size`] counts them) one
    /// page may hold: the page ends early rather than exceed it, so that
    /// it fits in a message. 0 for no bound.
    pub max_bytes: usize,
    /// How much of each post is answered, which decides its size.
    pub view: PostView,
}

#[derive(Debug, Clone)]
pub struct ListPage {
    pub posts: Vec<Post>,
    pub next_page_token: String,
}

/// The recurrence pattern as the caller named it; `None` when it named none
/// or an unknown one.
#[derive(Debug, Clone, Default)]
pub struct BulkRequest {
    pub business_id: String,
    pub platform: String,
    pub content_ids: Vec<String>,
    /// JSON object text; empty means `{}`.
    pub payload_json: String,
    pub labels: Vec<(String, String)>,
    pub pattern: Option<PatternKind>,
    pub start_date: String,
    pub local_time: String,
    pub time_zone: String,
    pub weekdays: Vec<chrono::Weekday>,
    pub interval_hours: i32,
    /// End of the daily window for DISTRIBUTE_ACROSS_WEEK without slots.
    pub window_end: String,
    pub dst_policy: DstPolicy,
    pub validate_only: bool,
    pub request_id: String,
    /// How much of each post the answer carries.
    pub view: PostView,
    /// The largest answer allowed (as [`Post::answer_size`] counts it); a
    /// batch whose answer would be larger is refused before anything is
    /// saved. 0 for no bound.
    pub max_answer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    Daily,
    Weekdays,
    Weekly,
    EveryNHours,
    DistributeAcrossWeek,
}

/// Edits and cancels re-read and retry this often when they lose a race
/// with the engine or another caller and no version was demanded.
const CAS_ROUNDS: usize = 3;
const DEFAULT_PAGE_SIZE: i64 = 100;
const MAX_PAGE_SIZE: i64 = 1_000;

#[derive(Clone)]
pub struct SchedulerService {
    /// For reads; every change of a post goes through `lifecycle`.
    storage: Storage,
    engine: EngineHandle,
    /// Writes each change of a post's status and announces it.
    lifecycle: LifeCycle,
    clock: Arc<dyn Clock>,
    gate: Arc<PauseGate>,
    limits: Limits,
    suggest_config: Arc<SuggestConfig>,
    /// Held from choosing a free slot until the post is saved, so two
    /// requests of this process never pick the same slot.
    slot_lock: Arc<tokio::sync::Mutex<()>>,
}

impl SchedulerService {
    pub fn new(
        storage: Storage,
        engine: EngineHandle,
        events: EventBus,
        clock: Arc<dyn Clock>,
        gate: Arc<PauseGate>,
        limits: Limits,
    ) -> Self {
        Self {
            lifecycle: LifeCycle::new(storage.clone(), events),
            storage,
            engine,
            clock,
            gate,
            limits,
            suggest_config: Arc::default(),
            slot_lock: Arc::default(),
        }
    }

    pub fn with_suggest_config(mut self, config: SuggestConfig) -> Self {
        self.suggest_config = Arc::new(config);
        self
    }

    pub fn events(&self) -> &EventBus {
        self.lifecycle.events()
    }

    pub async fn create(&self, request: CreateRequest) -> Result<Post, SchedulerError> {
        let _slot_guard = match request.when {
            Some(When::NextFreeSlot) => Some(self.slot_lock.lock().await),
            _ => None,
        };
        let now = self.clock.now();
        let business_id = ExternalId::parse("business_id", &request.business_id)?;
        let content_id = ExternalId::parse("content_id", &request.content_id)?;
        let platform = Platform::parse("platform", &request.platform)?;
        let payload = self.parse_payload("payload_json", &request.payload_json)?;
        let labels = parse_labels(&request.labels)?;
        let request_id = parse_optional_id("request_id", &request.request_id)?;
        let (scheduled_for, time_zone) = match request.when {
            None => {
                return Err(required(
                    "scheduled_for",
                    "either scheduled_for or local_time with time_zone is required",
                ));
            }
            Some(When::Instant(instant)) => {
                let zone = parse_zone_or_utc(&request.time_zone)?;
                (self.check_instant("scheduled_for", instant, now)?, zone)
            }
            Some(When::Local(local)) => {
                if request.time_zone.trim().is_empty() {
                    return Err(required("time_zone", "is required with local_time"));
                }
                let zone = parse_zone(&request.time_zone)?;
                let instant = resolve_wall_clock("local_time", &local, zone, request.dst_policy)?;
                (self.check_instant("local_time", instant, now)?, zone)
            }
            Some(When::NextFreeSlot) => {
                let (instant, zone) = self
                    .next_free_slot(business_id.as_str(), platform.as_str(), now)
                    .await?;
                (self.check_instant("next_free_slot", instant, now)?, zone)
            }
        };
        let post = new_post(
            &business_id,
            content_id,
            &platform,
            payload,
            labels,
            scheduled_for,
            time_zone,
            request_id.map(|id| id.as_str().to_owned()),
            crate::telemetry::current_trace_parent(),
            now,
        );
        match self.storage.insert(&post).await {
            Ok(()) => {
                self.engine.arm(post.id, post.next_attempt_at);
                self.lifecycle.announce_created(&post, now);
                Ok(post)
            }
            Err(StorageError::DuplicateRequest) => {
                let request_id = post.request_id.clone().unwrap_or_default();
                let mut existing = self
                    .storage
                    .find_by_request_ids(business_id.as_str(), std::slice::from_ref(&request_id))
                    .await?;
                existing.pop().ok_or_else(|| {
                    SchedulerError::Aborted(Refusal::new(
                        ErrorReason::RequestIdInUse,
                        business_subject(business_id.as_str()),
                        "request id is in use by a concurrent call; retry it",
                    ))
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Post, SchedulerError> {
        self.existing(PostId::parse("id", id)?).await
    }

    /// The post `id` names, or `NOT_FOUND`.
    pub(crate) async fn existing(&self, id: PostId) -> Result<Post, SchedulerError> {
        self.storage
            .get(id)
            .await?
            .ok_or_else(|| SchedulerError::NotFound(id.to_string()))
    }

    pub async fn list(&self, request: ListRequest) -> Result<ListPage, SchedulerError> {
        let filter = ListFilter {
            business_id: business_filter(&request.business_id)?,
            from: request.from,
            to: request.to,
            statuses: request.statuses,
            platform: match non_empty(&request.platform) {
                Some(platform) => Some(Platform::parse("platform", &platform)?.as_str().to_owned()),
                None => None,
            },
            labels: parse_label_filter("filter", &request.filter)?,
        };
        self.list_page(filter, &request.page).await
    }

    /// One page of a listing with keyset page tokens bound to the filters.
    pub(crate) async fn list_page(
        &self,
        filter: ListFilter,
        page: &PageRequest,
    ) -> Result<ListPage, SchedulerError> {
        let page_size = match i64::from(page.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => return Err(invalid("page_size", "must not be negative")),
            size => size.min(MAX_PAGE_SIZE),
        };
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from > to
        {
            return Err(invalid("to_time", "must not be before from_time"));
        }
        let fingerprint = filter_fingerprint(&filter);
        let cursor = match page.page_token.trim() {
            "" => None,
            token => Some(decode_page_token(token, &fingerprint)?),
        };
        let mut posts = self
            .storage
            .list(&filter, cursor.as_ref(), page_size + 1)
            .await?;
        let fitting = fitting_posts(&posts, page.max_bytes, page.view);
        let next_page_token = if posts.len() as i64 > page_size || fitting < posts.len() {
            posts.truncate(fitting.min(page_size as usize));
            posts
                .last()
                .map(|last| encode_page_token(last, &fingerprint))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(ListPage {
            posts,
            next_page_token,
        })
    }

    pub async fn update(&self, request: UpdateRequest) -> Result<Post, SchedulerError> {
        let id = PostId::parse("id", &request.id)?;
        let paths = update_paths(&request)?;
        for _ in 0..CAS_ROUNDS {
            let now = self.clock.now();
            let current = self.existing(id).await?;
            check_transition(
                &current,
                Transition::Edit { new_instant: true },
                request.expected_version,
            )?;
            let patch = self.update_patch(&request, &paths, &current, now)?;
            let edit = Transition::Edit {
                new_instant: patch.next_attempt_at.is_some(),
            };
            let change = Change::of(edit, &current);
            if let Some(updated) = self.lifecycle.apply(&change, &patch, now).await? {
                self.engine.arm(updated.id, updated.next_attempt_at);
                return Ok(updated);
            }
        }
        Err(concurrent_change(
            id,
            format!("post {id} kept changing while being updated; read it again and retry"),
        ))
    }

    pub async fn cancel(
        &self,
        id: &str,
        expected_version: Option<i64>,
    ) -> Result<Post, SchedulerError> {
        let id = PostId::parse("id", id)?;
        for _ in 0..CAS_ROUNDS {
            let now = self.clock.now();
            let current = self.existing(id).await?;
            if current.status == PostStatus::Cancelled {
                return Ok(current);
            }
            check_transition(&current, Transition::Cancel, expected_version)?;
            let change = Change::of(Transition::Cancel, &current);
            if let Some(cancelled) = self
                .lifecycle
                .apply(&change, &PostPatch::default(), now)
                .await?
            {
                self.engine.disarm(id);
                return Ok(cancelled);
            }
        }
        Err(concurrent_change(
            id,
            format!("post {id} kept changing while being cancelled; read it again and retry"),
        ))
    }

    /// Schedules one post per content id on consecutive occurrences of the
    /// recurrence. All or nothing; with `validate_only` nothing is saved.
    pub async fn bulk(&self, request: BulkRequest) -> Result<Vec<Post>, SchedulerError> {
        let _slot_guard = match request.pattern {
            Some(PatternKind::DistributeAcrossWeek) => Some(self.slot_lock.lock().await),
            _ => None,
        };
        let now = self.clock.now();
        let business_id = ExternalId::parse("business_id", &request.business_id)?;
        let platform = Platform::parse("platform", &request.platform)?;
        let payload = self.parse_payload("payload_json", &request.payload_json)?;
        let labels = parse_labels(&request.labels)?;
        let request_id = parse_optional_id("request_id", &request.request_id)?;
        if request.content_ids.is_empty() {
            return Err(invalid("content_ids", "must list at least one content id"));
        }
        if request.content_ids.len() > self.limits.max_bulk_posts {
            return Err(FieldError::new(
                "content_ids",
                format!(
                    "at most {} posts per request, got {}",
                    self.limits.max_bulk_posts,
                    request.content_ids.len()
                ),
            )
            .with_reason(ErrorReason::TooManyPosts)
            .with_metadata("limit", self.limits.max_bulk_posts.to_string())
            .into());
        }
        let content_ids = request
            .content_ids
            .iter()
            .enumerate()
            .map(|(index, id)| ExternalId::parse(&format!("content_ids[{index}]"), id))
            .collect::<Result<Vec<_>, _>>()?;
        let (zone, planned) = self
            .plan_bulk(&request, &business_id, &platform, content_ids.len(), now)
            .await?;
        let trace_parent = crate::telemetry::current_trace_parent();
        let mut posts = Vec::with_capacity(content_ids.len());
        for (index, (content_id, (instant, local))) in
            content_ids.into_iter().zip(planned).enumerate()
        {
            let occurrence = Occurrence {
                index,
                local,
                instant,
                zone,
            };
            let instant = self
                .check_instant(&occurrence, instant, now)
                .map_err(|error| occurrence.explain(error))?;
            let post_request_id = request_id
                .as_ref()
                .map(|id| format!("{}#{index}", id.as_str()));
            posts.push(new_post(
                &business_id,
                content_id,
                &platform,
                payload.clone(),
                labels.clone(),
                instant,
                zone,
                post_request_id,
                trace_parent.clone(),
                now,
            ));
        }
        check_answer_size(&posts, request.view, request.max_answer_bytes)?;
        if request.validate_only {
            return Ok(posts);
        }
        match self.storage.insert_all(&posts).await {
            Ok(()) => {
                for post in &posts {
                    self.engine.arm(post.id, post.next_attempt_at);
                    self.lifecycle.announce_created(post, now);
                }
                Ok(posts)
            }
            Err(StorageError::DuplicateRequest) => {
                let mut request_ids: Vec<String> =
                    posts.iter().filter_map(|p| p.request_id.clone()).collect();
                // And the one after the last: a longer batch stored under the
                // same request id holds it.
                if let Some(id) = &request_id {
                    request_ids.push(format!("{}#{}", id.as_str(), posts.len()));
                }
                let mut existing = self
                    .storage
                    .find_by_request_ids(business_id.as_str(), &request_ids)
                    .await?;
                existing.sort_by_key(|post| {
                    post.request_id
                        .as_deref()
                        .and_then(|id| id.rsplit('#').next())
                        .and_then(|index| index.parse::<usize>().ok())
                });
                // The same request again is the same number of posts of the
                // same content ids in the same order, and no more.
                let same = existing.len() == posts.len()
                    && existing
                        .iter()
                        .zip(&posts)
                        .all(|(stored, asked)| stored.content_id == asked.content_id);
                if !same {
                    return Err(SchedulerError::FailedPrecondition(Refusal::new(
                        ErrorReason::RequestIdReused,
                        business_subject(business_id.as_str()),
                        "request_id was already used for a different bulk request",
                    )));
                }
                Ok(existing)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn parse_payload(&self, field: &str, text: &str) -> Result<Payload, SchedulerError> {
        Ok(Payload::parse(field, text, self.limits.max_payload_bytes)?)
    }

    /// Accepts an instant not further back than the grace and not beyond the
    /// furthest allowed date, truncated to microseconds. `field` is written
    /// out only for a refusal (a bulk request checks thousands).
    fn check_instant(
        &self,
        field: impl std::fmt::Display,
        instant: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, SchedulerError> {
        let grace = chrono::Duration::from_std(self.limits.past_grace).unwrap_or_default();
        if instant < now - grace {
            return Err(FieldError::new(
                field.to_string(),
                format!(
                    "{} is in the past (now is {})",
                    instant.to_rfc3339(),
                    now.to_rfc3339()
                ),
            )
            .with_reason(ErrorReason::PastInstant)
            .with_metadata("instant", instant.to_rfc3339())
            .with_metadata("now", now.to_rfc3339())
            .into());
        }
        let max_ahead = chrono::Duration::from_std(self.limits.max_ahead)
            .unwrap_or(chrono::Duration::days(3660));
        if instant > now + max_ahead {
            return Err(FieldError::new(
                field.to_string(),
                format!(
                    "{} is too far ahead; posts can be scheduled at most {} days ahead",
                    instant.to_rfc3339(),
                    max_ahead.num_days()
                ),
            )
            .with_reason(ErrorReason::TooFarAhead)
            .with_metadata("instant", instant.to_rfc3339())
            .with_metadata("max_days_ahead", max_ahead.num_days().to_string())
            .into());
        }
        Ok(truncate_to_micros(instant))
    }

    fn update_patch(
        &self,
        request: &UpdateRequest,
        paths: &UpdatePaths,
        current: &Post,
        now: DateTime<Utc>,
    ) -> Result<PostPatch, SchedulerError> {
        let mut patch = PostPatch::default();
        let zone = if paths.time_zone {
            Some(parse_zone(&request.time_zone)?)
        } else {
            None
        };
        let instant = if paths.scheduled_for {
            let instant = request
                .scheduled_for
                .ok_or_else(|| invalid("scheduled_for", "is in update_mask but not set"))?;
            Some(self.check_instant("scheduled_for", instant, now)?)
        } else if paths.local_time {
            let zone = zone.unwrap_or(current.time_zone);
            let instant =
                resolve_wall_clock("local_time", &request.local_time, zone, request.dst_policy)?;
            Some(self.check_instant("local_time", instant, now)?)
        } else {
            None
        };
        patch.time_zone = zone;
        if let Some(instant) = instant {
            patch.scheduled_for = Some(instant);
            patch.next_attempt_at = Some(instant);
            // A new instant is a fresh start for a post that was retrying
            // (`Transition::Edit` makes it SCHEDULED with no attempts).
            if current.status == PostStatus::RetryScheduled {
                patch.last_error = Some(None);
            }
        }
        if paths.payload {
            patch.payload = Some(self.parse_payload("payload_json", &request.payload_json)?);
        }
        if paths.labels {
            patch.labels = Some(parse_labels(&request.labels)?);
        }
        if paths.platform {
            patch.platform = Some(
                Platform::parse("platform", &request.platform)?
                    .as_str()
                    .to_owned(),
            );
        }
        Ok(patch)
    }
}

#[allow(clippy::too_many_arguments)]
fn new_post(
    business_id: &ExternalId,
    content_id: ExternalId,
    platform: &Platform,
    payload: Payload,
    labels: Labels,
    scheduled_for: DateTime<Utc>,
    time_zone: TimeZone,
    request_id: Option<String>,
    trace_parent: Option<String>,
    now: DateTime<Utc>,
) -> Post {
    let now = truncate_to_micros(now);
    Post {
        id: PostId::new(),
        business_id: business_id.as_str().to_owned(),
        content_id: content_id.as_str().to_owned(),
        platform: platform.as_str().to_owned(),
        payload,
        labels,
        scheduled_for,
        time_zone,
        status: Transition::Create.target(PostStatus::Scheduled, 0),
        attempts: 0,
        last_error: None,
        next_attempt_at: scheduled_for,
        published_at: None,
        external_id: None,
        version: 1,
        request_id,
        create_time: now,
        update_time: now,
        attempt_history: Vec::new(),
        trace_parent,
    }
}

/// Which fields an update changes.
#[derive(Debug, Default)]
struct UpdatePaths {
    scheduled_for: bool,
    local_time: bool,
    time_zone: bool,
    payload: bool,
    platform: bool,
    labels: bool,
}

fn update_paths(request: &UpdateRequest) -> Result<UpdatePaths, SchedulerError> {
    let mut paths = UpdatePaths::default();
    if request.update_mask.is_empty() {
        paths.scheduled_for = request.scheduled_for.is_some();
        paths.local_time = !request.local_time.trim().is_empty();
        paths.time_zone = !request.time_zone.trim().is_empty();
        paths.payload = !request.payload_json.trim().is_empty();
        paths.platform = !request.platform.trim().is_empty();
        paths.labels = !request.labels.is_empty();
    } else {
        for path in &request.update_mask {
            // Paths come in the proto's names or, from JSON clients, in
            // lowerCamelCase.
            match snake_case(path.trim()).as_str() {
                "scheduled_for" => paths.scheduled_for = true,
                "local_time" => paths.local_time = true,
                "time_zone" => paths.time_zone = true,
                // "payload" is the field's name before it carried JSON text.
                "payload_json" | "payload" => paths.payload = true,
                "platform" => paths.platform = true,
                "labels" => paths.labels = true,
                other => {
                    return Err(invalid(
                        "update_mask",
                        format!(
                            "cannot update {:?}; updatable fields are scheduled_for, local_time, time_zone, payload_json, platform and labels",
                            crate::domain::echo(other)
                        ),
                    ));
                }
            }
        }
    }
    if paths.scheduled_for && paths.local_time {
        return Err(invalid(
            "update_mask",
            "change either scheduled_for or local_time, not both",
        ));
    }
    if paths.time_zone && !paths.scheduled_for && !paths.local_time {
        return Err(invalid(
            "time_zone",
            "can only change together with local_time or scheduled_for",
        ));
    }
    if !(paths.scheduled_for || paths.local_time || paths.payload || paths.platform || paths.labels)
    {
        return Err(invalid("update_mask", "names no field to change"));
    }
    Ok(paths)
}

/// Refuses a batch whose answer would not fit in `max_bytes` in `view`.
fn check_answer_size(
    posts: &[Post],
    view: PostView,
    max_bytes: usize,
) -> Result<(), SchedulerError> {
    if max_bytes == 0 {
        return Ok(());
    }
    let size: usize = posts.iter().map(|post| post.answer_size(view)).sum();
    if size <= max_bytes {
        return Ok(());
    }
    Err(FieldError::new(
        "view",
        format!(
            "the answer would be about {} KiB in this view, over the {} KiB limit; ask for a smaller view (SUMMARY answers ids and instants) or send fewer posts per request",
            size / 1024,
            max_bytes / 1024
        ),
    )
    .with_reason(crate::domain::ErrorReason::AnswerTooLarge)
    .with_metadata("answer_bytes", size.to_string())
    .with_metadata("limit_bytes", max_bytes.to_string())
    .into())
}

/// How many of `posts`, from the first, fit in `max_bytes` (at least one,
/// so that a listing always moves on; 0 bytes means no bound).
fn fitting_posts(posts: &[Post], max_bytes: usize, view: PostView) -> usize {
    if max_bytes == 0 {
        return posts.len();
    }
    let mut total = 0usize;
    for (index, post) in posts.iter().enumerate() {
        total = total.saturating_add(post.answer_size(view));
        if total > max_bytes {
            return index.max(1);
        }
    }
    posts.len()
}

fn parse_labels(labels: &[(String, String)]) -> Result<Labels, SchedulerError> {
    Ok(Labels::parse(
        "labels",
        labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )?)
}

/// `scheduledFor` -> `scheduled_for`; names already in snake case stay.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Refuses `transition` of `post` as read when the caller expected another
/// version (`ABORTED`) or the post's status does not allow it
/// (`FAILED_PRECONDITION`, naming the statuses that would).
pub(crate) fn check_transition(
    post: &Post,
    transition: Transition,
    expected_version: Option<i64>,
) -> Result<(), SchedulerError> {
    check_version(post, expected_version)?;
    if transition.allows(post.status) {
        return Ok(());
    }
    let allowed: Vec<&str> = transition
        .sources()
        .iter()
        .map(|status| status.as_str())
        .collect();
    Err(wrong_status(
        post,
        format!(
            "post {} is {}; {} needs it to be {}",
            post.id,
            post.status,
            transition.made_by(),
            allowed.join(" or ")
        ),
    ))
}

pub(crate) fn check_version(post: &Post, expected: Option<i64>) -> Result<(), SchedulerError> {
    match expected {
        Some(version) if version != post.version => Err(SchedulerError::Aborted(
            Refusal::new(
                ErrorReason::VersionMismatch,
                post_subject(post.id),
                format!(
                    "post {} is at version {}, not {version}; read it again and retry",
                    post.id, post.version
                ),
            )
            .with_metadata("expected_version", version.to_string())
            .with_metadata("current_version", post.version.to_string()),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn parse_zone(name: &str) -> Result<TimeZone, SchedulerError> {
    TimeZone::parse(name).map_err(|error| error.for_field("time_zone").into())
}

pub(crate) fn parse_zone_or_utc(name: &str) -> Result<TimeZone, SchedulerError> {
    if name.trim().is_empty() {
        Ok(TimeZone::UTC)
    } else {
        parse_zone(name)
    }
}

fn resolve_wall_clock(
    field: &str,
    local: &str,
    zone: TimeZone,
    policy: DstPolicy,
) -> Result<DateTime<Utc>, SchedulerError> {
    let local = parse_local_datetime(local).map_err(|error| error.for_field(field))?;
    Ok(resolve_local(zone, local, policy).map_err(|error| error.for_field(field))?)
}

pub(crate) fn parse_optional_id(
    field: &str,
    input: &str,
) -> Result<Option<ExternalId>, SchedulerError> {
    if input.trim().is_empty() {
        Ok(None)
    } else {
        Ok(Some(ExternalId::parse(field, input)?))
    }
}

/// An optional business filter: none when empty, else a valid business id.
pub(crate) fn business_filter(input: &str) -> Result<Option<String>, SchedulerError> {
    parse_optional_id("business_id", input).map(|id| id.map(|id| id.as_str().to_owned()))
}

pub(crate) fn non_empty(input: &str) -> Option<String> {
    let trimmed = input.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The recurrence of a bulk request, or `None` for DISTRIBUTE_ACROSS_WEEK,
/// which spreads its posts over the posting slots instead.
pub(crate) fn parse_recurrence(
    request: &BulkRequest,
) -> Result<Option<Recurrence>, SchedulerError> {
    let pattern = match request.pattern {
        None => {
            return Err(required(
                "recurrence.pattern",
                "is required: DAILY, WEEKDAYS, WEEKLY, EVERY_N_HOURS or DISTRIBUTE_ACROSS_WEEK",
            ));
        }
        Some(PatternKind::Daily) => Pattern::Daily,
        Some(PatternKind::Weekdays) => Pattern::Weekdays,
        Some(PatternKind::Weekly) => Pattern::Weekly(request.weekdays.clone()),
        Some(PatternKind::EveryNHours) => {
            let hours = u32::try_from(request.interval_hours).map_err(|_| {
                invalid(
                    "recurrence.interval_hours",
                    format!("must be between 1 and 168, got {}", request.interval_hours),
                )
            })?;
            Pattern::EveryNHours(hours)
        }
        Some(PatternKind::DistributeAcrossWeek) => return Ok(None),
    };
    let start_date = parse_local_date(&request.start_date)
        .map_err(|error| error.for_field("recurrence.start_date"))?;
    let time_of_day = parse_time_of_day(&request.local_time)
        .map_err(|error| error.for_field("recurrence.local_time"))?;
    let zone = TimeZone::parse(&request.time_zone)
        .map_err(|error| error.for_field("recurrence.time_zone"))?;
    Recurrence::new(pattern, start_date, time_of_day, zone, request.dst_policy)
        .map(Some)
        .map_err(recurrence_error)
}

pub(crate) fn recurrence_error(error: RecurrenceError) -> SchedulerError {
    match error {
        RecurrenceError::NoWeekdays => FieldError::new("recurrence.weekdays", error.to_string())
            .with_reason(ErrorReason::FieldRequired)
            .into(),
        RecurrenceError::IntervalOutOfRange(_) => {
            invalid("recurrence.interval_hours", error.to_string())
        }
        RecurrenceError::Time {
            index,
            local,
            source,
        } => {
            let message = format!("occurrence {index} ({local}): {source}");
            let mut field_error = source.for_field("recurrence");
            field_error.message = message;
            field_error
                .with_metadata("occurrence", index.to_string())
                .into()
        }
        other => FieldError::new("recurrence", other.to_string())
            .with_reason(ErrorReason::InvalidRecurrence)
            .into(),
    }
}

/// A short digest of the filters, carried in page tokens so that a token is
/// refused when the filters change between pages.
pub(crate) fn filter_fingerprint(filter: &ListFilter) -> String {
    let mut hasher = Sha256::new();
    // A set: the same statuses in another order are the same filter.
    let mut statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    hasher.update(
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}",
            filter.business_id,
            filter.from.map(|t| t.timestamp_micros()),
            filter.to.map(|t| t.timestamp_micros()),
            statuses,
            filter.platform
        )
        .as_bytes(),
    );
    // Only when present, so tokens issued without label filters stay valid.
    if !filter.labels.is_empty() {
        hasher.update(format!("|{:?}", filter.labels).as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

pub(crate) fn encode_page_token(last: &Post, fingerprint: &str) -> String {
    let raw = format!(
        "{}|{}|{}",
        last.scheduled_for.timestamp_micros(),
        last.id,
        fingerprint
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub(crate) fn decode_page_token(
    token: &str,
    fingerprint: &str,
) -> Result<ListCursor, SchedulerError> {
    let bad = || {
        SchedulerError::from(
            FieldError::new("page_token", "is not a page token this listing returned")
                .with_reason(ErrorReason::InvalidPageToken),
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = raw.split('|');
    let (Some(micros), Some(id), Some(token_fingerprint), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if token_fingerprint != fingerprint {
        return Err(FieldError::new(
            "page_token",
            "was issued for different filters; keep the filters unchanged while paging",
        )
        .with_reason(ErrorReason::InvalidPageToken)
        .into());
    }
    let scheduled_for_us = micros.parse().map_err(|_| bad())?;
    let id = PostId::parse("page_token", id).map_err(|_| bad())?;
    Ok(ListCursor {
        scheduled_for_us,
        id: id.to_string(),
    })
}

/// Names one occurrence of a bulk request in a refusal: by the content id
/// it publishes (`content_ids[3]`), with its index and the wall-clock time
/// it was asked for in the message.
struct Occurrence {
    index: usize,
    local: Option<chrono::NaiveDateTime>,
    instant: DateTime<Utc>,
    zone: TimeZone,
}

impl Occurrence {
    fn local_time(&self) -> String {
        match self.local {
            Some(local) => local.to_string(),
            None => format_local(self.instant, self.zone),
        }
    }

    /// Says which occurrence a refusal of its instant is about.
    fn explain(&self, error: SchedulerError) -> SchedulerError {
        match error {
            SchedulerError::InvalidArgument(mut field_error) => {
                field_error.message = format!(
                    "recurrence (occurrence {}, {}): {}",
                    self.index,
                    self.local_time(),
                    field_error.message
                );
                field_error
                    .with_metadata("occurrence", self.index.to_string())
                    .with_metadata("local_time", self.local_time())
                    .into()
            }
            other => other,
        }
    }
}

impl std::fmt::Display for Occurrence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "content_ids[{}]", self.index)
    }
}
