//! Several real `punctual serve` processes sharing one PostgreSQL database,
//! publishing to one real HTTP receiver: every post is published, none
//! early, none twice while the replicas are healthy; a replica killed,
//! stopped or frozen is taken over and cannot publish once its lease is
//! gone; health follows the database.
//!
//! PostgreSQL only: every test is ignored by a plain `cargo test` and run by
//! `.ci/run` with `-- --ignored`, on the server `PUNCTUAL_TEST_DATABASE_URL`
//! names (default `postgres://postgres@127.0.0.1:5432/test`); run so, a
//! test fails when that server does not answer.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use punctual::grpc::pb;
use punctual::grpc::pb::scheduler_client::SchedulerClient;
use support::database::{TestDatabase, postgres_admin_url, test_label};
use support::process::{SCHEDULER_SERVICE, Serve, ServerProcess};
use support::receiver::{Received, Receiver};
use support::timestamp;

/// The default lease; takeovers are bounded by it plus a renewal period.
const LEASE: Duration = Duration::from_secs(6);

/// Three replica processes per test on a 2-core machine: one test at a
/// time keeps the timing bounds meaningful.
static CONCURRENT_TESTS: Semaphore = Semaphore::const_new(1);

/// A fresh database for the running test on the PostgreSQL server of the
/// replica tests; the test fails when that server does not answer.
async fn database() -> TestDatabase {
    TestDatabase::postgres(&postgres_admin_url(), &test_label())
        .await
        .unwrap_or_else(|error| panic!("{error:#}"))
}

/// The leases the replicas hold, read straight from their database.
trait Leases {
    async fn leases(&self) -> HashMap<String, i64>;
    async fn wait_balanced(&self, owners: &[&str], limit: Duration);
}

