//! The client subcommands of the `punctual` binary (`schedule`, `list`,
//! `calendar`, `watch`, …): each one turns its flags into one gRPC request to
//! a running `punctual serve`, and prints the answer as an aligned table for
//! a person or as JSON for a script.
//!
//! This module owns the command tree, the options every client command
//! shares (`--server`, `--token`, `--output`, `--tz`), the one way of
//! connecting ([`Session::connect`]), and the exit codes: 0 on success, 1
//! when the server refuses or cannot be reached, 2 for a command line that
//! makes no sense (clap's own usage errors exit 2 as well).
//!
//! What lives where:
//! - [`time`]: reading instants from the command line, showing them in a zone;
//! - [`output`]: tables, the [`Render`](output::Render) trait, printing;
//! - [`json`]: the JSON form of every response;
//! - [`error`]: what can go wrong and how it is reported;
//! - [`posts`], [`queue`], [`slots`], [`calendar`]: the commands themselves;
//! - [`admin`]: the operator commands `hash-token` and `health-check`;
//! - [`descriptor`]: `descriptor`, the API's descriptor set (no server).
//!
//! The CLI converts only what it must (instants into timestamps, the zone it
//! displays in) and passes everything the server interprets — zone names,
//! local times, dates — verbatim, so that a mistake there is explained by the
//! server's own message.

pub mod admin;
pub mod calendar;
pub mod descriptor;
pub mod error;
pub mod json;
pub mod output;
pub mod posts;
pub mod queue;
pub mod slots;
pub mod time;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::domain::time::{DstPolicy, GapPolicy, OverlapPolicy, TimeZone};
use crate::grpc::pb;
use crate::grpc::pb::scheduler_client::SchedulerClient;
pub use error::CliError;
use output::{OutputFormat, Render, View};

/// How long connecting to the server may take before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client commands; `punctual --help` lists them next to `serve`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Schedule one post.
    Schedule(posts::ScheduleArgs),
    /// List posts, oldest instant first.
    List(posts::ListArgs),
    /// Show one post with its attempt history.
    Show(posts::ShowArgs),
    /// Move a pending post to another instant.
    Reschedule(posts::RescheduleArgs),
    /// Cancel a pending post.
    Cancel(posts::CancelArgs),
    /// Publish a pending post at once (same id, same idempotency key).
    RunNow(posts::RunNowArgs),
    /// Schedule one post per content id following a recurrence.
    Bulk(posts::BulkArgs),
    /// Draw a month (or a week) of posts as a calendar.
    Calendar(calendar::CalendarArgs),
    /// Queue health: counts by status, what is due next, punctuality.
    Queue(queue::QueueArgs),
    /// Review dead-lettered posts.
    #[command(subcommand)]
    DeadLetters(queue::DeadLetterCommand),
    /// Stop publishing for a business (or one of its platforms).
    Pause(queue::PauseArgs),
    /// Lift a pause.
    Resume(queue::ResumeArgs),
    /// List the pauses in force.
    Pauses(queue::PausesArgs),
    /// Weekly posting slots of a business on a platform.
    #[command(subcommand)]
    Slots(slots::SlotsCommand),
    /// Suggest good times to post.
    Suggest(slots::SuggestArgs),
    /// Print every change of every post as it happens, until Ctrl-C.
    Watch(posts::WatchArgs),
}

/// The options of every client command.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options")]
pub struct CommonArgs {
    /// The Punctual server to talk to.
    #[arg(
        long,
        env = "PUNCTUAL_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub server: String,

    /// Bearer token sent with every call (prefer the variable: a flag is
    /// visible to other users of the machine).
    #[arg(
        long,
        env = "PUNCTUAL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// How to print the result.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// IANA zone to show times in, and to read local times on the command
    /// line in [default: the system zone, else UTC].
    #[arg(long, value_name = "ZONE", value_parser = time::parse_zone)]
    pub tz: Option<TimeZone>,
}

