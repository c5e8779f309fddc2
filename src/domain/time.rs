//! Wall-clock times in IANA time zones.
//!
//! This module owns everything about turning what a person writes — a local
//! date and time plus a zone name such as `"Europe/Paris"` — into the UTC
//! instant a post fires at, and back again for display:
//!
//! - [`TimeZone`]: a zone name that is known to exist (parse, don't validate);
//! - [`parse_local_datetime`], [`parse_local_date`], [`parse_time_of_day`]:
//!   strict parsers for the text formats the API accepts;
//! - [`resolve_local`]: wall-clock time to instant, with an explicit
//!   [`DstPolicy`] for the two places where that mapping is not one-to-one
//!   (the spring-forward gap and the fall-back overlap);
//! - [`format_local`]: instant to wall-clock text.
//!
//! Nothing here panics on any input: every step that could leave chrono's
//! supported range of dates (roughly ±262,000 years) is checked and reported
//! as [`TimeError::OutOfRange`].

use super::{ErrorReason, FieldError, echo};
use std::fmt;

use chrono::{
    DateTime, Datelike, FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeDelta, TimeZone as _, Timelike, Utc,
};
use chrono_tz::{GapInfo, OffsetName, Tz};

/// The text formats, quoted in error messages so that a caller can fix the
/// input without reading the docs.
const LOCAL_DATETIME_FORMAT: &str = "expected YYYY-MM-DDTHH:MM, YYYY-MM-DDTHH:MM:SS or YYYY-MM-DDTHH:MM:SS.fffffffff, e.g. \"2025-10-15T14:00\"";
const DATE_FORMAT: &str = "expected YYYY-MM-DD, e.g. \"2025-10-15\"";
const TIME_OF_DAY_FORMAT: &str = "expected HH:MM or HH:MM:SS on a 24-hour clock, e.g. \"09:30\"";

/// A valid IANA time zone (parse, don't validate).
///
/// Once constructed it is known to name a zone in the bundled tz database, so
/// code that holds one never has to handle an unknown zone again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(Tz);

impl TimeZone {
    /// Coordinated Universal Time.
    pub const UTC: TimeZone = TimeZone(chrono_tz::UTC);

    /// Parses an IANA zone name such as `"America/New_York"`.
    ///
    /// Surrounding whitespace is ignored; names are case-sensitive, as in the
    /// tz database.
    ///
    /// # Errors
    ///
    /// [`TimeError::UnknownZone`] if the name is empty or not in the database.
    /// The wall-clock time in this zone at `instant`, or `None` at the very
    /// edge of chrono's range where it is not representable.
    pub fn local_of(self, instant: DateTime<Utc>) -> Option<NaiveDateTime> {
        let utc = instant.naive_utc();
        let offset = self.tz().offset_from_utc_datetime(&utc).fix();
        utc.checked_add_offset(offset)
    }

    pub fn parse(name: &str) -> Result<Self, TimeError> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err(TimeError::UnknownZone(echo(name)));
        }
        trimmed
            .parse::<Tz>()
            .map(TimeZone)
            .map_err(|_| TimeError::UnknownZone(echo(name)))
    }

    /// The zone's IANA name, e.g. `"Europe/Paris"`.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The underlying chrono-tz zone, for arithmetic this module does not offer.
    pub fn tz(&self) -> Tz {
        self.0
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with a wall-clock time that does not exist because the clocks
/// jump forward over it (e.g. 02:30 on a spring-forward night).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GapPolicy {
    /// Refuse it with [`TimeError::InGap`], naming the gap.
    #[default]
    Reject,
    /// Move it forward by the length of the gap (02:30 becomes 03:30 when the
    /// clocks jump from 02:00 to 03:00).
    ShiftForward,
}

/// Which instant to pick for a wall-clock time that happens twice because the
/// clocks fall back over it (e.g. 01:30 on a fall-back night).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlapPolicy {
    /// The first occurrence, before the clocks go back.
    #[default]
    Earlier,
    /// The second occurrence, after the clocks went back.
    Later,
}

/// How [`resolve_local`] treats the wall-clock times that daylight-saving
/// transitions make nonexistent or ambiguous. The default rejects gaps and
/// takes the earlier of two overlapping instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DstPolicy {
    /// For times skipped by a spring-forward transition.
    pub gap: GapPolicy,
    /// For times repeated by a fall-back transition.
    pub overlap: OverlapPolicy,
}

