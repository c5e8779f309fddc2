//! Load shedding for `punctual.v1.Scheduler`: a bound on the calls handled at
//! once, across every connection. A call beyond the bound is answered at
//! once with `RESOURCE_EXHAUSTED`; nothing waits in a queue, so an
//! overloaded server keeps answering quickly and clients back off.
//!
//! The bound is tower's: `ConcurrencyLimit` under `LoadShed`, around the
//! Scheduler service alone, so health checks and reflection pass through
//! and an orchestrator does not restart a server for being busy. A permit
//! is held until the response head is ready: for a unary call that is the
//! whole call, for `WatchEvents` only its start, so open streams never
//! starve unary calls (they have their own cap, see `SchedulerApi`).
//! [`Shed`] only turns tower's `Overloaded` into the gRPC answer, with the
//! error details of [`OverloadError`], since a tonic service answers every
//! call and never fails.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::server::NamedService;
use tower::Service;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;

/// Why a call was refused for lack of capacity. Mapped to a status in
/// `grpc::status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverloadError {
    #[error("the server is handling its limit of {limit} calls; retry with backoff")]
    TooManyCalls { limit: usize },
    #[error("the server has its limit of {limit} event watchers open; retry with backoff")]
    TooManyWatchers { limit: usize },
}

/// `service` with at most `limit` calls in flight; the excess is shed.
/// Clones share the bound (tonic clones the service for each connection).
pub fn shed_beyond<S>(service: S, limit: usize) -> Shed<S> {
    Shed {
        inner: LoadShed::new(ConcurrencyLimit::new(service, limit)),
        limit,
    }
}

/// A service bounded by [`shed_beyond`], answering shed calls with
/// `RESOURCE_EXHAUSTED`.
#[derive(Clone)]
pub struct Shed<S> {
    inner: LoadShed<ConcurrencyLimit<S>>,
    limit: usize,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Shed<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    ResponseBody: Default + Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // `LoadShed` is always ready: when the limit is reached it readies
        // itself to shed the next call instead of waiting.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let limit = self.limit;
        let response = self.inner.call(request);
        Box::pin(async move {
            Ok(match response.await {
                Ok(response) => response,
                Err(error) if error.is::<tower::load_shed::error::Overloaded>() => {
                    Status::from(OverloadError::TooManyCalls { limit }).into_http()
                }
                Err(error) => {
                    tracing::error!(%error, "a Scheduler call failed below the gRPC layer");
                    Status::internal("internal error").into_http()
                }
            })
        })
    }
}

impl<S: NamedService> NamedService for Shed<S> {
    const NAME: &'static str = S::NAME;
}
