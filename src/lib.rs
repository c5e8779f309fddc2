//! Punctual publishes scheduled social-media posts at their exact instant.
//!
//! The crate is one service, split by what each part owns:
//!
//! * [`domain`]: posts, their life cycle, time zones and recurrences. Knows
//!   nothing of gRPC, SQL or HTTP.
//! * [`scheduler`]: the application service: validates requests, writes
//!   through [`storage`], tells the [`engine`] and emits [`events`].
//! * [`lifecycle`]: the one writer of a post's status: applies a
//!   [`domain::Transition`] as a compare-and-set and announces it.
//! * [`storage`]: the database (SQLite or PostgreSQL through diesel-async).
//!   The only module that knows SQL.
//! * [`engine`]: the single task that owns the timers and fires each post at
//!   its instant, claiming it in the database before publishing.
//! * [`cluster`]: replicas sharing PostgreSQL: partition leases,
//!   rebalancing, and the notifications that keep each owner's timers
//!   current.
//! * [`publisher`]: the HTTP client that delivers a post to the publishing
//!   service, and the retry policy.
//! * [`stats`]: queue health counters kept in memory.
//! * [`health`]: the watchdog behind `grpc.health.v1`.
//! * [`auth`]: bearer tokens (kept as digests) and the businesses each may
//!   touch.
//! * [`grpc`]: the tonic service; the only module that knows protobuf. It
//!   authenticates calls, checks their business, and sheds load.
//! * [`telemetry`]: logs, OpenTelemetry spans and metrics, OTLP export.
//! * [`app`]: wiring, start-up and graceful shutdown.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod engine;
pub mod events;
pub mod grpc;
pub mod health;
pub mod lifecycle;
pub mod publisher;
pub mod scheduler;
pub mod stats;
pub mod storage;
pub mod telemetry;
