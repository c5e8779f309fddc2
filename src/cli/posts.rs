//! The commands on posts themselves — `schedule`, `list`, `show`,
//! `reschedule`, `cancel`, `bulk`, `watch` — and how posts look: the post
//! table, the detail view with its attempt history, one line per event.

use std::future::Future;

use clap::{ArgGroup, Args, ValueEnum};

use super::json;
use super::output::{OutputFormat, Render, Table, View, clean, fields, or_dash, print};
use super::time::{parse_instant, show_exact, show_timestamp};
use super::{CliError, CommonArgs, DstArgs, Session, WeekdayArg};
use crate::domain::time::DstPolicy;
use crate::grpc::pb;
use crate::grpc::pb::create_schedule_request::When;
use pb::scheduled_post::Status;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("when").required(true).args(["at", "local", "next_free_slot"])))]
pub struct ScheduleArgs {
    #[arg(long)]
    pub business: String,
    /// Content id (what the publisher will post).
    #[arg(long)]
    pub content: String,
    /// Lower-case platform, e.g. instagram, facebook, linkedin, x.
    #[arg(long)]
    pub platform: String,
    /// The instant: RFC 3339 ("2025-10-15T12:00:00Z"), or a local date-time
    /// in the --tz zone.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Wall-clock time "YYYY-MM-DDTHH:MM" in --zone (default: the --tz zone).
    #[arg(long, value_name = "LOCAL")]
    pub local: Option<String>,
    /// The next free posting slot of the business on this platform.
    #[arg(long)]
    pub next_free_slot: bool,
    /// IANA zone the post is planned in, e.g. Europe/Paris.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// JSON object forwarded to the publisher byte for byte.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// A label of the post (repeat for several).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Idempotency key: retrying with the same key returns the first post.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub dst: DstArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Scheduled,
    Publishing,
    Published,
    RetryScheduled,
    DeadLettered,
    Cancelled,
    Discarded,
}

