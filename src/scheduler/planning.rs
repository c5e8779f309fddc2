//! Helping people pick times: weekly posting slots, spreading a batch over
//! the week, suggested times from engagement, and the engagement reports
//! that feed them.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDateTime, NaiveTime, Utc};

use super::{
    BulkRequest, SchedulerError, SchedulerService, invalid, parse_recurrence, parse_zone,
    recurrence_error,
};
use crate::domain::calendar::day_start;
use crate::domain::slots::{
    PostingSchedule, SlotError, WeeklySlot, distribute, distribute_in_window, parse_slot,
};
use crate::domain::suggest::{
    EngagementSample, HOURS_PER_WEEK, SuggestParams, Suggestion, default_prior, suggest,
};
use crate::domain::time::{TimeZone, parse_local_date, parse_time_of_day};
use crate::domain::{ErrorReason, ExternalId, FieldError, Platform, PostId, PostStatus, Refusal};
use crate::storage::{EngagementRecord, SlotsRecord};

/// How far ahead a free slot is looked for.
const SLOT_SEARCH_WEEKS: u32 = 52;
/// Most scheduled posts read to know which slots are taken.
const TAKEN_READ_LIMIT: i64 = 100_000;
/// Most engagement reports a suggestion reads.
const HISTORY_READ_LIMIT: i64 = 5_000;
const DEFAULT_SUGGESTIONS: usize = 5;
const MAX_SUGGESTIONS: usize = 50;

/// Suggestion settings operators can change.
#[derive(Debug, Clone)]
pub struct SuggestConfig {
    /// Per-platform priors replacing the built-in table.
    pub priors: HashMap<String, [f64; HOURS_PER_WEEK]>,
    /// Least time between two posts of one platform.
    pub min_gap: chrono::Duration,
}

impl Default for SuggestConfig {
    fn default() -> Self {
        Self {
            priors: HashMap::new(),
            min_gap: chrono::Duration::hours(2),
        }
    }
}

/// The posting slots of a business on a platform.
#[derive(Debug, Clone)]
pub struct SlotsView {
    pub business_id: String,
    pub platform: String,
    pub schedule: PostingSchedule,
}

/// Statuses whose posts occupy their instant.
const OCCUPYING: [PostStatus; 4] = [
    PostStatus::Scheduled,
    PostStatus::RetryScheduled,
    PostStatus::Publishing,
    PostStatus::Published,
];
const NOT_OCCUPYING: [PostStatus; 3] = [
    PostStatus::Cancelled,
    PostStatus::Discarded,
    PostStatus::DeadLettered,
];

fn slot_error(field: &str, error: SlotError) -> SchedulerError {
    match error {
        SlotError::NoSlots | SlotError::NotEnoughSlots { .. } => {
            SchedulerError::FailedPrecondition(Refusal::new(
                ErrorReason::NoPostingSlots,
                field,
                error.to_string(),
            ))
        }
        other => invalid(field, other.to_string()),
    }
}

impl SchedulerService {
    pub async fn set_slots(
        &self,
        business_id: &str,
        platform: &str,
        time_zone: &str,
        slots: Vec<WeeklySlot>,
    ) -> Result<SlotsView, SchedulerError> {
        let business_id = ExternalId::parse("business_id", business_id)?;
        let platform = Platform::parse("platform", platform)?;
        let zone = parse_zone(time_zone)?;
        let schedule = PostingSchedule::new(zone, slots).map_err(|e| slot_error("slots", e))?;
        let encoded: Vec<String> = schedule.slots().iter().map(ToString::to_string).collect();
        let record = SlotsRecord {
            time_zone: zone.name().to_owned(),
            slots: serde_json::Value::from(encoded).to_string(),
        };
        self.storage
            .upsert_slots(
                business_id.as_str(),
                platform.as_str(),
                &record,
                self.clock.now(),
            )
            .await?;
        Ok(SlotsView {
            business_id: business_id.as_str().to_owned(),
            platform: platform.as_str().to_owned(),
            schedule,
        })
    }

    /// The slots of a business on a platform; none set reads as an empty
    /// schedule in UTC.
    pub async fn get_slots(
        &self,
        business_id: &str,
        platform: &str,
    ) -> Result<SlotsView, SchedulerError> {
        let business_id = ExternalId::parse("business_id", business_id)?;
        let platform = Platform::parse("platform", platform)?;
        let schedule = self
            .load_schedule(business_id.as_str(), platform.as_str())
            .await?
            .unwrap_or_else(|| PostingSchedule::empty(TimeZone::UTC));
        Ok(SlotsView {
            business_id: business_id.as_str().to_owned(),
            platform: platform.as_str().to_owned(),
            schedule,
        })
    }