impl ClientCommand {
    fn common(&self) -> &CommonArgs {
        match self {
            ClientCommand::Schedule(args) => &args.common,
            ClientCommand::List(args) => &args.common,
            ClientCommand::Show(args) => &args.common,
            ClientCommand::Reschedule(args) => &args.common,
            ClientCommand::Cancel(args) => &args.common,
            ClientCommand::RunNow(args) => &args.common,
            ClientCommand::Bulk(args) => &args.common,
            ClientCommand::Calendar(args) => &args.common,
            ClientCommand::Queue(args) => &args.common,
            ClientCommand::DeadLetters(command) => command.common(),
            ClientCommand::Pause(args) => &args.common,
            ClientCommand::Resume(args) => &args.common,
            ClientCommand::Pauses(args) => &args.common,
            ClientCommand::Slots(command) => command.common(),
            ClientCommand::Suggest(args) => &args.common,
            ClientCommand::Watch(args) => &args.common,
        }
    }
}

/// Runs one client command and reports how it went; never panics on what a
/// server or a user sends.
pub fn run(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return error::report(&CliError::Io(error)),
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error::report(&error),
    }
}

async fn execute(command: ClientCommand) -> Result<(), CliError> {
    let session = Session::connect(command.common()).await?;
    match command {
        ClientCommand::Schedule(args) => posts::schedule(&session, args).await,
        ClientCommand::List(args) => posts::list(&session, args).await,
        ClientCommand::Show(args) => posts::show(&session, args).await,
        ClientCommand::Reschedule(args) => posts::reschedule(&session, args).await,
        ClientCommand::Cancel(args) => posts::cancel(&session, args).await,
        ClientCommand::RunNow(args) => posts::run_now(&session, args).await,
        ClientCommand::Bulk(args) => posts::bulk(&session, args).await,
        ClientCommand::Watch(args) => posts::watch(&session, args).await,
        ClientCommand::Calendar(args) => calendar::calendar(&session, args).await,
        ClientCommand::Queue(args) => queue::stats(&session, args).await,
        ClientCommand::DeadLetters(command) => queue::dead_letters(&session, command).await,
        ClientCommand::Pause(args) => queue::pause(&session, args).await,
        ClientCommand::Resume(args) => queue::resume(&session, args).await,
        ClientCommand::Pauses(args) => queue::pauses(&session, args).await,
        ClientCommand::Slots(command) => slots::slots(&session, command).await,
        ClientCommand::Suggest(args) => slots::suggest(&session, args).await,
    }
}