/// Why a time, date or zone was refused. Every message names the offending
/// input and says what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The zone name is empty or not in the tz database.
    #[error("unknown time zone {0:?}: expected an IANA name such as \"Europe/Paris\"")]
    UnknownZone(String),
    /// A local date-time that does not parse or names an impossible date or time.
    #[error("invalid local time {input:?}: {reason}")]
    InvalidLocalTime {
        /// What the caller sent (shortened if very long).
        input: String,
        /// What is wrong with it, including the expected format.
        reason: String,
    },
    /// A calendar date that does not parse or does not exist.
    #[error("invalid date {input:?}: {reason}")]
    InvalidDate {
        /// What the caller sent (shortened if very long).
        input: String,
        /// What is wrong with it, including the expected format.
        reason: String,
    },
    /// A time of day that does not parse or is out of range.
    #[error("invalid time of day {input:?}: {reason}")]
    InvalidTimeOfDay {
        /// What the caller sent (shortened if very long).
        input: String,
        /// What is wrong with it, including the expected format.
        reason: String,
    },
    /// The wall-clock time is skipped by a spring-forward transition and the
    /// policy said to reject it.
    #[error(
        "local time {} does not exist in {zone}: the clocks jump {}; choose another time or set dst_gap_policy to DST_GAP_SHIFT_FORWARD",
        WallClock::of(.local),
        describe_jump(.zone, .gap_start, .gap_end)
    )]
    InGap {
        /// The requested wall-clock time.
        local: NaiveDateTime,
        /// The zone's IANA name.
        zone: &'static str,
        /// The first wall-clock time that does not exist (e.g. 02:00).
        gap_start: NaiveDateTime,
        /// The wall-clock time the clocks jump to (e.g. 03:00).
        gap_end: NaiveDateTime,
    },
    /// The time, or the instant it maps to, lies outside the range of dates
    /// chrono can represent.
    #[error(
        "local time {} in {zone} is out of range: it lies outside the supported dates",
        WallClock::of(.local)
    )]
    OutOfRange {
        /// The requested wall-clock time.
        local: NaiveDateTime,
        /// The zone's IANA name.
        zone: &'static str,
    },
}

impl TimeError {
    /// The stable reason a caller's program can act on.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::UnknownZone(_) => ErrorReason::UnknownZone,
            Self::InGap { .. } => ErrorReason::DstGap,
            Self::InvalidLocalTime { .. }
            | Self::InvalidDate { .. }
            | Self::InvalidTimeOfDay { .. }
            | Self::OutOfRange { .. } => ErrorReason::InvalidLocalTime,
        }
    }

    /// This error as the problem of one field of a request, with its reason
    /// and, for a DST gap, the gap's wall-clock start and end and the zone.
    pub fn for_field(self, field: impl Into<String>) -> FieldError {
        let error = FieldError::new(field, self.to_string()).with_reason(self.reason());
        match self {
            Self::InGap {
                local,
                zone,
                gap_start,
                gap_end,
            } => error
                .with_metadata("local_time", WallClock::of(&local).to_string())
                .with_metadata("time_zone", zone)
                .with_metadata("gap_start", WallClock::of(&gap_start).to_string())
                .with_metadata("gap_end", WallClock::of(&gap_end).to_string()),
            Self::UnknownZone(zone) => error.with_metadata("time_zone", zone),
            _ => error,
        }
    }
}

/// Parses a local date and time without a UTC offset.
///
/// Accepts `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS` and
/// `YYYY-MM-DDTHH:MM:SS.f` with one to nine fractional digits; a space may
/// stand for the `T`, and surrounding whitespace is ignored. A trailing `Z` or
/// UTC offset is refused: a local time is interpreted in a separate zone, and
/// silently dropping (or honouring) an offset would schedule at a time the
/// caller did not mean.
///
/// # Errors
///
/// [`TimeError::InvalidLocalTime`], saying what is wrong and what is expected.
pub fn parse_local_datetime(input: &str) -> Result<NaiveDateTime, TimeError> {
    let invalid = |reason: String| TimeError::InvalidLocalTime {
        input: echo(input),
        reason,
    };
    let bytes = input.trim().as_bytes();
    let (Some(date), Some(separator), Some(time)) =
        (bytes.get(..10), bytes.get(10), bytes.get(11..))
    else {
        return Err(invalid(LOCAL_DATETIME_FORMAT.to_owned()));
    };
    if !matches!(separator, b'T' | b't' | b' ') {
        return Err(invalid(LOCAL_DATETIME_FORMAT.to_owned()));
    }
    // Checked before the time itself so that "…T14:00:00Z" gets the helpful
    // explanation rather than a generic format error.
    if has_utc_offset(time) {
        return Err(invalid(
            "it carries a UTC offset or \"Z\", but a local time is wall-clock time without one: \
             drop the offset and name the zone in time_zone, or give an absolute instant in scheduled_for"
                .to_owned(),
        ));
    }
    let date = parse_date_bytes(date)
        .map_err(|problem| invalid(problem.explain(LOCAL_DATETIME_FORMAT)))?;
    let time = parse_time_bytes(time, true)
        .map_err(|problem| invalid(problem.explain(LOCAL_DATETIME_FORMAT)))?;
    Ok(date.and_time(time))
}

