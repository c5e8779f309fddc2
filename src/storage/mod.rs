//! Storage owns the database: connection pools, embedded migrations and every
//! query. It is the only module that knows SQL or diesel.
//!
//! SQLite (the embedded default) and PostgreSQL share one table layout, so a
//! query is written once and [`with_connection!`] runs it on whichever pool is
//! configured. Every state change is a compare-and-set: an `UPDATE … WHERE
//! id = ? AND version = ? AND status IN (…) RETURNING *` that either applies
//! whole or matches no row.

mod leases;
mod notify;
mod rows;
mod schema;
mod writes;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::{Pool as DeadPool, PoolError};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

use crate::domain::time::TimeZone;
use crate::domain::{Post, PostId, PostStatus, Transition};
use rows::{InsertedId, OnDuplicateRequest, PostColumns, PostRow, micros};
use schema::posts;

pub use leases::{Lease, MemberCount};
use notify::CLUSTER_CHANNEL;
pub use notify::{Listener, Notice};
pub use writes::Checkpointer;
use writes::WriteLock;

/// The database's clock in µs since the Unix epoch: every replica times
/// leases by this one clock, so their own clocks may disagree.
const PG_NOW_US: &str = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";

/// A condition written as SQL, around at most one bound text (the
/// replica's name). Conditions that depend on the backend, on fencing or on
/// a set of statuses all have this shape.
///
/// Unlike diesel's `sql()` literals, which make every statement that holds
/// one be parsed and planned anew on each call, a statement holding these is
/// prepared once per connection and reused: the text is this module's own,
/// never a caller's, so the text alone names the statement.
#[derive(Debug, Clone)]
struct SqlCondition {
    before: std::borrow::Cow<'static, str>,
    bind: Option<String>,
    after: std::borrow::Cow<'static, str>,
}

impl SqlCondition {
    /// A condition with nothing bound.
    fn literal(sql: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            before: sql.into(),
            bind: None,
            after: "".into(),
        }
    }

    /// Always true.
    fn none() -> Self {
        Self::literal("1 = 1")
    }

    /// `status IN (…)`, with the statuses written out: they are the
    /// domain's own names, and a partial index on pending posts matches only
    /// a condition written as literals.
    fn status_in(statuses: &[PostStatus]) -> Self {
        if statuses.is_empty() {
            return Self::literal("1 = 0");
        }
        Self::literal(format!("status IN ({})", quoted_names(statuses)))
    }

    /// `status IN (…)` in a form no index matches, for a statement that
    /// must find its rows by id. Matching the partial index of pending posts
    /// lets PostgreSQL plan a claim of 256 ids as a scan of every pending
    /// post due by the claim's instant: statistics gathered before a burst
    /// of new posts count a few dozen where there are 10,000, and each one
    /// scanned also locks its lease row (measured: 51 ms a claim on average
    /// instead of 18). The instant's condition is written `+ 0` for the same
    /// reason.
    fn status_in_unindexed(statuses: &[PostStatus]) -> Self {
        Self::literal(format!(
            "(posts.status || '') IN ({})",
            quoted_names(statuses)
        ))
    }
}

/// `'SCHEDULED', 'RETRY_SCHEDULED'`: statuses as SQL string literals.
fn quoted_names(statuses: &[PostStatus]) -> String {
    let names: Vec<String> = statuses
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    names.join(", ")
}

impl diesel::expression::Expression for SqlCondition {
    type SqlType = diesel::sql_types::Bool;
}

impl<QS> diesel::expression::AppearsOnTable<QS> for SqlCondition {}

impl<QS> diesel::expression::SelectableExpression<QS> for SqlCondition {}

impl diesel::expression::ValidGrouping<()> for SqlCondition {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl diesel::query_builder::QueryId for SqlCondition {
    type QueryId = ();
    // Keyed by its SQL text in the statement caches.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> diesel::query_builder::QueryFragment<DB> for SqlCondition
where
    DB: diesel::backend::Backend + diesel::sql_types::HasSqlType<diesel::sql_types::Text>,
    String: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        out.push_sql(&self.before);
        if let Some(bind) = &self.bind {
            out.push_bind_param::<diesel::sql_types::Text, String>(bind)?;
        }
        out.push_sql(&self.after);
        Ok(())
    }
}

/// A statement to prepare once per connection and reuse, keyed by its SQL
/// text. diesel prepares every UPDATE anew on each call (it marks them all
/// uncacheable, because optional changesets vary the text under one type),
/// and likewise anything holding a `sql()` literal or `sql_query`: on the
/// fire path that was a parse and plan per post. Wrap only statements whose
/// text this module writes and whose number of shapes is small: every
/// distinct text stays in the connection's cache.
#[derive(Debug, Clone)]
struct ReusedStatement<Q>(Q);

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for ReusedStatement<Q> {
    type SqlType = Q::SqlType;
}

// For the synchronous SQLite connection on a blocking thread; the async
// `RunQueryDsl` covers every type already.
impl<Q, Conn> diesel::RunQueryDsl<Conn> for ReusedStatement<Q> {}

