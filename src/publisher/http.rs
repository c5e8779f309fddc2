//! The [`Publisher`] that POSTs each attempt to the publishing service over
//! HTTP(S).
//!
//! Owns the wire contract with the publishing service: the JSON body, the
//! idempotency, attempt and signature headers, and how every possible answer
//! (or failure to get one) maps onto a [`PublishOutcome`].

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::io;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use sha2::Sha256;

use super::retry::MAX_RETRY_AFTER;
use super::{PublishOutcome, PublishRequest, Publisher};
use crate::telemetry::TRACEPARENT_HEADER;

/// Carries the post id, so the publishing service can drop a duplicate when
/// an attempt whose answer was lost (timeout, crash) is retried.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Unix seconds at signing; part of the signed message so that a captured
/// request cannot be replayed later without the receiver noticing.
pub const TIMESTAMP_HEADER: &str = "x-punctual-timestamp";
/// `v1=` followed by the lowercase hex HMAC-SHA256, keyed with the shared
/// secret, of `"{timestamp}.{body bytes}"`. See [`HttpPublisher::sign`].
pub const SIGNATURE_HEADER: &str = "x-punctual-signature";
/// The 1-based attempt number, also present in the body.
pub const ATTEMPT_HEADER: &str = "x-punctual-attempt";

/// How much of an error body ends up in an outcome's error string: enough to
/// recognise the failure in a dead letter, short enough to list many.
const ERROR_BODY_CHARS: usize = 200;
/// Response bodies are read up to this size. Enough for any id-bearing JSON
/// answer; stops a misbehaving server from making us buffer without bound.
const MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Where and how to reach the publishing service.
#[derive(Clone)]
pub struct HttpPublisherConfig {
    /// The URL posts are sent to unless their platform has an override.
    /// Must be an `http` or `https` URL.
    pub default_url: String,
    /// Per-platform URL overrides, keyed by lower-case platform name.
    pub platform_urls: HashMap<String, String>,
    /// Requests are signed only when a secret is set.
    pub secret: Option<String>,
    /// Bounds the whole request, from connecting to the end of the response.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_idle_connections_per_host: usize,
}

// Written by hand so that the secret never reaches a log line.
impl fmt::Debug for HttpPublisherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPublisherConfig")
            .field("default_url", &self.default_url)
            .field("platform_urls", &self.platform_urls)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "max_idle_connections_per_host",
                &self.max_idle_connections_per_host,
            )
            .finish()
    }
}

