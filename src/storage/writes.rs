//! One SQLite writer at a time, and the checkpoints of what they wrote.
//!
//! SQLite appends every commit to its write-ahead log, and by default the
//! commit that takes the log past 1,000 pages also copies the log into the
//! database file, with two fsyncs, before it returns. A 5,000-post bulk
//! request writes several thousand pages, so every such request paid for a
//! checkpoint inside its own commit, and every writer queued behind it
//! waited too. Here the end of each write transaction wakes a
//! [`Checkpointer`] that copies the log from a connection of its own,
//! beside the next writer.
//!
//! The log file starts over only once a checkpoint has copied all of it
//! before the next writer begins. Under a steady stream of writes the
//! background checkpoints copy what was committed when they started, but a
//! writer has always committed more by the time they finish; so the pool's
//! connections keep SQLite's own checkpoint at a higher threshold, where
//! the committing writer copies the little the checkpointer has not (no
//! other writer can commit meanwhile) and the log starts over.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use super::pool::SqliteConnection;

/// The log size, in pages (40 MiB), at which a committing connection
/// checkpoints by itself: what bounds the log file under steady writes, or
/// when no checkpointer runs (a command-line tool, a test).
pub(super) const BACKSTOP_CHECKPOINT_PAGES: u32 = 10_000;

/// The shortest time between two checkpoints: a stream of small commits
/// shares one checkpoint (and its fsyncs), and what a committing writer's
/// own checkpoint finds left to copy stays at about this much writing.
const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Serialises this process's SQLite writes, and tells the checkpointer each
/// time a writer is done.
#[derive(Clone, Default)]
pub(super) struct WriteLock {
    mutex: Arc<Mutex<()>>,
    written: Arc<Notify>,
}

impl WriteLock {
    pub(super) async fn lock(&self) -> WriteGuard {
        WriteGuard {
            _held: Arc::clone(&self.mutex).lock_owned().await,
            written: Arc::clone(&self.written),
        }
    }

    pub(super) fn checkpointer(&self, database_path: &str) -> Checkpointer {
        Checkpointer {
            database_path: database_path.to_owned(),
            written: Arc::clone(&self.written),
        }
    }
}

/// The right to write until dropped.
pub(super) struct WriteGuard {
    _held: OwnedMutexGuard<()>,
    written: Arc<Notify>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        // A permit is kept when the checkpointer is busy, so a write that
        // ends during a checkpoint is checkpointed by the next one.
        self.written.notify_one();
    }
}

/// Copies the write-ahead log of a SQLite database into the database file
/// after writes, in the background. Runs until its token is cancelled.
pub struct Checkpointer {
    database_path: String,
    written: Arc<Notify>,
}

impl Checkpointer {
    pub async fn run(self, stop: CancellationToken) {
        let mut connection = match SqliteConnection::establish(&self.database_path).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot open a connection for WAL checkpoints; committing writers checkpoint at the backstop instead"
                );
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.written.notified() => {}
            }
            // PASSIVE neither waits for nor blocks readers and writers: it
            // copies what no reader still needs, and the rest next time.
            if let Err(error) = connection
                .batch_execute("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                tracing::warn!(%error, "WAL checkpoint failed; the next one retries");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(MIN_CHECKPOINT_INTERVAL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_len(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
    }

    /// Writes about 2 MiB in one transaction, as a writer holding the lock.
    async fn write_a_transaction(lock: &WriteLock, connection: &mut SqliteConnection) {
        let _writer = lock.lock().await;
        connection
            .batch_execute(
                "BEGIN IMMEDIATE; \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
                 INSERT INTO blobs (body) SELECT zeroblob(1000) FROM n; \
                 COMMIT;",
            )
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_copied_into_the_database_after_a_write_and_not_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.db");
        let url = path.to_string_lossy().into_owned();
        let mut connection = SqliteConnection::establish(&url).await.unwrap();
        connection
            .batch_execute(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = {BACKSTOP_CHECKPOINT_PAGES}; \
                 CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
            ))
            .await
            .unwrap();
        let lock = WriteLock::default();

        write_a_transaction(&lock, &mut connection).await;
        let before = file_len(&path);
        assert!(
            before < 100_000,
            "the writer copied its log itself: the database file is {before} bytes"
        );

        let stop = CancellationToken::new();
        let checkpointer = tokio::spawn(lock.checkpointer(&url).run(stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while file_len(&path) < 2_000_000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no checkpoint within 20 s: the database file is {} bytes",
                file_len(&path)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A later write is checkpointed too.
        write_a_transaction(&lock, &mut connection).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while file_len(&path) < 4_000_000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the second write was not checkpointed within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), checkpointer)
            .await
            .expect("the checkpointer stops when cancelled")
            .unwrap();
    }
}
