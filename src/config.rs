//! Configuration, read in one place: command-line flags, each with an
//! environment variable as fallback. `punctual serve --help` lists them all
//! with their defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::TokenGrant;
use crate::engine::limits::RateLimit;
use crate::scheduler::SuggestConfig;

#[derive(Debug, Parser)]
#[command(
    name = "punctual",
    version,
    about = "Publishes scheduled social-media posts at their exact instant"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service.
    #[command(
        after_help = "Logs: RUST_LOG (default info). Traces and metrics: exported with OTLP/gRPC \
                      when OTEL_EXPORTER_OTLP_ENDPOINT is set; OTEL_SDK_DISABLED=true turns \
                      OpenTelemetry off (see docs/operations.md, Observability)."
    )]
    Serve(Box<ServeConfig>),
    /// Print the SHA-256 digest of a bearer token, for --auth-tokens-file.
    HashToken(crate::cli::admin::HashTokenArgs),
    /// Probe a server's gRPC health; exit 0 when it is SERVING, 1 otherwise.
    HealthCheck(crate::cli::admin::HealthCheckArgs),
    /// Write the API's encoded FileDescriptorSet (the .proto files and their
    /// imports) to standard output or a file; needs no server.
    Descriptor(crate::cli::descriptor::DescriptorArgs),
    /// The client commands (`schedule`, `list`, `calendar`, …), talking to a
    /// running server.
    #[command(flatten)]
    Client(Box<crate::cli::ClientCommand>),
}

pub(crate) fn parse_duration(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input)
        .map_err(|error| format!("{error} (e.g. \"500ms\", \"2s\", \"1h\")"))
}

fn parse_platform_url(input: &str) -> Result<(String, String), String> {
    let (platform, url) = input
        .split_once('=')
        .ok_or_else(|| format!("{input:?}: expected PLATFORM=URL"))?;
    Ok((platform.trim().to_ascii_lowercase(), url.trim().to_owned()))
}

fn parse_rate_limit(input: &str) -> Result<(String, RateLimit), String> {
    let (platform, limit) = input
        .split_once('=')
        .ok_or_else(|| format!("{input:?}: expected PLATFORM=N/DURATION"))?;
    Ok((
        platform.trim().to_ascii_lowercase(),
        RateLimit::parse(limit)?,
    ))
}