/// Adds `authorization: Bearer <token>` to every call, when a token is set.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, CliError> {
        match token.map(str::trim).filter(|token| !token.is_empty()) {
            None => Ok(Self(None)),
            Some(token) => MetadataValue::try_from(format!("Bearer {token}"))
                .map(|value| Self(Some(value)))
                .map_err(|_| {
                    CliError::Usage("the token must be printable ASCII without spaces".to_owned())
                }),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The generated client with the caller's token attached.
pub type Client = SchedulerClient<InterceptedService<Channel, BearerToken>>;

/// A connection to the server plus how to show what it answers.
pub struct Session {
    client: Client,
    output: OutputFormat,
    view: View,
}

impl Session {
    /// Connects to `--server`, sending `--token` with every call.
    pub async fn connect(common: &CommonArgs) -> Result<Session, CliError> {
        let token = BearerToken::new(common.token.as_deref())?;
        let channel = connect_channel(&common.server).await?;
        // The CLI receives what the server sends at most (4 MiB, the
        // default of every gRPC client), and asks for gzip answers.
        let client = SchedulerClient::with_interceptor(channel, token)
            .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        Ok(Session {
            client,
            output: common.output,
            view: View::for_stdout(common.tz.unwrap_or_else(time::system_zone)),
        })
    }

    /// A handle for one call (clones share the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The zone times are shown in and local command-line times are read in.
    pub fn zone(&self) -> TimeZone {
        self.view.zone
    }

    pub fn output(&self) -> OutputFormat {
        self.output
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    /// Prints a response in the chosen format.
    pub fn emit(&self, response: &impl Render) -> Result<(), CliError> {
        output::emit(self.output, &self.view, response)
    }
}

/// Connects to a server; a bare `host:port` means plain-text HTTP/2.
pub async fn connect_channel(server: &str) -> Result<Channel, CliError> {
    let server = server.trim();
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|error| CliError::Usage(format!("invalid --server {server:?}: {error}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    endpoint.connect().await.map_err(|error| CliError::Connect {
        server: url,
        reason: error::causes(&error),
    })
}

/// Weekdays as written on the command line (`mon`, `tuesday`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeekdayArg {
    #[value(alias = "monday")]
    Mon,
    #[value(alias = "tuesday")]
    Tue,
    #[value(alias = "wednesday")]
    Wed,
    #[value(alias = "thursday")]
    Thu,
    #[value(alias = "friday")]
    Fri,
    #[value(alias = "saturday")]
    Sat,
    #[value(alias = "sunday")]
    Sun,
}

impl WeekdayArg {
    pub fn to_proto(self) -> pb::DayOfWeek {
        match self {
            WeekdayArg::Mon => pb::DayOfWeek::Monday,
            WeekdayArg::Tue => pb::DayOfWeek::Tuesday,
            WeekdayArg::Wed => pb::DayOfWeek::Wednesday,
            WeekdayArg::Thu => pb::DayOfWeek::Thursday,
            WeekdayArg::Fri => pb::DayOfWeek::Friday,
            WeekdayArg::Sat => pb::DayOfWeek::Saturday,
            WeekdayArg::Sun => pb::DayOfWeek::Sunday,
        }
    }
}

/// `Mon`, `Tue`, … for people; `?` for an unknown or unspecified day.
pub fn weekday_label(weekday: i32) -> &'static str {
    match pb::DayOfWeek::try_from(weekday) {
        Ok(pb::DayOfWeek::Monday) => "Mon",
        Ok(pb::DayOfWeek::Tuesday) => "Tue",
        Ok(pb::DayOfWeek::Wednesday) => "Wed",
        Ok(pb::DayOfWeek::Thursday) => "Thu",
        Ok(pb::DayOfWeek::Friday) => "Fri",
        Ok(pb::DayOfWeek::Saturday) => "Sat",
        Ok(pb::DayOfWeek::Sunday) => "Sun",
        Ok(pb::DayOfWeek::Unspecified) | Err(_) => "?",
    }
}

/// `--shift-forward` / `--later`: what a local time means across a
/// daylight-saving change.
#[derive(Debug, Clone, Args)]
pub struct DstArgs {
    /// A local time skipped by a spring-forward change moves forward by the
    /// length of the gap (default: refuse it).
    #[arg(long)]
    pub shift_forward: bool,

    /// A local time that happens twice (fall-back) means the second
    /// occurrence (default: the first).
    #[arg(long)]
    pub later: bool,
}

impl DstArgs {
    pub fn gap(&self) -> pb::DstGapPolicy {
        if self.shift_forward {
            pb::DstGapPolicy::DstGapShiftForward
        } else {
            pb::DstGapPolicy::DstGapReject
        }
    }

    pub fn overlap(&self) -> pb::DstOverlapPolicy {
        if self.later {
            pb::DstOverlapPolicy::DstOverlapLater
        } else {
            pb::DstOverlapPolicy::DstOverlapEarlier
        }
    }