impl<Q> diesel::query_builder::QueryId for ReusedStatement<Q> {
    type QueryId = ();
    // Keyed by its SQL text, never by its type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for ReusedStatement<Q>
where
    Q: diesel::query_builder::QueryFragment<DB>,
    DB: diesel::backend::Backend,
{
    fn walk_ast<'b>(&'b self, out: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

/// A compare-and-set with its values converted for binding.
struct PreparedCas {
    id: String,
    statuses: SqlCondition,
    changes: rows::PostChanges,
    version: Option<i64>,
    due_by_us: i64,
    fence: SqlCondition,
}

/// Runs a [`PreparedCas`] on `$conn`: the changed row, or `None` when the
/// post no longer matched.
macro_rules! apply_cas {
    ($cas:expr, |$statement:ident| $run:expr) => {{
        let cas = &$cas;
        let filtered = diesel::update(posts::table)
            .filter(posts::id.eq(&cas.id))
            .filter(cas.statuses.clone())
            .filter(posts::next_attempt_at_us.le(cas.due_by_us))
            .filter(cas.fence.clone());
        match cas.version {
            Some(version) => {
                let $statement = ReusedStatement(
                    filtered
                        .filter(posts::version.eq(version))
                        .set((&cas.changes, posts::version.eq(posts::version + 1)))
                        .returning(PostRow::as_returning()),
                );
                $run
            }
            None => {
                let $statement = ReusedStatement(
                    filtered
                        .set((&cas.changes, posts::version.eq(posts::version + 1)))
                        .returning(PostRow::as_returning()),
                );
                $run
            }
        }
        .optional()
    }};
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Request ids per lookup of posts by request id: keeps the statement under
/// both backends' limits on bound parameters (SQLite allows 32,766).
const LOOKUP_CHUNK_IDS: usize = 1_000;

type SqliteConnection = SyncConnectionWrapper<diesel::SqliteConnection>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or the pool is exhausted; worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A request id was already used for this business.
    #[error("request id already used")]
    DuplicateRequest,
    #[error("database query failed: {0}")]
    Query(DieselError),
    #[error("stored post {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("database migrations failed: {0}")]
    Migration(String),
    #[error("invalid database url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

impl From<DieselError> for StorageError {
    fn from(error: DieselError) -> Self {
        match error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StorageError::DuplicateRequest
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                StorageError::Unavailable(info.message().to_owned())
            }
            // SQLite reports a lock held past busy_timeout as a plain error;
            // PostgreSQL going down mid-statement reports the lost
            // connection (e.g. "terminating connection due to administrator
            // command") under its own codes.
            DieselError::DatabaseError(_, ref info)
                if [
                    "locked",
                    "connection",
                    "shutting down",
                    "starting up",
                    "recovery mode",
                ]
                .iter()
                .any(|sign| info.message().contains(sign)) =>
            {
                StorageError::Unavailable(info.message().to_owned())
            }
            other => StorageError::Query(other),
        }
    }
}

impl From<PoolError> for StorageError {
    fn from(error: PoolError) -> Self {
        StorageError::Unavailable(error.to_string())
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A SQLite file.
    Sqlite(String),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl DatabaseLocation {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; `sqlite://path`,
    /// `sqlite:path` or a bare path is a SQLite file.
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path == ":memory:" {
            return Err(StorageError::InvalidUrl {
                url: url.to_owned(),
                reason: "expected sqlite://<file path> or postgres://…".into(),
            });
        }
        Ok(Self::Sqlite(path.to_owned()))
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(DeadPool<SqliteConnection>),
    Postgres(DeadPool<AsyncPgConnection>),
}

/// Runs the same diesel-async code on whichever backend is configured. The
/// body is compiled once per backend; `$conn` is a `&mut` connection.
macro_rules! with_connection {
    ($storage:expr, |$conn:ident| $body:expr) => {
        match &$storage.pool {
            Pool::Sqlite(pool) => {
                let mut pooled = pool.get().await?;
                let $conn: &mut SqliteConnection = &mut pooled;
                $body
            }
            Pool::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                let $conn: &mut AsyncPgConnection = &mut pooled;
                $body
            }
        }
    };
}

/// Like [`with_connection!`], for statements that write. SQLite takes one
/// writer at a time; writers queueing here, instead of in SQLite's busy
/// handler (which sleeps in steps of milliseconds), keep writes prompt
/// under contention.
macro_rules! with_write_connection {
    ($storage:expr, |$conn:ident| $body:expr) => {
        match &$storage.pool {
            Pool::Sqlite(pool) => {
                let _writer = $storage.writer.lock().await;
                let mut pooled = pool.get().await?;
                let $conn: &mut SqliteConnection = &mut pooled;
                $body
            }
            Pool::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                let $conn: &mut AsyncPgConnection = &mut pooled;
                $body
            }
        }
    };
}

/// `status` is pending, written out as literals: SQLite uses a partial index
/// only when the query's condition matches the index's own condition, which
/// a bound parameter never does (PostgreSQL's generic plans likewise).
fn is_pending() -> SqlCondition {
    SqlCondition::status_in(&PostStatus::PENDING)
}

/// The post's business, and its platform, are not paused.
macro_rules! not_paused {
    () => {
        diesel::dsl::not(diesel::dsl::exists(
            schema::queue_pauses::table
                .filter(schema::queue_pauses::business_id.eq(posts::business_id))
                .filter(
                    schema::queue_pauses::platform
                        .eq("")
                        .or(schema::queue_pauses::platform.eq(posts::platform)),
                ),
        ))
    };
}

/// Partition numbers as the database stores them.
fn partition_numbers(partitions: &[u16]) -> Vec<i32> {
    partitions.iter().copied().map(i32::from).collect()
}

/// Filters of a listing, already validated.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub business_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub statuses: Vec<PostStatus>,
    pub platform: Option<String>,
    /// Every one of these must hold.
    pub labels: Vec<crate::domain::LabelCondition>,
}

/// Where the previous page ended: listings are ordered by
/// `(scheduled_for, id)`, so a page continues strictly after this pair and
/// rows inserted meanwhile neither repeat nor shift the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub scheduled_for_us: i64,
    pub id: String,
}

/// One post's [`Transition`], as a compare-and-set: it applies only if the
/// post is still in one of the transition's source statuses, at the version
/// it was read with, and (for a transition that ends a claim) under the
/// lease it was claimed under. The new status and attempt count are the
/// transition's, from the status and attempts the post was read with.
#[derive(Debug, Clone)]
pub struct Change {
    pub transition: Transition,
    pub id: PostId,
    /// The status the post was read with.
    pub from: PostStatus,
    /// The attempts the post was read with.
    pub attempts: u32,
    /// The version the change was computed from.
    pub version: Option<i64>,
    /// Only if the post's next attempt is due at or before this instant: a
    /// stale timer can never publish a post whose instant moved later.
    pub due_by: Option<DateTime<Utc>>,
}

impl Change {
    /// `transition` of `post` as read.
    pub fn of(transition: Transition, post: &Post) -> Self {
        Self {
            transition,
            id: post.id,
            from: post.status,
            attempts: post.attempts,
            version: Some(post.version),
            due_by: None,
        }
    }

    /// The status and attempt count the post has once the change applies.
    pub fn outcome(&self) -> (PostStatus, Option<u32>) {
        let attempts = self.transition.attempts_after(self.attempts);
        let status = self
            .transition
            .target(self.from, attempts.unwrap_or(self.attempts));
        (status, attempts)
    }
}

/// The fields a compare-and-set changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PostPatch {
    pub platform: Option<String>,
    pub payload: Option<crate::domain::Payload>,
    pub labels: Option<crate::domain::Labels>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub time_zone: Option<TimeZone>,
    pub last_error: Option<Option<String>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub published_at: Option<Option<DateTime<Utc>>>,
    pub external_id: Option<Option<String>>,
    pub attempt_history: Option<Vec<crate::domain::AttemptRecord>>,
}

/// The end of a publish attempt, as recorded: every field an outcome
/// writes. It applies only while the post is still `PUBLISHING` at the
/// version it was claimed with, under the lease it was claimed under.
#[derive(Debug, Clone)]
pub struct FinishedAttempt {
    pub id: PostId,
    pub claimed_version: i64,
    /// The attempts the claim counted.
    pub attempts: u32,
    /// [`Transition::Publish`], [`Transition::Retry`] or
    /// [`Transition::GiveUp`].
    pub transition: Transition,
    pub next_attempt_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub external_id: Option<String>,
    pub last_error: Option<String>,
    pub attempt_history: Vec<crate::domain::AttemptRecord>,
}