/// `PLATFORM=RULES`; the rules are checked here and parsed again at start-up.
fn parse_prior_override(input: &str) -> Result<(String, String), String> {
    let (platform, rules) = input
        .split_once('=')
        .ok_or_else(|| format!("{input:?}: expected PLATFORM=RULES"))?;
    let rules = rules.replace(';', ",");
    crate::domain::suggest::parse_prior(&rules)?;
    Ok((platform.trim().to_ascii_lowercase(), rules))
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the gRPC server listens on. On an address other than
    /// loopback, auth tokens are required (see --allow-unauthenticated).
    #[arg(long, env = "PUNCTUAL_LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub listen_addr: SocketAddr,

    /// `sqlite://<file>` (created if missing) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "PUNCTUAL_DATABASE_URL",
        default_value = "sqlite://punctual.db"
    )]
    pub database_url: String,

    /// Database connections held open (on PostgreSQL, all opened at start-up).
    #[arg(long, env = "PUNCTUAL_DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: usize,

    /// Where posts are POSTed when they are due.
    #[arg(
        long,
        env = "PUNCTUAL_PUBLISHER_URL",
        default_value = "http://127.0.0.1:8080/publish"
    )]
    pub publisher_url: String,

    /// Per-platform publisher URL, `PLATFORM=URL`; repeat the flag, or
    /// separate entries with commas in the variable.
    #[arg(
        long = "platform-publisher-url",
        env = "PUNCTUAL_PLATFORM_PUBLISHER_URLS",
        value_delimiter = ',',
        value_parser = parse_platform_url
    )]
    pub platform_publisher_urls: Vec<(String, String)>,

    /// Secret for the HMAC-SHA256 signature of every request to the
    /// publisher. Without it requests are not signed.
    #[arg(long, env = "PUNCTUAL_PUBLISHER_SECRET", hide_env_values = true)]
    pub publisher_secret: Option<String>,

    /// Time limit of one publish request.
    #[arg(long, env = "PUNCTUAL_PUBLISH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// Publish attempts per post before it is dead-lettered.
    #[arg(long, env = "PUNCTUAL_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Backoff before the second attempt; doubles for each later one (with jitter).
    #[arg(long, env = "PUNCTUAL_RETRY_BASE_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub retry_base_delay: Duration,

    /// Longest backoff between attempts.
    #[arg(long, env = "PUNCTUAL_RETRY_MAX_DELAY", default_value = "5m", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Publish attempts running at once.
    #[arg(long, env = "PUNCTUAL_MAX_CONCURRENT_PUBLISHES", default_value_t = 64)]
    pub max_concurrent_publishes: usize,

    /// Posts are claimed in the database this long before their instant and
    /// published exactly at it; meanwhile they can no longer be edited.
    #[arg(long, env = "PUNCTUAL_CLAIM_LEAD", default_value = "100ms", value_parser = parse_duration)]
    pub claim_lead: Duration,

    /// A post found due longer ago than this (e.g. after downtime) is
    /// dead-lettered with the reason `missed` instead of published late.
    #[arg(long, env = "PUNCTUAL_MISSED_FIRE_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub missed_fire_window: Duration,

    /// Timers are held in memory for posts due within this horizon; later
    /// posts are read in as the horizon moves (at most 700 days).
    #[arg(long, env = "PUNCTUAL_LOOKAHEAD_HORIZON", default_value = "1h", value_parser = parse_duration)]
    pub lookahead_horizon: Duration,

    /// How far in the past a requested instant may be (it then fires at once).
    #[arg(long, env = "PUNCTUAL_PAST_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub past_grace: Duration,

    /// How far ahead a post may be scheduled.
    #[arg(long, env = "PUNCTUAL_MAX_SCHEDULE_AHEAD", default_value = "3660days", value_parser = parse_duration)]
    pub max_schedule_ahead: Duration,

    /// Largest payload accepted, in bytes of JSON.
    #[arg(long, env = "PUNCTUAL_MAX_PAYLOAD_BYTES", default_value_t = 65_536)]
    pub max_payload_bytes: usize,

    /// Time limit of one RPC (streams excepted).
    #[arg(long, env = "PUNCTUAL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Most publishes per business on a platform per window,
    /// `PLATFORM=N/DURATION` (e.g. `instagram=25/1h`); repeat the flag, or
    /// separate entries with commas in the variable. A burst beyond it is
    /// published as the window allows, in order.
    #[arg(
        long = "rate-limit",
        env = "PUNCTUAL_RATE_LIMITS",
        value_delimiter = ',',
        value_parser = parse_rate_limit
    )]
    pub rate_limits: Vec<(String, RateLimit)>,

    /// Replaces the built-in table of good posting hours of a platform,
    /// `PLATFORM=RULES` with rules like `*@00-24=0.1;mon-fri@09-12=0.9`
    /// (later rules win; separate rules with `;` here); repeat the flag.
    #[arg(long = "suggest-prior", env = "PUNCTUAL_SUGGEST_PRIORS", value_delimiter = ' ', value_parser = parse_prior_override)]
    pub suggest_priors: Vec<(String, String)>,

    /// Least time between two suggested or scheduled posts of one platform.
    #[arg(long, env = "PUNCTUAL_SUGGEST_MIN_GAP", default_value = "2h", value_parser = parse_duration)]
    pub suggest_min_gap: Duration,

    /// How long shutdown waits for publish attempts in flight.
    #[arg(long, env = "PUNCTUAL_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// This replica's name in partition leases (PostgreSQL). Must be unique
    /// per process; the default is the host name and a random suffix.
    #[arg(long, env = "PUNCTUAL_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// How long a replica's partition leases last unless renewed
    /// (PostgreSQL): the partitions of a replica that dies are taken over
    /// within this plus a third of it. At least 1s.
    #[arg(long, env = "PUNCTUAL_LEASE_DURATION", default_value = "6s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// Time between health checks (database reachable, engine serving due
    /// posts) behind `grpc.health.v1`.
    #[arg(long, env = "PUNCTUAL_HEALTH_CHECK_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub health_check_interval: Duration,

    /// Health reports NOT_SERVING when posts are overdue by this much and
    /// nothing was claimed meanwhile.
    #[arg(long, env = "PUNCTUAL_HEALTH_STALL", default_value = "60s", value_parser = parse_duration)]
    pub health_stall: Duration,

    /// File of bearer tokens, one per line: `<sha256-hex-of-token>
    /// <business>[,<business>…]`, or `<sha256-hex-of-token> *` for every
    /// business; `#` starts a comment. `punctual hash-token` makes the digest.
    #[arg(long, env = "PUNCTUAL_AUTH_TOKENS_FILE", value_name = "PATH")]
    pub auth_tokens_file: Option<PathBuf>,

    /// One bearer token, `SHA256_HEX=BUSINESS[,BUSINESS…]` or
    /// `SHA256_HEX=*`; repeat the flag, or separate entries with `;` in the
    /// variable. Adds to the tokens file.
    #[arg(
        long = "auth-token-hash",
        env = "PUNCTUAL_AUTH_TOKEN_HASHES",
        value_name = "HASH=BUSINESSES",
        value_delimiter = ';',
        hide_env_values = true,
        value_parser = TokenGrant::parse_assignment
    )]
    pub auth_token_hashes: Vec<TokenGrant>,

    /// Serve without tokens on an address other than loopback. Only for a
    /// network where every peer is trusted; a warning is logged at start.
    #[arg(long, env = "PUNCTUAL_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Most `punctual.v1.Scheduler` calls handled at once; a call beyond it
    /// is refused at once with RESOURCE_EXHAUSTED rather than queued.
    /// `WatchEvents` streams count only while they start.
    #[arg(long, env = "PUNCTUAL_MAX_CONCURRENT_REQUESTS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,

    /// Most `WatchEvents` streams open at once; one more is refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "PUNCTUAL_MAX_WATCHERS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watchers: u32,

    /// Largest request message accepted, in bytes; a larger one is refused
    /// with OUT_OF_RANGE before it is read into memory.
    #[arg(long, env = "PUNCTUAL_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_request_bytes: u32,
}

impl ServeConfig {
    /// The suggestion settings, with operator priors parsed.
    pub fn suggest_config(&self) -> Result<SuggestConfig, String> {
        let mut priors = HashMap::new();
        for (platform, rules) in &self.suggest_priors {
            priors.insert(
                platform.clone(),
                crate::domain::suggest::parse_prior(rules)?,
            );
        }
        Ok(SuggestConfig {
            priors,
            min_gap: chrono::Duration::from_std(self.suggest_min_gap)
                .map_err(|error| error.to_string())?,
        })
    }

    pub fn rate_limits(&self) -> HashMap<String, RateLimit> {
        self.rate_limits.iter().cloned().collect()
    }

    pub fn platform_urls(&self) -> HashMap<String, String> {
        self.platform_publisher_urls.iter().cloned().collect()
    }

    /// The configuration with every default, for embedding and tests.
    pub fn with_defaults() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ServeConfig,
        }
        // Only the program name is parsed; the environment still applies, as
        // it does for the binary.
        match Defaults::try_parse_from(["punctual"]) {
            Ok(defaults) => defaults.config,
            Err(error) => error.exit(),
        }
    }
}
