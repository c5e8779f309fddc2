//! The commands on the queue as a whole: `queue` (health), `dead-letters`
//! (review, requeue, discard), `pause`, `resume` and `pauses`.

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use super::json;
use super::output::{Render, Table, View, fields, or_dash};
use super::posts::{collect_pages, status_label};
use super::time::{parse_instant, show_timestamp};
use super::{CliError, CommonArgs, Session};
use crate::domain::time::DstPolicy;
use crate::grpc::pb;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Only this business (all when omitted).
    #[arg(long)]
    pub business: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead-lettered posts with their last error, by scheduled instant.
    List(DeadLetterListArgs),
    /// Schedule a dead-lettered post again (same id, same idempotency key).
    Requeue(RequeueArgs),
    /// Give up on a dead-lettered post for good.
    Discard(DiscardArgs),
}

impl DeadLetterCommand {
    pub(super) fn common(&self) -> &CommonArgs {
        match self {
            DeadLetterCommand::List(args) => &args.common,
            DeadLetterCommand::Requeue(args) => &args.common,
            DeadLetterCommand::Discard(args) => &args.common,
        }
    }
}

#[derive(Debug, Args)]
pub struct DeadLetterListArgs {
    #[arg(long)]
    pub business: Option<String>,
    /// Posts per page.
    #[arg(long, value_name = "N")]
    pub page_size: Option<i32>,
    /// Continue from the page token a previous listing printed.
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Follow the page tokens and print every dead letter.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("when").args(["at", "now"])))]
pub struct RequeueArgs {
    /// The post's id.
    pub id: String,
    /// When to publish: RFC 3339, or a local date-time in the --tz zone.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Publish at once (the default).
    #[arg(long)]
    pub now: bool,
    /// Requeue only if the post is still at this version.
    #[arg(long, value_name = "V")]
    pub expected_version: Option<i64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// The post's id.
    pub id: String,
    /// Discard only if the post is still at this version.
    #[arg(long, value_name = "V")]
    pub expected_version: Option<i64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[arg(long)]
    pub business: String,
    /// Only this platform (the whole business when omitted).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--missed`: what happens to posts whose instant passed during the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MissedArg {
    /// Publish them at once.
    PublishNow,
    /// Dead-letter them for review.
    KeepForReview,
    /// Cancel them.
    Skip,
}

