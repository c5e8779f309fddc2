//! The one mapping from service, authentication and overload errors to gRPC
//! statuses. Internal details (SQL, stack of causes) are logged here and
//! never sent to a caller.

use tonic::{Code, Status};

use super::load::OverloadError;
use crate::auth::AuthError;
use crate::scheduler::SchedulerError;

impl From<SchedulerError> for Status {
    fn from(error: SchedulerError) -> Self {
        match error {
            SchedulerError::InvalidArgument(field) => {
                Status::new(Code::InvalidArgument, field.to_string())
            }
            SchedulerError::NotFound(_) => Status::new(Code::NotFound, error.to_string()),
            SchedulerError::FailedPrecondition(message) => {
                Status::new(Code::FailedPrecondition, message)
            }
            SchedulerError::Aborted(message) => Status::new(Code::Aborted, message),
            SchedulerError::Unavailable(message) => {
                tracing::warn!(error = %message, "request failed: database unavailable");
                Status::new(Code::Unavailable, message)
            }
            SchedulerError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed with an internal error");
                Status::new(Code::Internal, "internal error")
            }
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        let code = match error {
            AuthError::MissingToken | AuthError::UnknownToken => Code::Unauthenticated,
            AuthError::BusinessNotAllowed(_) | AuthError::BusinessRequired => {
                Code::PermissionDenied
            }
        };
        Status::new(code, error.to_string())
    }
}

impl From<OverloadError> for Status {
    fn from(error: OverloadError) -> Self {
        tracing::debug!(%error, "call shed");
        Status::new(Code::ResourceExhausted, error.to_string())
    }
}