impl StatusArg {
    fn to_proto(self) -> Status {
        match self {
            StatusArg::Scheduled => Status::Scheduled,
            StatusArg::Publishing => Status::Publishing,
            StatusArg::Published => Status::Published,
            StatusArg::RetryScheduled => Status::RetryScheduled,
            StatusArg::DeadLettered => Status::DeadLettered,
            StatusArg::Cancelled => Status::Cancelled,
            StatusArg::Discarded => Status::Discarded,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub business: Option<String>,
    /// Only posts in this status (repeat for several).
    #[arg(long, value_enum)]
    pub status: Vec<StatusArg>,
    #[arg(long)]
    pub platform: Option<String>,
    /// Only posts due at or after this time (RFC 3339, or local in --tz).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only posts due before this time (RFC 3339, or local in --tz).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only posts with these labels, e.g. 'labels.campaign = "spring"'.
    #[arg(long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Show payloads and attempt histories too.
    #[arg(long)]
    pub full: bool,
    /// Posts per page (server default 100, at most 1000).
    #[arg(long, value_name = "N")]
    pub page_size: Option<i32>,
    /// Continue from the page token a previous listing printed.
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Follow the page tokens and print every post.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct RunNowArgs {
    /// The post's id.
    pub id: String,
    /// Run it only if the post is still at this version.
    #[arg(long, value_name = "V")]
    pub expected_version: Option<i64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The post's id.
    pub id: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("when").required(true).args(["at", "local"])))]
pub struct RescheduleArgs {
    /// The post's id.
    pub id: String,
    /// The new instant: RFC 3339, or a local date-time in the --tz zone.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// The new wall-clock time, in --zone (default: the post's own zone).
    #[arg(long, value_name = "LOCAL")]
    pub local: Option<String>,
    /// IANA zone to plan the post in from now on.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// Apply only if the post is still at this version.
    #[arg(long, value_name = "V")]
    pub expected_version: Option<i64>,
    #[command(flatten)]
    pub dst: DstArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The post's id.
    pub id: String,
    /// Cancel only if the post is still at this version.
    #[arg(long, value_name = "V")]
    pub expected_version: Option<i64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--pattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatternArg {
    /// Every day.
    Daily,
    /// Monday to Friday.
    Weekdays,
    /// On the --weekdays.
    Weekly,
    /// Every --interval-hours hours.
    EveryNHours,
    /// Spread over the posting slots (or the daily --time..--window-end
    /// window) of the coming week(s).
    Distribute,
}

impl PatternArg {
    fn to_proto(self) -> pb::recurrence::Pattern {
        use pb::recurrence::Pattern;
        match self {
            PatternArg::Daily => Pattern::Daily,
            PatternArg::Weekdays => Pattern::Weekdays,
            PatternArg::Weekly => Pattern::Weekly,
            PatternArg::EveryNHours => Pattern::EveryNHours,
            PatternArg::Distribute => Pattern::DistributeAcrossWeek,
        }
    }
}

#[derive(Debug, Args)]
pub struct BulkArgs {
    #[arg(long)]
    pub business: String,
    #[arg(long)]
    pub platform: String,
    /// Content ids, comma-separated; one post each, in this order.
    #[arg(long, value_delimiter = ',', required = true, value_name = "C1,C2,...")]
    pub content: Vec<String>,
    #[arg(long, value_enum)]
    pub pattern: PatternArg,
    /// Local date of the first occurrence, YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub start_date: String,
    /// Local time of day, HH:MM (for distribute: the window's start,
    /// default 09:00).
    #[arg(
        long,
        value_name = "HH:MM",
        required_if_eq_any([
            ("pattern", "daily"),
            ("pattern", "weekdays"),
            ("pattern", "weekly"),
            ("pattern", "every-n-hours"),
        ])
    )]
    pub time: Option<String>,
    /// IANA zone of the dates and times.
    #[arg(long, value_name = "ZONE")]
    pub zone: String,
    /// For weekly: the days, e.g. mon,thu.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        required_if_eq("pattern", "weekly")
    )]
    pub weekdays: Vec<WeekdayArg>,
    /// For every-n-hours: hours between posts (1 to 168).
    #[arg(long, value_name = "N", required_if_eq("pattern", "every-n-hours"))]
    pub interval_hours: Option<i32>,
    /// For distribute without posting slots: end of the daily window
    /// (default 18:00).
    #[arg(long, value_name = "HH:MM")]
    pub window_end: Option<String>,
    /// Show the instants without saving anything.
    #[arg(long)]
    pub validate_only: bool,
    /// JSON object forwarded to the publisher with every post.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// A label of every post (repeat for several).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Answer every field of every post, not only ids and instants.
    #[arg(long)]
    pub full: bool,
    /// Idempotency key for the whole batch.
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub dst: DstArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this business's posts.
    #[arg(long)]
    pub business: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn schedule(session: &Session, args: ScheduleArgs) -> Result<(), CliError> {
    let (when, time_zone) = if let Some(at) = &args.at {
        let instant = parse_instant(at, session.zone(), args.dst.policy())?;
        (
            When::ScheduledFor(pb::timestamp(instant)),
            args.zone.unwrap_or_default(),
        )
    } else if let Some(local) = args.local {
        let zone = args
            .zone
            .unwrap_or_else(|| session.zone().name().to_owned());
        (When::LocalTime(local), zone)
    } else {
        (When::NextFreeSlot(true), args.zone.unwrap_or_default())
    };
    let request = pb::CreateScheduleRequest {
        business_id: args.business,
        content_id: args.content,
        platform: args.platform,
        payload_json: args.payload.unwrap_or_default(),
        labels: args.labels.into_iter().collect(),
        when: Some(when),
        time_zone,
        dst_gap_policy: args.dst.gap().into(),
        dst_overlap_policy: args.dst.overlap().into(),
        request_id: args.request_id.unwrap_or_default(),
    };
    let post = session
        .client()
        .create_schedule(request)
        .await?
        .into_inner();
    session.emit(&post)
}

pub async fn list(session: &Session, args: ListArgs) -> Result<(), CliError> {
    let zone = session.zone();
    let instant = |text: Option<&str>| {
        text.map(|text| parse_instant(text, zone, DstPolicy::default()).map(pb::timestamp))
            .transpose()
    };
    let request = pb::ListSchedulesRequest {
        business_id: args.business.unwrap_or_default(),
        from_time: instant(args.from.as_deref())?,
        to_time: instant(args.to.as_deref())?,
        statuses: args
            .status
            .iter()
            .map(|status| status.to_proto().into())
            .collect(),
        platform: args.platform.unwrap_or_default(),
        page_size: args.page_size.unwrap_or(0),
        page_token: String::new(),
        view: if args.full {
            pb::ScheduleView::Full
        } else {
            pb::ScheduleView::Basic
        }
        .into(),
        filter: args.filter.unwrap_or_default(),
    };
    let (schedules, next_page_token) = collect_pages(
        args.page_token.unwrap_or_default(),
        args.all,
        |page_token| {
            let mut client = session.client();
            let request = pb::ListSchedulesRequest {
                page_token,
                ..request.clone()
            };
            async move {
                let page = client.list_schedules(request).await?.into_inner();
                Ok((page.schedules, page.next_page_token))
            }
        },
    )
    .await?;
    session.emit(&pb::ListSchedulesResponse {
        schedules,
        next_page_token,
    })
}