    /// The same choice, for local times the CLI resolves itself.
    pub fn policy(&self) -> DstPolicy {
        DstPolicy {
            gap: if self.shift_forward {
                GapPolicy::ShiftForward
            } else {
                GapPolicy::Reject
            },
            overlap: if self.later {
                OverlapPolicy::Later
            } else {
                OverlapPolicy::Earlier
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use crate::config::{Cli, Command};

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("punctual").chain(line.split_whitespace()))
    }

    #[test]
    fn every_documented_command_line_parses() {
        for line in [
            "schedule --business B --content C --platform instagram --at 2025-10-15T12:00:00Z",
            "schedule --business B --content C --platform x --local 2025-10-15T14:00 --zone Europe/Paris --payload {} --request-id R --shift-forward --later",
            "schedule --business B --content C --platform x --next-free-slot",
            "list --business B --status scheduled --status dead-lettered --platform x --from 2025-10-01 --to 2025-11-01 --page-size 10 --all",
            "show ID --output json --tz Asia/Tokyo --server localhost:1",
            "reschedule ID --at 2025-10-15T12:00:00Z --expected-version 3",
            "reschedule ID --local 2025-10-15T14:00 --zone Europe/Paris",
            "cancel ID",
            "bulk --business B --platform P --content a,b,c --pattern weekly --weekdays mon,thu --start-date 2025-10-01 --time 09:00 --zone UTC",
            "bulk --business B --platform P --content a --pattern every-n-hours --interval-hours 6 --start-date 2025-10-01 --time 09:00 --zone UTC",
            "bulk --business B --platform P --content a,b --pattern distribute --start-date 2025-10-01 --zone UTC --window-end 17:00 --validate-only",
            "calendar --business B --month 2025-10 --tz Europe/Paris --week-start sun --ascii",
            "calendar --business B --week 2025-10-06",
            "queue --business B",
            "dead-letters list --business B",
            "dead-letters requeue ID --at 2025-10-15T12:00:00Z",
            "dead-letters requeue ID --now",
            "dead-letters discard ID",
            "pause --business B --platform x",
            "resume --business B --missed keep-for-review",
            "pauses",
            "slots get --business B --platform P",
            "slots set --business B --platform P --zone Europe/Paris --slot mon@09:00 --slot tue@12:30",
            "slots set --business B --platform P --zone Europe/Paris --clear",
            "suggest --business B --platform P --count 3 --from 2025-10-01 --to 2025-10-08 --tz Europe/Paris",
            "watch --business B",
            "list --business B --token T",
        ] {
            match parse(line) {
                Ok(Cli {
                    command: Command::Client(_),
                }) => {}
                Ok(other) => panic!("{line}: parsed as {other:?}"),
                Err(error) => panic!("{line}: {error}"),
            }
        }
    }

    #[test]
    fn operator_commands_parse() {
        assert!(matches!(
            parse("hash-token T"),
            Ok(Cli {
                command: Command::HashToken(_)
            })
        ));
        assert!(matches!(
            parse(
                "health-check --server http://127.0.0.1:1 --service punctual.v1.Scheduler --timeout 2s"
            ),
            Ok(Cli {
                command: Command::HealthCheck(_)
            })
        ));
        let digest = crate::auth::TokenDigest::of("T").to_hex();
        let serve = format!(
            "serve --listen-addr 0.0.0.0:50051 --auth-tokens-file /run/tokens --auth-token-hash {digest}=biz-a,biz-b --auth-token-hash {digest}=* --max-concurrent-requests 2 --max-request-bytes 4096 --max-watchers 3"
        );
        match parse(&serve) {
            Ok(Cli {
                command: Command::Serve(config),
            }) => {
                assert_eq!(config.auth_token_hashes.len(), 2);
                assert_eq!(config.max_concurrent_requests, 2);
            }
            other => panic!("{serve}: {other:?}"),
        }
        assert!(parse(&format!("serve --auth-token-hash {digest}")).is_err());
        assert!(parse("serve --max-concurrent-requests 0").is_err());
    }

    #[test]
    fn contradictory_command_lines_are_refused() {
        for line in [
            "schedule --business B --content C --platform x",
            "schedule --business B --content C --platform x --at T --local L",
            "reschedule ID",
            "bulk --business B --platform P --content a --pattern weekly --start-date D --time 09:00 --zone Z",
            "bulk --business B --platform P --content a --pattern daily --start-date D --zone Z",
            "calendar --business B",
            "calendar --business B --month 2025-10 --week 2025-10-06",
            "calendar --business B --month October",
            "dead-letters requeue ID --at T --now",
            "slots set --business B --platform P --zone Z",
            "slots set --business B --platform P --zone Z --slot monday09:00",
            "list --all --page-token T",
            "list --output yaml",
            "list --tz Mars/Olympus",
        ] {
            let error = parse(line)
                .err()
                .unwrap_or_else(|| panic!("{line}: accepted"));
            assert_eq!(error.exit_code(), 2, "{line}: {error}");
        }
    }
}