/// Parses a calendar date written `YYYY-MM-DD` (surrounding whitespace ignored).
///
/// # Errors
///
/// [`TimeError::InvalidDate`] for another shape or a date that does not exist.
pub fn parse_local_date(input: &str) -> Result<NaiveDate, TimeError> {
    parse_date_bytes(input.trim().as_bytes()).map_err(|problem| TimeError::InvalidDate {
        input: echo(input),
        reason: problem.explain(DATE_FORMAT),
    })
}

/// Parses a time of day written `HH:MM` or `HH:MM:SS` on a 24-hour clock
/// (surrounding whitespace ignored).
///
/// # Errors
///
/// [`TimeError::InvalidTimeOfDay`] for another shape or a field out of range.
pub fn parse_time_of_day(input: &str) -> Result<NaiveTime, TimeError> {
    parse_time_bytes(input.trim().as_bytes(), false).map_err(|problem| {
        TimeError::InvalidTimeOfDay {
            input: echo(input),
            reason: problem.explain(TIME_OF_DAY_FORMAT),
        }
    })
}

/// Turns a wall-clock time in `zone` into the UTC instant it denotes.
///
/// - A local time that occurs once maps to that instant.
/// - One that occurs twice (the fall-back overlap) maps to the earlier or the
///   later instant, as `policy.overlap` says.
/// - One that does not occur (the spring-forward gap) is refused with
///   [`TimeError::InGap`] under [`GapPolicy::Reject`]; under
///   [`GapPolicy::ShiftForward`] it is read with the UTC offset in force just
///   before the gap, which moves it forward by the gap's length whatever that
///   length is (New York's 02:30 on 2025-03-09 becomes 03:30 EDT, Lord Howe's
///   02:15 on 2025-10-05 becomes 02:45).
///
/// # Errors
///
/// - [`TimeError::InGap`] for a nonexistent time under [`GapPolicy::Reject`];
/// - [`TimeError::OutOfRange`] when the instant would fall outside chrono's
///   range of dates.
pub fn resolve_local(
    zone: TimeZone,
    local: NaiveDateTime,
    policy: DstPolicy,
) -> Result<DateTime<Utc>, TimeError> {
    let out_of_range = || TimeError::OutOfRange {
        local,
        zone: zone.name(),
    };
    let instant_with = |offset: FixedOffset| {
        local
            .checked_sub_offset(offset)
            .map(|utc| utc.and_utc())
            .ok_or_else(out_of_range)
    };
    match zone.tz().offset_from_local_datetime(&local) {
        MappedLocalTime::Single(offset) => instant_with(offset.fix()),
        MappedLocalTime::Ambiguous(first, second) => {
            let first = instant_with(first.fix())?;
            let second = instant_with(second.fix())?;
            // Ordered explicitly rather than trusting the order chrono-tz
            // reports them in: "earlier" must mean the earlier instant.
            Ok(match policy.overlap {
                OverlapPolicy::Earlier => first.min(second),
                OverlapPolicy::Later => first.max(second),
            })
        }
        MappedLocalTime::None => {
            let gap = Gap::containing(zone.tz(), local).ok_or_else(out_of_range)?;
            match policy.gap {
                GapPolicy::Reject => Err(TimeError::InGap {
                    local,
                    zone: zone.name(),
                    gap_start: gap.start,
                    gap_end: gap.end,
                }),
                GapPolicy::ShiftForward => instant_with(gap.offset_before),
            }
        }
    }
}

/// Formats `instant` as wall-clock time in `zone`: `YYYY-MM-DDTHH:MM:SS`,
/// followed by `.ffffff` (exactly six digits) only when the instant has a
/// non-zero microsecond part. Digits below the microsecond are dropped, as
/// stored instants carry microseconds only.
///
/// Years outside 0000–9999 are written with a sign (`+10000-01-01T00:00:00`),
/// as ISO 8601 does for expanded years.
pub fn format_local(instant: DateTime<Utc>, zone: TimeZone) -> String {
    // `DateTime::naive_local` panics when the offset pushes the wall-clock
    // time past chrono's last representable day; the `Datelike`/`Timelike`
    // accessors on the zoned value do not, so read the fields through them.
    WallClock::of(&instant.with_timezone(&zone.tz()))
        .truncated_to_micros()
        .to_string()
}

/// A spring-forward gap: the wall-clock times from `start` (inclusive) to
/// `end` (exclusive) never occur.
struct Gap {
    start: NaiveDateTime,
    end: NaiveDateTime,
    /// The UTC offset in force just before the transition.
    offset_before: FixedOffset,
}

