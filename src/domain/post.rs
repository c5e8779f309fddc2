//! A scheduled post, its identifiers and its life cycle.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::time::TimeZone;
use super::{FieldError, Labels, Payload};

/// Longest business, content or request id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest platform name accepted.
pub const MAX_PLATFORM_LEN: usize = 32;

/// Server-assigned post id. UUIDv7, so ids sort roughly by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PostId(Uuid);

/// Posts are shared out among replicas in this many partitions. Fixed: the
/// partition of a post is stored with it.
pub const PARTITION_COUNT: u16 = 64;

impl PostId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The partition this post belongs to: the low six bits of the id, which
    /// in a UUIDv7 are random, so posts spread evenly. The migration that
    /// introduced partitions computes the same value in SQL.
    pub fn partition(&self) -> u16 {
        let bytes = self.0.as_bytes();
        u16::from_be_bytes([bytes[14], bytes[15]]) % PARTITION_COUNT
    }

    /// Accepts the id as the server writes it: the hyphenated UUID text
    /// (`01a2424b-646c-74cc-8dce-aac5f608db37`, either case). Other UUID
    /// spellings (braces, `urn:uuid:`, no hyphens, spaces around) are
    /// refused rather than guessed at.
    pub fn parse(field: &str, input: &str) -> Result<Self, FieldError> {
        let hyphenated = input.len() == 36
            && input.char_indices().all(|(index, c)| match index {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        hyphenated
            .then(|| Uuid::parse_str(input).ok())
            .flatten()
            .map(Self)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    format!(
                        "{:?} is not a valid post id (a UUID written 8-4-4-4-12)",
                        super::echo(input)
                    ),
                )
            })
    }
}

impl Default for PostId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-empty opaque identifier chosen by the caller (business, content or
/// request id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(field: &str, input: &str) -> Result<Self, FieldError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(FieldError::required(field, "must not be empty"));
        }
        if trimmed.len() > MAX_ID_LEN {
            return Err(FieldError::new(
                field,
                format!("must be at most {MAX_ID_LEN} bytes, got {}", trimmed.len()),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A social platform name: lower-case ASCII letters, digits, `_` and `-`.
/// Any such name is accepted so that a new platform needs no release; the
/// publisher URL can be overridden per platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform(String);

impl Platform {
    pub fn parse(field: &str, input: &str) -> Result<Self, FieldError> {
        let name = input.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(FieldError::required(
                field,
                "must not be empty (e.g. \"instagram\", \"facebook\", \"linkedin\", \"x\")",
            ));
        }
        if name.len() > MAX_PLATFORM_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(FieldError::new(
                field,
                format!(
                    "{:?} is not a platform name: use up to {MAX_PLATFORM_LEN} letters, digits, '_' or '-'",
                    super::echo(input)
                ),
            ));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a post stands. Stored by name, so the database stays readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostStatus {
    Scheduled,
    Publishing,
    Published,
    RetryScheduled,
    DeadLettered,
    Cancelled,
    Discarded,
}

impl PostStatus {
    pub const ALL: [PostStatus; 7] = [
        PostStatus::Scheduled,
        PostStatus::Publishing,
        PostStatus::Published,
        PostStatus::RetryScheduled,
        PostStatus::DeadLettered,
        PostStatus::Cancelled,
        PostStatus::Discarded,
    ];

    /// Statuses of posts waiting for a timer: the only ones a caller may
    /// edit, and the only ones the engine may claim.
    pub const PENDING: [PostStatus; 2] = [PostStatus::Scheduled, PostStatus::RetryScheduled];

    pub fn as_str(self) -> &'static str {
        match self {
            PostStatus::Scheduled => "SCHEDULED",
            PostStatus::Publishing => "PUBLISHING",
            PostStatus::Published => "PUBLISHED",
            PostStatus::RetryScheduled => "RETRY_SCHEDULED",
            PostStatus::DeadLettered => "DEAD_LETTERED",
            PostStatus::Cancelled => "CANCELLED",
            PostStatus::Discarded => "DISCARDED",
        }
    }

    pub fn is_pending(self) -> bool {
        Self::PENDING.contains(&self)
    }

    /// The pending status of a post with this many attempts made: a post
    /// that has never been tried is `SCHEDULED`, one that has is
    /// `RETRY_SCHEDULED`.
    pub fn pending_after(attempts: u32) -> Self {
        if attempts == 0 {
            PostStatus::Scheduled
        } else {
            PostStatus::RetryScheduled
        }
    }
}

impl fmt::Display for PostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PostStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown post status {s:?}"))
    }
}

/// A scheduled post as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    pub id: PostId,
    pub business_id: String,
    pub content_id: String,
    pub platform: String,
    /// A JSON object forwarded to the publisher byte for byte.
    pub payload: Payload,
    /// The caller's labels, for filtering and display.
    pub labels: Labels,
    /// The instant the caller asked for (microsecond precision).
    pub scheduled_for: DateTime<Utc>,
    /// The zone the caller thinks in; used to show `scheduled_for` back.
    pub time_zone: TimeZone,
    pub status: PostStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the engine should next try to publish: `scheduled_for` at first,
    /// a backoff instant after a failed attempt.
    pub next_attempt_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub external_id: Option<String>,
    /// Grows by one on every change; the compare-and-set token.
    pub version: i64,
    pub request_id: Option<String>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    /// Every publish attempt, oldest first.
    pub attempt_history: Vec<AttemptRecord>,
    /// The W3C `traceparent` of the call that created the post, kept so
    /// that its publish attempts can be linked to that trace. Opaque here.
    pub trace_parent: Option<String>,
}

