//! The test harness: a real Punctual server on an ephemeral port, its own
//! database (a temp SQLite file, or a fresh PostgreSQL database when
//! `PUNCTUAL_TEST_DATABASE_URL` names a server), and a real HTTP receiver
//! standing in for the publishing service.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[path = "../support/postgres.rs"]
mod postgres;

use punctual::app::Application;
use punctual::clock::{Clock, SystemClock};
use punctual::config::ServeConfig;
pub use punctual::grpc::pb;
use punctual::grpc::pb::scheduler_client::SchedulerClient;

pub const SECRET: &str = "test-secret";

/// Where a test's data lives; shared by the restarts of one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    /// The admin URL and name of a PostgreSQL database made for the test,
    /// dropped with it.
    postgres: Option<(String, String)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            postgres::drop_database(admin_url, name);
        }
    }
}

impl TestDatabase {
    pub async fn new() -> TestDatabase {
        match std::env::var("PUNCTUAL_TEST_DATABASE_URL") {
            Ok(admin_url) if admin_url.starts_with("postgres") => {
                let name = format!("punctual_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin = AsyncPgConnection::establish(&admin_url)
                    .await
                    .unwrap_or_else(|error| {
                        panic!("PostgreSQL at {admin_url} is unreachable: {error}")
                    });
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(base, _)| base)
                    .unwrap_or(&admin_url);
                TestDatabase {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    postgres: Some((admin_url.clone(), name)),
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("punctual.db").display());
                TestDatabase {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
        }
    }
}

/// One request the publishing service received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: DateTime<Utc>,
    pub headers: HeaderMap,
    pub raw_body: Vec<u8>,
    pub body: serde_json::Value,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn post_id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }
}

/// What the receiver answers: scripted statuses first, then `default_status`.
#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    default_status: Mutex<u16>,
    delay: Mutex<Duration>,
    in_flight: Mutex<(usize, usize)>,
    arrived: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    state: Arc<ReceiverState>,
    pub url: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        *state.default_status.lock().unwrap() = 200;
        let app = axum::Router::new()
            .route("/publish", axum::routing::post(receive))
            .route("/publish/{platform}", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            state,
            url: format!("http://{addr}/publish"),
        }
    }

    /// Answer these statuses, in order, before the default.
    pub fn script(&self, statuses: &[u16]) {
        self.state.script.lock().unwrap().extend(statuses);
    }

    pub fn always(&self, status: u16) {
        *self.state.default_status.lock().unwrap() = status;
    }

    /// Hold every answer this long.
    pub fn delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn max_concurrent(&self) -> usize {
        self.state.in_flight.lock().unwrap().1
    }

    /// Waits until at least `count` requests arrived, or panics after `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.state.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {count} requests within {limit:?}, got {}",
                    self.received().len()
                );
            }
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let at = Utc::now();
    {
        let mut in_flight = state.in_flight.lock().unwrap();
        in_flight.0 += 1;
        in_flight.1 = in_flight.1.max(in_flight.0);
    }
    let parsed = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let status = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(*state.default_status.lock().unwrap());
    state.received.lock().unwrap().push(Received {
        at,
        headers,
        raw_body: body.to_vec(),
        body: parsed.clone(),
    });
    state.arrived.notify_waiters();
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.in_flight.lock().unwrap().0 -= 1;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let external_id = format!("ext-{}", parsed["id"].as_str().unwrap_or_default());
    (status, axum::Json(serde_json::json!({ "id": external_id })))
}

/// A running server and what it talks to.
pub struct TestApp {
    pub client: SchedulerClient<Channel>,
    pub addr: SocketAddr,
    pub receiver: Receiver,
    pub database: Arc<TestDatabase>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn test_config(database_url: &str, publisher_url: &str) -> ServeConfig {
    let mut config = ServeConfig::with_defaults();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.database_url = database_url.to_owned();
    config.publisher_url = publisher_url.to_owned();
    config.publisher_secret = Some(SECRET.to_owned());
    config.retry_base_delay = Duration::from_millis(50);
    config.retry_max_delay = Duration::from_millis(200);
    config.publish_timeout = Duration::from_secs(5);
    config.shutdown_grace = Duration::from_secs(5);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let database = Arc::new(TestDatabase::new().await);
    let receiver = Receiver::start().await;
    start(database, receiver, Arc::new(SystemClock), adjust).await
}

pub async fn start(
    database: Arc<TestDatabase>,
    receiver: Receiver,
    clock: Arc<dyn Clock>,
    adjust: impl FnOnce(&mut ServeConfig),
) -> TestApp {
    let mut config = test_config(&database.url, &receiver.url);
    adjust(&mut config);
    let app = Application::build_with_clock(config, clock)
        .await
        .expect("build the application");
    let addr = app.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = connect(addr).await;
    TestApp {
        client,
        addr,
        receiver,
        database,
        shutdown,
        task,
    }
}

pub async fn connect(addr: SocketAddr) -> SchedulerClient<Channel> {
    for _ in 0..400 {
        if let Ok(client) = SchedulerClient::connect(format!("http://{addr}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {addr} did not accept connections");
}

impl TestApp {
    /// A new connection to the server, for clients other than the Scheduler's.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid URL")
            .connect()
            .await
            .expect("connect to the server")
    }

    /// Graceful stop, as on SIGTERM; returns the database and receiver for a restart.
    pub async fn stop(self) -> (Arc<TestDatabase>, Receiver) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops within 20 s")
            .expect("server task")
            .expect("server exits cleanly");
        (self.database, self.receiver)
    }

    pub async fn create(&self, request: pb::CreateScheduleRequest) -> pb::ScheduledPost {
        self.client
            .clone()
            .create_schedule(request)
            .await
            .expect("create")
            .into_inner()
    }

    pub async fn get(&self, id: &str) -> pb::ScheduledPost {
        self.client
            .clone()
            .get_schedule(pb::GetScheduleRequest {
                id: id.to_owned(),
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner()
    }

    /// Polls until the post reaches `status` (generous bound; never a fixed sleep).
    pub async fn wait_for_status(
        &self,
        id: &str,
        status: pb::scheduled_post::Status,
    ) -> pb::ScheduledPost {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let post = self.get(id).await;
            if post.status == status as i32 {
                return post;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "post {id} never reached {status:?}: {post:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: instant.timestamp_subsec_nanos() as i32,
    }
}

pub fn instant(timestamp: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let ts = timestamp.as_ref().expect("timestamp set");
    DateTime::from_timestamp(ts.seconds, ts.nanos as u32).unwrap()
}

pub fn post_at(business: &str, at: DateTime<Utc>) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        business_id: business.to_owned(),
        content_id: format!("content-{}", uuid::Uuid::now_v7()),
        platform: "instagram".to_owned(),
        when: Some(pb::create_schedule_request::When::ScheduledFor(timestamp(
            at,
        ))),
        ..Default::default()
    }
}

pub fn in_millis(ms: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(ms)
}
