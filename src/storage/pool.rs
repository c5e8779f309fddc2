//! The two databases, and everything that differs between them, decided
//! here and nowhere else: which URL names which, how each pool opens and
//! configures its connections, its migrations, who serialises writes
//! (this process, on SQLite), who checkpoints the log (a task of ours, on
//! SQLite), whether replicas share it (PostgreSQL: [`SharedDatabase`] and
//! fencing exist there only), and the statements written differently for
//! each. Every other file writes a query once and runs it on either pool
//! through [`with_connection!`] and [`with_write_connection!`].

use std::path::Path;
use std::sync::Arc;

use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

use super::claims::FinishedAttempt;
use super::posts::{PreparedCas, apply_cas};
use super::rows::{self, InsertedId, OnDuplicateRequest, PostColumns, PostRow};
use super::schema::posts;
use super::shared::SharedDatabase;
use super::sql::{ReusedStatement, SqlCondition};
use super::writes::{self, Checkpointer, WriteLock};
use super::{StorageError, StorageOptions};
use crate::domain::PostId;

pub(super) type SqliteConnection = SyncConnectionWrapper<diesel::SqliteConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection pool of either database.
#[derive(Clone)]
pub(super) enum Pool {
    Sqlite {
        connections: DeadPool<SqliteConnection>,
        /// The database file, which the checkpointer opens too.
        path: Arc<str>,
    },
    Postgres {
        connections: DeadPool<AsyncPgConnection>,
        /// Where a listening connection, which is not pooled, connects.
        url: Arc<str>,
    },
}

/// Runs the same diesel-async code on whichever backend is configured. The
/// body is compiled once per backend; `$conn` is a `&mut` connection.
macro_rules! with_connection {
    ($storage:expr, |$conn:ident| $body:expr) => {
        match &$storage.pool {
            $crate::storage::pool::Pool::Sqlite { connections, .. } => {
                let mut pooled = connections.get().await?;
                let $conn: &mut $crate::storage::pool::SqliteConnection = &mut pooled;
                $body
            }
            $crate::storage::pool::Pool::Postgres { connections, .. } => {
                let mut pooled = connections.get().await?;
                let $conn: &mut diesel_async::AsyncPgConnection = &mut pooled;
                $body
            }
        }
    };
}
pub(super) use with_connection;

/// Like [`with_connection!`], for statements that write, in this process's
/// turn where it serialises writes ([`super::Storage::write_turn`]).
macro_rules! with_write_connection {
    ($storage:expr, |$conn:ident| $body:expr) => {{
        let _turn = $storage.write_turn().await;
        $crate::storage::pool::with_connection!($storage, |$conn| $body)
    }};
}
pub(super) use with_write_connection;

