//! When to post: the weekly posting slots of a business (`slots get`,
//! `slots set`) and ranked suggestions (`suggest`).

use clap::{ArgGroup, Args, Subcommand, ValueEnum as _};

use super::json;
use super::output::{Render, Table, View, clean};
use super::time::{parse_instant, show_timestamp};
use super::{CliError, CommonArgs, Session, WeekdayArg, weekday_label};
use crate::domain::time::DstPolicy;
use crate::grpc::pb;

#[derive(Debug, Subcommand)]
pub enum SlotsCommand {
    /// Show the weekly posting slots.
    Get(SlotsGetArgs),
    /// Replace the weekly posting slots.
    Set(SlotsSetArgs),
}

impl SlotsCommand {
    pub(super) fn common(&self) -> &CommonArgs {
        match self {
            SlotsCommand::Get(args) => &args.common,
            SlotsCommand::Set(args) => &args.common,
        }
    }
}

#[derive(Debug, Args)]
pub struct SlotsGetArgs {
    #[arg(long)]
    pub business: String,
    #[arg(long)]
    pub platform: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("slots").required(true).args(["slot", "clear"])))]
pub struct SlotsSetArgs {
    #[arg(long)]
    pub business: String,
    #[arg(long)]
    pub platform: String,
    /// IANA zone of the slot times.
    #[arg(long, value_name = "ZONE")]
    pub zone: String,
    /// A slot, DAY@HH:MM, e.g. mon@09:00 (repeat for several).
    #[arg(long, value_name = "DAY@HH:MM", value_parser = parse_slot)]
    pub slot: Vec<pb::PostingSlot>,
    /// Remove every slot.
    #[arg(long)]
    pub clear: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct SuggestArgs {
    #[arg(long)]
    pub business: String,
    #[arg(long)]
    pub platform: String,
    /// How many suggestions (server default 5, at most 50).
    #[arg(long, value_name = "N")]
    pub count: Option<i32>,
    /// Start of the window (default: now); RFC 3339 or local in --tz.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the window (default: a week on); RFC 3339 or local in --tz.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Parses `mon@09:00`. The time is passed to the server as written.
fn parse_slot(text: &str) -> Result<pb::PostingSlot, String> {
    let (day, time) = text
        .split_once('@')
        .ok_or_else(|| format!("{text:?}: expected DAY@HH:MM, e.g. mon@09:00"))?;
    let day = WeekdayArg::from_str(day.trim(), true)
        .map_err(|_| format!("{day:?}: expected a weekday: mon, tue, wed, thu, fri, sat, sun"))?;
    Ok(pb::PostingSlot {
        weekday: day.to_proto().into(),
        local_time: time.trim().to_owned(),
    })
}

pub async fn slots(session: &Session, command: SlotsCommand) -> Result<(), CliError> {
    let slots = match command {
        SlotsCommand::Get(args) => {
            let request = pb::GetPostingSlotsRequest {
                business_id: args.business,
                platform: args.platform,
            };
            session.client().get_posting_slots(request).await?
        }
        SlotsCommand::Set(args) => {
            let request = pb::SetPostingSlotsRequest {
                business_id: args.business,
                platform: args.platform,
                time_zone: args.zone,
                slots: args.slot,
            };
            session.client().set_posting_slots(request).await?
        }
    };
    session.emit(&slots.into_inner())
}

pub async fn suggest(session: &Session, args: SuggestArgs) -> Result<(), CliError> {
    let zone = session.zone();
    let instant = |text: Option<&str>| {
        text.map(|text| parse_instant(text, zone, DstPolicy::default()).map(pb::timestamp))
            .transpose()
    };
    let request = pb::SuggestTimesRequest {
        business_id: args.business,
        platform: args.platform,
        count: args.count.unwrap_or(0),
        from_time: instant(args.from.as_deref())?,
        to_time: instant(args.to.as_deref())?,
        time_zone: zone.name().to_owned(),
    };
    let response = session.client().suggest_times(request).await?.into_inner();
    session.emit(&response)
}

impl Render for pb::PostingSlots {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, _view: &View) -> String {
        let mut table = Table::new(["DAY", "TIME"]);
        for slot in &self.slots {
            table.row([
                weekday_label(slot.weekday).to_owned(),
                slot.local_time.clone(),
            ]);
        }
        let zone = if self.time_zone.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.time_zone)
        };
        format!(
            "Posting slots of {} on {}{zone}:\n{}",
            clean(&self.business_id),
            clean(&self.platform),
            table.render_or("No slots.")
        )
    }
}

impl Render for pb::SuggestTimesResponse {
    fn json(&self) -> serde_json::Value {
        json::message(self)
    }

    fn table(&self, view: &View) -> String {
        let when = format!("WHEN ({})", view.zone);
        let mut table = Table::new(["#", &when, "SCORE", "REASON"]);
        for (rank, suggestion) in self.suggestions.iter().enumerate() {
            table.row([
                (rank + 1).to_string(),
                show_timestamp(suggestion.time.as_ref(), view.zone),
                format!("{:.2}", suggestion.score),
                suggestion.reason.clone(),
            ]);
        }
        table.render_or("No suggestions.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_parse() {
        let slot = parse_slot("Mon@09:00").unwrap();
        assert_eq!(slot.weekday, pb::DayOfWeek::Monday as i32);
        assert_eq!(slot.local_time, "09:00");
        assert_eq!(
            parse_slot("thursday@12:30").unwrap().weekday,
            pb::DayOfWeek::Thursday as i32
        );
        assert!(parse_slot("mon 09:00").is_err());
        assert!(parse_slot("moon@09:00").is_err());
    }
}