/// Why an [`HttpPublisherConfig`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublisherConfigError {
    #[error("invalid publisher URL {url:?} ({which}): {reason}")]
    InvalidUrl {
        /// `default_url`, or `platform_urls[<platform>]`.
        which: String,
        url: String,
        reason: String,
    },
    #[error("the publisher secret is empty; leave it unset to send unsigned requests")]
    EmptySecret,
    #[error("the publisher {which} must be greater than zero")]
    ZeroTimeout { which: &'static str },
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Sends each attempt as one signed JSON POST, over a single shared client
/// so that connections to the publishing service are reused.
pub struct HttpPublisher {
    client: reqwest::Client,
    default_url: Url,
    /// Keys are lower-case platform names.
    platform_urls: HashMap<String, Url>,
    secret: Option<Vec<u8>>,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for HttpPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPublisher")
            .field("default_url", &self.default_url.as_str())
            .field("platform_urls", &self.platform_urls)
            .field("signed", &self.secret.is_some())
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The JSON body of one attempt.
#[derive(Serialize)]
struct WireBody<'a> {
    id: &'a str,
    business_id: &'a str,
    content_id: &'a str,
    platform: &'a str,
    payload: &'a crate::domain::Payload,
    scheduled_for: String,
    attempt: u32,
}

impl HttpPublisher {
    /// Validates the configuration and builds the one client used for every
    /// request.
    pub fn new(config: HttpPublisherConfig) -> Result<Self, PublisherConfigError> {
        let default_url = parse_url("default_url".to_owned(), &config.default_url)?;
        let platform_urls = config
            .platform_urls
            .iter()
            .map(|(platform, url)| {
                let url = parse_url(format!("platform_urls[{platform:?}]"), url)?;
                // Lower-cased here as well as at lookup so that a config
                // written as "Twitter" still matches.
                Ok((platform.to_lowercase(), url))
            })
            .collect::<Result<HashMap<_, _>, PublisherConfigError>>()?;

        let secret = match config.secret {
            Some(secret) if secret.is_empty() => return Err(PublisherConfigError::EmptySecret),
            Some(secret) => Some(secret.into_bytes()),
            None => None,
        };
        if config.request_timeout.is_zero() {
            return Err(PublisherConfigError::ZeroTimeout {
                which: "request timeout",
            });
        }
        if config.connect_timeout.is_zero() {
            return Err(PublisherConfigError::ZeroTimeout {
                which: "connect timeout",
            });
        }

        // reqwest is built without a bundled crypto provider and panics when
        // building a client if none is installed. An Err here only means a
        // provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let client = reqwest::Client::builder()
            .user_agent(concat!("punctual/", env!("CARGO_PKG_VERSION")))
            // A redirect is a misconfigured URL, and following one would
            // resend a signed body to a place nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_idle_connections_per_host)
            .build()
            .map_err(PublisherConfigError::Client)?;

        Ok(Self {
            client,
            default_url,
            platform_urls,
            secret,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
        })
    }

    /// The [`SIGNATURE_HEADER`] value for a timestamp and body: `v1=` and the
    /// lowercase hex HMAC-SHA256 of `"{timestamp}.{body}"` keyed by `secret`.
    ///
    /// Public so tests, and receivers written in Rust, can verify requests.
    pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
        // HMAC hashes over-long keys and pads short ones, so it accepts any
        // key length: new_from_slice cannot fail, whatever the secret.
        let mut mac =
            HmacSha256::new_from_slice(secret).expect("HMAC-SHA256 accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn url_for(&self, platform: &str) -> &Url {
        self.platform_urls
            .get(&platform.to_lowercase())
            .unwrap_or(&self.default_url)
    }

    fn headers(&self, request: &PublishRequest, body: &[u8]) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let key = HeaderValue::from_str(&request.post_id)
            .map_err(|_| "post id cannot be sent as an Idempotency-Key header".to_owned())?;
        headers.insert(IDEMPOTENCY_KEY_HEADER, key);
        headers.insert(ATTEMPT_HEADER, HeaderValue::from(request.attempt));
        // Tracing must never cost a delivery: a value that is not a valid
        // header is left out.
        if let Some(trace_parent) = request
            .trace_parent
            .as_deref()
            .and_then(|value| HeaderValue::from_str(value).ok())
        {
            headers.insert(TRACEPARENT_HEADER, trace_parent);
        }
        if let Some(secret) = &self.secret {
            let timestamp = Utc::now().timestamp();
            let signature = Self::sign(secret, timestamp, body);
            headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
            // Always ASCII hex, so this cannot fail; handled, not unwrapped.
            let signature = HeaderValue::from_str(&signature)
                .map_err(|_| "signature is not a valid header value".to_owned())?;
            headers.insert(SIGNATURE_HEADER, signature);
        }
        Ok(headers)
    }

    /// Describes a request that got no HTTP answer. All of these are
    /// retryable: the service may be back, or reachable, next time, and the
    /// Idempotency-Key makes a resend of a request that did arrive harmless.
    fn transport_failure(&self, err: &reqwest::Error, url: &Url) -> PublishOutcome {
        let error = if err.is_timeout() && err.is_connect() {
            format!("connect timed out after {:?}", self.connect_timeout)
        } else if err.is_timeout() {
            format!("timed out after {:?}", self.request_timeout)
        } else if err.is_connect() {
            let target = match (url.host_str(), url.port_or_known_default()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                _ => url.as_str().to_owned(),
            };
            match io_error_kind(err) {
                Some(io::ErrorKind::ConnectionRefused) => format!("connection refused: {target}"),
                _ => format!("connection failed: {target}: {}", root_cause(err)),
            }
        } else {
            format!("request failed: {}", root_cause(err))
        };
        PublishOutcome::Retryable {
            error,
            http_status: None,
            retry_after: None,
        }
    }
}

