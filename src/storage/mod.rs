//! Storage owns the database: connection pools, embedded migrations and every
//! query. It is the only module that knows SQL or diesel.
//!
//! SQLite (the embedded default) and PostgreSQL share one table layout, so a
//! query is written once and runs on whichever pool is configured; what
//! differs between the two is decided in `pool.rs` alone. Every state change
//! is a compare-and-set: an `UPDATE … WHERE id = ? AND version = ? AND
//! status IN (…) RETURNING *` that either applies whole or matches no row.
//! Which status a change leads to is the domain's ([`Transition`]), never
//! this module's.
//!
//! By concern:
//! - `pool.rs`: opening either database, and everything that differs
//!   between them;
//! - `posts.rs`: inserts (in group commits), reads, listings and the
//!   compare-and-set;
//! - `claims.rs`: the fire path: due posts, claims, outcomes, recovery;
//! - `queue.rs`: pauses, and the reads of a business's queue;
//! - `planning.rs`: posting slots and engagement;
//! - `stats.rs`: counts and summaries;
//! - `shared.rs`, `leases.rs`, `notify.rs`: [`SharedDatabase`], what only
//!   PostgreSQL has: replicas' leases and membership, the fences they put
//!   on claims, and `LISTEN`/`NOTIFY`;
//! - `writes.rs`: SQLite's one writer at a time, and its checkpoints;
//! - `error.rs`: [`StorageError`], and which failures are transient;
//! - `sql.rs`, `rows.rs`, `schema.rs`: SQL fragments, rows, the tables.
//!
//! [`Transition`]: crate::domain::Transition

mod claims;
mod error;
mod leases;
mod notify;
mod planning;
mod pool;
mod posts;
mod queue;
mod rows;
mod schema;
mod shared;
mod sql;
mod stats;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;

use crate::domain::PostId;
use pool::{Pool, with_connection};
use writes::WriteLock;

pub use claims::{Claim, DueEntry, FinishedAttempt};
pub use error::{Cause, StorageError};
pub use leases::{Lease, MemberCount};
pub use notify::{Listener, Notice};
pub use planning::{EngagementRecord, SlotsRecord};
pub use posts::{Change, ListCursor, ListFilter, PostPatch};
pub use queue::PauseRecord;
pub use shared::SharedDatabase;
pub use writes::Checkpointer;

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    pub max_connections: usize,
    /// How long a caller waits for a free connection before `UNAVAILABLE`.
    pub acquire_timeout: Duration,
    /// This replica's name, used on PostgreSQL only: it fences claims and
    /// outcome writes by the replica's partition leases, and tells the
    /// database which writes need no notification (the owner's own).
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
    inserts: Arc<std::sync::Mutex<Vec<posts::PendingInsert>>>,
    /// Present exactly on PostgreSQL, which replicas may share.
    shared: Option<SharedDatabase>,
}

impl Storage {
    /// Connects, and runs the embedded migrations of the backend.
    pub async fn connect(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let pool = Pool::open(url, options)?;
        let storage = Self {
            shared: pool.shared(options.replica_id.as_deref()),
            pool,
            writer: WriteLock::default(),
            inserts: Arc::default(),
        };
        storage.pool.run_migrations().await?;
        if storage.pool.opens_connections_at_start() {
            storage.open_connections(options.max_connections).await;
        }
        Ok(storage)
    }

    /// Opens the pool's connections, each reading a post by id once. Best
    /// effort: a connection that cannot be opened now is opened when needed.
    async fn open_connections(&self, count: usize) {
        let absent = PostId::new();
        let reads = (0..count.max(1)).map(|_| self.get(absent));
        if let Err(error) = futures::future::try_join_all(reads).await {
            tracing::warn!(%error, connections = count, "could not open every database connection at start-up");
        }
    }

    /// This process's turn to write, where it serialises writes (SQLite);
    /// `None` where the database orders writers itself.
    async fn write_turn(&self) -> Option<writes::WriteGuard> {
        if self.pool.serialises_writes() {
            Some(self.writer.lock().await)
        } else {
            None
        }
    }

    /// Leases, membership and notifications: `Some` on PostgreSQL, which
    /// several replicas may share; `None` on SQLite, whose one process owns
    /// every post.
    pub fn shared(&self) -> Option<&SharedDatabase> {
        self.shared.as_ref()
    }

    /// The task that checkpoints a SQLite database's write-ahead log after
    /// writes (see [`Checkpointer`]); `None` on PostgreSQL, which
    /// checkpoints by itself.
    pub fn checkpointer(&self) -> Option<Checkpointer> {
        self.pool.checkpointer(&self.writer)
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.pool.name()
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        with_connection!(self, |conn| {
            conn.batch_execute("SELECT 1").await?;
        });
        Ok(())
    }
}