/// How much of a post an answer carries (AIP-157 views).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PostView {
    /// Identity and timing: id, content id, instant, zone, local time,
    /// status and version.
    Summary,
    /// Every field but the payload and the attempt history.
    Basic,
    /// Every field.
    #[default]
    Full,
}

impl PostView {
    pub fn has_payload(self) -> bool {
        self == Self::Full
    }
}

impl Post {
    /// About how many bytes the post takes in an answer in `view`: its
    /// variable-length fields plus an allowance for the fixed ones and
    /// their framing. Pages and batches are sized with it so that an
    /// answer fits in a message.
    pub fn answer_size(&self, view: PostView) -> usize {
        // id, instant, local time, status, version and framing: about 90
        // bytes encoded.
        const SUMMARY_FIXED_FIELDS: usize = 100;
        const FIXED_FIELDS: usize = 320;
        const PER_LABEL: usize = 8;
        const PER_ATTEMPT: usize = 64;
        if view == PostView::Summary {
            return SUMMARY_FIXED_FIELDS + self.content_id.len() + self.time_zone.name().len();
        }
        let mut size = FIXED_FIELDS
            + self.business_id.len()
            + self.content_id.len()
            + self.platform.len()
            + self.time_zone.name().len()
            + self.last_error.as_ref().map_or(0, String::len)
            + self.external_id.as_ref().map_or(0, String::len)
            + self.labels.byte_len()
            + PER_LABEL * self.labels.iter().count();
        if view == PostView::Full {
            size += self.payload.byte_len()
                + self
                    .attempt_history
                    .iter()
                    .map(|attempt| PER_ATTEMPT + attempt.error.as_ref().map_or(0, String::len))
                    .sum::<usize>();
        }
        size
    }
}

/// How one publish attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Published,
    /// Failed; another attempt follows.
    Retry,
    /// Refused by the publisher; not retried.
    Rejected,
    /// Failed, and it was the last attempt.
    GaveUp,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Published => "published",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::GaveUp => "gave_up",
        }
    }
}

/// One call to the publisher, kept with the post for review.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: u64,
    pub http_status: Option<u16>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
}

impl Post {
    /// The key the publisher sees on every attempt of this post, across
    /// retries and restarts, so it can drop duplicates.
    pub fn idempotency_key(&self) -> String {
        self.id.to_string()
    }
}

/// Truncates an instant to whole microseconds, the precision both
/// databases keep, so that what is compared in memory equals what is stored.
pub fn truncate_to_micros(instant: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(instant.timestamp_micros()).unwrap_or(instant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_ids_are_read_only_as_written() {
        let id = PostId::new().to_string();
        assert_eq!(PostId::parse("id", &id).unwrap().to_string(), id);
        assert_eq!(
            PostId::parse("id", &id.to_uppercase()).unwrap().to_string(),
            id
        );
        let simple = id.replace('-', "");
        for other in [
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            simple,
            format!(" {id}"),
            format!("{id} "),
            "0".repeat(36),
        ] {
            let error = PostId::parse("id", &other).unwrap_err();
            assert_eq!(error.field, "id", "{other}");
        }
    }

    #[test]
    fn platform_is_normalised_and_checked() {
        assert_eq!(
            Platform::parse("platform", " Instagram ").unwrap().as_str(),
            "instagram"
        );
        assert!(Platform::parse("platform", "").is_err());
        assert!(Platform::parse("platform", "face book").is_err());
        assert!(Platform::parse("platform", &"x".repeat(33)).is_err());
    }

    #[test]
    fn ids_must_be_present_and_bounded() {
        let error = ExternalId::parse("business_id", "  ").unwrap_err();
        assert_eq!(error.field, "business_id");
        assert!(ExternalId::parse("content_id", &"c".repeat(129)).is_err());
        assert!(ExternalId::parse("content_id", "a\u{0}b").is_err());
        assert_eq!(
            ExternalId::parse("content_id", " c-1 ").unwrap().as_str(),
            "c-1"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for status in PostStatus::ALL {
            assert_eq!(status.as_str().parse::<PostStatus>().unwrap(), status);
        }
        assert!("NOPE".parse::<PostStatus>().is_err());
    }

    #[test]
    fn post_ids_reject_garbage() {
        assert!(PostId::parse("id", "not-a-uuid").is_err());
        let id = PostId::new();
        assert_eq!(PostId::parse("id", &id.to_string()).unwrap(), id);
    }

    #[test]
    fn truncation_drops_nanoseconds() {
        let instant = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(
            truncate_to_micros(instant).timestamp_subsec_nanos(),
            123_456_000
        );
    }
}
