//! The publishing service's stand-in: a real HTTP server that records every
//! request (when its head arrived, the path, the headers and the raw body)
//! and answers with scripted statuses after an optional delay.
//!
//! It runs on a thread and runtime of its own, so that neither a test's
//! runtime nor a benchmark's load delays the moment a request is noted, and
//! so that a synchronous test can use it too.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, oneshot};

/// One request the publishing service received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When its head arrived: the moment the post reached the service.
    pub at: DateTime<Utc>,
    /// `/publish`, or `/publish/<suffix>` when the publisher URL had one.
    pub path: String,
    pub headers: HeaderMap,
    pub raw_body: Vec<u8>,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: serde_json::Value,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn post_id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }

    /// The last segment of the path: what the publisher URL was suffixed
    /// with (the replica tests give each replica its own).
    pub fn path_suffix(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }
}

/// What the receiver has seen and how it answers.
struct State {
    received: Vec<Received>,
    /// Answered first, in order; then `default_status`.
    script: VecDeque<u16>,
    default_status: u16,
    /// How long every answer is held.
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Woken at every arrival.
    arrived: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Stops the receiver's thread when the last clone of the receiver goes.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A handle on the running receiver; clones share it.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>/publish`; any suffix (`/instagram`,
    /// `/replica-1`) reaches it too.
    pub url: String,
    shared: Arc<Shared>,
    _running: Arc<Running>,
}

impl Receiver {
    /// Starts answering 200 to every POST.
    pub fn start() -> Receiver {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver's port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the receiver's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                received: Vec::new(),
                script: VecDeque::new(),
                default_status: 200,
                delay: Duration::ZERO,
                in_flight: 0,
                max_in_flight: 0,
            }),
            arrived: Notify::new(),
        });
        let (stop, stopped) = oneshot::channel();
        let served = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || serve(listener, served, stopped))
            .expect("start the receiver's thread");
        Receiver {
            url: format!("http://{addr}/publish"),
            shared,
            _running: Arc::new(Running {
                stop: Some(stop),
                thread: Some(thread),
            }),
        }
    }

    /// Answer these statuses, in order, before the default.
    pub fn script(&self, statuses: &[u16]) {
        self.shared.state().script.extend(statuses);
    }

    pub fn always(&self, status: u16) {
        self.shared.state().default_status = status;
    }

    /// Hold every answer this long.
    pub fn delay(&self, delay: Duration) {
        self.shared.state().delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.state().received.clone()
    }

    pub fn count(&self) -> usize {
        self.shared.state().received.len()
    }

    /// The most requests it was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.shared.state().max_in_flight
    }

    /// Waits until at least `count` requests arrived; false if `deadline`
    /// passed first.
    pub async fn arrived_by(&self, count: usize, deadline: tokio::time::Instant) -> bool {
        loop {
            let arrived = self.shared.arrived.notified();
            if self.count() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.count() >= count;
            }
        }
    }

    /// Waits until at least `count` requests arrived, or panics after `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        if !self
            .arrived_by(count, tokio::time::Instant::now() + limit)
            .await
        {
            panic!(
                "expected {count} requests within {limit:?}, got {}",
                self.count()
            );
        }
        self.received()
    }

    /// Waits until every post in `ids` arrived at least once, or panics
    /// after `limit`.
    pub async fn wait_for_posts(&self, ids: &[String], limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.shared.arrived.notified();
            let received = self.received();
            let seen: std::collections::HashSet<String> =
                received.iter().map(Received::post_id).collect();
            let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
            if missing == 0 {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{missing} of {} posts never reached the publisher within {limit:?}",
                    ids.len()
                );
            }
        }
    }
}

fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, stopped: oneshot::Receiver<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the receiver's runtime");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("the receiver's listener");
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(shared);
        // Stopping drops open connections and answers still held.
        tokio::select! {
            served = axum::serve(listener, app) => {
                if let Err(error) = served {
                    eprintln!("receiver: {error}");
                }
            }
            _ = stopped => {}
        }
    });
}

async fn receive(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    request: axum::extract::Request,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let at = Utc::now();
    let (head, body) = request.into_parts();
    let raw_body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let body: serde_json::Value = serde_json::from_slice(&raw_body).unwrap_or_default();
    let external_id = format!("ext-{}", body["id"].as_str().unwrap_or_default());
    let (status, delay) = {
        let mut state = shared.state();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.received.push(Received {
            at,
            path: head.uri.path().to_owned(),
            headers: head.headers,
            raw_body,
            body,
        });
        let status = state.script.pop_front().unwrap_or(state.default_status);
        (status, state.delay)
    };
    shared.arrived.notify_waiters();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    shared.state().in_flight -= 1;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(serde_json::json!({ "id": external_id })))
}