impl Leases for TestDatabase {
    /// Unexpired leases per owner.
    async fn leases(&self) -> HashMap<String, i64> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            owner: String,
            #[diesel(sql_type = BigInt)]
            partitions: i64,
        }
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .expect("test database reachable");
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT owner, count(*) AS partitions FROM partition_leases \
             WHERE owner IS NOT NULL \
             AND expires_at_us > (extract(epoch from clock_timestamp()) * 1000000)::bigint \
             GROUP BY owner",
        )
        .load(&mut conn)
        .await
        .expect("read the leases");
        rows.into_iter()
            .map(|row| (row.owner, row.partitions))
            .collect()
    }

    /// Waits until exactly `owners` hold every partition in even shares.
    async fn wait_balanced(&self, owners: &[&str], limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let leases = self.leases().await;
            let total: i64 = leases.values().sum();
            let floor = 64 / owners.len() as i64;
            let balanced = total == 64
                && leases.len() == owners.len()
                && owners.iter().all(|owner| {
                    leases
                        .get(*owner)
                        .is_some_and(|count| *count == floor || *count == floor + 1)
                });
            if balanced {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "partitions not balanced over {owners:?} within {limit:?}: {leases:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// One delivery at the receiver: which post, from which replica, when.
#[derive(Debug, Clone)]
struct Delivery {
    post_id: String,
    replica: String,
    at: DateTime<Utc>,
}

impl From<&Received> for Delivery {
    fn from(received: &Received) -> Delivery {
        Delivery {
            post_id: received.post_id(),
            replica: received.path_suffix().to_owned(),
            at: received.at,
        }
    }
}

fn delivered(receiver: &Receiver) -> Vec<Delivery> {
    receiver.received().iter().map(Delivery::from).collect()
}

/// Waits until every id was delivered at least once.
async fn wait_for_all(receiver: &Receiver, ids: &[String], limit: Duration) -> Vec<Delivery> {
    let received = receiver.wait_for_posts(ids, limit).await;
    received.iter().map(Delivery::from).collect()
}

/// A `punctual serve` process publishing to `<receiver>/<name>`.
struct Replica {
    name: String,
    process: ServerProcess,
}

impl Replica {
    async fn start(name: &str, database: &TestDatabase, receiver: &Receiver) -> Replica {
        let (process, _) = Serve::new(
            &database.url,
            &format!("{}/{name}", receiver.url),
            database.dir(),
        )
        .arg("--replica-id", name)
        .arg("--health-check-interval", "200ms")
        .arg("--shutdown-grace", "5s")
        .env("PUNCTUAL_PUBLISHER_SECRET", "replica-test-secret")
        .env("RUST_LOG", "info")
        .log_name(name)
        .start()
        .await
        .unwrap_or_else(|error| panic!("replica {name} did not start: {error:#}"));
        Replica {
            name: name.to_owned(),
            process,
        }
    }

    fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    async fn client(&self) -> SchedulerClient<Channel> {
        self.process
            .client()
            .await
            .unwrap_or_else(|error| panic!("replica {}: {error:#}", self.name))
    }

    /// Liveness: the status of the server as a whole.
    async fn health(&self) -> Option<ServingStatus> {
        self.process.health_of("").await
    }

    async fn wait_serving(&self, limit: Duration) {
        self.wait_health_of("", ServingStatus::Serving, limit).await;
    }

    async fn wait_health_of(&self, service: &str, wanted: ServingStatus, limit: Duration) {
        if let Err(error) = self.process.wait_health_of(service, wanted, limit).await {
            panic!("replica {}: {error:#}", self.name);
        }
    }

    /// SIGTERM, then waits for the process to exit by itself.
    async fn stop(self) {
        if let Err(error) = self.process.stop(Duration::from_secs(30)).await {
            panic!("replica {} did not exit cleanly: {error:#}", self.name);
        }
    }
}

/// Creates `count` posts due evenly over `spread`, starting `lead` from now,
/// round-robin through the replicas' APIs (so most land in partitions the
/// receiving replica does not own). Returns ids and instants.
async fn create_posts(
    replicas: &[&Replica],
    count: usize,
    lead: Duration,
    spread: Duration,
) -> Vec<(String, DateTime<Utc>)> {
    let start = Utc::now() + chrono::Duration::from_std(lead).expect("lead");
    let step = spread.as_micros() as i64 / count.max(1) as i64;
    let mut clients = Vec::new();
    for replica in replicas {
        clients.push(replica.client().await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16usize {
        let clients = clients.clone();
        tasks.spawn(async move {
            let mut created = Vec::new();
            for index in (worker..count).step_by(16) {
                let at = start + chrono::Duration::microseconds(step * index as i64);
                let mut client = clients[index % clients.len()].clone();
                let post = client
                    .create_schedule(pb::CreateScheduleRequest {
                        business_id: format!("business-{}", index % 7),
                        content_id: format!("content-{index}"),
                        platform: "instagram".to_owned(),
                        when: Some(pb::create_schedule_request::When::ScheduledFor(timestamp(
                            at,
                        ))),
                        ..Default::default()
                    })
                    .await
                    .expect("create a post")
                    .into_inner();
                created.push((post.id, at));
            }
            created
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(created) = tasks.join_next().await {
        all.extend(created.expect("creating task"));
    }
    let last = all.iter().map(|(_, at)| *at).max().unwrap_or(start);
    assert!(
        Utc::now() < start,
        "creating {count} posts took longer than the {lead:?} lead; the first instants passed (last is {last})"
    );
    all
}

/// Every delivery at or after its instant; returns deliveries per post.
fn check_deliveries(
    posts: &[(String, DateTime<Utc>)],
    deliveries: &[Delivery],
) -> HashMap<String, Vec<Delivery>> {
    let instants: HashMap<&str, DateTime<Utc>> =
        posts.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    let mut by_post: HashMap<String, Vec<Delivery>> = HashMap::new();
    for delivery in deliveries {
        let Some(instant) = instants.get(delivery.post_id.as_str()) else {
            panic!("unknown post delivered: {delivery:?}");
        };
        assert!(
            delivery.at >= *instant,
            "post {} delivered {} µs early by {}",
            delivery.post_id,
            (*instant - delivery.at)
                .num_microseconds()
                .unwrap_or_default(),
            delivery.replica
        );
        by_post
            .entry(delivery.post_id.clone())
            .or_default()
            .push(delivery.clone());
    }
    by_post
}

fn duplicates(by_post: &HashMap<String, Vec<Delivery>>) -> Vec<(&String, &Vec<Delivery>)> {
    by_post.iter().filter(|(_, list)| list.len() > 1).collect()
}

/// Two replicas, started one after the other, sharing the partitions.
async fn two_replicas(
    names: [&str; 2],
    database: &TestDatabase,
    receiver: &Receiver,
) -> (Replica, Replica) {
    let first = Replica::start(names[0], database, receiver).await;
    let second = Replica::start(names[1], database, receiver).await;
    database
        .wait_balanced(&names, Duration::from_secs(30))
        .await;
    (first, second)
}

async fn three_replicas(database: &TestDatabase, receiver: &Receiver) -> Vec<Replica> {
    let mut replicas = Vec::new();
    // One at a time: each join makes the others hand partitions over.
    for name in ["r1", "r2", "r3"] {
        replicas.push(Replica::start(name, database, receiver).await);
        let names: Vec<&str> = replicas.iter().map(|r| r.name.as_str()).collect();
        database
            .wait_balanced(&names, Duration::from_secs(30))
            .await;
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run (see README)"]
async fn three_replicas_publish_every_post_exactly_once() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let replicas = three_replicas(&database, &receiver).await;

    let refs: Vec<&Replica> = replicas.iter().collect();
    let posts = create_posts(
        &refs,
        2_000,
        Duration::from_secs(12),
        Duration::from_secs(20),
    )
    .await;
    let ids: Vec<String> = posts.iter().map(|(id, _)| id.clone()).collect();
    let deliveries = wait_for_all(&receiver, &ids, Duration::from_secs(60)).await;
    // Late duplicates would arrive after the last first delivery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let by_post = check_deliveries(&posts, &delivered(&receiver));
    assert_eq!(by_post.len(), 2_000);
    assert!(
        duplicates(&by_post).is_empty(),
        "posts delivered twice by healthy replicas: {:?}",
        duplicates(&by_post)
    );
    let mut per_replica: HashMap<&str, usize> = HashMap::new();
    for delivery in &deliveries {
        *per_replica.entry(delivery.replica.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_replica.len(),
        3,
        "every replica publishes its share: {per_replica:?}"
    );
    // Any replica counts the whole cluster's posts, not only its own share.
    let stats = replicas[0]
        .client()
        .await
        .get_queue_stats(pb::GetQueueStatsRequest {
            business_id: String::new(),
        })
        .await
        .expect("queue stats")
        .into_inner();
    let published = stats
        .counts
        .iter()
        .find(|count| count.status == pb::scheduled_post::Status::Published as i32)
        .map_or(0, |count| count.count);
    assert_eq!(published, 2_000, "published posts counted by r1: {stats:?}");
    for replica in replicas {
        replica.stop().await;
    }
    assert!(
        database.leases().await.is_empty(),
        "a clean stop releases every lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run (see README)"]
async fn a_killed_replica_is_taken_over_and_no_post_is_lost() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let mut replicas = three_replicas(&database, &receiver).await;

    let refs: Vec<&Replica> = replicas.iter().collect();
    let posts = create_posts(
        &refs,
        2_000,
        Duration::from_secs(12),
        Duration::from_secs(20),
    )
    .await;
    let ids: Vec<String> = posts.iter().map(|(id, _)| id.clone()).collect();
    let first_instant = posts.iter().map(|(_, at)| *at).min().expect("posts");
    tokio::time::sleep(
        (first_instant - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(6),
    )
    .await;
    let victim = replicas.remove(1);
    let killed_at = Utc::now();
    victim.signal("KILL");

    wait_for_all(&receiver, &ids, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let by_post = check_deliveries(&posts, &delivered(&receiver));
    assert_eq!(by_post.len(), 2_000, "every post was published");
    // Posts of the dead replica's partitions that fell due after it died
    // were published once its leases lapsed, at once.
    let bound =
        chrono::Duration::from_std(LEASE + LEASE / 3 + Duration::from_secs(5)).expect("bound");
    let instants: HashMap<&str, DateTime<Utc>> =
        posts.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    let mut worst = chrono::Duration::zero();
    for (id, list) in &by_post {
        let instant = instants[id.as_str()];
        if instant < killed_at {
            continue;
        }
        let first = list.iter().map(|d| d.at).min().expect("delivered");
        worst = worst.max(first - instant);
    }
    assert!(
        worst <= bound,
        "a post due after the kill waited {worst} for its takeover (bound {bound})"
    );
    // At least once: a post the killed replica had sent but not yet
    // recorded is published again by the new owner, with the same key.
    let duplicated = duplicates(&by_post);
    for (id, list) in &duplicated {
        assert!(
            list.iter().any(|d| d.replica == "r2"),
            "post {id} was duplicated without the killed replica being involved: {list:?}"
        );
    }
    eprintln!(
        "killed replica: {} duplicate deliveries of 2000 posts (at-least-once), worst takeover wait {worst}",
        duplicated.len()
    );
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run (see README)"]
async fn a_replica_stopped_cleanly_hands_over_without_duplicates() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let mut replicas = three_replicas(&database, &receiver).await;

    let refs: Vec<&Replica> = replicas.iter().collect();
    let posts = create_posts(
        &refs,
        2_000,
        Duration::from_secs(12),
        Duration::from_secs(20),
    )
    .await;
    let ids: Vec<String> = posts.iter().map(|(id, _)| id.clone()).collect();
    tokio::time::sleep(Duration::from_secs(18)).await;
    let leaving = replicas.remove(0);
    let stopped_at = Utc::now();
    leaving.stop().await;
    database
        .wait_balanced(&["r2", "r3"], Duration::from_secs(10))
        .await;

    wait_for_all(&receiver, &ids, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let by_post = check_deliveries(&posts, &delivered(&receiver));
    assert_eq!(by_post.len(), 2_000);
    assert!(
        duplicates(&by_post).is_empty(),
        "a clean hand-over published twice: {:?}",
        duplicates(&by_post)
    );
    // The hand-over is immediate: no post waited for a lease to lapse.
    let instants: HashMap<&str, DateTime<Utc>> =
        posts.iter().map(|(id, at)| (id.as_str(), *at)).collect();
    for (id, list) in &by_post {
        let wait = list[0].at - instants[id.as_str()];
        assert!(
            instants[id.as_str()] < stopped_at || wait < chrono::Duration::seconds(4),
            "post {id} waited {wait} across a clean hand-over"
        );
    }
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run (see README)"]
async fn a_frozen_replica_cannot_publish_after_its_lease_lapsed() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let (frozen, healthy) = two_replicas(["frozen", "healthy"], &database, &receiver).await;

    let posts = create_posts(
        &[&frozen, &healthy],
        600,
        Duration::from_secs(5),
        Duration::from_secs(20),
    )
    .await;
    let ids: Vec<String> = posts.iter().map(|(id, _)| id.clone()).collect();
    tokio::time::sleep(Duration::from_secs(7)).await;
    frozen.signal("STOP");
    // Well past the lease: the healthy replica takes everything over.
    tokio::time::sleep(LEASE * 2).await;
    database
        .wait_balanced(&["healthy"], Duration::from_secs(10))
        .await;
    let resumed_at = Utc::now();
    frozen.signal("CONT");

    wait_for_all(&receiver, &ids, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deliveries = delivered(&receiver);
    let by_post = check_deliveries(&posts, &deliveries);
    // Resumed, the frozen replica rejoins and publishes again, under new
    // leases. What it had claimed before it froze belongs to the healthy
    // replica now: had it published any of that after resuming, the post
    // would have been delivered twice, once by it after the resume.
    let published_twice_after_resume: Vec<_> = by_post
        .values()
        .filter(|list| {
            list.len() > 1
                && list
                    .iter()
                    .any(|d| d.replica == "frozen" && d.at >= resumed_at)
        })
        .collect();
    assert!(
        published_twice_after_resume.is_empty(),
        "the frozen replica published a post it had lost with its lease: {published_twice_after_resume:?}"
    );
    let before_freeze_duplicates = duplicates(&by_post).len();
    eprintln!(
        "frozen replica: {} deliveries after resuming (new leases), {before_freeze_duplicates} posts delivered twice (sent before the freeze, published again by the new owner)",
        deliveries
            .iter()
            .filter(|d| d.replica == "frozen" && d.at >= resumed_at)
            .count()
    );
    // Resumed, it rejoins and gets its share again.
    database
        .wait_balanced(&["frozen", "healthy"], Duration::from_secs(30))
        .await;
    frozen.stop().await;
    healthy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run (see README)"]
async fn health_reports_not_serving_while_the_database_is_gone() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let replica = Replica::start("lonely", &database, &receiver).await;
    assert_eq!(replica.health().await, Some(ServingStatus::Serving));
    database.drop_now().await.expect("drop the test database");
    // Not ready: calls should go elsewhere ...
    replica
        .wait_health_of(
            SCHEDULER_SERVICE,
            ServingStatus::NotServing,
            Duration::from_secs(20),
        )
        .await;
    // ... but alive: restarting every replica would not bring the database
    // back.
    assert_eq!(replica.health().await, Some(ServingStatus::Serving));
    // Reads and writes answer UNAVAILABLE rather than hang or crash.
    let mut client = replica.client().await;
    let created = client
        .create_schedule(pb::CreateScheduleRequest {
            business_id: "b".into(),
            content_id: "c".into(),
            platform: "instagram".into(),
            when: Some(pb::create_schedule_request::When::ScheduledFor(timestamp(
                Utc::now() + chrono::Duration::hours(1),
            ))),
            ..Default::default()
        })
        .await;
    let status = created.expect_err("no database, no post");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    replica.stop().await;
}

/// Runs `pg_ctlcluster` on the local cluster (CI's PostgreSQL).
fn postgres_cluster(action: &str) {
    let versions = std::fs::read_dir("/etc/postgresql").expect("a local PostgreSQL cluster");
    let version = versions
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a PostgreSQL version");
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .expect("run pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL, which it stops and starts: run alone by .ci/run (see README)"]
async fn a_postgres_restart_under_load_loses_nothing_and_publishes_nothing_twice() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let (first, second) = two_replicas(["first", "second"], &database, &receiver).await;
    let posts = create_posts(
        &[&first, &second],
        1_000,
        Duration::from_secs(8),
        Duration::from_secs(20),
    )
    .await;
    let ids: Vec<String> = posts.iter().map(|(id, _)| id.clone()).collect();
    tokio::time::sleep(Duration::from_secs(12)).await;

    postgres_cluster("stop");
    // While it is down, writes are refused as UNAVAILABLE: a client may
    // retry them; nothing hangs or crashes.
    let mut client = first.client().await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let answer = client
            .create_schedule(pb::CreateScheduleRequest {
                business_id: "b".into(),
                content_id: "during-the-outage".into(),
                platform: "instagram".into(),
                when: Some(pb::create_schedule_request::When::ScheduledFor(timestamp(
                    Utc::now() + chrono::Duration::hours(1),
                ))),
                ..Default::default()
            })
            .await;
        codes.push(
            answer
                .map(|_| tonic::Code::Ok)
                .unwrap_or_else(|status| status.code()),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    postgres_cluster("start");
    assert!(
        codes.iter().all(|code| *code == tonic::Code::Unavailable),
        "writes while PostgreSQL was down: {codes:?}"
    );

    wait_for_all(&receiver, &ids, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_post = check_deliveries(&posts, &delivered(&receiver));
    assert_eq!(by_post.len(), 1_000, "every post was published");
    assert!(
        duplicates(&by_post).is_empty(),
        "published twice across a database restart: {:?}",
        duplicates(&by_post)
    );
    first.wait_serving(Duration::from_secs(30)).await;
    second.wait_serving(Duration::from_secs(30)).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run (see README)"]
async fn edits_and_cancels_through_any_replica_reach_the_owner_at_once() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let (first, second) = two_replicas(["first", "second"], &database, &receiver).await;

    // Far enough ahead that none would fire during the test where they were.
    let posts = create_posts(
        &[&first],
        40,
        Duration::from_secs(120),
        Duration::from_secs(10),
    )
    .await;
    let mut through_second = second.client().await;
    let moved_to = Utc::now() + chrono::Duration::seconds(6);
    let mut kept = Vec::new();
    for (index, (id, _)) in posts.iter().enumerate() {
        if index % 2 == 0 {
            through_second
                .cancel_schedule(pb::CancelScheduleRequest {
                    id: id.clone(),
                    expected_version: None,
                })
                .await
                .expect("cancel through the other replica");
        } else {
            let at = moved_to + chrono::Duration::milliseconds(index as i64 * 10);
            through_second
                .update_schedule(pb::UpdateScheduleRequest {
                    id: id.clone(),
                    scheduled_for: Some(timestamp(at)),
                    ..Default::default()
                })
                .await
                .expect("move through the other replica");
            kept.push((id.clone(), at));
        }
    }
    let ids: Vec<String> = kept.iter().map(|(id, _)| id.clone()).collect();
    wait_for_all(&receiver, &ids, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deliveries = delivered(&receiver);
    assert_eq!(
        deliveries.len(),
        kept.len(),
        "only the moved posts, each once: {deliveries:?}"
    );
    let by_post = check_deliveries(&kept, &deliveries);
    for (id, at) in &kept {
        let lateness = by_post[id][0].at - *at;
        // Whichever replica owns the post heard of the move at once: it fired
        // at the new instant, not at the next read of the horizon.
        assert!(
            lateness < chrono::Duration::milliseconds(500),
            "post {id} moved through another replica fired {lateness} late"
        );
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run (see README)"]
async fn a_watcher_on_one_replica_sees_every_replicas_events() {
    let _turn = CONCURRENT_TESTS.acquire().await.expect("semaphore");
    let database = database().await;
    let receiver = Receiver::start();
    let (first, second) = two_replicas(["first", "second"], &database, &receiver).await;

    let mut stream = second
        .client()
        .await
        .watch_events(pb::WatchEventsRequest {
            business_id: String::new(),
            ..Default::default()
        })
        .await
        .expect("watch through the second replica")
        .into_inner();
    // Created through the first replica; published by whichever owns each.
    let posts = create_posts(
        &[&first],
        70,
        Duration::from_secs(3),
        Duration::from_secs(2),
    )
    .await;
    let watched: std::collections::HashSet<String> =
        posts.iter().map(|(id, _)| id.clone()).collect();
    let ids: Vec<String> = posts.iter().map(|(id, _)| id.clone()).collect();
    let deliveries = wait_for_all(&receiver, &ids, Duration::from_secs(30)).await;
    let published_by_first = deliveries
        .iter()
        .filter(|d| d.replica == "first" && watched.contains(&d.post_id))
        .count();
    assert!(
        published_by_first > 0,
        "some watched posts are the first replica's"
    );

    let mut published = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while published.len() < watched.len() {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the watcher saw {} of {} publications",
                    published.len(),
                    watched.len()
                )
            })
            .expect("watch stream")
            .expect("stream open");
        let post = event.schedule.expect("post");
        if event.r#type == pb::schedule_event::Type::Published as i32 {
            published.insert(post.id);
        }
    }
    assert_eq!(published, watched);
    drop(stream);
    first.stop().await;
    second.stop().await;
}
