//! Delivery of a due post to the publishing service, and the retry policy.
//!
//! This module owns everything between "this post is due now" and "the
//! publishing service said yes, no, or try again": the wire format of one
//! attempt, request signing, classifying an HTTP answer (or the lack of one)
//! into a [`PublishOutcome`], and how long to wait before the next attempt
//! ([`RetryPolicy`]). It does not decide *when* a post fires, does not loop
//! over retries and does not touch storage; the engine does that, holding an
//! `Arc<dyn Publisher>` so tests can substitute a fake.

pub mod http;
pub mod retry;

pub use http::{
    ATTEMPT_HEADER, HttpPublisher, HttpPublisherConfig, IDEMPOTENCY_KEY_HEADER,
    PublisherConfigError, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
pub use retry::RetryPolicy;

/// What is sent for one attempt.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The post's id. Also sent as the Idempotency-Key, so it must stay the
    /// same across attempts and restarts for the publishing service to be
    /// able to drop duplicates.
    pub post_id: String,
    pub business_id: String,
    pub content_id: String,
    pub platform: String,
    /// A JSON object, forwarded byte for byte.
    pub payload: crate::domain::Payload,
    pub scheduled_for: chrono::DateTime<chrono::Utc>,
    /// 1-based.
    pub attempt: u32,
    /// The W3C trace context of the attempt, sent as the `traceparent`
    /// header so the publishing service can continue the trace.
    pub trace_parent: Option<String>,
}

/// How one attempt ended, as far as the engine needs to know.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishOutcome {
    /// 2xx. `external_id` comes from the response JSON body's `external_id`
    /// or `id` field (a string, or a number rendered as a string), if any; a
    /// non-JSON or empty body is fine.
    Published {
        external_id: Option<String>,
        http_status: u16,
    },
    /// Timeout, connection error, 408, 429 or 5xx: a later attempt may
    /// succeed. `retry_after` is the server's Retry-After header (relative to
    /// now, capped at one hour) when it sent a usable one.
    Retryable {
        error: String,
        http_status: Option<u16>,
        retry_after: Option<std::time::Duration>,
    },
    /// Any other 4xx, and 3xx since redirects are not followed: retrying the
    /// same request cannot help.
    Permanent {
        error: String,
        http_status: Option<u16>,
    },
}

/// Delivers one attempt of a post.
///
/// Implementations never panic and never return early with an error type:
/// every failure is described by the [`PublishOutcome`], whose error strings
/// end up in dead letters read by people.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync + 'static {
    async fn publish(&self, request: &PublishRequest) -> PublishOutcome;
}