pub async fn show(session: &Session, args: ShowArgs) -> Result<(), CliError> {
    let request = pb::GetScheduleRequest {
        id: args.id,
        view: pb::ScheduleView::Full.into(),
    };
    let post = session.client().get_schedule(request).await?.into_inner();
    session.emit(&post)
}

pub async fn reschedule(session: &Session, args: RescheduleArgs) -> Result<(), CliError> {
    let mut request = pb::UpdateScheduleRequest {
        id: args.id,
        expected_version: args.expected_version,
        dst_gap_policy: args.dst.gap().into(),
        dst_overlap_policy: args.dst.overlap().into(),
        ..Default::default()
    };
    let mut mask = Vec::new();
    if let Some(at) = &args.at {
        let instant = parse_instant(at, session.zone(), args.dst.policy())?;
        request.scheduled_for = Some(pb::timestamp(instant));
        mask.push("scheduled_for".to_owned());
    } else if let Some(local) = args.local {
        request.local_time = local;
        mask.push("local_time".to_owned());
    }
    if let Some(zone) = args.zone {
        request.time_zone = zone;
        mask.push("time_zone".to_owned());
    }
    request.update_mask = Some(prost_types::FieldMask { paths: mask });
    let post = session
        .client()
        .update_schedule(request)
        .await?
        .into_inner();
    session.emit(&post)
}

pub async fn cancel(session: &Session, args: CancelArgs) -> Result<(), CliError> {
    let request = pb::CancelScheduleRequest {
        id: args.id,
        expected_version: args.expected_version,
    };
    let post = session
        .client()
        .cancel_schedule(request)
        .await?
        .into_inner();
    session.emit(&post)
}

pub async fn bulk(session: &Session, args: BulkArgs) -> Result<(), CliError> {
    let request = pb::BulkScheduleRequest {
        business_id: args.business,
        platform: args.platform,
        content_ids: args.content,
        payload_json: args.payload.unwrap_or_default(),
        labels: args.labels.into_iter().collect(),
        view: if args.full {
            pb::ScheduleView::Full
        } else {
            pb::ScheduleView::Summary
        }
        .into(),
        recurrence: Some(pb::Recurrence {
            pattern: args.pattern.to_proto().into(),
            start_date: args.start_date,
            local_time: args.time.unwrap_or_default(),
            time_zone: args.zone,
            weekdays: args
                .weekdays
                .iter()
                .map(|day| day.to_proto().into())
                .collect(),
            interval_hours: args.interval_hours.unwrap_or(0),
            window_end: args.window_end.unwrap_or_default(),
        }),
        dst_gap_policy: args.dst.gap().into(),
        dst_overlap_policy: args.dst.overlap().into(),
        validate_only: args.validate_only,
        request_id: args.request_id.unwrap_or_default(),
    };
    let response = session.client().bulk_schedule(request).await?.into_inner();
    session.emit(&response)
}

pub async fn watch(session: &Session, args: WatchArgs) -> Result<(), CliError> {
    let request = pb::WatchEventsRequest {
        business_id: args.business.unwrap_or_default(),
        view: pb::ScheduleView::Full.into(),
    };
    let mut events = session.client().watch_events(request).await?.into_inner();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            signal = &mut interrupted => return signal.map_err(CliError::from),
            message = events.message() => match message? {
                Some(event) => print(&match session.output() {
                    OutputFormat::Json => json::message(&event).to_string(),
                    OutputFormat::Table => event_line(&event, session.view()),
                })?,
                None => return Ok(()),
            },
        }
    }
}

/// Reads one `--label KEY=VALUE`; the server checks the key and value.
fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// Publishes a pending post at once.
pub async fn run_now(session: &Session, args: RunNowArgs) -> Result<(), CliError> {
    let request = pb::RunNowRequest {
        id: args.id,
        expected_version: args.expected_version,
    };
    let post = session.client().run_now(request).await?.into_inner();
    session.emit(&post)
}

/// Fetches the page at `first_token` and, with `all`, every page after it.
/// Returns the posts and the token of the page after the last one fetched.
pub async fn collect_pages<F, Fut>(
    first_token: String,
    all: bool,
    mut fetch: F,
) -> Result<(Vec<pb::ScheduledPost>, String), CliError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<pb::ScheduledPost>, String), tonic::Status>>,
{
    let mut posts = Vec::new();
    let mut token = first_token;
    loop {
        let (page, next) = fetch(token.clone()).await?;
        posts.extend(page);
        if !all || next.is_empty() {
            return Ok((posts, next));
        }
        if next == token {
            return Err(CliError::Protocol(format!(
                "the server returned page token {next:?} for its own page"
            )));
        }
        token = next;
    }
}