    async fn load_schedule(
        &self,
        business_id: &str,
        platform: &str,
    ) -> Result<Option<PostingSchedule>, SchedulerError> {
        let Some(record) = self.storage.get_slots(business_id, platform).await? else {
            return Ok(None);
        };
        let corrupt = |reason: String| {
            SchedulerError::Internal(
                format!("stored slots of {business_id}/{platform} are unreadable: {reason}").into(),
            )
        };
        let zone = TimeZone::parse(&record.time_zone).map_err(|e| corrupt(e.to_string()))?;
        let texts: Vec<String> =
            serde_json::from_str(&record.slots).map_err(|e| corrupt(e.to_string()))?;
        let slots = texts
            .iter()
            .map(|text| parse_slot(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt)?;
        PostingSchedule::new(zone, slots)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Instants of the platform's posts that occupy their slot, in a range.
    async fn taken_instants(
        &self,
        business_id: &str,
        platform: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeSet<DateTime<Utc>>, SchedulerError> {
        let posts = self
            .storage
            .posts_between(
                business_id,
                Some(platform),
                from,
                to,
                &NOT_OCCUPYING,
                TAKEN_READ_LIMIT,
            )
            .await?;
        Ok(posts
            .into_iter()
            .filter(|post| OCCUPYING.contains(&post.status))
            .map(|post| post.scheduled_for)
            .collect())
    }

    /// The next slot of the business on the platform that no post takes,
    /// and the slots' zone. Callers hold the slot lock until they insert.
    pub(super) async fn next_free_slot(
        &self,
        business_id: &str,
        platform: &str,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, TimeZone), SchedulerError> {
        let schedule = self
            .load_schedule(business_id, platform)
            .await?
            .filter(|schedule| !schedule.slots().is_empty())
            .ok_or_else(|| {
                SchedulerError::FailedPrecondition(Refusal::new(
                    ErrorReason::NoPostingSlots,
                    format!("businesses/{business_id}/platforms/{platform}"),
                    format!(
                        "no posting slots are set for {business_id} on {platform}; set them with SetPostingSlots"
                    ),
                ))
            })?;
        let until = now + chrono::Duration::weeks(i64::from(SLOT_SEARCH_WEEKS) + 1);
        let taken = self
            .taken_instants(business_id, platform, now, until)
            .await?;
        let instant = schedule
            .next_free(now, &taken, SLOT_SEARCH_WEEKS)
            .ok_or_else(|| {
                SchedulerError::FailedPrecondition(Refusal::new(
                    ErrorReason::NoPostingSlots,
                    format!("businesses/{business_id}/platforms/{platform}"),
                    format!(
                        "every posting slot of {business_id} on {platform} in the coming {SLOT_SEARCH_WEEKS} weeks is taken"
                    ),
                ))
            })?;
        Ok((instant, schedule.zone()))
    }

    /// The instants of a bulk request, each with the wall-clock time its
    /// recurrence asked for (none for posts spread over slots, which are at
    /// their instant's wall-clock time), and the zone the posts are shown in.
    pub(super) async fn plan_bulk(
        &self,
        request: &BulkRequest,
        business_id: &ExternalId,
        platform: &Platform,
        count: usize,
        now: DateTime<Utc>,
    ) -> Result<(TimeZone, Vec<(DateTime<Utc>, Option<NaiveDateTime>)>), SchedulerError> {
        if let Some(recurrence) = parse_recurrence(request)? {
            let zone = recurrence.zone();
            let occurrences = recurrence.occurrences(count).map_err(recurrence_error)?;
            let planned = occurrences
                .into_iter()
                .map(|occurrence| (occurrence.instant, Some(occurrence.local)))
                .collect();
            return Ok((zone, planned));
        }
        let zone = TimeZone::parse(&request.time_zone)
            .map_err(|error| error.for_field("recurrence.time_zone"))?;
        let start_date = parse_local_date(&request.start_date)
            .map_err(|error| error.for_field("recurrence.start_date"))?;
        // A start before today is refused, as for every other pattern; a
        // start today spreads over what is left of the day.
        let today = crate::domain::calendar::local_date(now, zone);
        if start_date < today {
            return Err(FieldError::new(
                "recurrence.start_date",
                format!("{start_date} is in the past (today is {today} in {zone})"),
            )
            .with_reason(ErrorReason::PastInstant)
            .with_metadata("today", today.to_string())
            .into());
        }
        let from = day_start(zone, start_date)
            .map_err(|error| error.for_field("recurrence.start_date"))?
            .max(now);
        let until = from + chrono::Duration::weeks(53);
        let taken = self
            .taken_instants(business_id.as_str(), platform.as_str(), from, until)
            .await?;
        let schedule = self
            .load_schedule(business_id.as_str(), platform.as_str())
            .await?
            .filter(|schedule| !schedule.slots().is_empty());
        let (zone, instants) = match schedule {
            Some(schedule) => (
                schedule.zone(),
                distribute(&schedule, from, count, &taken)
                    .map_err(|e| slot_error("recurrence", e))?,
            ),
            None => {
                let window_start = time_or(&request.local_time, "recurrence.local_time", 9)?;
                let window_end = time_or(&request.window_end, "recurrence.window_end", 18)?;
                let instants =
                    distribute_in_window(zone, window_start, window_end, from, count, &taken)
                        .map_err(|e| slot_error("recurrence.window_end", e))?;
                (zone, instants)
            }
        };
        Ok((
            zone,
            instants
                .into_iter()
                .map(|instant| (instant, None))
                .collect(),
        ))
    }

    pub async fn suggest_times(
        &self,
        business_id: &str,
        platform: &str,
        count: i32,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        time_zone: &str,
    ) -> Result<(TimeZone, Vec<Suggestion>), SchedulerError> {
        let business_id = ExternalId::parse("business_id", business_id)?;
        let platform = Platform::parse("platform", platform)?;
        let zone = parse_zone(time_zone)?;
        let count = match count {
            0 => DEFAULT_SUGGESTIONS,
            n if n < 0 => return Err(invalid("count", "must not be negative")),
            n => usize::try_from(n)
                .unwrap_or(MAX_SUGGESTIONS)
                .min(MAX_SUGGESTIONS),
        };
        let now = self.clock.now();
        let from = from.unwrap_or(now).max(now);
        let to = to.unwrap_or(from + chrono::Duration::days(7));
        if to <= from {
            return Err(invalid(
                "to_time",
                "must be after from_time (and after now)",
            ));
        }
        let history: Vec<EngagementSample> = self
            .storage
            .engagement_history(business_id.as_str(), platform.as_str(), HISTORY_READ_LIMIT)
            .await?
            .into_iter()
            .map(|record| EngagementSample {
                published_at: record.published_at,
                impressions: record.impressions,
                clicks: record.clicks,
                reactions: record.reactions,
            })
            .collect();
        let gap = self.suggest_config.min_gap;
        let taken: Vec<DateTime<Utc>> = self
            .taken_instants(
                business_id.as_str(),
                platform.as_str(),
                from - gap,
                to + gap,
            )
            .await?
            .into_iter()
            .collect();
        let prior = self
            .suggest_config
            .priors
            .get(platform.as_str())
            .copied()
            .unwrap_or_else(|| default_prior(platform.as_str()));
        let suggestions = suggest(&SuggestParams {
            zone,
            prior: &prior,
            history: &history,
            from,
            to,
            count,
            taken: &taken,
            min_gap: gap,
        });
        Ok((zone, suggestions))
    }

    /// Records what a published post achieved; a later report replaces an
    /// earlier one.
    pub async fn record_engagement(
        &self,
        post_id: &str,
        impressions: i64,
        clicks: i64,
        reactions: i64,
    ) -> Result<(), SchedulerError> {
        let id = PostId::parse("post_id", post_id)?;
        for (field, value) in [
            ("impressions", impressions),
            ("clicks", clicks),
            ("reactions", reactions),
        ] {
            if value < 0 {
                return Err(invalid(field, "must not be negative"));
            }
        }
        let post = self.existing(id).await?;
        let Some(published_at) = post
            .published_at
            .filter(|_| post.status == PostStatus::Published)
        else {
            return Err(super::wrong_status(
                &post,
                format!(
                    "post {id} is {}; engagement can only be recorded for published posts",
                    post.status
                ),
            ));
        };
        let record = EngagementRecord {
            post_id: post.id.to_string(),
            business_id: post.business_id,
            platform: post.platform,
            published_at,
            impressions,
            clicks,
            reactions,
        };
        self.storage
            .upsert_engagement(&record, self.clock.now())
            .await?;
        Ok(())
    }
}

fn time_or(input: &str, field: &str, default_hour: u32) -> Result<NaiveTime, SchedulerError> {
    if input.trim().is_empty() {
        return NaiveTime::from_hms_opt(default_hour, 0, 0)
            .ok_or_else(|| invalid(field, "has no valid default"));
    }
    Ok(parse_time_of_day(input).map_err(|error| error.for_field(field))?)
}
