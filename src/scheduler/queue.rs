//! Steering the queue: dead letters, pauses, queue health and the calendar.

use chrono::{DateTime, NaiveDate, Utc, Weekday};

use super::{
    ListPage, PageRequest, SchedulerError, SchedulerService, business_filter, business_subject,
    check_transition, check_version, concurrent_change, invalid, non_empty, parse_zone,
};
use crate::domain::calendar::{CalendarGrid, CalendarView, local_date};
use crate::domain::time::{TimeZone, format_local};
use crate::domain::{
    ErrorReason, ExternalId, Platform, Post, PostId, PostStatus, Refusal, Transition,
    truncate_to_micros,
};
use crate::stats::StatsSnapshot;
use crate::storage::{Change, ListFilter, PauseRecord, PostPatch};

/// Posts handled per read when a resume works through missed posts.
const RESUME_BATCH: i64 = 1_000;
/// Most posts a calendar shows.
const CALENDAR_MAX_POSTS: i64 = 5_000;

/// When a requeued dead letter should be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueAt {
    Now,
    At(DateTime<Utc>),
}

/// What a resume does with posts whose instant passed during the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedPolicy {
    #[default]
    PublishNow,
    KeepForReview,
    Skip,
}

#[derive(Debug, Clone)]
pub struct CalendarRequest {
    pub business_id: String,
    pub view: CalendarView,
    pub time_zone: String,
    pub week_start: Weekday,
}

/// One post as a calendar shows it.
#[derive(Debug, Clone)]
pub struct CalendarEntry {
    pub post: Post,
    /// "HH:MM" in the calendar's zone.
    pub local_time: String,
}

#[derive(Debug, Clone)]
pub struct CalendarDay {
    pub date: NaiveDate,
    pub in_month: bool,
    pub is_today: bool,
    pub entries: Vec<CalendarEntry>,
}

#[derive(Debug, Clone)]
pub struct Calendar {
    pub zone: TimeZone,
    /// Whole weeks of seven days.
    pub weeks: Vec<Vec<CalendarDay>>,
}

#[derive(Debug, Clone)]
pub struct QueueStats {
    pub snapshot: StatsSnapshot,
    pub next_due: Option<DateTime<Utc>>,
    pub overdue: i64,
}

/// Parses an optional platform filter.
fn optional_platform(input: &str) -> Result<Option<Platform>, SchedulerError> {
    non_empty(input)
        .map(|platform| Platform::parse("platform", &platform))
        .transpose()
        .map_err(SchedulerError::from)
}

impl SchedulerService {
    pub async fn list_dead_letters(
        &self,
        business_id: &str,
        page: &PageRequest,
    ) -> Result<ListPage, SchedulerError> {
        let filter = ListFilter {
            business_id: business_filter(business_id)?,
            statuses: vec![PostStatus::DeadLettered],
            ..ListFilter::default()
        };
        self.list_page(filter, page).await
    }

    /// Schedules a dead letter again with a fresh set of attempts. It keeps
    /// its id, and so its idempotency key: a publisher that honours the key
    /// does not post it twice if an earlier attempt did go out.
    pub async fn requeue_dead_letter(
        &self,
        id: &str,
        at: RequeueAt,
        expected_version: Option<i64>,
    ) -> Result<Post, SchedulerError> {
        let id = PostId::parse("id", id)?;
        let now = self.clock.now();
        let due = match at {
            RequeueAt::Now => truncate_to_micros(now),
            RequeueAt::At(instant) => self.check_instant("at", instant, now)?,
        };
        let current = self
            .read_for(id, Transition::Requeue, expected_version)
            .await?;
        let patch = PostPatch {
            next_attempt_at: Some(due),
            last_error: Some(None),
            ..PostPatch::default()
        };
        let requeued = self
            .transition(&current, Transition::Requeue, &patch, now)
            .await?;
        self.engine.arm(requeued.id, requeued.next_attempt_at);
        Ok(requeued)
    }

    pub async fn discard_dead_letter(
        &self,
        id: &str,
        expected_version: Option<i64>,
    ) -> Result<Post, SchedulerError> {
        let id = PostId::parse("id", id)?;
        let now = self.clock.now();
        let current = self.existing(id).await?;
        // Discarding twice is not an error: the post stays discarded.
        if current.status == PostStatus::Discarded {
            check_version(&current, expected_version)?;
            return Ok(current);
        }
        check_transition(&current, Transition::Discard, expected_version)?;
        let discarded = self
            .transition(&current, Transition::Discard, &PostPatch::default(), now)
            .await?;
        Ok(discarded)
    }

