//! A database of a test's own: a temporary SQLite file, or a fresh
//! PostgreSQL database named after the test on the server a test was pointed
//! at, dropped when the test ends so that runs do not pile databases up.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// Names the PostgreSQL server of the tests that use one (an admin URL whose
/// database exists); set by `.ci/run`. Also moves the integration suite from
/// SQLite to PostgreSQL.
pub const POSTGRES_URL_VARIABLE: &str = "PUNCTUAL_TEST_DATABASE_URL";

/// The server a PostgreSQL test uses when `PUNCTUAL_TEST_DATABASE_URL` is
/// unset: CI's, and the README's.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The admin URL named by `PUNCTUAL_TEST_DATABASE_URL`, if any. Panics when
/// it names something other than PostgreSQL, rather than quietly testing
/// another backend.
pub fn postgres_url_from_env() -> Option<String> {
    let url = std::env::var(POSTGRES_URL_VARIABLE).ok()?;
    if url.is_empty() {
        return None;
    }
    assert!(
        url.starts_with("postgres"),
        "{POSTGRES_URL_VARIABLE} must be a postgres:// URL, not {url:?}"
    );
    Some(url)
}

/// The PostgreSQL server of a test that needs one: `PUNCTUAL_TEST_DATABASE_URL`
/// or the default. Whether it answers is found out by [`TestDatabase::postgres`],
/// which fails the test when it does not.
pub fn postgres_admin_url() -> String {
    postgres_url_from_env().unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned())
}

/// A PostgreSQL database made for one test.
#[derive(Debug, Clone)]
pub struct PostgresDatabase {
    pub admin_url: String,
    pub name: String,
}

/// Where a test's data lives; shared by the restarts of one test.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    /// Holds the SQLite file, and the logs of server processes for either
    /// backend; removed with the database.
    dir: tempfile::TempDir,
    /// Dropped with `self`.
    postgres: Option<PostgresDatabase>,
}

impl TestDatabase {
    /// A temporary SQLite file.
    pub fn sqlite() -> anyhow::Result<TestDatabase> {
        let dir = scratch_dir()?;
        Ok(TestDatabase {
            url: format!("sqlite://{}", dir.path().join("punctual.db").display()),
            backend: Backend::Sqlite,
            dir,
            postgres: None,
        })
    }

    /// A fresh database `punctual_<label>_<random>` on the server of
    /// `admin_url`, beside the database the URL names.
    pub async fn postgres(admin_url: &str, label: &str) -> anyhow::Result<TestDatabase> {
        let name = database_name(label);
        connect_postgres(admin_url)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name} failed on {admin_url}"))?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url, |(base, _)| base);
        Ok(TestDatabase {
            url: format!("{base}/{name}"),
            backend: Backend::Postgres,
            dir: scratch_dir()?,
            postgres: Some(PostgresDatabase {
                admin_url: admin_url.to_owned(),
                name,
            }),
        })
    }

    /// A database on `backend`, PostgreSQL's on the server of `admin_url`.
    pub async fn create(
        backend: Backend,
        admin_url: &str,
        label: &str,
    ) -> anyhow::Result<TestDatabase> {
        match backend {
            Backend::Sqlite => TestDatabase::sqlite(),
            Backend::Postgres => TestDatabase::postgres(admin_url, label).await,
        }
    }

    /// The integration suite's database: on the PostgreSQL server named by
    /// `PUNCTUAL_TEST_DATABASE_URL`, else a SQLite file. Panics when the
    /// server does not answer.
    pub async fn for_this_test() -> TestDatabase {
        match postgres_url_from_env() {
            Some(admin_url) => TestDatabase::postgres(&admin_url, &test_label())
                .await
                .unwrap_or_else(|error| panic!("{error:#}")),
            None => TestDatabase::sqlite().expect("a temporary SQLite database"),
        }
    }

    /// A directory that lives as long as the database, for server logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn postgres_database(&self) -> Option<&PostgresDatabase> {
        self.postgres.as_ref()
    }

    /// Drops the PostgreSQL database while the test still runs (what a
    /// server does when its database disappears).
    pub async fn drop_now(&self) -> anyhow::Result<()> {
        let Some(database) = &self.postgres else {
            return Err(anyhow!("only a PostgreSQL database can be dropped"));
        };
        drop_database(&database.admin_url, &database.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(database) = self.postgres.take() {
            drop_database_blocking(database);
        }
    }
}

fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("punctual-test-")
        .tempdir()
        .context("cannot create a temporary directory")
}

/// The running test's name (libtest names its thread after it), made fit
/// for a database name: `test_` and the last part of its path.
pub fn test_label() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed");
    format!("test_{}", test.rsplit("::").next().unwrap_or(test))
}

/// `punctual_<label>_<8 random hex digits>`: lower-case letters, digits and
/// underscores, within PostgreSQL's 63 bytes.
fn database_name(label: &str) -> String {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63 - "punctual__".len() - 8)
        .collect();
    format!("punctual_{label}_{:08x}", rand::random::<u32>())
}

/// A connection to PostgreSQL, within 10 s.
pub async fn connect_postgres(url: &str) -> anyhow::Result<AsyncPgConnection> {
    tokio::time::timeout(Duration::from_secs(10), AsyncPgConnection::establish(url))
        .await
        .map_err(|_| anyhow!("PostgreSQL at {url} did not answer within 10 s"))?
        .with_context(|| {
            format!(
                "PostgreSQL at {url} is unreachable: start it, or name another server \
                 with {POSTGRES_URL_VARIABLE}=postgres://…"
            )
        })
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    connect_postgres(admin_url)
        .await?
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .with_context(|| format!("DROP DATABASE {name} failed"))
}

/// Blocks, on a thread of its own: it is called from `Drop`, which may run
/// inside a test's runtime, where a future cannot be blocked on.
fn drop_database_blocking(database: PostgresDatabase) {
    let dropped = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a runtime")?
            .block_on(drop_database(&database.admin_url, &database.name))
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("warning: test database left behind: {error:#}"),
        Err(_) => eprintln!("warning: dropping the test database panicked"),
    }
}
