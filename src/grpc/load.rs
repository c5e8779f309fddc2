//! Load shedding for `punctual.v1.Scheduler`: a bound on the calls handled at
//! once, applied as a tower layer on the server. A call beyond the bound is
//! answered at once with `RESOURCE_EXHAUSTED`; nothing waits in a queue, so
//! an overloaded server keeps answering quickly and clients back off.
//!
//! Only Scheduler calls are counted. Health checks and reflection pass
//! through, so that an orchestrator does not restart a server for being
//! busy. A permit is held until the response head is ready: for a unary
//! call that is the whole call, for `WatchEvents` only its start, so open
//! streams never starve unary calls (they have their own cap, see
//! `SchedulerApi`).
//!
//! Tower's `ConcurrencyLimit` under `LoadShed` cannot give these guarantees
//! here, so the layer is written by hand. Applied with `Server::layer`, they
//! would see every service's calls, and tower has no enabled layer that
//! chooses by path, so health checks and reflection would be shed too.
//! Applied to the Scheduler service alone (with `LayerExt::named_layer`),
//! they no longer fit `Server::add_service`, which takes only services whose
//! error is `Infallible`: `LoadShed` reports a shed call as a `BoxError`,
//! from `call` and from `poll_ready`, and no tower combinator turns that
//! into an answer with an `Infallible` error (`map_result` needs the new
//! error to be `From` the old one). Turning `Overloaded` into the
//! `RESOURCE_EXHAUSTED` answer with its `ErrorInfo` and `RetryInfo` would
//! take a hand-written service either way; this one does the whole job with
//! one semaphore shared by every connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::Status;
use tonic::server::NamedService;
use tower::{Layer, Service};

use super::{SchedulerApi, SchedulerServer};

/// Why a call was refused for lack of capacity. Mapped to a status in
/// `grpc::status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverloadError {
    #[error("the server is handling its limit of {limit} calls; retry with backoff")]
    TooManyCalls { limit: usize },
    #[error("the server has its limit of {limit} event watchers open; retry with backoff")]
    TooManyWatchers { limit: usize },
}

/// Bounds the Scheduler calls in flight across every connection.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl LoadShedLayer {
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: Arc::clone(&self.permits),
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    /// Shared by every clone (one per connection), so the bound is global.
    permits: Arc<Semaphore>,
    limit: usize,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for LoadShed<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        if !is_scheduler_call(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                let status = Status::from(OverloadError::TooManyCalls { limit: self.limit });
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// `/punctual.v1.Scheduler/<Method>`.
fn is_scheduler_call(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|path| path.strip_prefix(<SchedulerServer<SchedulerApi> as NamedService>::NAME))
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheduler_calls_are_counted() {
        assert!(is_scheduler_call("/punctual.v1.Scheduler/GetSchedule"));
        assert!(!is_scheduler_call("/grpc.health.v1.Health/Check"));
        assert!(!is_scheduler_call(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_scheduler_call("/punctual.v1.SchedulerX/GetSchedule"));
    }
}