impl Gap {
    /// The gap that `local` falls into, or `None` if it is in no gap or the
    /// gap's bounds are outside chrono's range.
    fn containing(tz: Tz, local: NaiveDateTime) -> Option<Self> {
        // chrono-tz finds the span boundaries from its transition table, so
        // this is exact for gaps of any length (30 minutes on Lord Howe, a
        // whole day in Samoa in 2011) without probing candidate times.
        let (start, before) = GapInfo::new(&local, &tz)?.begin?;
        let offset_before = before.fix();
        let transition = start.checked_sub_offset(offset_before)?;
        let offset_after = tz.offset_from_utc_datetime(&transition).fix();
        let end = transition.checked_add_offset(offset_after)?;
        Some(Gap {
            start,
            end,
            offset_before,
        })
    }
}

/// Describes a spring-forward jump for [`TimeError::InGap`], e.g.
/// `from 02:00 to 03:00 (EST to EDT)`. Only the zone's name and the gap's
/// wall-clock bounds are stored in the error, so the offsets' names are looked
/// up again here; if that fails the parenthesis is simply left out.
fn describe_jump(zone: &str, gap_start: &NaiveDateTime, gap_end: &NaiveDateTime) -> String {
    let (start, end) = (WallClock::of(gap_start), WallClock::of(gap_end));
    let mut jump = if gap_start.date() == gap_end.date() {
        format!("from {} to {}", start.clock(), end.clock())
    } else {
        // A gap across midnight (Samoa skipped all of 2011-12-30) needs dates.
        format!(
            "from {}{} to {}{}",
            start.day(),
            start.clock(),
            end.day(),
            end.clock()
        )
    };
    if let Some((before, after)) = jump_offsets(zone, gap_start, gap_end) {
        jump = format!("{jump} ({before} to {after})");
    }
    jump
}

/// The names of the offsets on either side of a gap, e.g. `("EST", "EDT")`.
fn jump_offsets(
    zone: &str,
    gap_start: &NaiveDateTime,
    gap_end: &NaiveDateTime,
) -> Option<(String, String)> {
    let tz = zone.parse::<Tz>().ok()?;
    let just_before = gap_start.checked_sub_signed(TimeDelta::seconds(1))?;
    // Were either instant also in an overlap, the side nearer the gap is the
    // later offset before it and the earlier offset after it.
    let before = tz.offset_from_local_datetime(&just_before).latest()?;
    let after = tz.offset_from_local_datetime(gap_end).earliest()?;
    Some((offset_label(&before), offset_label(&after)))
}

/// A readable name for an offset: its abbreviation when the tz database has
/// a real one ("EDT"), otherwise the numeric offset ("UTC+10:30") — many zones,
/// Lord Howe among them, only have numeric pseudo-abbreviations like "+1030".
fn offset_label(offset: &chrono_tz::TzOffset) -> String {
    match offset.abbreviation() {
        Some(name) if name.starts_with(|c: char| c.is_ascii_alphabetic()) => name.to_owned(),
        _ => {
            let seconds = offset.fix().local_minus_utc();
            let sign = if seconds < 0 { '-' } else { '+' };
            let seconds = seconds.unsigned_abs();
            let (hours, minutes) = (seconds / 3600, seconds % 3600 / 60);
            format!("UTC{sign}{hours:02}:{minutes:02}")
        }
    }
}

/// The fields of a wall-clock time, formatted without going through chrono's
/// format strings (whose `to_string` would panic on a formatting error and
/// whose `naive_local` can panic at the edge of the range).
#[derive(Debug, Clone, Copy)]
struct WallClock {
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanosecond: u32,
}

impl WallClock {
    fn of(time: &(impl Datelike + Timelike)) -> Self {
        // chrono encodes a leap second as second 59 with a nanosecond field
        // of one billion or more; show it as :60 like ISO 8601 does.
        let leap = time.nanosecond() / 1_000_000_000;
        WallClock {
            year: time.year(),
            month: time.month(),
            day: time.day(),
            hour: time.hour(),
            minute: time.minute(),
            second: time.second() + leap,
            nanosecond: time.nanosecond() % 1_000_000_000,
        }
    }

    fn truncated_to_micros(self) -> Self {
        WallClock {
            nanosecond: self.nanosecond / 1_000 * 1_000,
            ..self
        }
    }

    /// `YYYY-MM-DDT`, the date part of the ISO form.
    fn day(&self) -> String {
        let mut day = String::with_capacity(12);
        // Writing into a String cannot fail.
        let _ = self.write_day(&mut day);
        day
    }

    fn write_day(&self, out: &mut impl fmt::Write) -> fmt::Result {
        if (0..=9999).contains(&self.year) {
            write!(out, "{:04}", self.year)?;
        } else {
            write!(out, "{:+05}", self.year)?;
        }
        write!(out, "-{:02}-{:02}T", self.month, self.day)
    }

