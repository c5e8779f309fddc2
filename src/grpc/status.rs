//! The one mapping from service, authentication and overload errors to gRPC
//! statuses, with the `google.rpc` error details of AIP-193: every status
//! carries an `ErrorInfo` with a stable reason (the table in `docs/api.md`),
//! an invalid field a `BadRequest` violation naming it, a refusal by the
//! state of a post a `PreconditionFailure`, a missing post a `ResourceInfo`,
//! and a call worth retrying a `RetryInfo`. Internal details (SQL, stack of
//! causes) are logged here and never sent to a caller.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::load::OverloadError;
use crate::auth::AuthError;
use crate::domain::{ErrorReason, FieldError, Refusal};
use crate::scheduler::SchedulerError;

/// `ErrorInfo.domain` of every error: the service that defines the reasons.
pub const ERROR_DOMAIN: &str = "punctual.v1";

/// How long a caller is told to wait before retrying a call refused for
/// lack of capacity or while the database is unavailable.
const RETRY_DELAY: Duration = Duration::from_secs(1);

fn error_info(details: &mut ErrorDetails, reason: ErrorReason, metadata: &[(String, String)]) {
    let metadata: HashMap<String, String> = metadata.iter().cloned().collect();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
}

/// `INVALID_ARGUMENT` naming the field, for any layer that refuses a field.
pub fn invalid_argument(error: &FieldError) -> Status {
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(error.field.clone(), error.message.clone());
    let mut metadata = error.metadata.clone();
    metadata.push(("field".to_owned(), error.field.clone()));
    error_info(&mut details, error.reason, &metadata);
    Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
}

fn refused(code: Code, refusal: Refusal) -> Status {
    let mut details = ErrorDetails::new();
    error_info(&mut details, refusal.reason, &refusal.metadata);
    match code {
        Code::FailedPrecondition => {
            details.add_precondition_failure_violation(
                refusal.reason.as_str(),
                refusal.subject.clone(),
                refusal.message.clone(),
            );
        }
        Code::Unavailable => {
            details.set_retry_info(Some(RETRY_DELAY));
        }
        _ => {}
    }
    Status::with_error_details(code, refusal.message, details)
}

impl From<SchedulerError> for Status {
    fn from(error: SchedulerError) -> Self {
        match error {
            SchedulerError::InvalidArgument(field) => invalid_argument(&field),
            SchedulerError::NotFound(id) => {
                let mut details = ErrorDetails::new();
                error_info(
                    &mut details,
                    ErrorReason::PostNotFound,
                    &[("post_id".to_owned(), id.clone())],
                );
                details.set_resource_info(
                    "punctual.v1.ScheduledPost",
                    format!("posts/{id}"),
                    "",
                    "no post has this id",
                );
                Status::with_error_details(Code::NotFound, format!("post {id} not found"), details)
            }
            SchedulerError::FailedPrecondition(refusal) => {
                refused(Code::FailedPrecondition, refusal)
            }
            SchedulerError::Aborted(refusal) => refused(Code::Aborted, refusal),
            SchedulerError::Unavailable(refusal) => {
                tracing::warn!(error = %refusal, reason = %refusal.reason, "request failed: unavailable");
                refused(Code::Unavailable, refusal)
            }
            SchedulerError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed with an internal error");
                let mut details = ErrorDetails::new();
                error_info(&mut details, ErrorReason::Internal, &[]);
                Status::with_error_details(Code::Internal, "internal error", details)
            }
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        let (code, reason) = match error {
            AuthError::MissingToken => (Code::Unauthenticated, ErrorReason::TokenMissing),
            AuthError::UnknownToken => (Code::Unauthenticated, ErrorReason::TokenUnknown),
            AuthError::BusinessNotAllowed(_) => {
                (Code::PermissionDenied, ErrorReason::BusinessNotAllowed)
            }
            AuthError::BusinessRequired => (Code::PermissionDenied, ErrorReason::BusinessRequired),
        };
        let mut details = ErrorDetails::new();
        let metadata = match &error {
            AuthError::BusinessNotAllowed(business) => {
                vec![("business_id".to_owned(), crate::domain::echo(business))]
            }
            _ => Vec::new(),
        };
        error_info(&mut details, reason, &metadata);
        Status::with_error_details(code, error.to_string(), details)
    }
}

impl From<OverloadError> for Status {
    fn from(error: OverloadError) -> Self {
        tracing::debug!(%error, "call shed");
        let (reason, limit) = match error {
            OverloadError::TooManyCalls { limit } => (ErrorReason::Overloaded, limit),
            OverloadError::TooManyWatchers { limit } => (ErrorReason::TooManyWatchers, limit),
        };
        let mut details = ErrorDetails::new();
        error_info(
            &mut details,
            reason,
            &[("limit".to_owned(), limit.to_string())],
        );
        details.set_retry_info(Some(RETRY_DELAY));
        Status::with_error_details(Code::ResourceExhausted, error.to_string(), details)
    }
}

/// `DATA_LOSS` for a watcher that fell behind the event stream.
pub fn watcher_lagged(missed: u64) -> Status {
    let mut details = ErrorDetails::new();
    error_info(
        &mut details,
        ErrorReason::WatcherLagged,
        &[("missed_events".to_owned(), missed.to_string())],
    );
    Status::with_error_details(
        Code::DataLoss,
        format!("this watcher fell {missed} events behind; list the posts again and watch anew"),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_field_is_named_in_bad_request_and_error_info() {
        let error = FieldError::new("recurrence.time_zone", "unknown time zone \"Mars\"")
            .with_reason(ErrorReason::UnknownZone)
            .with_metadata("time_zone", "Mars");
        let status = Status::from(SchedulerError::InvalidArgument(error));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("recurrence.time_zone: "));
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "recurrence.time_zone");
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "UNKNOWN_ZONE");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["time_zone"], "Mars");
        assert_eq!(info.metadata["field"], "recurrence.time_zone");
    }

    #[test]
    fn refusals_carry_their_reason_subject_and_retry_advice() {
        let refusal = Refusal::new(ErrorReason::WrongStatus, "posts/p1", "post p1 is PUBLISHED")
            .with_metadata("status", "PUBLISHED");
        let status = Status::from(SchedulerError::FailedPrecondition(refusal.clone()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        let violation = &details.precondition_failure().unwrap().violations[0];
        assert_eq!(violation.r#type, "WRONG_STATUS");
        assert_eq!(violation.subject, "posts/p1");
        assert_eq!(
            details.error_info().unwrap().metadata["status"],
            "PUBLISHED"
        );

        let status = Status::from(SchedulerError::Unavailable(refusal));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_error_details().retry_info().unwrap().retry_delay,
            Some(RETRY_DELAY)
        );

        let status = Status::from(OverloadError::TooManyCalls { limit: 8 });
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "OVERLOADED");
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(RETRY_DELAY));
    }

    #[test]
    fn a_missing_post_names_the_resource() {
        let status = Status::from(SchedulerError::NotFound("p9".into()));
        assert_eq!(status.code(), Code::NotFound);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "POST_NOT_FOUND");
        assert_eq!(details.resource_info().unwrap().resource_name, "posts/p9");
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let status = Status::from(SchedulerError::Internal("SELECT failed: disk".into()));
        assert_eq!(status.message(), "internal error");
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "INTERNAL"
        );
    }
}