impl MissedArg {
    fn to_proto(self) -> pb::resume_queue_request::MissedPolicy {
        use pb::resume_queue_request::MissedPolicy;
        match self {
            MissedArg::PublishNow => MissedPolicy::PublishNow,
            MissedArg::KeepForReview => MissedPolicy::KeepForReview,
            MissedArg::Skip => MissedPolicy::Skip,
        }
    }
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[arg(long)]
    pub business: String,
    #[arg(long)]
    pub platform: Option<String>,
    /// What to do with posts missed during the pause [server default:
    /// publish-now].
    #[arg(long, value_enum)]
    pub missed: Option<MissedArg>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct PausesArgs {
    /// Only this business's pauses.
    #[arg(long)]
    pub business: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn stats(session: &Session, args: QueueArgs) -> Result<(), CliError> {
    let request = pb::GetQueueStatsRequest {
        business_id: args.business.unwrap_or_default(),
    };
    let stats = session
        .client()
        .get_queue_stats(request)
        .await?
        .into_inner();
    session.emit(&stats)
}

pub async fn dead_letters(session: &Session, command: DeadLetterCommand) -> Result<(), CliError> {
    match command {
        DeadLetterCommand::List(args) => {
            let request = pb::ListDeadLettersRequest {
                business_id: args.business.unwrap_or_default(),
                page_size: args.page_size.unwrap_or(0),
                page_token: String::new(),
                view: pb::ScheduleView::Full.into(),
            };
            let (schedules, next_page_token) = collect_pages(
                args.page_token.unwrap_or_default(),
                args.all,
                |page_token| {
                    let mut client = session.client();
                    let request = pb::ListDeadLettersRequest {
                        page_token,
                        ..request.clone()
                    };
                    async move {
                        let page = client.list_dead_letters(request).await?.into_inner();
                        Ok((page.schedules, page.next_page_token))
                    }
                },
            )
            .await?;
            session.emit(&pb::ListDeadLettersResponse {
                schedules,
                next_page_token,
            })
        }
        DeadLetterCommand::Requeue(args) => {
            let at = args
                .at
                .as_deref()
                .map(|text| parse_instant(text, session.zone(), DstPolicy::default()))
                .transpose()?
                .map(pb::timestamp);
            let request = pb::RequeueDeadLetterRequest {
                id: args.id,
                now: at.is_none(),
                at,
                expected_version: args.expected_version,
            };
            let post = session
                .client()
                .requeue_dead_letter(request)
                .await?
                .into_inner();
            session.emit(&post)
        }
        DeadLetterCommand::Discard(args) => {
            let request = pb::DiscardDeadLetterRequest {
                id: args.id,
                expected_version: args.expected_version,
            };
            let post = session
                .client()
                .discard_dead_letter(request)
                .await?
                .into_inner();
            session.emit(&post)
        }
    }
}

pub async fn pause(session: &Session, args: PauseArgs) -> Result<(), CliError> {
    let request = pb::PauseQueueRequest {
        business_id: args.business,
        platform: args.platform.unwrap_or_default(),
    };
    let pause = session.client().pause_queue(request).await?.into_inner();
    session.emit(&pause)
}

pub async fn resume(session: &Session, args: ResumeArgs) -> Result<(), CliError> {
    let request = pb::ResumeQueueRequest {
        business_id: args.business,
        platform: args.platform.unwrap_or_default(),
        missed_policy: args
            .missed
            .map_or(
                pb::resume_queue_request::MissedPolicy::Unspecified,
                MissedArg::to_proto,
            )
            .into(),
    };
    let response = session.client().resume_queue(request).await?.into_inner();
    session.emit(&response)
}

pub async fn pauses(session: &Session, args: PausesArgs) -> Result<(), CliError> {
    let request = pb::ListPausesRequest {
        business_id: args.business.unwrap_or_default(),
    };
    let response = session.client().list_pauses(request).await?.into_inner();
    session.emit(&response)
}

/// `12 fires, p50 3 ms, p99 40 ms, 99.5% within 1 s`.
fn on_time(record: Option<&pb::OnTimeRecord>) -> String {
    match record {
        None => "-".to_owned(),
        Some(record) if record.fires == 0 => "no fires".to_owned(),
        Some(record) => format!(
            "{} fires, p50 {:.0} ms, p99 {:.0} ms, {:.1}% within 1 s",
            record.fires,
            record.p50_lateness_ms,
            record.p99_lateness_ms,
            record.within_one_second * 100.0
        ),
    }
}

impl Render for pb::QueueStats {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        let mut counts = Table::new(["STATUS", "COUNT"]);
        for count in &self.counts {
            counts.row([status_label(count.status), count.count.to_string()]);
        }
        let summary = fields(&[
            (
                "Next due",
                format!(
                    "{} {}",
                    show_timestamp(self.next_due_time.as_ref(), view.zone),
                    view.zone
                ),
            ),
            ("Overdue", self.overdue.to_string()),
            ("Last hour", on_time(self.last_hour.as_ref())),
            ("Last day", on_time(self.last_day.as_ref())),
        ]);
        format!("{}\n\n{summary}", counts.render_or("No posts."))
    }
}

/// `the whole business` or `platform instagram`.
fn scope(platform: &str) -> String {
    if platform.is_empty() {
        "all platforms".to_owned()
    } else {
        platform.to_owned()
    }
}

impl Render for pb::QueuePause {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        fields(&[
            ("Paused", self.business_id.clone()),
            ("Platform", scope(&self.platform)),
            (
                "Since",
                format!(
                    "{} {}",
                    show_timestamp(self.pause_time.as_ref(), view.zone),
                    view.zone
                ),
            ),
        ])
    }
}

impl Render for pb::ResumeQueueResponse {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, _view: &View) -> String {
        format!("Resumed. Posts missed during the pause: {}.", self.missed)
    }
}

impl Render for pb::ListPausesResponse {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        let since = format!("SINCE ({})", view.zone);
        let mut table = Table::new(["BUSINESS", "PLATFORM", &since]);
        for pause in &self.pauses {
            table.row([
                or_dash(&pause.business_id),
                scope(&pause.platform),
                show_timestamp(pause.pause_time.as_ref(), view.zone),
            ]);
        }
        table.render_or("No pauses.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::TimeZone;
    use pb::scheduled_post::Status;

    #[test]
    fn queue_stats_table() {
        let view = View {
            zone: TimeZone::parse("Europe/Paris").unwrap(),
            width: 80,
            ascii: true,
            today: chrono::NaiveDate::from_ymd_opt(2025, 10, 1).unwrap(),
        };
        let stats = pb::QueueStats {
            counts: vec![
                pb::StatusCount {
                    status: Status::Scheduled.into(),
                    count: 12,
                },
                pb::StatusCount {
                    status: Status::DeadLettered.into(),
                    count: 1,
                },
            ],
            next_due_time: Some(pb::timestamp("2025-10-15T12:00:00Z".parse().unwrap())),
            overdue: 0,
            last_hour: Some(pb::OnTimeRecord {
                fires: 40,
                p50_lateness_ms: 2.4,
                p99_lateness_ms: 31.0,
                within_one_second: 1.0,
            }),
            last_day: None,
        };
        assert_eq!(
            stats.table(&view),
            "STATUS         COUNT\n\
             scheduled      12\n\
             dead_lettered  1\n\
             \n\
             Next due   2025-10-15 14:00 Europe/Paris\n\
             Overdue    0\n\
             Last hour  40 fires, p50 2 ms, p99 31 ms, 100.0% within 1 s\n\
             Last day   -"
        );
        assert_eq!(
            json::message(&stats)["counts"][1]["status"],
            "DEAD_LETTERED"
        );
    }
}