    /// `HH:MM`, or `HH:MM:SS` when the seconds matter: gap bounds are almost
    /// always whole minutes, and "02:00 to 03:00" reads better than seconds.
    fn clock(&self) -> String {
        if self.second == 0 && self.nanosecond == 0 {
            format!("{:02}:{:02}", self.hour, self.minute)
        } else {
            format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
        }
    }
}

impl fmt::Display for WallClock {
    /// `YYYY-MM-DDTHH:MM:SS`, plus six fractional digits when the time has
    /// whole microseconds, or nine when it has nanoseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_day(f)?;
        write!(f, "{:02}:{:02}:{:02}", self.hour, self.minute, self.second)?;
        match self.nanosecond {
            0 => Ok(()),
            nanos if nanos % 1_000 == 0 => write!(f, ".{:06}", nanos / 1_000),
            nanos => write!(f, ".{nanos:09}"),
        }
    }
}

/// What is wrong with a date or time text, before it is worded for the
/// particular field it came from.
#[derive(Debug)]
enum Problem {
    /// The text does not have the expected shape.
    Format,
    /// The shape is right but a field is out of range; the text says which.
    Range(String),
}

impl Problem {
    fn explain(self, expected_format: &str) -> String {
        match self {
            Problem::Format => expected_format.to_owned(),
            Problem::Range(reason) => reason,
        }
    }
}

/// Parses exactly `YYYY-MM-DD`. Works on bytes so that no slicing can land
/// inside a multi-byte character.
fn parse_date_bytes(bytes: &[u8]) -> Result<NaiveDate, Problem> {
    let [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = *bytes else {
        return Err(Problem::Format);
    };
    let year = digits(&[y1, y2, y3, y4]).ok_or(Problem::Format)?;
    let month = digits(&[m1, m2]).ok_or(Problem::Format)?;
    let day = digits(&[d1, d2]).ok_or(Problem::Format)?;
    if !(1..=12).contains(&month) {
        return Err(Problem::Range(format!(
            "month {month:02} does not exist (01-12)"
        )));
    }
    // Four digits keep the year well inside chrono's range, so `None` here can
    // only mean the day does not exist in that month.
    let year = i32::try_from(year).map_err(|_| Problem::Format)?;
    NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| Problem::Range(format!("{year:04}-{month:02} has no day {day:02}")))
}

/// Parses `HH:MM`, `HH:MM:SS` and, when `fraction` is allowed,
/// `HH:MM:SS.f` with one to nine digits.
fn parse_time_bytes(bytes: &[u8], fraction: bool) -> Result<NaiveTime, Problem> {
    let (hour, minute, rest) = match bytes {
        [h1, h2, b':', m1, m2, rest @ ..] => (
            digits(&[*h1, *h2]).ok_or(Problem::Format)?,
            digits(&[*m1, *m2]).ok_or(Problem::Format)?,
            rest,
        ),
        _ => return Err(Problem::Format),
    };
    let (second, nanosecond) = match rest {
        [] => (0, 0),
        [b':', s1, s2] => (digits(&[*s1, *s2]).ok_or(Problem::Format)?, 0),
        [b':', s1, s2, b'.', fraction_digits @ ..]
            if fraction && (1..=9).contains(&fraction_digits.len()) =>
        {
            let second = digits(&[*s1, *s2]).ok_or(Problem::Format)?;
            let value = digits(fraction_digits).ok_or(Problem::Format)?;
            // Read "5" as 500_000_000 ns: pad the digits to nine places.
            let nanos = (fraction_digits.len()..9).fold(value, |nanos, _| nanos * 10);
            (second, nanos)
        }
        _ => return Err(Problem::Format),
    };
    if hour > 23 {
        return Err(Problem::Range(format!(
            "hour {hour:02} is out of range (00-23)"
        )));
    }
    if minute > 59 {
        return Err(Problem::Range(format!(
            "minute {minute:02} is out of range (00-59)"
        )));
    }
    if second > 59 {
        return Err(Problem::Range(format!(
            "second {second:02} is out of range (00-59; leap seconds are not supported)"
        )));
    }
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanosecond).ok_or(Problem::Format)
}

