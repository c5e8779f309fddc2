//! Configuration, read in one place: command-line flags, each with an
//! environment variable as fallback. `punctual serve --help` lists them all
//! with their defaults, and docs/operations.md's table is checked against
//! them by a test.
//!
//! Every bound of a setting is decided here, by the flag's value parser: a
//! value out of range is refused at start-up with a message naming the
//! flag, so the code that uses a setting never clamps it.

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

/// A value parser for a duration between `min` and `max`, both included.
fn duration_between(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |input| {
        let duration = parse_duration(input)?;
        if duration < min {
            Err(format!("must be at least {}", format_bound(min)))
        } else if duration > max {
            Err(format!("must be at most {}", format_bound(max)))
        } else {
            Ok(duration)
        }
    }
}

/// A bound as it would be written on the command line: whole days in days
/// (humantime would write 700 days as `1year 10months 30days 8h 24m`).
fn format_bound(bound: Duration) -> String {
    match bound.as_secs() / DAY.as_secs() {
        days @ 2..
            if bound.as_secs().is_multiple_of(DAY.as_secs()) && bound.subsec_nanos() == 0 =>
        {
            format!("{days}days")
        }
        _ => humantime::format_duration(bound).to_string(),
    }
}

/// A value parser for a count of at least `min`.
fn count_from(
    min: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |input| match input.trim().parse::<usize>() {
        Ok(count) if count >= min => Ok(count),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(error) => Err(error.to_string()),
    }
}

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Shorter health checks would be mostly database round trips.
const MIN_HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// A post is `PUBLISHING`, and cannot be edited, for the whole lead.
const MAX_CLAIM_LEAD: Duration = Duration::from_secs(60);
/// Instants are kept as microseconds since 1970 and compared with chrono;
/// a century ahead keeps far inside both.
const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(36_525 * 24 * 3600);
/// Suggestions are planned week by week.
const MAX_SUGGEST_MIN_GAP: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// `PLATFORM=RULES`, with the rules separated by `;`.
fn parse_prior_override(input: &str) -> Result<(String, Prior), String> {
    let (platform, rules) = input
        .split_once('=')
        .ok_or_else(|| format!("{input:?}: expected PLATFORM=RULES"))?;
    let prior = crate::domain::suggest::parse_prior(&rules.replace(';', ","))?;
    Ok((platform.trim().to_ascii_lowercase(), prior))
}

/// The planner counts in chrono's durations.
fn parse_suggest_min_gap(input: &str) -> Result<chrono::Duration, String> {
    let gap = duration_between(Duration::ZERO, MAX_SUGGEST_MIN_GAP)(input)?;
    chrono::Duration::from_std(gap).map_err(|error| error.to_string())
}