impl FinishedAttempt {
    /// The same write as a single compare-and-set.
    pub fn as_compare_and_set(&self) -> (Change, PostPatch) {
        let change = Change {
            transition: self.transition,
            id: self.id,
            from: PostStatus::Publishing,
            attempts: self.attempts,
            version: Some(self.claimed_version),
            due_by: None,
        };
        let patch = PostPatch {
            next_attempt_at: Some(self.next_attempt_at),
            published_at: Some(self.published_at),
            external_id: Some(self.external_id.clone()),
            last_error: Some(self.last_error.clone()),
            attempt_history: Some(self.attempt_history.clone()),
            ..PostPatch::default()
        };
        (change, patch)
    }

    /// The status the outcome writes.
    pub fn status(&self) -> PostStatus {
        self.transition
            .target(PostStatus::Publishing, self.attempts)
    }
}

/// A claimed post and the lease epoch it was claimed under.
#[derive(Debug, Clone)]
pub struct Claim {
    pub post: Post,
    pub epoch: i64,
}

/// A pending post's id and next attempt instant: all the engine needs to arm
/// a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueEntry {
    pub id: PostId,
    pub due: DateTime<Utc>,
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub max_connections: usize,
    /// How long a caller waits for a free connection before `UNAVAILABLE`.
    pub acquire_timeout: Duration,
    /// This replica's name (PostgreSQL): it fences claims and outcome
    /// writes by the replica's partition leases, and tells the database
    /// which writes need no notification (the owner's own).
    pub replica_id: Option<String>,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            replica_id: None,
        }
    }
}

/// The handle every other module uses. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pool: Pool,
    /// Serialises this process's SQLite writes; on PostgreSQL only the
    /// group commits of inserts take it, one group at a time.
    writer: WriteLock,
    /// Inserts waiting for the next group commit.
    inserts: Arc<std::sync::Mutex<Vec<PendingInsert>>>,
    /// The replica whose partition leases fence claims and outcome writes;
    /// `None` where one process owns the database (SQLite).
    fencing_owner: Option<Arc<str>>,
    /// The database file, or where a listening connection connects.
    location: Arc<DatabaseLocation>,
}

/// An insert queued for a group commit, and where its result goes.
struct PendingInsert {
    row: PostRow,
    done: tokio::sync::oneshot::Sender<Result<(), StorageError>>,
}

fn lock_queue(
    queue: &std::sync::Mutex<Vec<PendingInsert>>,
) -> std::sync::MutexGuard<'_, Vec<PendingInsert>> {
    // Pushing and taking cannot leave the queue half-changed.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Commits a group of inserts in one statement per backend and answers each
/// caller: inserted, or [`StorageError::DuplicateRequest`] for a post whose
/// request id its business had used already (in the database or earlier in
/// the group).
async fn commit_group(pool: &Pool, batch: Vec<PendingInsert>) {
    let (rows, senders): (Vec<PostRow>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.row, pending.done))
        .unzip();
    let ids: Vec<String> = rows.iter().map(|row| row.id().to_owned()).collect();
    match insert_rows(pool, rows, OnDuplicateRequest::Skip).await {
        Ok(inserted) => {
            let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
            for (done, id) in senders.into_iter().zip(ids) {
                let result = if inserted.contains(&id) {
                    Ok(())
                } else {
                    Err(StorageError::DuplicateRequest)
                };
                let _ = done.send(result);
            }
        }
        Err(error) => {
            let message = error.to_string();
            for done in senders {
                let _ = done.send(Err(StorageError::Unavailable(message.clone())));
            }
        }
    }
}

/// Inserts `rows` in one transaction and returns the ids inserted. On SQLite
/// the caller holds the writer lock.
async fn insert_rows(
    pool: &Pool,
    rows: Vec<PostRow>,
    on_duplicate: OnDuplicateRequest,
) -> Result<Vec<String>, StorageError> {
    match pool {
        Pool::Sqlite(pool) => {
            // On a blocking thread, in one write transaction: one prepared
            // single-row INSERT, run once per row. SQLite compiles it once
            // per connection, and a statement that writes one row needs no
            // statement journal; an INSERT of many rows is parsed anew for
            // every group of rows, and journals each page it changes so that
            // it can undo itself if a later row fails.
            let mut conn = pool.get().await?;
            let inserted = conn
                .spawn_blocking(move |conn| {
                    conn.immediate_transaction(|conn| {
                        let mut inserted = Vec::with_capacity(rows.len());
                        for row in rows {
                            let statement = diesel::insert_into(posts::table).values(&row);
                            let written = match on_duplicate {
                                OnDuplicateRequest::Fail => {
                                    diesel::RunQueryDsl::execute(statement, conn)?
                                }
                                OnDuplicateRequest::Skip => diesel::RunQueryDsl::execute(
                                    statement
                                        .on_conflict((posts::business_id, posts::request_id))
                                        .do_nothing(),
                                    conn,
                                )?,
                            };
                            if written == 1 {
                                inserted.push(row.into_id());
                            }
                        }
                        Ok::<_, DieselError>(inserted)
                    })
                })
                .await?;
            Ok(inserted)
        }
        Pool::Postgres(pool) => {
            let mut conn = pool.get().await?;
            let inserted: Vec<InsertedId> =
                ReusedStatement(PostColumns::from_rows(rows).insert_statement(on_duplicate))
                    .load(&mut conn)
                    .await?;
            Ok(inserted.into_iter().map(|row| row.id).collect())
        }
    }
}

impl Storage {
    /// Connects, and runs the embedded migrations of the backend.
    pub async fn connect(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let location = DatabaseLocation::parse(url)?;
        let pool = match &location {
            DatabaseLocation::Sqlite(path) => Pool::Sqlite(sqlite_pool(path, options)?),
            DatabaseLocation::Postgres(url) => Pool::Postgres(postgres_pool(url, options)?),
        };
        let storage = Self {
            pool,
            writer: WriteLock::default(),
            inserts: Arc::default(),
            fencing_owner: None,
            location: Arc::new(location),
        };
        let storage = match &options.replica_id {
            Some(replica_id) => storage.fenced_by(replica_id),
            None => storage,
        };
        storage.run_migrations().await?;
        storage.open_connections(options.max_connections).await;
        Ok(storage)
    }

    /// Opens a PostgreSQL pool's connections at start-up, each reading a post
    /// by id once. The pool otherwise opens them as load first needs them,
    /// which is during the first burst of posts due at once: a connect and a
    /// new backend whose first statements load its caches, in the middle of
    /// the burst and of the API calls beside it. A SQLite connection opens
    /// at once, and each one open holds a page cache: SQLite's pool still
    /// opens them as needed. Best effort: a connection that cannot be opened
    /// now is opened when needed.
    async fn open_connections(&self, count: usize) {
        if !self.is_shared() {
            return;
        }
        let absent = PostId::new();
        let reads = (0..count.max(1)).map(|_| self.get(absent));
        if let Err(error) = futures::future::try_join_all(reads).await {
            tracing::warn!(%error, connections = count, "could not open every database connection at start-up");
        }
    }

