//! Authentication at the gRPC edge: an interceptor on the Scheduler service
//! reads `authorization: Bearer <token>` and puts the [`Caller`] into the
//! request's extensions, or refuses the call with `UNAUTHENTICATED` before
//! its message is read. Health and reflection are not intercepted, so
//! probes and `grpcurl list` work without a token.

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::auth::{AuthError, Authenticator, Caller};

#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    authenticator: Authenticator,
}

impl AuthInterceptor {
    pub fn new(authenticator: Authenticator) -> Self {
        Self { authenticator }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // A header that is not visible ASCII cannot hold a valid token.
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        let caller = self.authenticator.authenticate(header)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor admitted. Missing only if the service was
/// mounted without the interceptor; then the call is refused rather than
/// run unrestricted.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, AuthError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(AuthError::MissingToken)
}