/// The value of a run of ASCII digits; `None` if any byte is not a digit.
/// Callers pass at most nine digits, which always fit in a `u32`.
fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 {
        return None;
    }
    bytes.iter().try_fold(0_u32, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// Whether the time part of a date-time ends in `Z` or carries a `+hh:mm` /
/// `-hh:mm` offset. A plain local time never contains `+` or `-`.
fn has_utc_offset(time: &[u8]) -> bool {
    matches!(time.last(), Some(b'Z' | b'z')) || time.iter().any(|b| matches!(b, b'+' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).unwrap()
    }

    fn local(text: &str) -> NaiveDateTime {
        parse_local_datetime(text).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    const REJECT: DstPolicy = DstPolicy {
        gap: GapPolicy::Reject,
        overlap: OverlapPolicy::Earlier,
    };
    const SHIFT: DstPolicy = DstPolicy {
        gap: GapPolicy::ShiftForward,
        overlap: OverlapPolicy::Earlier,
    };
    const LATER: DstPolicy = DstPolicy {
        gap: GapPolicy::Reject,
        overlap: OverlapPolicy::Later,
    };

    #[test]
    fn parses_known_zones_and_trims() {
        let paris = zone("  Europe/Paris\n");
        assert_eq!(paris.name(), "Europe/Paris");
        assert_eq!(paris.to_string(), "Europe/Paris");
        assert_eq!(paris.tz(), chrono_tz::Europe::Paris);
        assert_eq!(zone("UTC"), TimeZone::UTC);
        assert_eq!(TimeZone::UTC.name(), "UTC");
    }

    #[test]
    fn rejects_unknown_and_empty_zones() {
        for name in ["Mars/Olympus_Mons", "europe/paris", "", "   ", "+02:00"] {
            let error = TimeZone::parse(name).unwrap_err();
            assert_eq!(error, TimeError::UnknownZone(name.to_owned()));
            let message = error.to_string();
            assert!(message.contains(&format!("{name:?}")), "{message}");
            assert!(message.contains("Europe/Paris"), "{message}");
        }
    }

    #[test]
    fn unique_local_times_map_to_their_instant() {
        let cases = [
            ("Europe/Paris", "2025-07-14T12:00", "2025-07-14T10:00:00Z"),
            ("Europe/Paris", "2025-01-14T12:00", "2025-01-14T11:00:00Z"),
            ("Asia/Kolkata", "2025-10-15T14:00", "2025-10-15T08:30:00Z"),
            ("Asia/Kathmandu", "2025-10-15T14:00", "2025-10-15T08:15:00Z"),
            ("UTC", "2025-10-15T14:00:00.5", "2025-10-15T14:00:00.5Z"),
        ];
        for (name, wall, expected) in cases {
            let instant = resolve_local(zone(name), local(wall), REJECT).unwrap();
            assert_eq!(instant, utc(expected), "{wall} in {name}");
        }
    }

    #[test]
    fn new_york_spring_forward_gap_is_rejected_with_its_bounds() {
        let error =
            resolve_local(zone("America/New_York"), local("2025-03-09T02:30"), REJECT).unwrap_err();
        assert_eq!(
            error,
            TimeError::InGap {
                local: local("2025-03-09T02:30"),
                zone: "America/New_York",
                gap_start: local("2025-03-09T02:00"),
                gap_end: local("2025-03-09T03:00"),
            }
        );
        assert_eq!(
            error.to_string(),
            "local time 2025-03-09T02:30:00 does not exist in America/New_York: the clocks jump \
             from 02:00 to 03:00 (EST to EDT); choose another time or set dst_gap_policy to \
             DST_GAP_SHIFT_FORWARD"
        );
    }

    #[test]
    fn new_york_gap_shifts_forward_by_an_hour() {
        let instant =
            resolve_local(zone("America/New_York"), local("2025-03-09T02:30"), SHIFT).unwrap();
        assert_eq!(instant, utc("2025-03-09T07:30:00Z"));
        assert_eq!(
            format_local(instant, zone("America/New_York")),
            "2025-03-09T03:30:00"
        );
        // The gap's first instant shifts to the transition itself.
        let start =
            resolve_local(zone("America/New_York"), local("2025-03-09T02:00"), SHIFT).unwrap();
        assert_eq!(start, utc("2025-03-09T07:00:00Z"));
        // Just outside the gap nothing moves.
        let before = resolve_local(
            zone("America/New_York"),
            local("2025-03-09T01:59:59"),
            SHIFT,
        )
        .unwrap();
        assert_eq!(before, utc("2025-03-09T06:59:59Z"));
    }

    #[test]
    fn new_york_fall_back_overlap_follows_the_policy() {
        let ny = zone("America/New_York");
        let wall = local("2025-11-02T01:30");
        assert_eq!(
            resolve_local(ny, wall, REJECT).unwrap(),
            utc("2025-11-02T05:30:00Z")
        );
        assert_eq!(
            resolve_local(ny, wall, LATER).unwrap(),
            utc("2025-11-02T06:30:00Z")
        );
        assert_eq!(
            resolve_local(ny, wall, DstPolicy::default()).unwrap(),
            utc("2025-11-02T05:30:00Z")
        );
    }

    #[test]
    fn lord_howe_half_hour_gap() {
        let lord_howe = zone("Australia/Lord_Howe");
        let wall = local("2025-10-05T02:15");
        let error = resolve_local(lord_howe, wall, REJECT).unwrap_err();
        let TimeError::InGap {
            gap_start, gap_end, ..
        } = error
        else {
            panic!("expected a gap, got {error:?}");
        };
        assert_eq!(gap_start, local("2025-10-05T02:00"));
        assert_eq!(gap_end, local("2025-10-05T02:30"));
        let message = error.to_string();
        assert!(
            message.contains("from 02:00 to 02:30 (UTC+10:30 to UTC+11:00)"),
            "{message}"
        );

        let shifted = resolve_local(lord_howe, wall, SHIFT).unwrap();
        assert_eq!(shifted, utc("2025-10-04T15:45:00Z"));
        assert_eq!(format_local(shifted, lord_howe), "2025-10-05T02:45:00");
    }

    #[test]
    fn lord_howe_half_hour_overlap() {
        let lord_howe = zone("Australia/Lord_Howe");
        let wall = local("2025-04-06T01:45");
        let earlier = resolve_local(lord_howe, wall, REJECT).unwrap();
        let later = resolve_local(lord_howe, wall, LATER).unwrap();
        assert_eq!(earlier, utc("2025-04-05T14:45:00Z"));
        assert_eq!(later - earlier, TimeDelta::minutes(30));
        assert_eq!(format_local(earlier, lord_howe), "2025-04-06T01:45:00");
        assert_eq!(format_local(later, lord_howe), "2025-04-06T01:45:00");
    }

    #[test]
    fn whole_day_gap_names_both_dates() {
        // Samoa moved across the date line and skipped 2011-12-30 entirely.
        let error = resolve_local(zone("Pacific/Apia"), local("2011-12-30T12:00"), REJECT)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("from 2011-12-30T00:00 to 2011-12-31T00:00"),
            "{error}"
        );
    }

    #[test]
    fn format_local_round_trips_and_shows_micros_only_when_present() {
        let paris = zone("Europe/Paris");
        for wall in [
            "2025-07-14T12:00:00",
            "2025-07-14T12:00:00.000001",
            "2025-12-31T23:59:59.123456",
        ] {
            let instant = resolve_local(paris, local(wall), REJECT).unwrap();
            assert_eq!(format_local(instant, paris), wall);
        }
        let instant = utc("2025-07-14T10:00:00.5Z");
        assert_eq!(format_local(instant, paris), "2025-07-14T12:00:00.500000");
        assert_eq!(
            format_local(instant, TimeZone::UTC),
            "2025-07-14T10:00:00.500000"
        );
        // Nanoseconds below the microsecond are dropped, not rounded.
        let instant = utc("2025-07-14T10:00:00.000000999Z");
        assert_eq!(format_local(instant, TimeZone::UTC), "2025-07-14T10:00:00");
    }

    #[test]
    fn parses_accepted_local_datetime_forms() {
        let expected = NaiveDate::from_ymd_opt(2025, 10, 15)
            .unwrap()
            .and_hms_opt(14, 0, 0)
            .unwrap();
        for text in [
            "2025-10-15T14:00",
            "2025-10-15T14:00:00",
            "2025-10-15 14:00",
            " 2025-10-15t14:00:00 ",
        ] {
            assert_eq!(parse_local_datetime(text).unwrap(), expected, "{text}");
        }
        let fraction = parse_local_datetime("2025-10-15T14:00:00.123456789").unwrap();
        assert_eq!(fraction.nanosecond(), 123_456_789);
        let fraction = parse_local_datetime("2025-10-15T14:00:00.5").unwrap();
        assert_eq!(fraction.nanosecond(), 500_000_000);
    }

    #[test]
    fn rejects_malformed_local_datetimes() {
        for text in [
            "",
            "garbage",
            "2025-10-15",
            "2025-10-15T",
            "2025-10-15T14",
            "2025-10-15T14:0",
            "2025-10-15X14:00",
            "2025/10/15T14:00",
            "25-10-15T14:00",
            "2025-10-15T14:00:00.",
            "2025-10-15T14:00:00.1234567890",
            "2025-10-15T14:00:00 extra",
            "2025-10-15T14:00é",
            "é025-10-15T14:00",
            "262143-01-01T00:00",
            "+262143-01-01T00:00",
        ] {
            let error = parse_local_datetime(text).unwrap_err();
            let TimeError::InvalidLocalTime { input, reason } = &error else {
                panic!("{text}: unexpected {error:?}");
            };
            assert_eq!(input, text);
            assert!(reason.contains("YYYY-MM-DDTHH:MM"), "{text}: {reason}");
        }
    }

    #[test]
    fn rejects_impossible_local_datetimes_naming_the_field() {
        let cases = [
            ("2025-13-01T00:00", "month 13"),
            ("2025-00-01T00:00", "month 00"),
            ("2025-02-29T00:00", "no day 29"),
            ("2025-04-31T00:00", "no day 31"),
            ("2025-10-15T25:00", "hour 25"),
            ("2025-10-15T24:00", "hour 24"),
            ("2025-10-15T14:60", "minute 60"),
            ("2025-10-15T23:59:60", "second 60"),
        ];
        for (text, expected) in cases {
            let message = parse_local_datetime(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains(&format!("{text:?}")), "{text}: {message}");
        }
        assert!(parse_local_datetime("2024-02-29T00:00").is_ok());
    }

    #[test]
    fn rejects_offsets_pointing_to_scheduled_for_and_time_zone() {
        for text in [
            "2025-10-15T14:00:00Z",
            "2025-10-15T14:00z",
            "2025-10-15T14:00:00+02:00",
            "2025-10-15T14:00:00-0500",
            "2025-10-15T14:00:00.123+05:30",
        ] {
            let message = parse_local_datetime(text).unwrap_err().to_string();
            assert!(message.contains("scheduled_for"), "{text}: {message}");
            assert!(message.contains("time_zone"), "{text}: {message}");
        }
    }

    #[test]
    fn parses_dates() {
        assert_eq!(
            parse_local_date(" 2025-10-15 ").unwrap(),
            NaiveDate::from_ymd_opt(2025, 10, 15).unwrap()
        );
        for (text, expected) in [
            ("garbage", "YYYY-MM-DD"),
            ("2025-10-15T00:00", "YYYY-MM-DD"),
            ("2025-1-15", "YYYY-MM-DD"),
            ("2025-13-01", "month 13"),
            ("2025-02-30", "no day 30"),
            ("", "YYYY-MM-DD"),
        ] {
            let error = parse_local_date(text).unwrap_err();
            assert!(
                matches!(error, TimeError::InvalidDate { .. }),
                "{text}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.starts_with("invalid date"), "{message}");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn parses_times_of_day() {
        assert_eq!(
            parse_time_of_day("09:30").unwrap(),
            NaiveTime::from_hms_opt(9, 30, 0).unwrap()
        );
        assert_eq!(
            parse_time_of_day(" 23:59:59 ").unwrap(),
            NaiveTime::from_hms_opt(23, 59, 59).unwrap()
        );
        for (text, expected) in [
            ("25:00", "hour 25"),
            ("12:60", "minute 60"),
            ("9:30", "HH:MM"),
            ("09:30:00.5", "HH:MM"),
            ("noon", "HH:MM"),
            ("", "HH:MM"),
        ] {
            let error = parse_time_of_day(text).unwrap_err();
            assert!(
                matches!(error, TimeError::InvalidTimeOfDay { .. }),
                "{text}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.starts_with("invalid time of day"), "{message}");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn long_inputs_are_shortened_in_errors() {
        let long = "x".repeat(10_000);
        let message = parse_local_datetime(&long).unwrap_err().to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.contains('…'));
        let message = TimeZone::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
    }

    #[test]
    fn far_out_values_do_not_panic() {
        let zones = [
            "UTC",
            "America/New_York",
            "Pacific/Kiritimati",
            "Etc/GMT+12",
            "Australia/Lord_Howe",
        ];
        let walls = [
            NaiveDateTime::MAX,
            NaiveDateTime::MIN,
            NaiveDate::from_ymd_opt(262_142, 12, 31)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap(),
            NaiveDate::from_ymd_opt(9999, 3, 14)
                .unwrap()
                .and_hms_opt(2, 30, 0)
                .unwrap(),
        ];
        for name in zones {
            for wall in walls {
                for policy in [REJECT, SHIFT, LATER] {
                    match resolve_local(zone(name), wall, policy) {
                        Ok(instant) => {
                            let _ = format_local(instant, zone(name));
                        }
                        Err(error) => {
                            let _ = error.to_string();
                        }
                    }
                }
            }
            let _ = format_local(DateTime::<Utc>::MAX_UTC, zone(name));
            let _ = format_local(DateTime::<Utc>::MIN_UTC, zone(name));
        }
        // The last representable local time in a zone west of UTC has no instant.
        let error =
            resolve_local(zone("America/New_York"), NaiveDateTime::MAX, REJECT).unwrap_err();
        assert_eq!(
            error,
            TimeError::OutOfRange {
                local: NaiveDateTime::MAX,
                zone: "America/New_York"
            }
        );
        assert!(
            error.to_string().contains("+262142-12-31T23:59:59"),
            "{error}"
        );
        // …and the last instant shows past chrono's last day east of UTC.
        assert_eq!(
            format_local(DateTime::<Utc>::MAX_UTC, zone("Asia/Tokyo")),
            "+262143-01-01T08:59:59.999999"
        );
        // …and the first instant shows before chrono's first day west of UTC
        // (New York's local mean time then was UTC-04:56:02).
        assert_eq!(
            format_local(DateTime::<Utc>::MIN_UTC, zone("America/New_York")),
            "-262144-12-31T19:03:58"
        );
    }
}