    /// From now on, claims and the writes that finish them hold only while
    /// `replica_id` owns the post's partition under an unexpired lease
    /// (PostgreSQL only: a SQLite database has one process).
    fn fenced_by(mut self, replica_id: &str) -> Self {
        if matches!(self.pool, Pool::Postgres(_)) {
            self.fencing_owner = Some(Arc::from(replica_id));
        }
        self
    }

    /// The task that checkpoints a SQLite database's write-ahead log after
    /// writes (see [`Checkpointer`]); `None` on PostgreSQL, which
    /// checkpoints by itself.
    pub fn checkpointer(&self) -> Option<Checkpointer> {
        match &*self.location {
            DatabaseLocation::Sqlite(path) => Some(self.writer.checkpointer(path)),
            DatabaseLocation::Postgres(_) => None,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The claim's fencing condition, and the expression of the epoch it
    /// records.
    fn claim_fence(&self) -> (SqlCondition, &'static str) {
        match &self.fencing_owner {
            Some(owner) => (
                SqlCondition {
                    before: "EXISTS (SELECT 1 FROM partition_leases l \
                             WHERE l.partition_no = posts.partition_no AND l.owner = "
                        .into(),
                    bind: Some(owner.to_string()),
                    after: format!(" AND l.expires_at_us > {PG_NOW_US} FOR KEY SHARE)").into(),
                },
                "(SELECT l.epoch FROM partition_leases l WHERE l.partition_no = posts.partition_no)",
            ),
            None => (SqlCondition::none(), "0"),
        }
    }

    /// The condition on a write that finishes a claim: the lease it was
    /// claimed under is still this replica's and unexpired. The lease row is
    /// locked `FOR KEY SHARE`: a takeover (which locks it `FOR UPDATE SKIP
    /// LOCKED`) waits for the write, or the write sees the new owner, while
    /// renewals (which take a weaker lock) run alongside without deadlocks.
    fn finish_fence(&self, fenced: bool) -> SqlCondition {
        match &self.fencing_owner {
            Some(owner) if fenced => SqlCondition {
                before: "EXISTS (SELECT 1 FROM partition_leases l \
                         WHERE l.partition_no = posts.partition_no AND l.owner = "
                    .into(),
                bind: Some(owner.to_string()),
                after: format!(
                    " AND l.epoch = posts.claim_epoch AND l.expires_at_us > {PG_NOW_US} FOR KEY SHARE)"
                )
                .into(),
            },
            _ => SqlCondition::none(),
        }
    }

    /// `posts.id` is one of `ids`, as one bound text whatever their number,
    /// so that the statement holding it has one text and is prepared once
    /// (a list of placeholders would be a new statement for every length).
    fn id_in(&self, ids: &[PostId]) -> SqlCondition {
        match self.pool {
            Pool::Sqlite(_) => {
                let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
                SqlCondition {
                    before: "posts.id IN (SELECT value FROM json_each(".into(),
                    bind: Some(format!("[{}]", quoted.join(","))),
                    after: "))".into(),
                }
            }
            Pool::Postgres(_) => {
                let listed: Vec<String> = ids.iter().map(PostId::to_string).collect();
                SqlCondition {
                    before: "posts.id = ANY(string_to_array(".into(),
                    bind: Some(listed.join(",")),
                    after: ", ','))".into(),
                }
            }
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        with_connection!(self, |conn| {
            conn.batch_execute("SELECT 1").await?;
        });
        Ok(())
    }

    /// The stored labels contain `fragment`, case-sensitively (SQLite's
    /// `LIKE` ignores ASCII case, so neither backend uses it).
    fn labels_contain(&self, fragment: String) -> SqlCondition {
        let function = match self.pool {
            Pool::Sqlite(_) => "instr(posts.labels, ",
            Pool::Postgres(_) => "strpos(posts.labels, ",
        };
        SqlCondition {
            before: function.into(),
            bind: Some(fragment),
            after: ") > 0".into(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    async fn run_migrations(&self) -> Result<(), StorageError> {
        // The harness blocks in place; it needs the multi-thread runtime.
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut harness = AsyncMigrationHarness::new(pool.get().await?);
                harness
                    .run_pending_migrations(SQLITE_MIGRATIONS)
                    .map_err(|error| StorageError::Migration(error.to_string()))?;
            }
            Pool::Postgres(pool) => {
                let mut harness = AsyncMigrationHarness::new(pool.get().await?);
                harness
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map_err(|error| StorageError::Migration(error.to_string()))?;
            }
        }
        Ok(())
    }

    /// Inserts one post. A `request_id` already used by the business gives
    /// [`StorageError::DuplicateRequest`] and inserts nothing.
    ///
    /// Group commit: inserts that arrive while one group commits are queued,
    /// and the next writer commits all of them in one statement and one
    /// transaction. A commit (an fsync) costs about as much for one post as
    /// for a hundred, so concurrent callers share it.
    pub async fn insert(&self, post: &Post) -> Result<(), StorageError> {
        let row = PostRow::from_post(post);
        let (done, mut result) = tokio::sync::oneshot::channel();
        lock_queue(&self.inserts).push(PendingInsert { row, done });
        let writer = self.writer.lock().await;
        // A writer that took this insert has answered it before letting the
        // lock go. Callers answered so are let through at once: were they to
        // commit what arrived meanwhile, each would commit a group of one.
        if let Ok(answer) = result.try_recv() {
            drop(writer);
            return answer;
        }
        // Unanswered, so this insert is still queued: the group holds it.
        let batch = std::mem::take(&mut *lock_queue(&self.inserts));
        // Spawned, so that the group is committed and answered even if this
        // caller goes away meanwhile.
        let pool = self.pool.clone();
        let group = tokio::spawn(async move {
            commit_group(&pool, batch).await;
            drop(writer);
        });
        if let Err(error) = group.await {
            tracing::error!(%error, "group insert task failed");
        }
        result.await.unwrap_or_else(|_| {
            Err(StorageError::Unavailable(
                "the insert was abandoned".to_owned(),
            ))
        })
    }

    /// Inserts all posts or none, in one transaction.
    pub async fn insert_all(&self, new_posts: &[Post]) -> Result<(), StorageError> {
        let rows: Vec<PostRow> = new_posts.iter().map(PostRow::from_post).collect();
        let _writer = match self.pool {
            Pool::Sqlite(_) => Some(self.writer.lock().await),
            Pool::Postgres(_) => None,
        };
        insert_rows(&self.pool, rows, OnDuplicateRequest::Fail).await?;
        Ok(())
    }

    pub async fn get(&self, id: PostId) -> Result<Option<Post>, StorageError> {
        let id = id.to_string();
        let row: Option<PostRow> = with_connection!(self, |conn| {
            posts::table
                .find(&id)
                .select(PostRow::as_select())
                .first(conn)
                .await
                .optional()?
        });
        row.map(PostRow::into_post).transpose()
    }

    /// Posts of a business created with one of these request ids.
    pub async fn find_by_request_ids(
        &self,
        business_id: &str,
        request_ids: &[String],
    ) -> Result<Vec<Post>, StorageError> {
        let mut found = Vec::with_capacity(request_ids.len());
        for chunk in request_ids.chunks(LOOKUP_CHUNK_IDS) {
            let rows: Vec<PostRow> = with_connection!(self, |conn| {
                posts::table
                    .filter(posts::business_id.eq(business_id))
                    .filter(posts::request_id.eq_any(chunk))
                    .select(PostRow::as_select())
                    .load(conn)
                    .await?
            });
            for row in rows {
                found.push(row.into_post()?);
            }
        }
        Ok(found)
    }

    /// One page of posts in `(scheduled_for, id)` order.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&ListCursor>,
        limit: i64,
    ) -> Result<Vec<Post>, StorageError> {
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let label_conditions: Vec<SqlCondition> = filter
            .labels
            .iter()
            .map(|condition| self.labels_contain(condition.stored_fragment()))
            .collect();
        let rows: Vec<PostRow> = with_connection!(self, |conn| {
            let mut query = posts::table.select(PostRow::as_select()).into_boxed();
            if let Some(business_id) = &filter.business_id {
                query = query.filter(posts::business_id.eq(business_id));
            }
            if let Some(from) = filter.from {
                query = query.filter(posts::scheduled_for_us.ge(micros(from)));
            }
            if let Some(to) = filter.to {
                query = query.filter(posts::scheduled_for_us.lt(micros(to)));
            }
            if !statuses.is_empty() {
                query = query.filter(posts::status.eq_any(&statuses));
            }
            if let Some(platform) = &filter.platform {
                query = query.filter(posts::platform.eq(platform));
            }
            for condition in &label_conditions {
                query = query.filter(condition.clone());
            }
            if let Some(cursor) = after {
                query = query.filter(
                    posts::scheduled_for_us
                        .gt(cursor.scheduled_for_us)
                        .or(posts::scheduled_for_us
                            .eq(cursor.scheduled_for_us)
                            .and(posts::id.gt(&cursor.id))),
                );
            }
            query
                .order((posts::scheduled_for_us.asc(), posts::id.asc()))
                .limit(limit)
                .load(conn)
                .await?
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }

    /// Applies `patch` if the post still matches `expected`, bumping its
    /// version; `None` when it did not match (changed, wrong status, not due,
    /// or gone).
    /// Applies `change` with `patch` if the post still matches it, bumping
    /// its version; `None` when it did not match (changed, wrong status, not
    /// due, lease lost, or gone). Callers go through
    /// [`crate::lifecycle::LifeCycle`], which announces what applied.
    pub async fn compare_and_set(
        &self,
        change: &Change,
        patch: &PostPatch,
        now: DateTime<Utc>,
    ) -> Result<Option<Post>, StorageError> {
        let cas = self.prepare_cas(change, patch, now);
        let row: Option<PostRow> =
            with_write_connection!(self, |conn| apply_cas!(cas, |statement| {
                statement.get_result(conn).await
            })?);
        row.map(PostRow::into_post).transpose()
    }

    /// Records the outcomes of several attempts in one transaction, so one
    /// commit serves them all (a burst). Each applies or not on its own, as
    /// the compare-and-set of [`FinishedAttempt::as_compare_and_set`]; the
    /// result for each is its updated post, or `None` where it did not
    /// apply. An error fails them all.
    ///
    /// PostgreSQL takes the whole batch as one statement: per post, one
    /// round trip and one statement's overhead were most of the database's
    /// work in a burst.
    pub async fn finish_attempts(
        &self,
        attempts: &[FinishedAttempt],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<Post>>, StorageError> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Option<PostRow>> = match &self.pool {
            Pool::Sqlite(pool) => {
                let prepared: Vec<PreparedCas> = attempts
                    .iter()
                    .map(|attempt| {
                        let (change, patch) = attempt.as_compare_and_set();
                        self.prepare_cas(&change, &patch, now)
                    })
                    .collect();
                // The whole batch on one blocking thread: each statement
                // through the async wrapper is a round trip between threads,
                // which cost more than the statement itself.
                let _writer = self.writer.lock().await;
                let mut conn = pool.get().await?;
                conn.spawn_blocking(move |conn| {
                    conn.immediate_transaction(|conn| {
                        let mut rows = Vec::with_capacity(prepared.len());
                        for cas in &prepared {
                            rows.push(apply_cas!(cas, |statement| {
                                diesel::RunQueryDsl::get_result(statement, conn)
                            })?);
                        }
                        Ok::<_, DieselError>(rows)
                    })
                })
                .await?
            }
            Pool::Postgres(pool) => {
                let statement = rows::FinishedColumns::from_attempts(attempts)
                    .update_statement(micros(now), self.finish_fence(true));
                let mut conn = pool.get().await?;
                let updated: Vec<PostRow> = ReusedStatement(statement).load(&mut conn).await?;
                let mut by_id: std::collections::HashMap<String, PostRow> = updated
                    .into_iter()
                    .map(|row| (row.id().to_owned(), row))
                    .collect();
                attempts
                    .iter()
                    .map(|attempt| by_id.remove(&attempt.id.to_string()))
                    .collect()
            }
        };
        rows.into_iter()
            .map(|row| row.map(PostRow::into_post).transpose())
            .collect()
    }

    fn prepare_cas(&self, change: &Change, patch: &PostPatch, now: DateTime<Utc>) -> PreparedCas {
        let (status, attempts) = change.outcome();
        PreparedCas {
            id: change.id.to_string(),
            statuses: SqlCondition::status_in(change.transition.sources()),
            changes: rows::PostChanges::from_patch(patch, status, attempts, now),
            version: change.version,
            // Absent conditions become always-true comparisons so that one
            // statement shape serves every call.
            due_by_us: change.due_by.map(micros).unwrap_or(i64::MAX),
            fence: self.finish_fence(change.transition.is_fenced()),
        }
    }

    /// Pending posts whose next attempt is in `[from, until)`, in due order,
    /// continuing after `after`: what the engine arms timers for. `partitions`
    /// limits the read to those partitions; `None` reads all.
    pub async fn pending_due_in(
        &self,
        from: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        after: Option<DueEntry>,
        limit: i64,
        partitions: Option<&[u16]>,
    ) -> Result<Vec<DueEntry>, StorageError> {
        let partitions: Option<Vec<i32>> = partitions.map(partition_numbers);
        let until = micros(until);
        let after = after.map(|entry| (micros(entry.due), entry.id.to_string()));
        // Each page starts at the previous page's last instant, so reading
        // every page stays linear in the number of rows.
        let from = from
            .map(micros)
            .unwrap_or(i64::MIN)
            .max(after.as_ref().map_or(i64::MIN, |(due, _)| *due));
        let rows: Vec<(String, i64)> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.ge(from))
                .filter(posts::next_attempt_at_us.lt(until))
                .select((posts::id, posts::next_attempt_at_us))
                .into_boxed();
            if let Some(partitions) = &partitions {
                query = query.filter(posts::partition_no.eq_any(partitions));
            }
            if let Some((due_us, id)) = &after {
                // A row-value comparison, which both databases answer with
                // a range scan of the (next attempt, id) index.
                query = query.filter(
                    diesel::dsl::sql::<diesel::sql_types::Bool>("(next_attempt_at_us, id) > (")
                        .bind::<diesel::sql_types::BigInt, _>(*due_us)
                        .sql(", ")
                        .bind::<diesel::sql_types::Text, _>(id.clone())
                        .sql(")"),
                );
            }
            query
                .order((posts::next_attempt_at_us.asc(), posts::id.asc()))
                .limit(limit)
                .load(conn)
                .await?
        });
        rows.into_iter()
            .map(|(id, due_us)| {
                let post_id = PostId::parse("id", &id).map_err(|error| StorageError::Corrupt {
                    id: id.clone(),
                    reason: error.to_string(),
                })?;
                let due = rows::from_micros(&id, due_us)?;
                Ok(DueEntry { id: post_id, due })
            })
            .collect()
    }

    /// Claims due posts for an attempt: `PUBLISHING`, one more attempt, new
    /// version. A post no longer pending, not due by `due_by` (edited,
    /// cancelled, or claimed already) or paused is left out, so a post is
    /// never published early and never twice by this node.
    pub async fn claim_many(
        &self,
        ids: &[PostId],
        due_by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, StorageError> {
        let due_by_us = micros(due_by);
        let now_us = micros(now);
        let (fence, epoch) = self.claim_fence();
        let listed = self.id_in(ids);
        let claimed = Transition::Claim.target(PostStatus::Scheduled, 1);
        let rows: Vec<PostRow> = with_write_connection!(self, |conn| {
            ReusedStatement(
                diesel::update(posts::table)
                    .filter(listed)
                    .filter(SqlCondition::status_in_unindexed(
                        Transition::Claim.sources(),
                    ))
                    .filter(fence)
                    // `+ 0`: see `status_in_unindexed`.
                    .filter((posts::next_attempt_at_us + 0_i64).le(due_by_us))
                    .filter(not_paused!())
                    // `Transition::Claim`: PUBLISHING, one attempt more.
                    .set((
                        posts::status.eq(claimed.as_str()),
                        posts::attempts.eq(posts::attempts + 1),
                        posts::version.eq(posts::version + 1),
                        posts::update_time_us.eq(now_us),
                        posts::claim_epoch.eq(diesel::dsl::sql::<diesel::sql_types::BigInt>(epoch)),
                    ))
                    .returning(PostRow::as_returning()),
            )
            .get_results(conn)
            .await?
        });
        rows.into_iter()
            .map(|row| {
                let epoch = row.claim_epoch();
                Ok(Claim {
                    post: row.into_post()?,
                    epoch,
                })
            })
            .collect()
    }

    /// Posts left `PUBLISHING` by a process that stopped mid-attempt go back
    /// to pending at their old instant; the interrupted attempt is not
    /// counted, and the post keeps its id and so its idempotency key.
    ///
    /// With fencing (several replicas), only the posts of partitions this
    /// replica now owns that were claimed under an earlier lease epoch: the
    /// attempts of a replica that lost them. Without, every such post: the
    /// one process of the database has just started.
    pub async fn recover_interrupted(&self, now: DateTime<Utc>) -> Result<Vec<Post>, StorageError> {
        let now_us = micros(now);
        let message = "previous attempt was interrupted (restart or lost lease)";
        let scope = match &self.fencing_owner {
            Some(owner) => SqlCondition {
                before: "posts.claim_epoch < (SELECT l.epoch FROM partition_leases l \
                         WHERE l.partition_no = posts.partition_no AND l.owner = "
                    .into(),
                bind: Some(owner.to_string()),
                after: ")".into(),
            },
            None => SqlCondition::none(),
        };
        // `Transition::Recover`, in two statements: a first attempt goes
        // back to the status of a post never tried, a later one to that of a
        // post being retried.
        let interrupted = SqlCondition::status_in(Transition::Recover.sources());
        let never_tried = Transition::Recover.target(PostStatus::Publishing, 0);
        let retried_status = Transition::Recover.target(PostStatus::Publishing, 1);
        let rows: Vec<PostRow> = with_write_connection!(self, |conn| {
            let mut recovered: Vec<PostRow> = diesel::update(posts::table)
                .filter(interrupted.clone())
                .filter(scope.clone())
                .filter(posts::attempts.le(1))
                .set((
                    posts::status.eq(never_tried.as_str()),
                    posts::attempts.eq(0),
                    posts::version.eq(posts::version + 1),
                    posts::update_time_us.eq(now_us),
                ))
                .returning(PostRow::as_returning())
                .get_results(conn)
                .await?;
            let retried: Vec<PostRow> = diesel::update(posts::table)
                .filter(interrupted.clone())
                .filter(scope.clone())
                .set((
                    posts::status.eq(retried_status.as_str()),
                    posts::attempts.eq(posts::attempts - 1),
                    posts::last_error.eq(message),
                    posts::version.eq(posts::version + 1),
                    posts::update_time_us.eq(now_us),
                ))
                .returning(PostRow::as_returning())
                .get_results(conn)
                .await?;
            recovered.extend(retried);
            recovered
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    options: &StorageOptions,
) -> Result<DeadPool<C>, StorageError>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    DeadPool::builder(manager)
        .max_size(options.max_connections.max(1))
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.acquire_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        // The connection used last is the one handed out next: its prepared
        // statements and page cache are warm, and a light load opens few
        // connections (each with a cache of its own).
        .queue_mode(deadpool::managed::QueueMode::Lifo)
        .build()
        .map_err(|error| StorageError::Unavailable(error.to_string()))
}

fn postgres_pool(
    url: &str,
    options: &StorageOptions,
) -> Result<DeadPool<AsyncPgConnection>, StorageError> {
    let Some(replica_id) = options.replica_id.clone() else {
        return build_pool(AsyncDieselConnectionManager::new(url), options);
    };
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        let replica_id = replica_id.clone();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            // Read by the notification trigger: the partition owner's own
            // writes are armed directly and need no notification, and every
            // NOTIFY serialises commits on one lock.
            diesel::sql_query("SELECT set_config('punctual.replica_id', $1, false)")
                .bind::<diesel::sql_types::Text, _>(replica_id)
                .execute(&mut conn)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    build_pool(
        AsyncDieselConnectionManager::new_with_config(url, config),
        options,
    )
}

fn sqlite_pool(
    path: &str,
    options: &StorageOptions,
) -> Result<DeadPool<SqliteConnection>, StorageError> {
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|error| StorageError::InvalidUrl {
            url: path.to_owned(),
            reason: format!("cannot create {}: {error}", parent.display()),
        })?;
    }
    let mut config = ManagerConfig::<SqliteConnection>::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        async move {
            let mut conn = SqliteConnection::establish(&url).await?;
            // WAL lets readers run beside the writer; busy_timeout makes a
            // writer wait for the lock instead of failing at once;
            // synchronous=NORMAL is durable across process crashes in WAL mode;
            // the `Checkpointer` copies the log into the database in the
            // background, and a commit does so only past the backstop.
            conn.batch_execute(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                 PRAGMA wal_autocheckpoint = {};",
                writes::BACKSTOP_CHECKPOINT_PAGES
            ))
            .await
            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(path, config);
    build_pool(manager, options)
}

/// A pause in force: a business, or one platform of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRecord {
    pub business_id: String,
    /// `None` when the whole business is paused.
    pub platform: Option<String>,
    pub paused_at: DateTime<Utc>,
}

/// The stored posting slots of a business on a platform; `slots` is the
/// JSON the scheduler wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotsRecord {
    pub time_zone: String,
    pub slots: String,
}

/// One engagement report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngagementRecord {
    pub post_id: String,
    pub business_id: String,
    pub platform: String,
    pub published_at: DateTime<Utc>,
    pub impressions: i64,
    pub clicks: i64,
    pub reactions: i64,
}