/// A status for people: `scheduled`, `dead_lettered`, …; `-` for none (a
/// validate-only post).
pub fn status_label(status: i32) -> String {
    match Status::try_from(status) {
        Ok(Status::Unspecified) => "-".to_owned(),
        Ok(status) => status.as_str_name().to_ascii_lowercase(),
        Err(_) => format!("unknown ({status})"),
    }
}

/// One row per post. `with_error` adds the last error (for dead letters).
pub fn posts_table(posts: &[pb::ScheduledPost], view: &View, with_error: bool) -> Table {
    let when = format!("WHEN ({})", view.zone);
    let mut headers = vec!["ID", &when, "STATUS", "PLATFORM", "BUSINESS", "CONTENT"];
    if with_error {
        headers.push("LAST ERROR");
    }
    let mut table = Table::new(headers);
    for post in posts {
        let mut row = vec![
            or_dash(&post.id),
            show_timestamp(post.scheduled_for.as_ref(), view.zone),
            status_label(post.status),
            post.platform.clone(),
            post.business_id.clone(),
            post.content_id.clone(),
        ];
        if with_error {
            row.push(post.last_error.clone());
        }
        table.row(row);
    }
    table
}

/// The footer of a page with more after it.
fn more_pages(next_page_token: &str) -> String {
    if next_page_token.is_empty() {
        String::new()
    } else {
        format!(
            "\n(more: --page-token {}, or --all for every page)",
            clean(next_page_token)
        )
    }
}

impl Render for pb::ScheduledPost {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        let zone = view.zone;
        let local = if self.local_time.is_empty() {
            "-".to_owned()
        } else {
            format!("{} {}", self.local_time, self.time_zone)
        };
        let labels = if self.labels.is_empty() {
            "-".to_owned()
        } else {
            let mut labels: Vec<String> = self
                .labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            labels.sort_unstable();
            labels.join(", ")
        };
        let mut text = fields(&[
            ("ID", or_dash(&self.id)),
            ("Business", self.business_id.clone()),
            ("Content", self.content_id.clone()),
            ("Platform", self.platform.clone()),
            ("Status", status_label(self.status)),
            (
                "When",
                format!(
                    "{} {zone}",
                    show_timestamp(self.scheduled_for.as_ref(), zone)
                ),
            ),
            ("Local time", local),
            (
                "Next attempt",
                show_timestamp(self.next_attempt_time.as_ref(), zone),
            ),
            ("Attempts", self.attempts.to_string()),
            ("Last error", or_dash(&self.last_error)),
            (
                "Published at",
                show_timestamp(self.published_at.as_ref(), zone),
            ),
            ("External id", or_dash(&self.external_id)),
            ("Version", self.version.to_string()),
            ("Created", show_timestamp(self.create_time.as_ref(), zone)),
            ("Updated", show_timestamp(self.update_time.as_ref(), zone)),
            ("Labels", labels),
            ("Payload", or_dash(&self.payload_json)),
        ]);
        if !self.attempt_history.is_empty() {
            let started = format!("STARTED ({zone})");
            let mut attempts = Table::new(["#", &started, "LATENCY", "HTTP", "OUTCOME", "ERROR"]);
            for attempt in &self.attempt_history {
                attempts.row([
                    attempt.attempt.to_string(),
                    show_timestamp(attempt.started_time.as_ref(), zone),
                    format!("{} ms", attempt.latency_ms),
                    match attempt.http_status {
                        0 => "-".to_owned(),
                        status => status.to_string(),
                    },
                    attempt.outcome.clone(),
                    attempt.error.clone(),
                ]);
            }
            text.push_str("\n\nAttempt history:\n");
            text.push_str(&attempts.render_or(""));
        }
        text
    }
}

impl Render for pb::ListSchedulesResponse {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        posts_table(&self.schedules, view, false).render_or("No posts.")
            + &more_pages(&self.next_page_token)
    }
}

impl Render for pb::BulkScheduleResponse {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        let table = posts_table(&self.schedules, view, false).render_or("No posts.");
        match self.schedules.first() {
            // A validate-only answer: nothing was saved.
            Some(first) if first.id.is_empty() => {
                format!("{table}\n(validate only: nothing was scheduled)")
            }
            _ => table,
        }
    }
}

