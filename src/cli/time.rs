//! Times on the command line and on screen: the zone the CLI shows times in,
//! reading an instant typed by a person, and showing a protobuf timestamp as
//! wall-clock time. Zone rules, parsing of local times and DST handling are
//! the domain's ([`crate::domain::time`]); this module only adapts them.

use chrono::{DateTime, Datelike as _, NaiveDate, NaiveTime, Utc};

use super::CliError;
use super::error::DST_GAP_HINT;
use crate::domain::time::{
    DstPolicy, GapPolicy, TimeError, TimeZone, format_local, parse_local_date,
    parse_local_datetime, resolve_local,
};
use crate::grpc::pb;

/// Parses `--tz` (a clap value parser: a bad zone is a usage error).
pub fn parse_zone(text: &str) -> Result<TimeZone, String> {
    TimeZone::parse(text).map_err(|error| error.to_string())
}

/// The zone of this machine: `TZ` when it names an IANA zone, else the
/// system setting, else UTC.
pub fn system_zone() -> TimeZone {
    let from_env = std::env::var("TZ")
        .ok()
        .and_then(|name| TimeZone::parse(name.trim_start_matches(':')).ok());
    from_env
        .or_else(|| {
            iana_time_zone::get_timezone()
                .ok()
                .and_then(|name| TimeZone::parse(&name).ok())
        })
        .unwrap_or(TimeZone::UTC)
}

/// Parses `--month YYYY-MM` into a year and a month (1 to 12).
pub fn parse_month(text: &str) -> Result<(i32, u32), String> {
    parse_local_date(&format!("{}-01", text.trim()))
        .map(|date| (date.year(), date.month()))
        .map_err(|_| format!("invalid month {text:?}: expected YYYY-MM, e.g. \"2025-10\""))
}

/// Reads an instant typed on the command line: an RFC 3339 instant
/// (`2025-10-15T12:00:00Z`, `2025-10-15T14:00:00+02:00`), or a local date and
/// time (`2025-10-15T14:00`) or a date (`2025-10-15`, its first moment) in
/// `zone`, with `policy` for daylight-saving gaps and overlaps.
pub fn parse_instant(
    text: &str,
    zone: TimeZone,
    policy: DstPolicy,
) -> Result<DateTime<Utc>, CliError> {
    let trimmed = text.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(trimmed) {
        return Ok(instant.with_timezone(&Utc));
    }
    let resolved = if let Ok(local) = parse_local_datetime(trimmed) {
        resolve_local(zone, local, policy)
    } else if let Ok(date) = parse_local_date(trimmed) {
        // A day starts at its first existing moment, even where midnight is
        // skipped by a daylight-saving change.
        let first_moment = DstPolicy {
            gap: GapPolicy::ShiftForward,
            ..policy
        };
        resolve_local(zone, date.and_time(NaiveTime::MIN), first_moment)
    } else {
        return Err(CliError::Usage(format!(
            "invalid time {trimmed:?}: expected an RFC 3339 instant (\"2025-10-15T12:00:00Z\"), \
             or a local date-time (\"2025-10-15T14:00\") or date (\"2025-10-15\") in {zone}"
        )));
    };
    resolved.map_err(|error| match error {
        TimeError::InGap { .. } => CliError::Usage(format!("{error}\n{DST_GAP_HINT}")),
        error => CliError::Usage(error.to_string()),
    })
}

/// An instant as wall-clock time in `zone`, for a person: `2025-10-15 14:00`,
/// with the seconds only when they are not zero, and never their fraction
/// (`--output json` has the exact instant).
pub fn show_instant(instant: DateTime<Utc>, zone: TimeZone) -> String {
    let mut text = format_local(instant, zone).replacen('T', " ", 1);
    if let Some(dot) = text.rfind('.') {
        text.truncate(dot);
    }
    if text.len() == "YYYY-MM-DD HH:MM:SS".len() && text.ends_with(":00") {
        text.truncate(text.len() - 3);
    }
    text
}

