//! The one test harness, shared by every test binary and the benchmarks:
//!
//! - [`database`]: a database of a test's own (a temporary SQLite file, or a
//!   fresh PostgreSQL database named after the test, dropped afterwards);
//! - [`receiver`]: the recording HTTP receiver that stands in for the
//!   publishing service;
//! - [`process`]: `punctual` run as a child process with a clean
//!   environment, and `punctual serve` waited on until it is healthy;
//! - [`in_process`]: the server started inside the test process;
//! - [`config`]: the server's configuration with its defaults, never the
//!   developer's `PUNCTUAL_*` variables;
//! - [`free_port`], [`require_tool`] and [`timestamp`].
//!
//! Each binary includes it with `#[path = "../support/mod.rs"] mod support;`
//! (`tests/integration/`) or `#[path = "support/mod.rs"]` (`tests/*.rs`), the
//! benchmarks with `#[path = "../tests/support/mod.rs"]`. A test whose
//! PostgreSQL or tool is missing is `#[ignore]`d with its reason and fails
//! when run explicitly: nothing here skips a test.

// Each binary uses a part of the harness.
#![allow(dead_code)]

pub mod config;
pub mod database;
pub mod in_process;
pub mod process;
pub mod receiver;

use std::net::SocketAddr;

use chrono::{DateTime, Utc};

/// A loopback address nothing listens on right now: the listener that found
/// it is closed at once, for a child process to bind.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("the ephemeral port")
}

/// Panics unless `program` runs and succeeds (with `args`, e.g. `-version`): an ignored
/// test run explicitly fails when its tool is missing, rather than passing.
pub fn require_tool(program: &str, args: &[&str], install: &str) {
    let ran = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "this test needs {program}, and `{program} {}` exited with {status}; {install}",
            args.join(" ")
        ),
        Err(error) => {
            panic!("this test needs {program}, which does not run here ({error}); {install}")
        }
    }
}

/// An instant as protobuf carries it.
pub fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        nanos: instant.timestamp_subsec_nanos() as i32,
    }
}