/// Queue management: pauses, dead letters, slots, engagement, statistics.
impl Storage {
    /// Records a pause; pausing twice keeps the first pause time.
    pub async fn insert_pause(&self, pause: &PauseRecord) -> Result<(), StorageError> {
        use schema::queue_pauses;
        let values = (
            queue_pauses::business_id.eq(&pause.business_id),
            queue_pauses::platform.eq(pause.platform.as_deref().unwrap_or("")),
            queue_pauses::pause_time_us.eq(micros(pause.paused_at)),
        );
        with_write_connection!(self, |conn| {
            diesel::insert_into(queue_pauses::table)
                .values(values)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Lifts the pause of a platform, or every pause of the business when
    /// `platform` is `None`. Returns the pauses lifted.
    pub async fn delete_pauses(
        &self,
        business_id: &str,
        platform: Option<&str>,
    ) -> Result<Vec<PauseRecord>, StorageError> {
        use schema::queue_pauses;
        let rows: Vec<(String, String, i64)> = with_write_connection!(self, |conn| {
            match platform {
                Some(platform) => {
                    diesel::delete(
                        queue_pauses::table
                            .filter(queue_pauses::business_id.eq(business_id))
                            .filter(queue_pauses::platform.eq(platform)),
                    )
                    .returning((
                        queue_pauses::business_id,
                        queue_pauses::platform,
                        queue_pauses::pause_time_us,
                    ))
                    .get_results(conn)
                    .await?
                }
                None => {
                    diesel::delete(
                        queue_pauses::table.filter(queue_pauses::business_id.eq(business_id)),
                    )
                    .returning((
                        queue_pauses::business_id,
                        queue_pauses::platform,
                        queue_pauses::pause_time_us,
                    ))
                    .get_results(conn)
                    .await?
                }
            }
        });
        rows.into_iter().map(pause_from_row).collect()
    }

    pub async fn list_pauses(
        &self,
        business_id: Option<&str>,
    ) -> Result<Vec<PauseRecord>, StorageError> {
        use schema::queue_pauses;
        let rows: Vec<(String, String, i64)> = with_connection!(self, |conn| {
            let mut query = queue_pauses::table
                .select((
                    queue_pauses::business_id,
                    queue_pauses::platform,
                    queue_pauses::pause_time_us,
                ))
                .order((queue_pauses::business_id, queue_pauses::platform))
                .into_boxed();
            if let Some(business_id) = business_id {
                query = query.filter(queue_pauses::business_id.eq(business_id));
            }
            query.load(conn).await?
        });
        rows.into_iter().map(pause_from_row).collect()
    }

    /// Pending posts of a business (optionally one platform) whose next
    /// attempt is before `until`, in due order, at most `limit`.
    pub async fn pending_of_business(
        &self,
        business_id: &str,
        platform: Option<&str>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Post>, StorageError> {
        let until = micros(until);
        let rows: Vec<PostRow> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(posts::business_id.eq(business_id))
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.lt(until))
                .select(PostRow::as_select())
                .order((posts::next_attempt_at_us.asc(), posts::id.asc()))
                .limit(limit)
                .into_boxed();
            if let Some(platform) = platform {
                query = query.filter(posts::platform.eq(platform));
            }
            query.load(conn).await?
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }

    /// Posts of a business in `(scheduled_for, id)` order within `[from, to)`,
    /// any status but those given, at most `limit`.
    pub async fn posts_between(
        &self,
        business_id: &str,
        platform: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        excluded: &[PostStatus],
        limit: i64,
    ) -> Result<Vec<Post>, StorageError> {
        let excluded: Vec<&str> = excluded.iter().map(|s| s.as_str()).collect();
        let (from, to) = (micros(from), micros(to));
        let rows: Vec<PostRow> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(posts::business_id.eq(business_id))
                .filter(posts::scheduled_for_us.ge(from))
                .filter(posts::scheduled_for_us.lt(to))
                .filter(posts::status.ne_all(&excluded))
                .select(PostRow::as_select())
                .order((posts::scheduled_for_us.asc(), posts::id.asc()))
                .limit(limit)
                .into_boxed();
            if let Some(platform) = platform {
                query = query.filter(posts::platform.eq(platform));
            }
            query.load(conn).await?
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }

    /// Posts per business and status: read once at start-up to seed the
    /// in-memory counters.
    pub async fn count_by_business_and_status(
        &self,
    ) -> Result<Vec<(String, PostStatus, i64)>, StorageError> {
        let rows: Vec<(String, String, i64)> = with_connection!(self, |conn| {
            posts::table
                .group_by((posts::business_id, posts::status))
                .select((posts::business_id, posts::status, diesel::dsl::count_star()))
                .load(conn)
                .await?
        });
        rows.into_iter()
            .map(|(business_id, status, count)| {
                let status = status.parse().map_err(|reason| StorageError::Corrupt {
                    id: format!("status of {business_id}"),
                    reason,
                })?;
                Ok((business_id, status, count))
            })
            .collect()
    }

    /// Posts per status, of one business or of all.
    pub async fn count_by_status(
        &self,
        business_id: Option<&str>,
    ) -> Result<Vec<(PostStatus, i64)>, StorageError> {
        let rows: Vec<(String, i64)> = with_connection!(self, |conn| {
            let mut query = posts::table
                .group_by(posts::status)
                .select((posts::status, diesel::dsl::count_star()))
                .into_boxed();
            if let Some(business_id) = business_id {
                query = query.filter(posts::business_id.eq(business_id));
            }
            query.load(conn).await?
        });
        rows.into_iter()
            .map(|(status, count)| {
                let status = status.parse().map_err(|reason| StorageError::Corrupt {
                    id: "status count".to_owned(),
                    reason,
                })?;
                Ok((status, count))
            })
            .collect()
    }

    /// The earliest pending attempt and the number of pending posts already
    /// due, read through the pending-only indexes.
    pub async fn due_summary(
        &self,
        business_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Option<DateTime<Utc>>, i64), StorageError> {
        let now_us = micros(now);
        let (next, overdue): (Option<i64>, i64) = with_connection!(self, |conn| {
            let mut next_query = posts::table
                .filter(is_pending())
                .select(diesel::dsl::min(posts::next_attempt_at_us))
                .into_boxed();
            let mut overdue_query = posts::table
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.le(now_us))
                .select(diesel::dsl::count_star())
                .into_boxed();
            if let Some(business_id) = business_id {
                next_query = next_query.filter(posts::business_id.eq(business_id));
                overdue_query = overdue_query.filter(posts::business_id.eq(business_id));
            }
            let next: Option<i64> = next_query.first(conn).await?;
            let overdue: i64 = overdue_query.first(conn).await?;
            (next, overdue)
        });
        let next = next
            .map(|us| rows::from_micros("next due", us))
            .transpose()?;
        Ok((next, overdue))
    }

    /// Whether a pending, unpaused post of these partitions (all when
    /// `None`) was due before `before`: with a working engine there is none
    /// for long.
    pub async fn has_overdue_posts(
        &self,
        before: DateTime<Utc>,
        partitions: Option<&[u16]>,
    ) -> Result<bool, StorageError> {
        let before_us = micros(before);
        let partitions: Option<Vec<i32>> = partitions.map(partition_numbers);
        let found: Option<String> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.lt(before_us))
                .filter(not_paused!())
                .select(posts::id)
                .into_boxed();
            if let Some(partitions) = &partitions {
                query = query.filter(posts::partition_no.eq_any(partitions));
            }
            query.first(conn).await.optional()?
        });
        Ok(found.is_some())
    }

    pub async fn upsert_slots(
        &self,
        business_id: &str,
        platform: &str,
        record: &SlotsRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        use schema::posting_slots;
        let values = (
            posting_slots::business_id.eq(business_id),
            posting_slots::platform.eq(platform),
            posting_slots::time_zone.eq(&record.time_zone),
            posting_slots::slots.eq(&record.slots),
            posting_slots::update_time_us.eq(micros(now)),
        );
        with_write_connection!(self, |conn| {
            diesel::insert_into(posting_slots::table)
                .values(values)
                .on_conflict((posting_slots::business_id, posting_slots::platform))
                .do_update()
                .set((
                    posting_slots::time_zone.eq(&record.time_zone),
                    posting_slots::slots.eq(&record.slots),
                    posting_slots::update_time_us.eq(micros(now)),
                ))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    pub async fn get_slots(
        &self,
        business_id: &str,
        platform: &str,
    ) -> Result<Option<SlotsRecord>, StorageError> {
        use schema::posting_slots;
        let row: Option<(String, String)> = with_connection!(self, |conn| {
            posting_slots::table
                .filter(posting_slots::business_id.eq(business_id))
                .filter(posting_slots::platform.eq(platform))
                .select((posting_slots::time_zone, posting_slots::slots))
                .first(conn)
                .await
                .optional()?
        });
        Ok(row.map(|(time_zone, slots)| SlotsRecord { time_zone, slots }))
    }

    /// Records (or replaces) the engagement of a post.
    pub async fn upsert_engagement(
        &self,
        record: &EngagementRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        use schema::engagement;
        let values = (
            engagement::post_id.eq(&record.post_id),
            engagement::business_id.eq(&record.business_id),
            engagement::platform.eq(&record.platform),
            engagement::published_at_us.eq(micros(record.published_at)),
            engagement::impressions.eq(record.impressions),
            engagement::clicks.eq(record.clicks),
            engagement::reactions.eq(record.reactions),
            engagement::record_time_us.eq(micros(now)),
        );
        with_write_connection!(self, |conn| {
            diesel::insert_into(engagement::table)
                .values(values)
                .on_conflict(engagement::post_id)
                .do_update()
                .set((
                    engagement::impressions.eq(record.impressions),
                    engagement::clicks.eq(record.clicks),
                    engagement::reactions.eq(record.reactions),
                    engagement::record_time_us.eq(micros(now)),
                ))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// The most recent engagement reports of a business on a platform.
    pub async fn engagement_history(
        &self,
        business_id: &str,
        platform: &str,
        limit: i64,
    ) -> Result<Vec<EngagementRecord>, StorageError> {
        use schema::engagement;
        let rows: Vec<(String, String, String, i64, i64, i64, i64)> =
            with_connection!(self, |conn| {
                engagement::table
                    .filter(engagement::business_id.eq(business_id))
                    .filter(engagement::platform.eq(platform))
                    .order(engagement::published_at_us.desc())
                    .limit(limit)
                    .select((
                        engagement::post_id,
                        engagement::business_id,
                        engagement::platform,
                        engagement::published_at_us,
                        engagement::impressions,
                        engagement::clicks,
                        engagement::reactions,
                    ))
                    .load(conn)
                    .await?
            });
        rows.into_iter()
            .map(
                |(post_id, business_id, platform, published_us, impressions, clicks, reactions)| {
                    Ok(EngagementRecord {
                        published_at: rows::from_micros(&post_id, published_us)?,
                        post_id,
                        business_id,
                        platform,
                        impressions,
                        clicks,
                        reactions,
                    })
                },
            )
            .collect()
    }
}

fn pause_from_row(
    (business_id, platform, pause_time_us): (String, String, i64),
) -> Result<PauseRecord, StorageError> {
    Ok(PauseRecord {
        paused_at: rows::from_micros(&business_id, pause_time_us)?,
        platform: (!platform.is_empty()).then_some(platform),
        business_id,
    })
}