    /// Publishes a pending post at once, keeping its id and so its
    /// idempotency key. Its `scheduled_for` stays as planned; only the next
    /// attempt moves to now.
    pub async fn run_now(
        &self,
        id: &str,
        expected_version: Option<i64>,
    ) -> Result<Post, SchedulerError> {
        let id = PostId::parse("id", id)?;
        let now = self.clock.now();
        let current = self
            .read_for(id, Transition::RunNow, expected_version)
            .await?;
        if self.gate.is_paused(&current.business_id, &current.platform) {
            return Err(SchedulerError::FailedPrecondition(
                Refusal::new(
                    ErrorReason::Paused,
                    business_subject(&current.business_id),
                    format!(
                        "the queue of business {} on {} is paused; resume it first",
                        current.business_id, current.platform
                    ),
                )
                .with_metadata("business_id", current.business_id.as_str())
                .with_metadata("platform", current.platform.as_str()),
            ));
        }
        let patch = PostPatch {
            next_attempt_at: Some(truncate_to_micros(now)),
            ..PostPatch::default()
        };
        let moved = self
            .transition(&current, Transition::RunNow, &patch, now)
            .await?;
        self.engine.arm(moved.id, moved.next_attempt_at);
        Ok(moved)
    }

    /// Pauses a business or one of its platforms. Returns once no attempt of
    /// it is under way, so nothing of it is published after the call.
    pub async fn pause(
        &self,
        business_id: &str,
        platform: &str,
    ) -> Result<PauseRecord, SchedulerError> {
        let business_id = ExternalId::parse("business_id", business_id)?;
        let platform = optional_platform(platform)?;
        let record = PauseRecord {
            business_id: business_id.as_str().to_owned(),
            platform: platform.as_ref().map(|p| p.as_str().to_owned()),
            paused_at: truncate_to_micros(self.clock.now()),
        };
        self.storage.insert_pause(&record).await?;
        self.gate
            .pause(&record.business_id, record.platform.as_deref());
        let idle = self
            .gate
            .wait_idle(
                &record.business_id,
                record.platform.as_deref(),
                self.limits.pause_wait,
            )
            .await;
        if !idle {
            return Err(SchedulerError::Unavailable(Refusal::new(
                ErrorReason::AttemptInProgress,
                business_subject(&record.business_id),
                format!(
                    "the pause is in force, but an attempt already under way did not finish within {}s; call PauseQueue again to wait for it",
                    self.limits.pause_wait.as_secs()
                ),
            )));
        }
        let pauses = self.storage.list_pauses(Some(&record.business_id)).await?;
        Ok(pauses
            .into_iter()
            .find(|pause| pause.platform == record.platform)
            .unwrap_or(record))
    }

    /// Lifts the pause of a platform, or every pause of the business when
    /// no platform is named, then deals with the posts that fell due during
    /// the pause. Returns how many there were.
    pub async fn resume(
        &self,
        business_id: &str,
        platform: &str,
        missed: MissedPolicy,
    ) -> Result<u64, SchedulerError> {
        let business_id = ExternalId::parse("business_id", business_id)?;
        let platform = optional_platform(platform)?;
        let platform = platform.as_ref().map(Platform::as_str);
        self.storage
            .delete_pauses(business_id.as_str(), platform)
            .await?;
        self.gate.resume(business_id.as_str(), platform);

        // Settled posts get exactly this instant, so the read below, which
        // looks strictly before it, does not find them again.
        let now = truncate_to_micros(self.clock.now());
        let mut missed_count = 0u64;
        // Posts still covered by another pause (the whole business, or a
        // platform) stay as they are.
        loop {
            let overdue = self
                .storage
                .pending_of_business(business_id.as_str(), platform, now, RESUME_BATCH)
                .await?;
            let overdue: Vec<Post> = overdue
                .into_iter()
                .filter(|post| !self.gate.is_paused(&post.business_id, &post.platform))
                .collect();
            if overdue.is_empty() {
                break;
            }
            let batch = overdue.len();
            for post in overdue {
                missed_count += 1;
                self.settle_missed(post, missed, now).await?;
            }
            if (batch as i64) < RESUME_BATCH {
                break;
            }
        }
        // Timers of paused posts were dropped when their claims failed.
        let horizon =
            chrono::Duration::from_std(self.engine.horizon()).unwrap_or(chrono::Duration::hours(1));
        let upcoming = self
            .storage
            .pending_of_business(business_id.as_str(), platform, now + horizon, i64::MAX)
            .await?;
        for post in upcoming {
            self.engine.arm(post.id, post.next_attempt_at);
        }
        Ok(missed_count)
    }