impl Pool {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; `sqlite://path`,
    /// `sqlite:path` or a bare path is a SQLite file.
    pub(super) fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                connections: postgres_pool(url, options)?,
                url: Arc::from(url),
            });
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
        Ok(Self::Sqlite {
            connections: sqlite_pool(path, options)?,
            path: Arc::from(path),
        })
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }

    /// What only PostgreSQL has: replicas sharing the database, partition
    /// leases, and notifications. Claims and outcome writes are fenced by
    /// `replica_id`'s leases when it is given; a SQLite file has one process,
    /// which owns every partition.
    pub(super) fn shared(&self, replica_id: Option<&str>) -> Option<SharedDatabase> {
        match self {
            Self::Sqlite { .. } => None,
            Self::Postgres { connections, url } => Some(SharedDatabase {
                connections: connections.clone(),
                url: Arc::clone(url),
                fencing_owner: replica_id.map(Arc::from),
            }),
        }
    }

    /// The task that checkpoints a SQLite database's write-ahead log after
    /// writes (see [`Checkpointer`]); `None` on PostgreSQL, which
    /// checkpoints by itself.
    pub(super) fn checkpointer(&self, writer: &WriteLock) -> Option<Checkpointer> {
        match self {
            Self::Sqlite { path, .. } => Some(writer.checkpointer(path)),
            Self::Postgres { .. } => None,
        }
    }

    /// Whether this process takes turns to write: SQLite has one writer at
    /// a time, and writers queueing in this process, instead of in SQLite's
    /// busy handler (which sleeps in steps of milliseconds), keep writes
    /// prompt under contention.
    pub(super) fn serialises_writes(&self) -> bool {
        matches!(self, Self::Sqlite { .. })
    }

    /// Whether to open every pooled connection at start-up. PostgreSQL's
    /// pool otherwise opens them as load first needs them, which is during
    /// the first burst of posts due at once: a connect and a new backend
    /// whose first statements load its caches, in the middle of the burst
    /// and of the API calls beside it. A SQLite connection opens at once,
    /// and each one open holds a page cache: SQLite's pool opens them as
    /// needed.
    pub(super) fn opens_connections_at_start(&self) -> bool {
        matches!(self, Self::Postgres { .. })
    }

    pub(super) async fn run_migrations(&self) -> Result<(), StorageError> {
        // The harness blocks in place; it needs the multi-thread runtime.
        let outcome = match self {
            Self::Sqlite { connections, .. } => {
                AsyncMigrationHarness::new(connections.get().await?)
                    .run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(drop)
            }
            Self::Postgres { connections, .. } => {
                AsyncMigrationHarness::new(connections.get().await?)
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(drop)
            }
        };
        outcome.map_err(StorageError::Migration)
    }

    /// `posts.id` is one of `ids`, as one bound text whatever their number,
    /// so that the statement holding it has one text and is prepared once
    /// (a list of placeholders would be a new statement for every length).
    pub(super) fn id_in(&self, ids: &[PostId]) -> SqlCondition {
        match self {
            Self::Sqlite { .. } => {
                let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
                SqlCondition::around(
                    "posts.id IN (SELECT value FROM json_each(",
                    format!("[{}]", quoted.join(",")),
                    "))",
                )
            }
            Self::Postgres { .. } => {
                let listed: Vec<String> = ids.iter().map(PostId::to_string).collect();
                SqlCondition::around(
                    "posts.id = ANY(string_to_array(",
                    listed.join(","),
                    ", ','))",
                )
            }
        }
    }

    /// The stored labels contain `fragment`, case-sensitively (SQLite's
    /// `LIKE` ignores ASCII case, so neither backend uses it).
    pub(super) fn labels_contain(&self, fragment: String) -> SqlCondition {
        let function = match self {
            Self::Sqlite { .. } => "instr(posts.labels, ",
            Self::Postgres { .. } => "strpos(posts.labels, ",
        };
        SqlCondition::around(function, fragment, ") > 0")
    }

    /// Inserts `rows` in one transaction and returns the ids inserted. On
    /// SQLite the caller holds the writer lock.
    pub(super) async fn insert_rows(
        &self,
        rows: Vec<PostRow>,
        on_duplicate: OnDuplicateRequest,
    ) -> Result<Vec<String>, StorageError> {
        match self {
            Self::Sqlite { connections, .. } => {
                // On a blocking thread, in one write transaction: one prepared
                // single-row INSERT, run once per row. SQLite compiles it once
                // per connection, and a statement that writes one row needs no
                // statement journal; an INSERT of many rows is parsed anew for
                // every group of rows, and journals each page it changes so
                // that it can undo itself if a later row fails.
                let mut conn = connections.get().await?;
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
            Self::Postgres { connections, .. } => {
                let mut conn = connections.get().await?;
                let inserted: Vec<InsertedId> =
                    ReusedStatement(PostColumns::from_rows(rows).insert_statement(on_duplicate))
                        .load(&mut conn)
                        .await?;
                Ok(inserted.into_iter().map(|row| row.id).collect())
            }
        }
    }

    /// Writes the outcomes of `attempts` in one transaction, each as the
    /// compare-and-set `prepare` makes of it; the changed row of each, or
    /// `None` where it did not apply. `fence` is the condition of a write
    /// that finishes a claim.
    ///
    /// SQLite runs the compare-and-sets one by one on a blocking thread:
    /// each statement through the async wrapper is a round trip between
    /// threads, which cost more than the statement itself. PostgreSQL takes
    /// the whole batch as one statement: per post, one round trip and one
    /// statement's overhead were most of the database's work in a burst.
    pub(super) async fn finish_attempts(
        &self,
        writer: &WriteLock,
        attempts: &[FinishedAttempt],
        prepare: impl Fn(&FinishedAttempt) -> PreparedCas,
        fence: SqlCondition,
        now_us: i64,
    ) -> Result<Vec<Option<PostRow>>, StorageError> {
        match self {
            Self::Sqlite { connections, .. } => {
                let prepared: Vec<PreparedCas> = attempts.iter().map(prepare).collect();
                let _writer = writer.lock().await;
                let mut conn = connections.get().await?;
                let rows = conn
                    .spawn_blocking(move |conn| {
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
                    .await?;
                Ok(rows)
            }
            Self::Postgres { connections, .. } => {
                let statement =
                    rows::FinishedColumns::from_attempts(attempts).update_statement(now_us, fence);
                let mut conn = connections.get().await?;
                let updated: Vec<PostRow> = ReusedStatement(statement).load(&mut conn).await?;
                let mut by_id: std::collections::HashMap<String, PostRow> = updated
                    .into_iter()
                    .map(|row| (row.id().to_owned(), row))
                    .collect();
                Ok(attempts
                    .iter()
                    .map(|attempt| by_id.remove(&attempt.id.to_string()))
                    .collect())
            }
        }
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
        .map_err(|error| StorageError::Unavailable(Box::new(error)))
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
        std::fs::create_dir_all(parent).map_err(|source| StorageError::CreateDirectory {
            path: parent.to_owned(),
            source,
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