#[async_trait::async_trait]
impl Publisher for HttpPublisher {
    async fn publish(&self, request: &PublishRequest) -> PublishOutcome {
        let wire = WireBody {
            id: &request.post_id,
            business_id: &request.business_id,
            content_id: &request.content_id,
            platform: &request.platform,
            payload: &request.payload,
            scheduled_for: request
                .scheduled_for
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            attempt: request.attempt,
        };
        // Serialised once: the signature covers exactly these bytes.
        let body = match serde_json::to_vec(&wire) {
            Ok(body) => body,
            Err(err) => return permanent(format!("could not encode the request body: {err}")),
        };
        let headers = match self.headers(request, &body) {
            Ok(headers) => headers,
            Err(error) => return permanent(error),
        };
        let url = self.url_for(&request.platform);

        tracing::debug!(
            post_id = %request.post_id,
            attempt = request.attempt,
            %url,
            "publishing"
        );
        let response = match self
            .client
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) if err.is_builder() => {
                return permanent(format!("could not build the request: {}", root_cause(&err)));
            }
            Err(err) => return self.transport_failure(&err, url),
        };

        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, Utc::now()));
        let body = match read_capped(response).await {
            Ok(body) => body,
            Err((partial, err)) => {
                // The status line is the service's verdict; a body cut short
                // only costs the external id or the error detail.
                tracing::warn!(
                    post_id = %request.post_id,
                    status = status.as_u16(),
                    error = %root_cause(&err),
                    "could not read the whole response body"
                );
                partial
            }
        };
        classify(status, &body, retry_after)
    }
}

fn permanent(error: String) -> PublishOutcome {
    PublishOutcome::Permanent {
        error,
        http_status: None,
    }
}

/// Maps an HTTP answer onto an outcome.
fn classify(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> PublishOutcome {
    let http_status = status.as_u16();
    if status.is_success() {
        return PublishOutcome::Published {
            external_id: external_id(body),
            http_status,
        };
    }
    let error = status_error(status, body);
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if retryable {
        PublishOutcome::Retryable {
            error,
            http_status: Some(http_status),
            retry_after,
        }
    } else {
        PublishOutcome::Permanent {
            error,
            http_status: Some(http_status),
        }
    }
}

/// `"HTTP 503 Service Unavailable: <start of body>"`.
fn status_error(status: StatusCode, body: &[u8]) -> String {
    let mut error = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        error.push(' ');
        error.push_str(reason);
    }
    let excerpt = excerpt(&String::from_utf8_lossy(body), ERROR_BODY_CHARS);
    if !excerpt.is_empty() {
        error.push_str(": ");
        error.push_str(&excerpt);
    }
    error
}

/// The first `max_chars` characters of `text` on one line: runs of
/// whitespace (an HTML page's newlines and indentation) become one space,
/// and a cut is marked with an ellipsis. Counts characters, not bytes, so it
/// never splits one.
fn excerpt(text: &str, max_chars: usize) -> String {
    let mut collapsed = text
        .split_whitespace()
        .flat_map(|word| " ".chars().chain(word.chars()))
        .skip(1);
    let mut out: String = collapsed.by_ref().take(max_chars).collect();
    if collapsed.next().is_some() {
        out.push('…');
    }
    out
}

/// The publishing service's id for the post: the body's `external_id`, or
/// failing that its `id`, as a string. Anything else is no id, not an error:
/// the post is published either way.
fn external_id(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["external_id", "id"]
        .iter()
        .find_map(|field| match json.get(field)? {
            serde_json::Value::String(id) if !id.is_empty() => Some(id.clone()),
            serde_json::Value::Number(id) => Some(id.to_string()),
            _ => None,
        })
}

/// Reads the response body up to [`MAX_RESPONSE_BODY_BYTES`]. On a failure
/// part way, returns what had arrived along with the error.
async fn read_capped(
    mut response: reqwest::Response,
) -> Result<Vec<u8>, (Vec<u8>, reqwest::Error)> {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(err) => return Err((body, err)),
        }
    }
    Ok(body)
}

/// A Retry-After header as a delay from `now`: either delta-seconds or an
/// HTTP-date (RFC 9110 §10.2.3). Capped at [`MAX_RETRY_AFTER`]; a date in the
/// past means no wait; anything unparseable is ignored.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only possible parse failure is overflow: a
        // delay that long is simply more than the cap.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = parse_http_date(value)?;
    let delay = (at - now).to_std().unwrap_or(Duration::ZERO);
    Some(delay.min(MAX_RETRY_AFTER))
}

