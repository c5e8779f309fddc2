//! What is wrong with a request, in terms a program can act on: the field
//! at fault, a stable machine-readable reason and the facts behind it. The
//! transports turn these into their own error details (gRPC's
//! `google.rpc.BadRequest` and `ErrorInfo`); the reasons are part of the
//! API and never change meaning.

use std::fmt;

/// A stable, machine-readable reason for a refusal (`ErrorInfo.reason`).
/// Adding a reason is a compatible change; renaming one is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// A required field is empty or missing.
    FieldRequired,
    /// A field's value is malformed or out of range.
    FieldInvalid,
    /// A time zone that is not in the IANA tz database.
    UnknownZone,
    /// A local date or time that does not parse or does not exist.
    InvalidLocalTime,
    /// A wall-clock time skipped by a daylight-saving transition, refused
    /// by the DST gap policy.
    DstGap,
    /// An instant further in the past than the grace allows.
    PastInstant,
    /// An instant beyond the furthest date posts may be scheduled.
    TooFarAhead,
    /// A payload that is not one JSON object, or nested too deep.
    InvalidPayload,
    /// A payload larger than the limit.
    PayloadTooLarge,
    /// Labels that break the rules on their number, keys or values.
    InvalidLabels,
    /// A list filter that does not parse.
    InvalidFilter,
    /// A page token that is malformed or was issued for other filters.
    InvalidPageToken,
    /// A recurrence that cannot be expanded.
    InvalidRecurrence,
    /// More posts in one request than the limit.
    TooManyPosts,
    /// An answer that would exceed the message size limit in the view asked.
    AnswerTooLarge,
    /// The post does not exist.
    PostNotFound,
    /// The post is not at the version the caller expected.
    VersionMismatch,
    /// The post kept changing under the call; reading it again and
    /// retrying succeeds.
    ConcurrentChange,
    /// The post's status does not allow the operation.
    WrongStatus,
    /// The post's business or platform is paused.
    Paused,
    /// The business has no (or too few) posting slots for the request.
    NoPostingSlots,
    /// The request id was used before for a different request.
    RequestIdReused,
    /// A concurrent call with the same request id is still in progress.
    RequestIdInUse,
    /// A pause is in force but an attempt under way has not finished yet.
    AttemptInProgress,
    /// The database cannot be reached or is failing; retry.
    DatabaseUnavailable,
    /// Too many calls in flight; retry after the delay given.
    Overloaded,
    /// Too many open event streams.
    TooManyWatchers,
    /// An event stream fell too far behind and was ended.
    WatcherLagged,
    /// No bearer token was sent.
    TokenMissing,
    /// The bearer token is not known.
    TokenUnknown,
    /// The token may not touch this business.
    BusinessNotAllowed,
    /// The token covers several businesses and the request named none.
    BusinessRequired,
    /// Something failed inside the server; nothing the caller can change.
    Internal,
}

impl ErrorReason {
    /// Every reason, for documentation and tests.
    pub const ALL: [ErrorReason; 33] = [
        Self::FieldRequired,
        Self::FieldInvalid,
        Self::UnknownZone,
        Self::InvalidLocalTime,
        Self::DstGap,
        Self::PastInstant,
        Self::TooFarAhead,
        Self::InvalidPayload,
        Self::PayloadTooLarge,
        Self::InvalidLabels,
        Self::InvalidFilter,
        Self::InvalidPageToken,
        Self::InvalidRecurrence,
        Self::TooManyPosts,
        Self::AnswerTooLarge,
        Self::PostNotFound,
        Self::VersionMismatch,
        Self::ConcurrentChange,
        Self::WrongStatus,
        Self::Paused,
        Self::NoPostingSlots,
        Self::RequestIdReused,
        Self::RequestIdInUse,
        Self::AttemptInProgress,
        Self::DatabaseUnavailable,
        Self::Overloaded,
        Self::TooManyWatchers,
        Self::WatcherLagged,
        Self::TokenMissing,
        Self::TokenUnknown,
        Self::BusinessNotAllowed,
        Self::BusinessRequired,
        Self::Internal,
    ];

