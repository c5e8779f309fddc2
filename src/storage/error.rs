//! What can go wrong in storage, and the one decision every caller relies
//! on: which failures are transient ([`StorageError::Unavailable`], worth a
//! retry and answered `UNAVAILABLE`) and which are not.
//!
//! Every variant keeps the error it came from as its source. Its message
//! repeats the source's, because errors are logged on one line with `%error`
//! where they are handled.

use std::ffi::CStr;

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;

/// Any error, as the source of another.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached, is busy or out of room, or no pooled
    /// connection came free in time; worth a retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A request id was already used for this business.
    #[error("request id already used")]
    DuplicateRequest,
    #[error("database query failed: {0}")]
    Query(#[source] DieselError),
    #[error("stored post {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("database migrations failed: {0}")]
    Migration(#[source] Cause),
    #[error("invalid database url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create the directory of the database file {path:?}: {source}")]
    CreateDirectory {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<DieselError> for StorageError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StorageError::DuplicateRequest
            }
            DieselError::DatabaseError(kind, info) if is_transient(*kind, info.as_ref()) => {
                StorageError::Unavailable(Box::new(error))
            }
            _ => StorageError::Query(error),
        }
    }
}

impl From<PoolError> for StorageError {
    /// Every pool error is a connection that could not be had: none came
    /// free in time, or a new one could not be opened.
    fn from(error: PoolError) -> Self {
        StorageError::Unavailable(Box::new(error))
    }
}

impl From<diesel::ConnectionError> for StorageError {
    fn from(error: diesel::ConnectionError) -> Self {
        StorageError::Unavailable(Box::new(error))
    }
}

/// Whether a failed statement may succeed if run again: its connection was
/// lost, or the database is busy, restarting or out of room.
fn is_transient(
    kind: DatabaseErrorKind,
    info: &(dyn DatabaseErrorInformation + Send + Sync),
) -> bool {
    match kind {
        DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => true,
        // diesel names no kind for these: SQLite's result code, and
        // PostgreSQL's SQLSTATE, are known only through the message.
        DatabaseErrorKind::Unknown => {
            is_transient_sqlite_code(info.message()) || is_postgres_going_away(info.message())
        }
        _ => false,
    }
}

/// SQLite result codes that a later try may not meet: another process holds
/// the write lock past `busy_timeout` (`BUSY`, `LOCKED`), the disk is full,
/// or the disk failed to read or write.
const TRANSIENT_SQLITE_CODES: [std::ffi::c_int; 4] = [
    libsqlite3_sys::SQLITE_BUSY,
    libsqlite3_sys::SQLITE_LOCKED,
    libsqlite3_sys::SQLITE_FULL,
    libsqlite3_sys::SQLITE_IOERR,
];

/// Whether `message` is SQLite's own text for one of
/// [`TRANSIENT_SQLITE_CODES`] (extended codes share their primary code's
/// text). diesel keeps the extended code only long enough to choose a kind,
/// and for these it chooses none; the message is SQLite's `sqlite3_errstr`
/// of the code, optionally followed by `: ` and a detail.
fn is_transient_sqlite_code(message: &str) -> bool {
    TRANSIENT_SQLITE_CODES.iter().any(|&code| {
        let text = sqlite_code_text(code);
        message == text
            || message
                .strip_prefix(text)
                .is_some_and(|rest| rest.starts_with(": "))
    })
}

/// SQLite's English text for a result code.
fn sqlite_code_text(code: std::ffi::c_int) -> &'static str {
    // SAFETY: `sqlite3_errstr` returns a pointer to a static, NUL-terminated
    // string for every code, known or not.
    let text = unsafe { CStr::from_ptr(libsqlite3_sys::sqlite3_errstr(code)) };
    text.to_str().unwrap_or("")
}

/// Whether PostgreSQL is ending the connection or not accepting work: the
/// messages of SQLSTATE class 57P (`admin_shutdown`, `crash_shutdown`,
/// `cannot_connect_now`), which diesel-async does not expose as a code.
fn is_postgres_going_away(message: &str) -> bool {
    message.starts_with("terminating connection") || message.starts_with("the database system is")
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;

    use super::*;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn lost_connections_and_busy_or_full_databases_are_transient() {
        for (kind, message) in [
            (DatabaseErrorKind::ClosedConnection, "connection closed"),
            (DatabaseErrorKind::UnableToSendCommand, "broken pipe"),
            (DatabaseErrorKind::Unknown, "database is locked"),
            (
                DatabaseErrorKind::Unknown,
                "database table is locked: posts",
            ),
            (DatabaseErrorKind::Unknown, "database or disk is full"),
            (DatabaseErrorKind::Unknown, "disk I/O error"),
            (
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            (
                DatabaseErrorKind::Unknown,
                "the database system is shutting down",
            ),
        ] {
            let error = StorageError::from(database_error(kind, message));
            assert!(
                matches!(error, StorageError::Unavailable(_)),
                "{message}: {error:?}"
            );
            let source = std::error::Error::source(&error).map(ToString::to_string);
            assert_eq!(source.as_deref(), Some(message), "the source is kept");
        }
    }

    #[test]
    fn other_failures_are_not_transient() {
        assert!(matches!(
            StorageError::from(database_error(
                DatabaseErrorKind::UniqueViolation,
                "UNIQUE constraint failed"
            )),
            StorageError::DuplicateRequest
        ));
        for (kind, message) in [
            (DatabaseErrorKind::Unknown, "no such table: posts"),
            (DatabaseErrorKind::Unknown, "syntax error near locked"),
            (DatabaseErrorKind::CheckViolation, "CHECK constraint failed"),
        ] {
            let error = StorageError::from(database_error(kind, message));
            assert!(
                matches!(error, StorageError::Query(_)),
                "{message}: {error:?}"
            );
        }
    }

    #[test]
    fn a_write_lock_held_past_the_busy_timeout_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("busy.db").to_string_lossy().into_owned();
        let mut holder = diesel::SqliteConnection::establish(&url).unwrap();
        let mut waiter = diesel::SqliteConnection::establish(&url).unwrap();
        diesel::sql_query("CREATE TABLE t (x INTEGER)")
            .execute(&mut holder)
            .unwrap();
        diesel::sql_query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .unwrap();
        let error = diesel::sql_query("INSERT INTO t VALUES (1)")
            .execute(&mut waiter)
            .unwrap_err();
        assert!(matches!(
            StorageError::from(error),
            StorageError::Unavailable(_)
        ));
    }
}