/// Like [`show_instant`] for an optional protobuf timestamp: `-` when absent,
/// `invalid` when malformed.
pub fn show_timestamp(timestamp: Option<&prost_types::Timestamp>, zone: TimeZone) -> String {
    match timestamp {
        None => "-".to_owned(),
        Some(timestamp) => pb::instant(timestamp)
            .map(|instant| show_instant(instant, zone))
            .unwrap_or_else(|| "invalid".to_owned()),
    }
}

/// Like [`show_timestamp`] but to the microsecond, for watching events
/// happen: `2025-10-15 14:00:00.003141`.
pub fn show_exact(timestamp: Option<&prost_types::Timestamp>, zone: TimeZone) -> String {
    match timestamp {
        None => "-".to_owned(),
        Some(timestamp) => pb::instant(timestamp)
            .map(|instant| format_local(instant, zone).replacen('T', " ", 1))
            .unwrap_or_else(|| "invalid".to_owned()),
    }
}

/// Today's date in `zone`.
pub fn today(zone: TimeZone) -> NaiveDate {
    Utc::now().with_timezone(&zone.tz()).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> TimeZone {
        TimeZone::parse("Europe/Paris").unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn instants_in_every_accepted_form() {
        let policy = DstPolicy::default();
        let expected = utc("2025-10-15T12:00:00Z");
        for text in [
            "2025-10-15T12:00:00Z",
            "2025-10-15T14:00:00+02:00",
            "2025-10-15T14:00",
            " 2025-10-15 14:00:00 ",
        ] {
            assert_eq!(parse_instant(text, paris(), policy).unwrap(), expected);
        }
        assert_eq!(
            parse_instant("2025-10-15", paris(), policy).unwrap(),
            utc("2025-10-14T22:00:00Z")
        );
    }

    #[test]
    fn bad_instants_are_usage_errors() {
        let policy = DstPolicy::default();
        for text in ["tomorrow", "2025-13-01T00:00", ""] {
            let error = parse_instant(text, paris(), policy).unwrap_err();
            assert!(matches!(error, CliError::Usage(_)), "{text}: {error:?}");
        }
        // In the spring-forward gap: refused unless shifted.
        let error = parse_instant("2025-03-30T02:30", paris(), policy).unwrap_err();
        let CliError::Usage(message) = error else {
            panic!("{error:?}")
        };
        assert!(message.contains("--shift-forward"), "{message}");
        let shifted = DstPolicy {
            gap: GapPolicy::ShiftForward,
            ..policy
        };
        assert_eq!(
            parse_instant("2025-03-30T02:30", paris(), shifted).unwrap(),
            utc("2025-03-30T01:30:00Z")
        );
    }

    #[test]
    fn timestamps_round_trip_and_show_in_the_zone() {
        let instant = utc("2025-10-15T12:00:00Z");
        let timestamp = pb::timestamp(instant);
        assert_eq!(pb::instant(&timestamp), Some(instant));
        assert_eq!(
            show_timestamp(Some(&timestamp), paris()),
            "2025-10-15 14:00"
        );
        assert_eq!(
            show_instant(utc("2025-10-15T12:00:05Z"), paris()),
            "2025-10-15 14:00:05"
        );
        assert_eq!(
            show_instant(utc("2025-10-15T12:00:00.5Z"), paris()),
            "2025-10-15 14:00"
        );
        assert_eq!(
            show_instant(utc("2025-10-15T12:00:07.25Z"), paris()),
            "2025-10-15 14:00:07"
        );
        assert_eq!(show_timestamp(None, paris()), "-");
        let broken = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: -1,
        };
        assert_eq!(show_timestamp(Some(&broken), paris()), "invalid");
    }

    #[test]
    fn months() {
        assert_eq!(parse_month("2025-10"), Ok((2025, 10)));
        assert!(parse_month("2025-13").is_err());
        assert!(parse_month("October").is_err());
        assert!(parse_month("2025-10-01").is_err());
    }
}