/// IMF-fixdate, plus the two obsolete formats RFC 9110 still asks
/// recipients to accept (RFC 850 and asctime).
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| naive.and_utc())
}

fn parse_url(which: String, url: &str) -> Result<Url, PublisherConfigError> {
    let invalid = |reason: String| PublisherConfigError::InvalidUrl {
        which: which.clone(),
        url: url.to_owned(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|err| invalid(err.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(invalid(format!("scheme {other:?} is not http or https"))),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_owned()));
    }
    Ok(parsed)
}

/// The kind of the first I/O error in `err`'s cause chain.
fn io_error_kind(err: &reqwest::Error) -> Option<io::ErrorKind> {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = cause.source();
    }
    None
}

/// The innermost cause's message: reqwest's own message ("error sending
/// request for url (...)") is long and says little.
fn root_cause(err: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::extract::{ConnectInfo, Request, State};
    use axum::response::{IntoResponse, Response};
    use chrono::{TimeZone, Timelike};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "s3cret";

    /// One scripted answer of the test server.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
        delay: Duration,
    }

    impl Reply {
        fn status(status: u16) -> Self {
            Self {
                status,
                headers: Vec::new(),
                body: String::new(),
                delay: Duration::ZERO,
            }
        }

        fn body(mut self, body: impl Into<String>) -> Self {
            self.body = body.into();
            self
        }

        fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
            self.headers.push((name, value.into()));
            self
        }

        fn delay(mut self, delay: Duration) -> Self {
            self.delay = delay;
            self
        }
    }

    #[derive(Debug, Clone)]
    struct Recorded {
        method: String,
        path: String,
        headers: http::HeaderMap,
        body: Vec<u8>,
        peer: SocketAddr,
    }

    impl Recorded {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    struct ServerState {
        replies: Vec<Reply>,
        recorded: Mutex<Vec<Recorded>>,
    }

    /// A real HTTP server on a loopback port that records every request and
    /// answers the n-th one with the n-th reply (the last one repeats).
    struct TestServer {
        addr: SocketAddr,
        state: Arc<ServerState>,
    }

    impl TestServer {
        async fn start(replies: Vec<Reply>) -> Self {
            assert!(!replies.is_empty());
            let state = Arc::new(ServerState {
                replies,
                recorded: Mutex::new(Vec::new()),
            });
            let router = axum::Router::new()
                .fallback(handle)
                .with_state(Arc::clone(&state));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
                .unwrap();
            });
            Self { addr, state }
        }

        async fn replying(reply: Reply) -> Self {
            Self::start(vec![reply]).await
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn requests(&self) -> Vec<Recorded> {
            self.state.recorded.lock().unwrap().clone()
        }

        fn only_request(&self) -> Recorded {
            let requests = self.requests();
            assert_eq!(requests.len(), 1, "{requests:?}");
            requests.into_iter().next().unwrap()
        }
    }

    async fn handle(
        State(state): State<Arc<ServerState>>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        request: Request,
    ) -> Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let reply = {
            let mut recorded = state.recorded.lock().unwrap();
            recorded.push(Recorded {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                headers: parts.headers,
                body: body.to_vec(),
                peer,
            });
            let index = (recorded.len() - 1).min(state.replies.len() - 1);
            state.replies[index].clone()
        };
        tokio::time::sleep(reply.delay).await;
        let mut response = (
            http::StatusCode::from_u16(reply.status).unwrap(),
            reply.body,
        )
            .into_response();
        for (name, value) in reply.headers {
            response
                .headers_mut()
                .insert(name, http::HeaderValue::from_str(&value).unwrap());
        }
        response
    }

    fn config(default_url: String) -> HttpPublisherConfig {
        HttpPublisherConfig {
            default_url,
            platform_urls: HashMap::new(),
            secret: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_idle_connections_per_host: 4,
        }
    }

    fn publisher_for(server: &TestServer) -> HttpPublisher {
        HttpPublisher::new(config(server.url("/publish"))).unwrap()
    }

    fn request() -> PublishRequest {
        PublishRequest {
            post_id: "0199e6a4-7a3c-7cc1-9d2e-3f5a6b7c8d9e".to_owned(),
            business_id: "biz-1".to_owned(),
            content_id: "content-9".to_owned(),
            platform: "twitter".to_owned(),
            payload: crate::domain::Payload::parse(
                "payload_json",
                r#"{"text": "héllo ✨", "media": [1, 2], "nested": {"a": null}}"#,
                1024,
            )
            .unwrap(),
            scheduled_for: Utc
                .with_ymd_and_hms(2025, 10, 15, 12, 0, 0)
                .unwrap()
                .with_nanosecond(123_456_000)
                .unwrap(),
            attempt: 2,
            trace_parent: None,
        }
    }

    fn retryable_error(outcome: PublishOutcome) -> String {
        match outcome {
            PublishOutcome::Retryable {
                error, http_status, ..
            } => {
                assert_eq!(http_status, None);
                error
            }
            other => panic!("expected a retryable transport failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn posts_the_wire_body_and_headers() {
        let server = TestServer::replying(Reply::status(200)).await;
        let outcome = publisher_for(&server).publish(&request()).await;
        assert_eq!(
            outcome,
            PublishOutcome::Published {
                external_id: None,
                http_status: 200
            }
        );

        let sent = server.only_request();
        assert_eq!(sent.method, "POST");
        assert_eq!(sent.path, "/publish");
        assert_eq!(
            sent.json(),
            json!({
                "id": "0199e6a4-7a3c-7cc1-9d2e-3f5a6b7c8d9e",
                "business_id": "biz-1",
                "content_id": "content-9",
                "platform": "twitter",
                "payload": {"text": "héllo ✨", "media": [1, 2], "nested": {"a": null}},
                "scheduled_for": "2025-10-15T12:00:00.123456Z",
                "attempt": 2,
            })
        );
        assert_eq!(sent.header("content-type"), Some("application/json"));
        assert_eq!(
            sent.header(IDEMPOTENCY_KEY_HEADER),
            Some("0199e6a4-7a3c-7cc1-9d2e-3f5a6b7c8d9e")
        );
        assert_eq!(sent.header(ATTEMPT_HEADER), Some("2"));
        assert_eq!(
            sent.header("user-agent"),
            Some(concat!("punctual/", env!("CARGO_PKG_VERSION")))
        );
        // No secret configured, so nothing pretends to be signed.
        assert_eq!(sent.header(SIGNATURE_HEADER), None);
        assert_eq!(sent.header(TIMESTAMP_HEADER), None);
        assert_eq!(sent.header(TRACEPARENT_HEADER), None);
    }

    #[tokio::test]
    async fn sends_the_trace_context_and_skips_an_unsendable_one() {
        let server = TestServer::replying(Reply::status(200)).await;
        let publisher = publisher_for(&server);
        let trace_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traced = request();
        traced.trace_parent = Some(trace_parent.to_owned());
        publisher.publish(&traced).await;
        traced.trace_parent = Some("bad\nvalue".to_owned());
        let outcome = publisher.publish(&traced).await;
        assert!(matches!(outcome, PublishOutcome::Published { .. }));

        let sent = server.requests();
        assert_eq!(sent[0].header(TRACEPARENT_HEADER), Some(trace_parent));
        assert_eq!(sent[1].header(TRACEPARENT_HEADER), None);
    }

    #[tokio::test]
    async fn scheduled_for_keeps_nanoseconds() {
        let server = TestServer::replying(Reply::status(200)).await;
        let mut request = request();
        request.scheduled_for = request.scheduled_for.with_nanosecond(7).unwrap();
        publisher_for(&server).publish(&request).await;
        assert_eq!(
            server.only_request().json()["scheduled_for"],
            "2025-10-15T12:00:00.000000007Z"
        );
    }

    #[tokio::test]
    async fn signs_the_exact_body_sent() {
        let server = TestServer::replying(Reply::status(200)).await;
        let mut config = config(server.url("/publish"));
        config.secret = Some(SECRET.to_owned());
        let before = Utc::now().timestamp();
        HttpPublisher::new(config)
            .unwrap()
            .publish(&request())
            .await;
        let after = Utc::now().timestamp();

        let sent = server.only_request();
        let timestamp: i64 = sent.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
        assert!((before..=after).contains(&timestamp), "{timestamp}");
        let signature = sent.header(SIGNATURE_HEADER).unwrap();
        assert_eq!(
            signature,
            HttpPublisher::sign(SECRET.as_bytes(), timestamp, &sent.body)
        );

        // Any change to the body, the timestamp or the key breaks it.
        let mut tampered = sent.body.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert_ne!(
            signature,
            HttpPublisher::sign(SECRET.as_bytes(), timestamp, &tampered)
        );
        assert_ne!(
            signature,
            HttpPublisher::sign(SECRET.as_bytes(), timestamp + 1, &sent.body)
        );
        assert_ne!(
            signature,
            HttpPublisher::sign(b"other", timestamp, &sent.body)
        );
    }

    #[test]
    fn signature_matches_known_vectors() {
        // Computed independently with Python's hmac module.
        assert_eq!(
            HttpPublisher::sign(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
        // A key longer than SHA-256's block, and a negative timestamp.
        assert_eq!(
            HttpPublisher::sign(&[b'k'; 100], -5, b""),
            "v1=08da09817b82bc258cdac8551780f02feef65956afc87ef0932646fac7ad0dc6"
        );
    }

    #[tokio::test]
    async fn retries_keep_the_idempotency_key_and_reuse_the_connection() {
        let server = TestServer::replying(Reply::status(200)).await;
        let publisher = publisher_for(&server);
        let mut request = request();
        for attempt in 1..=3 {
            request.attempt = attempt;
            publisher.publish(&request).await;
        }

        let sent = server.requests();
        assert_eq!(sent.len(), 3);
        for (attempt, sent) in (1..).zip(&sent) {
            assert_eq!(
                sent.header(IDEMPOTENCY_KEY_HEADER),
                Some(request.post_id.as_str())
            );
            assert_eq!(
                sent.header(ATTEMPT_HEADER),
                Some(attempt.to_string().as_str())
            );
            assert_eq!(sent.json()["attempt"], attempt);
        }
        // One client, one pooled connection: every request came from the
        // same client port.
        assert!(sent.iter().all(|s| s.peer == sent[0].peer), "{sent:?}");
    }

    #[tokio::test]
    async fn platform_override_is_used_whatever_the_case() {
        let default = TestServer::replying(Reply::status(200)).await;
        let linkedin = TestServer::replying(Reply::status(200)).await;
        let mut config = config(default.url("/default"));
        config
            .platform_urls
            .insert("LinkedIn".to_owned(), linkedin.url("/linkedin"));
        let publisher = HttpPublisher::new(config).unwrap();

        let mut request = request();
        request.platform = "linkedin".to_owned();
        publisher.publish(&request).await;
        request.platform = "LINKEDIN".to_owned();
        publisher.publish(&request).await;
        request.platform = "twitter".to_owned();
        publisher.publish(&request).await;

        let to_linkedin = linkedin.requests();
        assert_eq!(to_linkedin.len(), 2);
        assert!(to_linkedin.iter().all(|r| r.path == "/linkedin"));
        assert_eq!(default.only_request().path, "/default");
    }

    #[tokio::test]
    async fn ok_with_id_is_published_with_external_id() {
        let server = TestServer::replying(
            Reply::status(200)
                .header("content-type", "application/json")
                .body(r#"{"id":"abc","status":"ok"}"#),
        )
        .await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Published {
                external_id: Some("abc".to_owned()),
                http_status: 200
            }
        );
    }

    #[tokio::test]
    async fn created_with_numeric_external_id_prefers_external_id() {
        let server = TestServer::replying(
            Reply::status(201).body(r#"{"id":"x","external_id":1234567890123}"#),
        )
        .await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Published {
                external_id: Some("1234567890123".to_owned()),
                http_status: 201
            }
        );
    }

    #[tokio::test]
    async fn no_content_is_published_without_id() {
        let server = TestServer::replying(Reply::status(204)).await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Published {
                external_id: None,
                http_status: 204
            }
        );
    }

    #[tokio::test]
    async fn non_json_success_body_is_still_published() {
        let server = TestServer::replying(Reply::status(202).body("queued, thanks")).await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Published {
                external_id: None,
                http_status: 202
            }
        );
    }

    #[test]
    fn external_id_shapes() {
        assert_eq!(
            external_id(br#"{"external_id":"e","id":"i"}"#),
            Some("e".into())
        );
        assert_eq!(
            external_id(br#"{"external_id":null,"id":7}"#),
            Some("7".into())
        );
        assert_eq!(external_id(br#"{"id":""}"#), None);
        assert_eq!(external_id(br#"{"id":{"nested":1}}"#), None);
        assert_eq!(external_id(br#"["abc"]"#), None);
        assert_eq!(external_id(b""), None);
        assert_eq!(external_id(b"<html>"), None);
    }

    #[tokio::test]
    async fn server_error_is_retryable_with_status_and_body() {
        let server = TestServer::replying(Reply::status(500).body("boom\n  at line 3")).await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Retryable {
                error: "HTTP 500 Internal Server Error: boom at line 3".to_owned(),
                http_status: Some(500),
                retry_after: None,
            }
        );
    }

    #[tokio::test]
    async fn too_many_requests_honours_retry_after_seconds() {
        let server = TestServer::replying(Reply::status(429).header("retry-after", "7")).await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Retryable {
                error: "HTTP 429 Too Many Requests".to_owned(),
                http_status: Some(429),
                retry_after: Some(Duration::from_secs(7)),
            }
        );
    }

    #[tokio::test]
    async fn unavailable_honours_retry_after_date() {
        let at = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let at = at.replace("+0000", "GMT");
        let server = TestServer::replying(Reply::status(503).header("retry-after", at)).await;
        match publisher_for(&server).publish(&request()).await {
            PublishOutcome::Retryable {
                http_status: Some(503),
                retry_after: Some(delay),
                ..
            } => assert!(
                (Duration::from_secs(110)..=Duration::from_secs(120)).contains(&delay),
                "{delay:?}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_retry_after_is_ignored() {
        let server =
            TestServer::replying(Reply::status(503).header("retry-after", "soon-ish")).await;
        match publisher_for(&server).publish(&request()).await {
            PublishOutcome::Retryable { retry_after, .. } => assert_eq!(retry_after, None),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn request_timeout_status_is_retryable() {
        let server = TestServer::replying(Reply::status(408)).await;
        assert!(matches!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Retryable {
                http_status: Some(408),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn bad_request_is_permanent() {
        let server = TestServer::replying(
            Reply::status(400).body(r#"{"error":"payload.text is too long"}"#),
        )
        .await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Permanent {
                error: r#"HTTP 400 Bad Request: {"error":"payload.text is too long"}"#.to_owned(),
                http_status: Some(400),
            }
        );
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_are_permanent() {
        let elsewhere = TestServer::replying(Reply::status(200)).await;
        let server =
            TestServer::replying(Reply::status(307).header("location", elsewhere.url("/moved")))
                .await;
        assert_eq!(
            publisher_for(&server).publish(&request()).await,
            PublishOutcome::Permanent {
                error: "HTTP 307 Temporary Redirect".to_owned(),
                http_status: Some(307),
            }
        );
        assert!(elsewhere.requests().is_empty());
    }

    #[tokio::test]
    async fn long_error_bodies_are_cut_on_char_boundaries() {
        // Two-byte characters, and a body far past the read cap.
        let server = TestServer::replying(Reply::status(502).body("é".repeat(200_000))).await;
        let error = match publisher_for(&server).publish(&request()).await {
            PublishOutcome::Retryable { error, .. } => error,
            other => panic!("{other:?}"),
        };
        let expected = format!("HTTP 502 Bad Gateway: {}…", "é".repeat(ERROR_BODY_CHARS));
        assert_eq!(error, expected);
    }

    #[test]
    fn excerpt_collapses_whitespace_and_marks_cuts() {
        assert_eq!(excerpt("", 5), "");
        assert_eq!(excerpt(" \n\t ", 5), "");
        assert_eq!(excerpt("  a \n\n b  ", 5), "a b");
        assert_eq!(excerpt("abcde", 5), "abcde");
        assert_eq!(excerpt("abcde   ", 5), "abcde");
        assert_eq!(excerpt("abcdef", 5), "abcde…");
        assert_eq!(excerpt("abcde f", 5), "abcde…");
        assert_eq!(excerpt("ab  cdef", 5), "ab cd…");
        assert_eq!(excerpt("日本語のテキスト", 3), "日本語…");
    }

    #[tokio::test]
    async fn slow_server_times_out_as_retryable() {
        let server = TestServer::replying(Reply::status(200).delay(Duration::from_secs(5))).await;
        let mut config = config(server.url("/publish"));
        config.request_timeout = Duration::from_millis(300);
        let publisher = HttpPublisher::new(config).unwrap();

        let started = Instant::now();
        let error = retryable_error(publisher.publish(&request()).await);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(error, "timed out after 300ms");
        // The request did arrive: only the answer was lost, which is why the
        // retry carries the same Idempotency-Key.
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn refused_connection_is_retryable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let publisher =
            HttpPublisher::new(config(format!("http://127.0.0.1:{port}/publish"))).unwrap();
        let error = retryable_error(publisher.publish(&request()).await);
        assert_eq!(error, format!("connection refused: 127.0.0.1:{port}"));
    }

    #[tokio::test]
    async fn post_id_unfit_for_a_header_is_permanent_and_not_sent() {
        let server = TestServer::replying(Reply::status(200)).await;
        let mut request = request();
        request.post_id = "line\nbreak".to_owned();
        assert!(matches!(
            publisher_for(&server).publish(&request).await,
            PublishOutcome::Permanent {
                http_status: None,
                ..
            }
        ));
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn usable_as_a_shared_trait_object() {
        let server = TestServer::replying(Reply::status(204)).await;
        let publisher: Arc<dyn Publisher> = Arc::new(publisher_for(&server));
        let task = tokio::spawn({
            let publisher = Arc::clone(&publisher);
            async move { publisher.publish(&request()).await }
        });
        assert!(matches!(
            task.await.unwrap(),
            PublishOutcome::Published { .. }
        ));
    }

    #[test]
    fn invalid_urls_are_refused_by_name() {
        for bad in [
            "not a url",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "",
            "http://",
        ] {
            match HttpPublisher::new(config(bad.to_owned())) {
                Err(PublisherConfigError::InvalidUrl { which, url, .. }) => {
                    assert_eq!(which, "default_url");
                    assert_eq!(url, bad);
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }

        let mut config = config("https://publisher.example/".to_owned());
        config
            .platform_urls
            .insert("tiktok".to_owned(), "mailto:ops@example.com".to_owned());
        let err = HttpPublisher::new(config).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("mailto:ops@example.com"), "{message}");
        assert!(message.contains("tiktok"), "{message}");
    }

    #[test]
    fn other_bad_settings_are_refused() {
        let mut empty_secret = config("https://publisher.example/".to_owned());
        empty_secret.secret = Some(String::new());
        assert!(matches!(
            HttpPublisher::new(empty_secret),
            Err(PublisherConfigError::EmptySecret)
        ));

        let mut no_time = config("https://publisher.example/".to_owned());
        no_time.request_timeout = Duration::ZERO;
        assert!(matches!(
            HttpPublisher::new(no_time),
            Err(PublisherConfigError::ZeroTimeout { .. })
        ));
    }

    #[test]
    fn https_urls_build_a_client() {
        // Building the client exercises the rustls provider installation.
        let mut config = config("https://publisher.example/v1/posts".to_owned());
        config.secret = Some(SECRET.to_owned());
        let publisher = HttpPublisher::new(config.clone()).unwrap();
        // Neither Debug form may leak the secret into a log.
        assert!(!format!("{config:?}").contains(SECRET));
        assert!(!format!("{publisher:?}").contains(SECRET));
    }

    #[test]
    fn retry_after_forms() {
        let now = Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 0).unwrap();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_retry_after("7", now), secs(7));
        assert_eq!(parse_retry_after(" 0 ", now), secs(0));
        assert_eq!(parse_retry_after("7200", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            secs(37)
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            secs(37)
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), secs(37));
        // In the past: go ahead now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            secs(0)
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        for garbage in [
            "",
            "  ",
            "-3",
            "1.5",
            "7s",
            "soon",
            "Sun, 99 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }
}