impl Render for pb::ListDeadLettersResponse {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        posts_table(&self.schedules, view, true).render_or("No dead letters.")
            + &more_pages(&self.next_page_token)
    }
}

/// One watch event on one line: when, what, which post, when it is due.
pub fn event_line(event: &pb::ScheduleEvent, view: &View) -> String {
    let kind = json::event_type_name(event.r#type)
        .map_or_else(|| format!("UNKNOWN({})", event.r#type), str::to_owned);
    let post = event.schedule.clone().unwrap_or_default();
    let line = format!(
        "{}  {kind:<15}  {}  {}  {}  {}  due {}",
        show_exact(event.event_time.as_ref(), view.zone),
        or_dash(&post.id),
        or_dash(&post.platform),
        or_dash(&post.business_id),
        or_dash(&post.content_id),
        show_timestamp(post.scheduled_for.as_ref(), view.zone),
    );
    let line = if post.last_error.is_empty() {
        line
    } else {
        format!("{line}  ({})", post.last_error)
    };
    clean(&line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::TimeZone;

    fn view() -> View {
        View {
            zone: TimeZone::parse("Europe/Paris").unwrap(),
            width: 80,
            ascii: true,
            today: chrono::NaiveDate::from_ymd_opt(2025, 10, 1).unwrap(),
        }
    }

    fn post() -> pb::ScheduledPost {
        pb::ScheduledPost {
            id: "0199f0c2-0000-7000-8000-000000000001".into(),
            business_id: "acme".into(),
            content_id: "launch".into(),
            platform: "instagram".into(),
            scheduled_for: Some(pb::timestamp("2025-10-15T12:00:00Z".parse().unwrap())),
            time_zone: "Europe/Paris".into(),
            local_time: "2025-10-15T14:00:00".into(),
            status: Status::Scheduled.into(),
            version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn post_table_shows_times_in_the_view_zone() {
        let response = pb::ListSchedulesResponse {
            schedules: vec![post()],
            next_page_token: "abc".into(),
        };
        assert_eq!(
            response.table(&view()),
            "ID                                    WHEN (Europe/Paris)  STATUS     PLATFORM   BUSINESS  CONTENT\n\
             0199f0c2-0000-7000-8000-000000000001  2025-10-15 14:00     scheduled  instagram  acme      launch\n\
             (more: --page-token abc, or --all for every page)"
        );
    }

    #[test]
    fn detail_view_lists_attempts() {
        let mut post = post();
        post.attempt_history.push(pb::PublishAttempt {
            attempt: 1,
            started_time: post.scheduled_for,
            latency_ms: 120,
            http_status: 503,
            outcome: "retry".into(),
            error: "publisher answered 503".into(),
        });
        let text = post.table(&view());
        assert!(
            text.contains("When          2025-10-15 14:00 Europe/Paris"),
            "{text}"
        );
        assert!(
            text.contains("Local time    2025-10-15T14:00:00 Europe/Paris"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Attempt history:\n\
                 #  STARTED (Europe/Paris)  LATENCY  HTTP  OUTCOME  ERROR\n\
                 1  2025-10-15 14:00        120 ms   503   retry    publisher answered 503"
            ),
            "{text}"
        );
    }

    #[test]
    fn event_lines() {
        let event = pb::ScheduleEvent {
            r#type: pb::schedule_event::Type::Published.into(),
            schedule: Some(post()),
            event_time: Some(pb::timestamp("2025-10-15T12:00:00.25Z".parse().unwrap())),
        };
        assert_eq!(
            event_line(&event, &view()),
            "2025-10-15 14:00:00.250000  PUBLISHED        0199f0c2-0000-7000-8000-000000000001  \
             instagram  acme  launch  due 2025-10-15 14:00"
        );
    }

    #[tokio::test]
    async fn pages_are_followed_until_the_last() {
        let mut calls = Vec::new();
        let (posts, next) = collect_pages(String::new(), true, |token| {
            calls.push(token.clone());
            async move {
                let next = match token.as_str() {
                    "" => "p2",
                    "p2" => "p3",
                    _ => "",
                };
                Ok((vec![pb::ScheduledPost::default()], next.to_owned()))
            }
        })
        .await
        .unwrap();
        assert_eq!(posts.len(), 3);
        assert_eq!(next, "");
        assert_eq!(calls, ["", "p2", "p3"]);

        let looping = collect_pages(String::new(), true, |_| async {
            Ok((Vec::new(), "same".to_owned()))
        })
        .await;
        assert!(matches!(looping, Err(CliError::Protocol(_))));
    }
}
