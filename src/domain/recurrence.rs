//! Recurring wall-clock schedules.
//!
//! This module owns the expansion of a recurrence rule ("every weekday at
//! 09:00 in `Europe/Paris`", "every 6 hours from 2025-11-01 20:00 in
//! `America/New_York`") into concrete [`Occurrence`]s: the wall-clock time a
//! person sees and the UTC instant it fires at.
//!
//! Calendar patterns ([`Pattern::Daily`], [`Pattern::Weekdays`],
//! [`Pattern::Weekly`]) keep the wall-clock time: 09:00 stays 09:00 local
//! across daylight-saving changes, so the UTC instant moves. Each date is
//! resolved on its own through [`resolve_local`] with the recurrence's
//! [`DstPolicy`]. [`Pattern::EveryNHours`] instead counts elapsed time: the
//! instants are exactly N hours apart and the wall-clock time moves when the
//! clocks change.

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone as _, Utc,
    Weekday,
};

use crate::domain::time::{DstPolicy, TimeError, TimeZone, resolve_local};

/// The smallest and largest interval, in hours, of [`Pattern::EveryNHours`]:
/// at least hourly, at most weekly.
const INTERVAL_HOURS: std::ops::RangeInclusive<u32> = 1..=168;

/// How many occurrences [`Recurrence::occurrences`] reserves room for up
/// front. The count comes from a request, so reserving it blindly would let a
/// huge count abort the process before a single occurrence is computed; past
/// this the vector grows as usual.
const MAX_PREALLOCATED: usize = 1024;

/// Which dates or instants a recurrence falls on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Every day.
    Daily,
    /// Monday to Friday.
    Weekdays,
    /// The listed days of the week; [`Recurrence::new`] requires at least one
    /// and removes duplicates.
    Weekly(Vec<Weekday>),
    /// Every N hours of elapsed time, N in 1..=168.
    EveryNHours(u32),
}

/// A validated recurrence rule: a pattern, where it starts, the local time of
/// day, and the zone and DST policy that turn local times into instants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    pattern: Pattern,
    start_date: NaiveDate,
    time_of_day: NaiveTime,
    zone: TimeZone,
    policy: DstPolicy,
}

/// One occurrence of a recurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// The wall-clock time in the recurrence's zone, as a clock there shows
    /// it: for a time shifted out of a DST gap, the shifted time.
    pub local: NaiveDateTime,
    /// The instant the occurrence happens at.
    pub instant: DateTime<Utc>,
}

/// Why a recurrence was refused or could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    /// A [`Pattern::Weekly`] without any weekday.
    #[error("a WEEKLY recurrence needs at least one weekday")]
    NoWeekdays,
    /// A [`Pattern::EveryNHours`] interval outside 1..=168.
    #[error("interval_hours must be between 1 and 168, got {0}")]
    IntervalOutOfRange(i64),
    /// One occurrence's local time could not be turned into an instant,
    /// typically because it falls into a DST gap under [`GapPolicy::Reject`].
    ///
    /// [`GapPolicy::Reject`]: crate::domain::time::GapPolicy::Reject
    #[error("occurrence {index} ({local}): {source}")]
    Time {
        /// The occurrence's position, counting from 0.
        index: usize,
        /// Its requested wall-clock time.
        local: NaiveDateTime,
        /// Why that time was refused.
        #[source]
        source: TimeError,
    },
    /// The occurrences run past the last date chrono can represent.
    #[error("the recurrence runs past the supported range of dates")]
    OutOfRange,
}

impl Recurrence {
    /// Builds a recurrence, checking the pattern: [`Pattern::Weekly`] needs
    /// at least one weekday (duplicates are dropped and the days put in
    /// Monday-to-Sunday order, so equal rules compare equal) and
    /// [`Pattern::EveryNHours`] an interval in 1..=168.
    ///
    /// The first occurrence is on `start_date` if the pattern matches that
    /// date, at `time_of_day` in `zone`.
    ///
    /// # Errors
    ///
    /// [`RecurrenceError::NoWeekdays`] or [`RecurrenceError::IntervalOutOfRange`].
    pub fn new(
        pattern: Pattern,
        start_date: NaiveDate,
        time_of_day: NaiveTime,
        zone: TimeZone,
        policy: DstPolicy,
    ) -> Result<Self, RecurrenceError> {
        let pattern = match pattern {
            Pattern::Weekly(mut days) => {
                days.sort_by_key(Weekday::num_days_from_monday);
                days.dedup();
                if days.is_empty() {
                    return Err(RecurrenceError::NoWeekdays);
                }
                Pattern::Weekly(days)
            }
            Pattern::EveryNHours(hours) if !INTERVAL_HOURS.contains(&hours) => {
                return Err(RecurrenceError::IntervalOutOfRange(i64::from(hours)));
            }
            other => other,
        };
        Ok(Recurrence {
            pattern,
            start_date,
            time_of_day,
            zone,
            policy,
        })
    }