    /// The name on the wire (`ErrorInfo.reason`), UPPER_SNAKE_CASE.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FieldRequired => "FIELD_REQUIRED",
            Self::FieldInvalid => "FIELD_INVALID",
            Self::UnknownZone => "UNKNOWN_ZONE",
            Self::InvalidLocalTime => "INVALID_LOCAL_TIME",
            Self::DstGap => "DST_GAP",
            Self::PastInstant => "PAST_INSTANT",
            Self::TooFarAhead => "TOO_FAR_AHEAD",
            Self::InvalidPayload => "INVALID_PAYLOAD",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::InvalidLabels => "INVALID_LABELS",
            Self::InvalidFilter => "INVALID_FILTER",
            Self::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Self::InvalidRecurrence => "INVALID_RECURRENCE",
            Self::TooManyPosts => "TOO_MANY_POSTS",
            Self::AnswerTooLarge => "ANSWER_TOO_LARGE",
            Self::PostNotFound => "POST_NOT_FOUND",
            Self::VersionMismatch => "VERSION_MISMATCH",
            Self::ConcurrentChange => "CONCURRENT_CHANGE",
            Self::WrongStatus => "WRONG_STATUS",
            Self::Paused => "PAUSED",
            Self::NoPostingSlots => "NO_POSTING_SLOTS",
            Self::RequestIdReused => "REQUEST_ID_REUSED",
            Self::RequestIdInUse => "REQUEST_ID_IN_USE",
            Self::AttemptInProgress => "ATTEMPT_IN_PROGRESS",
            Self::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Self::Overloaded => "OVERLOADED",
            Self::TooManyWatchers => "TOO_MANY_WATCHERS",
            Self::WatcherLagged => "WATCHER_LAGGED",
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenUnknown => "TOKEN_UNKNOWN",
            Self::BusinessNotAllowed => "BUSINESS_NOT_ALLOWED",
            Self::BusinessRequired => "BUSINESS_REQUIRED",
            Self::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem with one field of a request; `field` names it as the caller
/// wrote it (`content_ids[17]`, `recurrence.time_zone`) so the error can
/// point at it, `reason` says what kind of problem it is, and `metadata`
/// carries the facts a program may act on (a DST gap's start and end).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
    pub reason: ErrorReason,
    pub metadata: Vec<(String, String)>,
}

impl FieldError {
    /// A malformed field ([`ErrorReason::FieldInvalid`]).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            reason: ErrorReason::FieldInvalid,
            metadata: Vec::new(),
        }
    }

    /// A required field that is empty or missing
    /// ([`ErrorReason::FieldRequired`]).
    pub fn required(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, message).with_reason(ErrorReason::FieldRequired)
    }

    pub fn with_reason(mut self, reason: ErrorReason) -> Self {
        self.reason = reason;
        self
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// The same problem reported under another field name, e.g. a zone
    /// checked as `time_zone` that the request calls `recurrence.time_zone`.
    pub fn renamed(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

/// Why a valid request was refused by the state of things (a post's
/// status, a version, a pause) or could not be served now: a stable reason,
/// the human message, the resource it is about (`posts/ID`,
/// `businesses/ID`) and the facts behind it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub reason: ErrorReason,
    pub message: String,
    pub subject: String,
    pub metadata: Vec<(String, String)>,
}

impl Refusal {
    pub fn new(
        reason: ErrorReason,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            reason,
            message: message.into(),
            subject: subject.into(),
            metadata: Vec::new(),
        }
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

/// Longest piece of caller input repeated in an error message: errors
/// travel back in a gRPC status header, which clients limit in size.
pub const MAX_ECHOED_CHARS: usize = 64;

/// The input as repeated in an error message, shortened if very long.
pub fn echo(input: &str) -> String {
    let mut chars = input.chars();
    let mut shown: String = chars.by_ref().take(MAX_ECHOED_CHARS).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_upper_snake_names() {
        let mut names: Vec<&str> = ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorReason::ALL.len());
    }

    /// The reasons are part of the API: the error table of `docs/api.md`
    /// must name every one, so that a new reason cannot ship undocumented.
    #[test]
    fn every_reason_is_in_the_error_table_of_the_api_docs() {
        let docs = include_str!("../../docs/api.md");
        let missing: Vec<&str> = ErrorReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .filter(|name| !docs.contains(&format!("`{name}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/api.md does not name these error reasons: {missing:?}"
        );
    }
}