/// A platform's weight of each hour of the week, as `--suggest-prior` sets it.
pub type Prior = [f64; crate::domain::suggest::HOURS_PER_WEEK];

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
    #[arg(long, env = "PUNCTUAL_DATABASE_MAX_CONNECTIONS", default_value_t = 8, value_parser = count_from(1))]
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
    #[arg(long, env = "PUNCTUAL_MAX_CONCURRENT_PUBLISHES", default_value_t = 64, value_parser = count_from(1))]
    pub max_concurrent_publishes: usize,

    /// Posts are claimed in the database this long before their instant and
    /// published exactly at it; meanwhile they can no longer be edited. At
    /// most 1m.
    #[arg(long, env = "PUNCTUAL_CLAIM_LEAD", default_value = "100ms", value_parser = duration_between(Duration::ZERO, MAX_CLAIM_LEAD))]
    pub claim_lead: Duration,

    /// A post found due longer ago than this (e.g. after downtime) is
    /// dead-lettered with the reason `missed` instead of published late.
    #[arg(long, env = "PUNCTUAL_MISSED_FIRE_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub missed_fire_window: Duration,

    /// Timers are held in memory for posts due within this horizon; later
    /// posts are read in as the horizon moves. From 1s to 700 days.
    #[arg(long, env = "PUNCTUAL_LOOKAHEAD_HORIZON", default_value = "1h", value_parser = duration_between(SECOND, crate::engine::MAX_HORIZON))]
    pub lookahead_horizon: Duration,

    /// How far in the past a requested instant may be (it then fires at
    /// once). At most 1 day.
    #[arg(long, env = "PUNCTUAL_PAST_GRACE", default_value = "5s", value_parser = duration_between(Duration::ZERO, DAY))]
    pub past_grace: Duration,

    /// How far ahead a post may be scheduled. From 1 day to 36525 days.
    #[arg(long, env = "PUNCTUAL_MAX_SCHEDULE_AHEAD", default_value = "3660days", value_parser = duration_between(DAY, MAX_SCHEDULE_AHEAD))]
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
    pub suggest_priors: Vec<(String, Prior)>,

    /// Least time between two suggested or scheduled posts of one platform.
    /// At most 7 days.
    #[arg(long, env = "PUNCTUAL_SUGGEST_MIN_GAP", default_value = "2h", value_parser = parse_suggest_min_gap)]
    pub suggest_min_gap: chrono::Duration,

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
    #[arg(long, env = "PUNCTUAL_LEASE_DURATION", default_value = "6s", value_parser = duration_between(SECOND, Duration::MAX))]
    pub lease_duration: Duration,

    /// Time between health checks (database reachable, engine serving due
    /// posts) behind `grpc.health.v1`. At least 100ms.
    #[arg(long, env = "PUNCTUAL_HEALTH_CHECK_INTERVAL", default_value = "5s", value_parser = duration_between(MIN_HEALTH_CHECK_INTERVAL, Duration::MAX))]
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
    #[arg(long, env = "PUNCTUAL_MAX_CONCURRENT_REQUESTS", default_value_t = 512, value_parser = count_from(1))]
    pub max_concurrent_requests: usize,

    /// Most `WatchEvents` streams open at once; one more is refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "PUNCTUAL_MAX_WATCHERS", default_value_t = 1024, value_parser = count_from(1))]
    pub max_watchers: usize,

    /// Largest request message accepted, in bytes; a larger one is refused
    /// with OUT_OF_RANGE before it is read into memory.
    #[arg(long, env = "PUNCTUAL_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = count_from(1024))]
    pub max_request_bytes: usize,
}

impl ServeConfig {
    /// The suggestion settings.
    pub fn suggest_config(&self) -> SuggestConfig {
        SuggestConfig {
            priors: self.suggest_priors.iter().cloned().collect(),
            min_gap: self.suggest_min_gap,
        }
    }

    pub fn rate_limits(&self) -> HashMap<String, RateLimit> {
        self.rate_limits.iter().cloned().collect()
    }

    pub fn platform_urls(&self) -> HashMap<String, String> {
        self.platform_publisher_urls.iter().cloned().collect()
    }

    /// Parses `serve`'s flags from `args` (the program name first) without
    /// reading any `PUNCTUAL_*` variable: for embedding and tests, which
    /// must not depend on what the developer exported.
    pub fn try_parse_ignoring_env<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::FromArgMatches as _;
        Self::from_arg_matches(&Self::command_ignoring_env().try_get_matches_from(args)?)
    }

    /// `serve`'s flags with their environment variables taken off.
    fn command_ignoring_env() -> clap::Command {
        Self::augment_args(clap::Command::new("punctual")).mut_args(|arg| arg.env(None))
    }
}

/// Every default of `punctual serve`, without reading the environment.
impl Default for ServeConfig {
    fn default() -> Self {
        Self::try_parse_ignoring_env(["punctual"]).expect("the defaults of `punctual serve` parse")
    }
}

#[cfg(test)]
mod tests {
    use clap::ArgAction;

    use super::*;