    async fn settle_missed(
        &self,
        post: Post,
        policy: MissedPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), SchedulerError> {
        let reason = |what: &str| {
            format!(
                "{what}: due at {} while the queue was paused",
                post.next_attempt_at.to_rfc3339()
            )
        };
        let (transition, patch) = match policy {
            // Due now: the missed-fire window counts from the resume.
            MissedPolicy::PublishNow => (
                Transition::RunNow,
                PostPatch {
                    next_attempt_at: Some(now),
                    ..PostPatch::default()
                },
            ),
            MissedPolicy::KeepForReview => (
                Transition::HoldForReview,
                PostPatch {
                    last_error: Some(Some(reason("held for review"))),
                    ..PostPatch::default()
                },
            ),
            MissedPolicy::Skip => (
                Transition::Skip,
                PostPatch {
                    last_error: Some(Some(reason("skipped"))),
                    ..PostPatch::default()
                },
            ),
        };
        // A post changed meanwhile is left as the change made it.
        let change = Change::of(transition, &post);
        if let Some(settled) = self.lifecycle.apply(&change, &patch, now).await?
            && settled.status.is_pending()
        {
            self.engine.arm(settled.id, settled.next_attempt_at);
        }
        Ok(())
    }

    pub async fn list_pauses(&self, business_id: &str) -> Result<Vec<PauseRecord>, SchedulerError> {
        Ok(self
            .storage
            .list_pauses(business_filter(business_id)?.as_deref())
            .await?)
    }

    /// Counts from memory, and two reads through pending-only indexes.
    pub async fn queue_stats(&self, business_id: &str) -> Result<QueueStats, SchedulerError> {
        let business_id = business_filter(business_id)?;
        let now = self.clock.now();
        let mut snapshot = self.events().stats().snapshot(business_id.as_deref(), now);
        if let Some(shared) = self.storage.shared() {
            // Other replicas change posts too: the counts this process keeps
            // see only its own changes, so count in the database.
            let counted = shared.count_by_status(business_id.as_deref()).await?;
            for (status, count) in &mut snapshot.counts {
                *count = counted
                    .iter()
                    .find(|(counted_status, _)| counted_status == status)
                    .map_or(0, |(_, counted)| *counted);
            }
        }
        let (next_due, overdue) = self
            .storage
            .due_summary(business_id.as_deref(), now)
            .await?;
        Ok(QueueStats {
            snapshot,
            next_due,
            overdue,
        })
    }

    pub async fn calendar(&self, request: CalendarRequest) -> Result<Calendar, SchedulerError> {
        let business_id = ExternalId::parse("business_id", &request.business_id)?;
        let zone = parse_zone(&request.time_zone)?;
        let grid = CalendarGrid::new(request.view, request.week_start)
            .map_err(|error| invalid("month", error.to_string()))?;
        let (from, to) = grid
            .bounds(zone)
            .map_err(|error| invalid("time_zone", error.to_string()))?;
        let posts = self
            .storage
            .posts_between(
                business_id.as_str(),
                None,
                from,
                to,
                &[PostStatus::Cancelled, PostStatus::Discarded],
                CALENDAR_MAX_POSTS,
            )
            .await?;
        let today = local_date(self.clock.now(), zone);
        let mut days: Vec<CalendarDay> = grid
            .dates
            .iter()
            .map(|date| CalendarDay {
                date: *date,
                in_month: grid.in_month(*date),
                is_today: *date == today,
                entries: Vec::new(),
            })
            .collect();
        let first = grid.first();
        for post in posts {
            let date = local_date(post.scheduled_for, zone);
            let index = first
                .and_then(|first| usize::try_from((date - first).num_days()).ok())
                .filter(|index| *index < days.len());
            if let Some(day) = index.and_then(|index| days.get_mut(index)) {
                let local = format_local(post.scheduled_for, zone);
                let local_time = local.get(11..16).unwrap_or_default().to_owned();
                day.entries.push(CalendarEntry { post, local_time });
            }
        }
        let weeks = days.chunks(7).map(<[CalendarDay]>::to_vec).collect();
        Ok(Calendar { zone, weeks })
    }

    /// The post `id` names, read to make `transition`: refused when the
    /// caller expected another version or its status does not allow it.
    async fn read_for(
        &self,
        id: PostId,
        transition: Transition,
        expected_version: Option<i64>,
    ) -> Result<Post, SchedulerError> {
        let current = self.existing(id).await?;
        check_transition(&current, transition, expected_version)?;
        Ok(current)
    }

    /// A compare-and-set from the post as read; a post changed meanwhile is
    /// `ABORTED` so the caller can read it again.
    async fn transition(
        &self,
        current: &Post,
        transition: Transition,
        patch: &PostPatch,
        now: DateTime<Utc>,
    ) -> Result<Post, SchedulerError> {
        let change = Change::of(transition, current);
        self.lifecycle
            .apply(&change, patch, now)
            .await?
            .ok_or_else(|| {
                concurrent_change(
                    current.id,
                    format!(
                        "post {} changed meanwhile; read it again and retry",
                        current.id
                    ),
                )
            })
    }
}