    /// The pattern, with weekly days deduplicated and in order.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The first date the recurrence may fall on.
    pub fn start_date(&self) -> NaiveDate {
        self.start_date
    }

    /// The local time of day of the (first) occurrence.
    pub fn time_of_day(&self) -> NaiveTime {
        self.time_of_day
    }

    /// The zone the local times are in.
    pub fn zone(&self) -> TimeZone {
        self.zone
    }

    /// How local times in DST gaps and overlaps are resolved.
    pub fn policy(&self) -> DstPolicy {
        self.policy
    }

    /// The first `count` occurrences, in order.
    ///
    /// For the calendar patterns, each matching date from `start_date` on
    /// (inclusive) contributes `time_of_day` local, resolved with the policy.
    /// If one of them falls into a DST gap and the policy rejects gaps, the
    /// result is [`RecurrenceError::Time`] naming that occurrence: a schedule
    /// with a silently missing or moved post is worse than a clear refusal.
    ///
    /// For [`Pattern::EveryNHours`], the first occurrence is `start_date` at
    /// `time_of_day` resolved with the policy, and each next one exactly N
    /// hours of elapsed time later.
    ///
    /// The caller bounds `count`: the result holds that many occurrences.
    ///
    /// # Errors
    ///
    /// - [`RecurrenceError::Time`] for the first occurrence whose local time
    ///   the policy refuses;
    /// - [`RecurrenceError::OutOfRange`] when the occurrences run past
    ///   chrono's last representable date.
    pub fn occurrences(&self, count: usize) -> Result<Vec<Occurrence>, RecurrenceError> {
        let mut occurrences = Vec::with_capacity(count.min(MAX_PREALLOCATED));
        match &self.pattern {
            Pattern::EveryNHours(hours) => {
                let step = TimeDelta::hours(i64::from(*hours));
                let mut previous: Option<DateTime<Utc>> = None;
                for index in 0..count {
                    let instant = match previous {
                        None => self.resolve(index, self.start_date.and_time(self.time_of_day))?,
                        Some(previous) => previous
                            .checked_add_signed(step)
                            .ok_or(RecurrenceError::OutOfRange)?,
                    };
                    occurrences.push(self.occurrence_at(instant)?);
                    previous = Some(instant);
                }
            }
            Pattern::Daily | Pattern::Weekdays | Pattern::Weekly(_) => {
                let mut date = self.start_date;
                for index in 0..count {
                    // Every pattern matches at least one day a week, so this
                    // stops within seven steps or at the end of the calendar.
                    while !self.falls_on(date) {
                        date = date.succ_opt().ok_or(RecurrenceError::OutOfRange)?;
                    }
                    let instant = self.resolve(index, date.and_time(self.time_of_day))?;
                    occurrences.push(self.occurrence_at(instant)?);
                    // Step past this date only when another occurrence is
                    // wanted, so one on the calendar's last day is not an error.
                    if index + 1 < count {
                        date = date.succ_opt().ok_or(RecurrenceError::OutOfRange)?;
                    }
                }
            }
        }
        Ok(occurrences)
    }

    /// Whether a calendar pattern includes `date`.
    fn falls_on(&self, date: NaiveDate) -> bool {
        match &self.pattern {
            Pattern::Daily | Pattern::EveryNHours(_) => true,
            Pattern::Weekdays => !matches!(date.weekday(), Weekday::Sat | Weekday::Sun),
            Pattern::Weekly(days) => days.contains(&date.weekday()),
        }
    }

    /// The instant of the occurrence at `index` with wall-clock time `local`.
    fn resolve(
        &self,
        index: usize,
        local: NaiveDateTime,
    ) -> Result<DateTime<Utc>, RecurrenceError> {
        resolve_local(self.zone, local, self.policy).map_err(|source| match source {
            TimeError::OutOfRange { .. } => RecurrenceError::OutOfRange,
            source => RecurrenceError::Time {
                index,
                local,
                source,
            },
        })
    }

