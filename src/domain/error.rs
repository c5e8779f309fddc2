//! What is wrong with a request, in terms a program can act on: the field
//! at fault, a stable machine-readable reason and the facts behind it. The
//! transports turn these into their own error details (gRPC's
//! `google.rpc.BadRequest` and `ErrorInfo`); the reasons are part of the
//! API and never change meaning.

use std::fmt;

/// Declares [`ErrorReason`] from one list of variants and their wire
/// names, so that the enum, [`ErrorReason::ALL`] and
/// [`ErrorReason::as_str`] cannot fall out of step.
macro_rules! error_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)+) => {
        /// A stable, machine-readable reason for a refusal (`ErrorInfo.reason`).
        /// Adding a reason is a compatible change; renaming one is not.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorReason {
            $($(#[doc = $doc])* $variant,)+
        }

        impl ErrorReason {
            /// Every reason, for documentation and tests.
            pub const ALL: &'static [ErrorReason] = &[$(Self::$variant),+];

            /// The name on the wire (`ErrorInfo.reason`), UPPER_SNAKE_CASE.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }
    };
}

error_reasons! {
    /// A required field is empty or missing.
    FieldRequired => "FIELD_REQUIRED",
    /// A field's value is malformed or out of range.
    FieldInvalid => "FIELD_INVALID",
    /// A time zone that is not in the IANA tz database.
    UnknownZone => "UNKNOWN_ZONE",
    /// A local date or time that does not parse or does not exist.
    InvalidLocalTime => "INVALID_LOCAL_TIME",
    /// A wall-clock time skipped by a daylight-saving transition, refused
    /// by the DST gap policy.
    DstGap => "DST_GAP",
    /// An instant further in the past than the grace allows.
    PastInstant => "PAST_INSTANT",
    /// An instant beyond the furthest date posts may be scheduled.
    TooFarAhead => "TOO_FAR_AHEAD",
    /// A payload that is not one JSON object, or nested too deep.
    InvalidPayload => "INVALID_PAYLOAD",
    /// A payload larger than the limit.
    PayloadTooLarge => "PAYLOAD_TOO_LARGE",
    /// Labels that break the rules on their number, keys or values.
    InvalidLabels => "INVALID_LABELS",
    /// A list filter that does not parse.
    InvalidFilter => "INVALID_FILTER",
    /// A page token that is malformed or was issued for other filters.
    InvalidPageToken => "INVALID_PAGE_TOKEN",
    /// A recurrence that cannot be expanded.
    InvalidRecurrence => "INVALID_RECURRENCE",
    /// More posts in one request than the limit.
    TooManyPosts => "TOO_MANY_POSTS",
    /// An answer that would exceed the message size limit in the view asked.
    AnswerTooLarge => "ANSWER_TOO_LARGE",
    /// The post does not exist.
    PostNotFound => "POST_NOT_FOUND",
    /// The post is not at the version the caller expected.
    VersionMismatch => "VERSION_MISMATCH",
    /// The post kept changing under the call; reading it again and
    /// retrying succeeds.
    ConcurrentChange => "CONCURRENT_CHANGE",
    /// The post's status does not allow the operation.
    WrongStatus => "WRONG_STATUS",
    /// The post's business or platform is paused.
    Paused => "PAUSED",
    /// The business has no (or too few) posting slots for the request.
    NoPostingSlots => "NO_POSTING_SLOTS",
    /// The request id was used before for a different request.
    RequestIdReused => "REQUEST_ID_REUSED",
    /// A concurrent call with the same request id is still in progress.
    RequestIdInUse => "REQUEST_ID_IN_USE",
    /// A pause is in force but an attempt under way has not finished yet.
    AttemptInProgress => "ATTEMPT_IN_PROGRESS",
    /// The database cannot be reached or is failing; retry.
    DatabaseUnavailable => "DATABASE_UNAVAILABLE",
    /// Too many calls in flight; retry after the delay given.
    Overloaded => "OVERLOADED",
    /// Too many open event streams.
    TooManyWatchers => "TOO_MANY_WATCHERS",
    /// An event stream fell too far behind and was ended.
    WatcherLagged => "WATCHER_LAGGED",
    /// No bearer token was sent.
    TokenMissing => "TOKEN_MISSING",
    /// The bearer token is not known.
    TokenUnknown => "TOKEN_UNKNOWN",
    /// The token may not touch this business.
    BusinessNotAllowed => "BUSINESS_NOT_ALLOWED",
    /// The token covers several businesses and the request named none.
    BusinessRequired => "BUSINESS_REQUIRED",
    /// Something failed inside the server; nothing the caller can change.
    Internal => "INTERNAL",
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
