//! Calendar grids in a time zone: which local dates a month or week view
//! shows, and where each local day begins and ends as instants. Days are
//! bounded by local midnights, so a post at 23:30 local lands on its own
//! day whatever the offset, also across daylight-saving changes.

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, Utc, Weekday};

use super::time::{DstPolicy, GapPolicy, OverlapPolicy, TimeError, TimeZone, resolve_local};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarView {
    /// A month as whole weeks, with the spill-over days of the first and
    /// last week.
    Month { year: i32, month: u32 },
    /// Seven days from a date.
    Week { start: NaiveDate },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("month must be between 1 and 12, got {0}")]
    InvalidMonth(u32),
    #[error("year {0} is out of the supported range")]
    OutOfRange(i32),
    #[error(transparent)]
    Time(#[from] TimeError),
}

/// The dates a view shows, whole weeks starting on `week_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarGrid {
    pub dates: Vec<NaiveDate>,
    /// The month shown, for marking spill-over days; `None` for a week.
    pub month: Option<(i32, u32)>,
}

impl CalendarGrid {
    pub fn new(view: CalendarView, week_start: Weekday) -> Result<Self, CalendarError> {
        let (first, last, month) = match view {
            CalendarView::Month { year, month } => {
                if !(1..=12).contains(&month) {
                    return Err(CalendarError::InvalidMonth(month));
                }
                if !(1..=9_999).contains(&year) {
                    return Err(CalendarError::OutOfRange(year));
                }
                let first = NaiveDate::from_ymd_opt(year, month, 1)
                    .ok_or(CalendarError::OutOfRange(year))?;
                let next_month = if month == 12 {
                    NaiveDate::from_ymd_opt(year + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(year, month + 1, 1)
                }
                .ok_or(CalendarError::OutOfRange(year))?;
                let last = next_month
                    .pred_opt()
                    .ok_or(CalendarError::OutOfRange(year))?;
                let lead = days_since(first.weekday(), week_start);
                let trail = 6 - days_since(last.weekday(), week_start);
                (
                    first
                        .checked_sub_days(Days::new(lead))
                        .ok_or(CalendarError::OutOfRange(year))?,
                    last.checked_add_days(Days::new(trail))
                        .ok_or(CalendarError::OutOfRange(year))?,
                    Some((year, month)),
                )
            }
            CalendarView::Week { start } => (
                start,
                start
                    .checked_add_days(Days::new(6))
                    .ok_or(CalendarError::OutOfRange(start.year()))?,
                None,
            ),
        };
        let dates = first.iter_days().take_while(|date| *date <= last).collect();
        Ok(Self { dates, month })
    }

    pub fn first(&self) -> Option<NaiveDate> {
        self.dates.first().copied()
    }

    pub fn last(&self) -> Option<NaiveDate> {
        self.dates.last().copied()
    }

    pub fn in_month(&self, date: NaiveDate) -> bool {
        self.month
            .is_none_or(|(year, month)| date.year() == year && date.month() == month)
    }

    /// The instants bounding the grid: the first day's local midnight and
    /// the local midnight after the last day.
    pub fn bounds(&self, zone: TimeZone) -> Result<(DateTime<Utc>, DateTime<Utc>), CalendarError> {
        let (Some(first), Some(last)) = (self.first(), self.last()) else {
            return Err(CalendarError::OutOfRange(0));
        };
        let after = last
            .succ_opt()
            .ok_or(CalendarError::OutOfRange(last.year()))?;
        Ok((day_start(zone, first)?, day_start(zone, after)?))
    }
}

/// Days from `start` to `day` going forward (0 to 6).
fn days_since(day: Weekday, start: Weekday) -> u64 {
    u64::from((7 + day.num_days_from_monday() - start.num_days_from_monday()) % 7)
}

/// The instant a local day begins. Where midnight falls in a DST gap (some
/// zones change at 00:00) the day begins when the clocks resume.
pub fn day_start(zone: TimeZone, date: NaiveDate) -> Result<DateTime<Utc>, TimeError> {
    let policy = DstPolicy {
        gap: GapPolicy::ShiftForward,
        overlap: OverlapPolicy::Earlier,
    };
    resolve_local(zone, date.and_time(NaiveTime::MIN), policy)
}

/// The local date of an instant in a zone.
pub fn local_date(instant: DateTime<Utc>, zone: TimeZone) -> NaiveDate {
    instant.with_timezone(&zone.tz()).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn a_month_spans_whole_weeks_from_the_week_start() {
        let grid = CalendarGrid::new(
            CalendarView::Month {
                year: 2025,
                month: 10,
            },
            Weekday::Mon,
        )
        .unwrap();
        assert_eq!(grid.first(), Some(date(2025, 9, 29)));
        assert_eq!(grid.last(), Some(date(2025, 11, 2)));
        assert_eq!(grid.dates.len(), 35);
        assert!(!grid.in_month(date(2025, 9, 30)));
        assert!(grid.in_month(date(2025, 10, 31)));
        let sunday = CalendarGrid::new(
            CalendarView::Month {
                year: 2025,
                month: 10,
            },
            Weekday::Sun,
        )
        .unwrap();
        assert_eq!(sunday.first(), Some(date(2025, 9, 28)));
        assert_eq!(sunday.last(), Some(date(2025, 11, 1)));
    }

    #[test]
    fn days_are_bounded_by_local_midnights_across_dst() {
        let paris = TimeZone::parse("Europe/Paris").unwrap();
        let grid = CalendarGrid::new(
            CalendarView::Month {
                year: 2025,
                month: 10,
            },
            Weekday::Mon,
        )
        .unwrap();
        let (from, to) = grid.bounds(paris).unwrap();
        assert_eq!(from.to_rfc3339(), "2025-09-28T22:00:00+00:00");
        // After the fall-back on 26 October, midnight is 23:00 UTC.
        assert_eq!(to.to_rfc3339(), "2025-11-02T23:00:00+00:00");
        let late_evening = "2025-10-26T22:30:00Z".parse().unwrap();
        assert_eq!(local_date(late_evening, paris), date(2025, 10, 26));
    }

    #[test]
    fn odd_offset_zones_place_posts_on_their_local_day() {
        let chatham = TimeZone::parse("Pacific/Chatham").unwrap();
        // 09:50 UTC is 23:35 in Chatham (+13:45 in its summer).
        let instant = "2025-01-10T09:50:00Z".parse().unwrap();
        assert_eq!(local_date(instant, chatham), date(2025, 1, 10));
        assert_eq!(
            day_start(chatham, date(2025, 1, 11)).unwrap().to_rfc3339(),
            "2025-01-10T10:15:00+00:00"
        );
    }

    #[test]
    fn a_midnight_in_a_gap_starts_the_day_when_clocks_resume() {
        // Santiago springs forward at 00:00 on 2025-09-07.
        let santiago = TimeZone::parse("America/Santiago").unwrap();
        let start = day_start(santiago, date(2025, 9, 7)).unwrap();
        assert_eq!(start.to_rfc3339(), "2025-09-07T04:00:00+00:00");
    }

    #[test]
    fn bad_months_are_refused() {
        assert!(
            CalendarGrid::new(
                CalendarView::Month {
                    year: 2025,
                    month: 13
                },
                Weekday::Mon
            )
            .is_err()
        );
        assert!(
            CalendarGrid::new(CalendarView::Month { year: 0, month: 1 }, Weekday::Mon).is_err()
        );
        let week = CalendarGrid::new(
            CalendarView::Week {
                start: date(2025, 10, 6),
            },
            Weekday::Mon,
        )
        .unwrap();
        assert_eq!(week.dates.len(), 7);
        assert!(week.in_month(date(2025, 10, 12)));
    }
}