    /// The occurrence at `instant`, with the wall-clock time a clock in the
    /// zone shows then (which differs from the requested time of day when a
    /// gap time was shifted, and for every-N-hours across a DST change).
    fn occurrence_at(&self, instant: DateTime<Utc>) -> Result<Occurrence, RecurrenceError> {
        let utc = instant.naive_utc();
        let offset = self.zone.tz().offset_from_utc_datetime(&utc).fix();
        let local = utc
            .checked_add_offset(offset)
            .ok_or(RecurrenceError::OutOfRange)?;
        Ok(Occurrence { local, instant })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{GapPolicy, OverlapPolicy, parse_local_datetime};
    use chrono::Timelike;

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).unwrap()
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn time(hour: u32, minute: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(hour, minute, 0).unwrap()
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

    fn recurrence(
        pattern: Pattern,
        start: &str,
        at: NaiveTime,
        name: &str,
        policy: DstPolicy,
    ) -> Recurrence {
        Recurrence::new(pattern, date(start), at, zone(name), policy).unwrap()
    }

    #[test]
    fn daily_keeps_local_time_across_paris_fall_back() {
        let rule = recurrence(
            Pattern::Daily,
            "2025-10-24",
            time(9, 0),
            "Europe/Paris",
            REJECT,
        );
        let occurrences = rule.occurrences(5).unwrap();
        let locals: Vec<_> = occurrences.iter().map(|o| o.local).collect();
        assert_eq!(
            locals,
            [
                "2025-10-24T09:00",
                "2025-10-25T09:00",
                "2025-10-26T09:00",
                "2025-10-27T09:00",
                "2025-10-28T09:00"
            ]
            .map(local)
        );
        let utc_hours: Vec<_> = occurrences.iter().map(|o| o.instant.hour()).collect();
        assert_eq!(utc_hours, [7, 7, 8, 8, 8]);
        assert_eq!(occurrences[2].instant, utc("2025-10-26T08:00:00Z"));
    }

    #[test]
    fn daily_keeps_local_time_across_new_york_spring_forward() {
        let rule = recurrence(
            Pattern::Daily,
            "2025-03-07",
            time(9, 0),
            "America/New_York",
            REJECT,
        );
        let instants: Vec<_> = rule
            .occurrences(4)
            .unwrap()
            .iter()
            .map(|o| o.instant)
            .collect();
        assert_eq!(
            instants,
            [
                "2025-03-07T14:00:00Z",
                "2025-03-08T14:00:00Z",
                "2025-03-09T13:00:00Z",
                "2025-03-10T13:00:00Z"
            ]
            .map(utc)
        );
    }

    #[test]
    fn weekdays_starting_on_saturday_begin_on_monday_and_skip_weekends() {
        // 2025-10-18 is a Saturday.
        let rule = recurrence(
            Pattern::Weekdays,
            "2025-10-18",
            time(8, 30),
            "Europe/Paris",
            REJECT,
        );
        let occurrences = rule.occurrences(7).unwrap();
        let dates: Vec<_> = occurrences.iter().map(|o| o.local.date()).collect();
        assert_eq!(
            dates,
            [
                "2025-10-20",
                "2025-10-21",
                "2025-10-22",
                "2025-10-23",
                "2025-10-24",
                "2025-10-27",
                "2025-10-28"
            ]
            .map(date)
        );
        assert!(occurrences.iter().all(|o| o.local.time() == time(8, 30)));
    }

    #[test]
    fn weekly_visits_days_in_calendar_order_and_dedupes() {
        // 2025-10-15 is a Wednesday.
        let days = vec![Weekday::Thu, Weekday::Tue, Weekday::Thu];
        let rule = recurrence(
            Pattern::Weekly(days),
            "2025-10-15",
            time(12, 0),
            "UTC",
            REJECT,
        );
        assert_eq!(
            rule.pattern(),
            &Pattern::Weekly(vec![Weekday::Tue, Weekday::Thu])
        );
        assert_eq!(
            rule,
            recurrence(
                Pattern::Weekly(vec![Weekday::Tue, Weekday::Thu]),
                "2025-10-15",
                time(12, 0),
                "UTC",
                REJECT
            )
        );
        let instants: Vec<_> = rule
            .occurrences(5)
            .unwrap()
            .iter()
            .map(|o| o.instant)
            .collect();
        assert_eq!(
            instants,
            [
                "2025-10-16T12:00:00Z",
                "2025-10-21T12:00:00Z",
                "2025-10-23T12:00:00Z",
                "2025-10-28T12:00:00Z",
                "2025-10-30T12:00:00Z",
            ]
            .map(utc)
        );
    }

    #[test]
    fn weekly_includes_a_matching_start_date() {
        // 2025-10-14 is a Tuesday.
        let rule = recurrence(
            Pattern::Weekly(vec![Weekday::Tue]),
            "2025-10-14",
            time(7, 0),
            "UTC",
            REJECT,
        );
        let dates: Vec<_> = rule
            .occurrences(2)
            .unwrap()
            .iter()
            .map(|o| o.local.date())
            .collect();
        assert_eq!(dates, ["2025-10-14", "2025-10-21"].map(date));
    }

    #[test]
    fn every_n_hours_counts_elapsed_time_across_fall_back() {
        // New York falls back at 2025-11-02T06:00Z (02:00 EDT -> 01:00 EST).
        let rule = recurrence(
            Pattern::EveryNHours(6),
            "2025-11-01",
            time(20, 0),
            "America/New_York",
            REJECT,
        );
        let occurrences = rule.occurrences(4).unwrap();
        let instants: Vec<_> = occurrences.iter().map(|o| o.instant).collect();
        assert_eq!(
            instants,
            [
                "2025-11-02T00:00:00Z",
                "2025-11-02T06:00:00Z",
                "2025-11-02T12:00:00Z",
                "2025-11-02T18:00:00Z"
            ]
            .map(utc)
        );
        for pair in instants.windows(2) {
            assert_eq!(pair[1] - pair[0], TimeDelta::hours(6));
        }
        let locals: Vec<_> = occurrences.iter().map(|o| o.local).collect();
        assert_eq!(
            locals,
            [
                "2025-11-01T20:00",
                "2025-11-02T01:00",
                "2025-11-02T07:00",
                "2025-11-02T13:00"
            ]
            .map(local)
        );
    }

    #[test]
    fn daily_in_a_gap_is_rejected_naming_the_occurrence() {
        let rule = recurrence(
            Pattern::Daily,
            "2025-03-07",
            time(2, 30),
            "America/New_York",
            REJECT,
        );
        let error = rule.occurrences(5).unwrap_err();
        let RecurrenceError::Time {
            index,
            local: at,
            source,
        } = &error
        else {
            panic!("expected a time error, got {error:?}");
        };
        assert_eq!(*index, 2);
        assert_eq!(*at, local("2025-03-09T02:30"));
        assert!(matches!(source, TimeError::InGap { .. }), "{source:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("occurrence 2 (2025-03-09 02:30:00): local time"),
            "{message}"
        );
        assert!(message.contains("from 02:00 to 03:00"), "{message}");
        // Stopping before the gap is fine.
        assert_eq!(rule.occurrences(2).unwrap().len(), 2);
    }

    #[test]
    fn daily_in_a_gap_shifts_forward_that_day_only() {
        let rule = recurrence(
            Pattern::Daily,
            "2025-03-07",
            time(2, 30),
            "America/New_York",
            SHIFT,
        );
        let occurrences = rule.occurrences(4).unwrap();
        let locals: Vec<_> = occurrences.iter().map(|o| o.local).collect();
        assert_eq!(
            locals,
            [
                "2025-03-07T02:30",
                "2025-03-08T02:30",
                "2025-03-09T03:30",
                "2025-03-10T02:30"
            ]
            .map(local)
        );
        assert_eq!(occurrences[2].instant, utc("2025-03-09T07:30:00Z"));
        assert_eq!(occurrences[3].instant, utc("2025-03-10T06:30:00Z"));
    }

    #[test]
    fn every_n_hours_starting_in_a_gap_follows_the_policy() {
        let start = "2025-03-09";
        let rejected = recurrence(
            Pattern::EveryNHours(1),
            start,
            time(2, 30),
            "America/New_York",
            REJECT,
        )
        .occurrences(3)
        .unwrap_err();
        assert!(
            matches!(rejected, RecurrenceError::Time { index: 0, .. }),
            "{rejected:?}"
        );
        let shifted = recurrence(
            Pattern::EveryNHours(1),
            start,
            time(2, 30),
            "America/New_York",
            SHIFT,
        )
        .occurrences(2)
        .unwrap();
        assert_eq!(shifted[0].local, local("2025-03-09T03:30"));
        assert_eq!(shifted[1].instant, utc("2025-03-09T08:30:00Z"));
    }

    #[test]
    fn validates_the_pattern() {
        let new = |pattern| {
            Recurrence::new(
                pattern,
                date("2025-10-15"),
                time(9, 0),
                TimeZone::UTC,
                REJECT,
            )
        };
        assert_eq!(
            new(Pattern::Weekly(vec![])),
            Err(RecurrenceError::NoWeekdays)
        );
        assert_eq!(
            new(Pattern::EveryNHours(0)),
            Err(RecurrenceError::IntervalOutOfRange(0))
        );
        assert_eq!(
            new(Pattern::EveryNHours(169)),
            Err(RecurrenceError::IntervalOutOfRange(169))
        );
        assert_eq!(
            new(Pattern::EveryNHours(u32::MAX)),
            Err(RecurrenceError::IntervalOutOfRange(i64::from(u32::MAX)))
        );
        assert!(new(Pattern::EveryNHours(1)).is_ok());
        assert!(new(Pattern::EveryNHours(168)).is_ok());
        assert_eq!(
            RecurrenceError::IntervalOutOfRange(0).to_string(),
            "interval_hours must be between 1 and 168, got 0"
        );
        assert_eq!(
            RecurrenceError::NoWeekdays.to_string(),
            "a WEEKLY recurrence needs at least one weekday"
        );
    }

    #[test]
    fn zero_count_is_empty() {
        for pattern in [
            Pattern::Daily,
            Pattern::Weekdays,
            Pattern::Weekly(vec![Weekday::Mon]),
            Pattern::EveryNHours(3),
        ] {
            // Even a start inside a rejected gap yields nothing when nothing is asked for.
            let rule = recurrence(
                pattern,
                "2025-03-09",
                time(2, 30),
                "America/New_York",
                REJECT,
            );
            assert_eq!(rule.occurrences(0).unwrap(), vec![]);
        }
    }

    #[test]
    fn large_counts_are_fine() {
        let daily = recurrence(
            Pattern::Daily,
            "2025-01-01",
            time(9, 0),
            "Europe/Paris",
            REJECT,
        );
        let occurrences = daily.occurrences(10_000).unwrap();
        assert_eq!(occurrences.len(), 10_000);
        assert_eq!(
            occurrences[9_999].local,
            date("2025-01-01")
                .checked_add_days(chrono::Days::new(9_999))
                .unwrap()
                .and_time(time(9, 0))
        );
        assert!(occurrences.iter().all(|o| o.local.time() == time(9, 0)));
        assert!(
            occurrences
                .windows(2)
                .all(|pair| pair[0].instant < pair[1].instant)
        );

        let hourly = recurrence(
            Pattern::EveryNHours(1),
            "2025-01-01",
            time(0, 0),
            "Europe/Paris",
            REJECT,
        );
        let occurrences = hourly.occurrences(10_000).unwrap();
        assert_eq!(occurrences.len(), 10_000);
        assert_eq!(
            occurrences[9_999].instant - occurrences[0].instant,
            TimeDelta::hours(9_999)
        );
    }

    #[test]
    fn running_past_the_calendar_is_an_error_not_a_panic() {
        let last = NaiveDate::MAX;
        let near_end = last.pred_opt().unwrap().pred_opt().unwrap();
        let near_end_text = near_end.format("%Y-%m-%d").to_string();
        for pattern in [
            Pattern::Daily,
            Pattern::Weekdays,
            Pattern::Weekly(vec![Weekday::Wed]),
            Pattern::EveryNHours(168),
        ] {
            let rule =
                Recurrence::new(pattern.clone(), near_end, time(9, 0), TimeZone::UTC, REJECT)
                    .unwrap();
            assert_eq!(
                rule.occurrences(10),
                Err(RecurrenceError::OutOfRange),
                "{pattern:?} from {near_end_text}"
            );
            assert_eq!(
                rule.occurrences(usize::MAX),
                Err(RecurrenceError::OutOfRange),
                "{pattern:?}"
            );
        }
        // The calendar's very last day still holds one occurrence.
        let rule =
            Recurrence::new(Pattern::Daily, last, time(9, 0), TimeZone::UTC, REJECT).unwrap();
        assert_eq!(rule.occurrences(1).unwrap().len(), 1);
        // West of UTC the last local day has no instant at all.
        let rule = Recurrence::new(
            Pattern::Daily,
            last,
            time(23, 0),
            zone("America/New_York"),
            REJECT,
        )
        .unwrap();
        assert_eq!(rule.occurrences(1), Err(RecurrenceError::OutOfRange));
        // East of UTC the first local day has none either.
        let rule = Recurrence::new(
            Pattern::EveryNHours(5),
            NaiveDate::MIN,
            time(0, 0),
            zone("Asia/Tokyo"),
            REJECT,
        )
        .unwrap();
        assert_eq!(rule.occurrences(1), Err(RecurrenceError::OutOfRange));
    }
}
