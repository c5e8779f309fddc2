//! The integration suite's `TestApp`: a real Punctual server started
//! in-process (`Application::build`) on an ephemeral port, with its own
//! database (a temp SQLite file, or a fresh PostgreSQL database when
//! `PUNCTUAL_TEST_DATABASE_URL` names a server) and the real HTTP receiver
//! standing in for the publishing service, both from `tests/support`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tonic::transport::Channel;

use punctual::clock::{Clock, SystemClock};
use punctual::config::ServeConfig;
pub use punctual::grpc::pb;
use punctual::grpc::pb::scheduler_client::SchedulerClient;

pub use crate::support::database::TestDatabase;
use crate::support::in_process::InProcessServer;
pub use crate::support::receiver::Receiver;
pub use crate::support::timestamp;

pub const SECRET: &str = "test-secret";

/// A running server and what it talks to.
pub struct TestApp {
    pub client: SchedulerClient<Channel>,
    pub addr: SocketAddr,
    pub receiver: Receiver,
    pub database: Arc<TestDatabase>,
    server: InProcessServer,
}

pub fn test_config(database_url: &str, publisher_url: &str) -> ServeConfig {
    let mut config = crate::support::config::local_server(database_url, publisher_url);
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
    let database = Arc::new(TestDatabase::for_this_test().await);
    let receiver = Receiver::start();
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
    let server = InProcessServer::start(config, clock).await;
    let client = connect(server.addr).await;
    TestApp {
        client,
        addr: server.addr,
        receiver,
        database,
        server,
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
        self.server.stop().await;
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