    /// The message of refusing `value` for `--flag`.
    fn refusal(flag: &str, value: &str) -> String {
        match ServeConfig::try_parse_ignoring_env(["punctual", flag, value]) {
            Ok(_) => panic!("{flag} {value} was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_flag() {
        for (flag, value, reason) in [
            ("--lookahead-horizon", "500ms", "at least 1s"),
            ("--lookahead-horizon", "701days", "at most 700days"),
            ("--lease-duration", "999ms", "at least 1s"),
            ("--health-check-interval", "50ms", "at least 100ms"),
            ("--claim-lead", "2m", "at most 1m"),
            ("--past-grace", "2days", "at most 1day"),
            ("--max-schedule-ahead", "1h", "at least 1day"),
            ("--max-schedule-ahead", "40000days", "at most 36525days"),
            ("--suggest-min-gap", "8days", "at most 7days"),
            ("--database-max-connections", "0", "at least 1"),
            ("--max-concurrent-publishes", "0", "at least 1"),
            ("--max-concurrent-requests", "0", "at least 1"),
            ("--max-watchers", "0", "at least 1"),
            ("--max-request-bytes", "1023", "at least 1024"),
            ("--max-attempts", "0", "not in 1..=100"),
        ] {
            let message = refusal(flag, value);
            assert!(
                message.contains(flag) && message.contains(reason),
                "{flag} {value}: {message}"
            );
        }
    }

    #[test]
    fn bounds_include_their_ends() {
        let config = ServeConfig::try_parse_ignoring_env([
            "punctual",
            "--lookahead-horizon=1s",
            "--lease-duration=1s",
            "--health-check-interval=100ms",
            "--claim-lead=1m",
            "--max-schedule-ahead=36525days",
        ])
        .expect("bounds are inclusive");
        assert_eq!(config.lookahead_horizon, SECOND);
        assert_eq!(
            ServeConfig::try_parse_ignoring_env(["punctual", "--lookahead-horizon=700days"])
                .expect("the longest horizon")
                .lookahead_horizon,
            crate::engine::MAX_HORIZON
        );
    }

    #[test]
    fn parsing_for_tests_reads_no_variable() {
        let with_env = ServeConfig::augment_args(clap::Command::new("punctual"));
        assert!(with_env.get_arguments().any(|arg| arg.get_env().is_some()));
        let without = ServeConfig::command_ignoring_env();
        let reading: Vec<_> = without
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(reading.is_empty(), "{reading:?}");
    }

    #[test]
    fn the_defaults_ignore_the_environment() {
        // Any PUNCTUAL_* variable of the developer's would only be read by
        // the flags' `env` fallbacks, which `default` leaves out.
        let config = ServeConfig::default();
        assert_eq!(config.listen_addr, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.database_url, "sqlite://punctual.db");
        assert_eq!(config.lookahead_horizon, Duration::from_secs(3600));
        assert_eq!(config.suggest_min_gap, chrono::Duration::hours(2));
        assert!(config.suggest_priors.is_empty());
    }

    /// docs/operations.md's configuration table has one row per flag of
    /// `punctual serve`, in the form `` | `--flag` | `VARIABLE` | default | … ``,
    /// the default in backticks exactly as clap has it, `off` for a switch,
    /// and words (not backticks) when clap has none.
    #[test]
    fn the_configuration_table_matches_the_flags() {
        let operations = include_str!("../docs/operations.md");
        let rows: HashMap<&str, Vec<&str>> = operations
            .lines()
            .filter(|line| line.starts_with("| `--"))
            .map(|line| {
                let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
                let flag = cells[0].trim_start_matches("| ").trim_matches('`');
                (flag, cells)
            })
            .collect();
        let command = ServeConfig::augment_args(clap::Command::new("serve"));
        let mut flags = Vec::new();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let flag = format!("--{long}");
            let row = rows
                .get(flag.as_str())
                .unwrap_or_else(|| panic!("docs/operations.md has no row for {flag}"));
            let env = arg.get_env().expect("every flag has a variable");
            assert_eq!(
                row[1],
                format!("`{}`", env.to_string_lossy()),
                "the variable of {flag}"
            );
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                assert_eq!(row[2], "off", "the default of {flag}");
            } else if defaults.is_empty() {
                assert!(!row[2].starts_with('`'), "{flag} has no default: {row:?}");
            } else {
                assert_eq!(
                    row[2],
                    format!("`{}`", defaults.join(",")),
                    "the default of {flag}"
                );
            }
            flags.push(flag);
        }
        for flag in rows.keys() {
            assert!(
                flags.iter().any(|known| known == flag),
                "docs/operations.md documents {flag}, which `punctual serve` does not have"
            );
        }
    }
}
