//! Weekly posting slots.
//!
//! This module owns a business's *posting schedule* — the fixed local times
//! of the week it likes to publish at ("Mon–Fri at 09:00, 12:30 and 17:00 in
//! `Europe/Paris`") — and the questions asked of it:
//!
//! - [`PostingSchedule::instants_between`]: which instants the slots fall on;
//! - [`PostingSchedule::next_free`]: the next slot no post has taken yet;
//! - [`distribute`]: where to put N new posts so that they spread over the
//!   coming week(s) instead of piling into the first free slots;
//! - [`distribute_in_window`]: the same without slots, over a daily window;
//! - [`parse_slot`]: the `"mon@09:00"` text form used by the CLI and config.
//!
//! A slot is wall-clock time: 09:00 stays 09:00 local across daylight-saving
//! changes, so its UTC instant moves. Local times are turned into instants by
//! [`resolve_local`] with [`SLOT_POLICY`]: a slot skipped by a spring-forward
//! jump happens just after it (02:30 becomes 03:30), and one repeated by a
//! fall-back happens once, at its first occurrence. A slot never silently
//! disappears, and a post is never published twice for one slot.
//!
//! "A week" here is a calendar week in the schedule's zone: from a local time
//! to the same local time seven days later, so the week containing a DST
//! change still holds each slot exactly once.
//!
//! Nothing here panics on any input; every date step is checked, and work is
//! bounded whatever range the caller asks about.

use super::echo;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeDelta, Timelike, Utc, Weekday};

use crate::domain::time::{
    DstPolicy, GapPolicy, OverlapPolicy, TimeZone, parse_time_of_day, resolve_local,
};

/// The most slots a schedule may hold: about 28 a day, far beyond any real
/// posting plan, and small enough that a year of slots stays cheap to expand.
pub const MAX_SLOTS: usize = 200;

/// How slot local times become instants: a slot in a spring-forward gap is
/// moved forward by the gap (02:30 → 03:30) rather than dropped, and a slot in
/// a fall-back overlap happens once, at the earlier instant.
pub const SLOT_POLICY: DstPolicy = DstPolicy {
    gap: GapPolicy::ShiftForward,
    overlap: OverlapPolicy::Earlier,
};

/// The most instants [`PostingSchedule::instants_between`] returns, so that a
/// caller asking about a million years gets an answer rather than an
/// out-of-memory abort.
pub const MAX_INSTANTS: usize = 100_000;

/// How far ahead [`distribute`] and [`distribute_in_window`] may spread posts.
pub const MAX_SPREAD_WEEKS: usize = 52;

/// The step between candidate times in [`distribute_in_window`].
const WINDOW_STEP_MINUTES: i64 = 30;

/// One posting slot: a weekday and a local time of day.
///
/// Slots order Monday first, then by time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeeklySlot {
    /// The day of the week, in the schedule's zone.
    pub weekday: Weekday,
    /// The wall-clock time of day, in the schedule's zone.
    pub time: NaiveTime,
}

impl Ord for WeeklySlot {
    fn cmp(&self, other: &Self) -> Ordering {
        // chrono's `Weekday` is deliberately not `Ord` (weeks start on
        // different days in different places); schedules use ISO weeks.
        self.weekday
            .num_days_from_monday()
            .cmp(&other.weekday.num_days_from_monday())
            .then(self.time.cmp(&other.time))
    }
}

impl PartialOrd for WeeklySlot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for WeeklySlot {
    /// The form [`parse_slot`] reads back: `Mon@09:00`, or `Mon@09:00:30`
    /// when the seconds matter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{:02}:{:02}",
            self.weekday,
            self.time.hour(),
            self.time.minute()
        )?;
        if self.time.second() != 0 {
            write!(f, ":{:02}", self.time.second())?;
        }
        Ok(())
    }
}

/// A business's weekly posting slots in its zone, sorted and without
/// duplicates. An empty schedule is valid and means "no slots".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostingSchedule {
    zone: TimeZone,
    slots: Vec<WeeklySlot>,
}

/// Why slots were refused or posts could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// More than [`MAX_SLOTS`] distinct slots.
    #[error("at most {MAX_SLOTS} posting slots, got {0}")]
    TooMany(usize),
    /// [`distribute`] on a schedule without slots.
    #[error("no posting slots are defined")]
    NoSlots,
    /// Fewer free slots (or window times) in the coming 52 weeks than posts.
    #[error("only {available} free slots in the coming 52 weeks for {requested} posts")]
    NotEnoughSlots {
        /// Free slots found in the coming 52 weeks.
        available: usize,
        /// Posts asked for.
        requested: usize,
    },
    /// A daily window whose end is not after its start.
    #[error("the daily window must end after it starts")]
    EmptyWindow,
}

impl PostingSchedule {
    /// Builds a schedule: sorts the slots (Monday first) and drops duplicates.
    ///
    /// # Errors
    ///
    /// [`SlotError::TooMany`] when more than [`MAX_SLOTS`] distinct slots
    /// remain; the error carries that distinct count.
    pub fn new(zone: TimeZone, mut slots: Vec<WeeklySlot>) -> Result<Self, SlotError> {
        slots.sort_unstable();
        slots.dedup();
        if slots.len() > MAX_SLOTS {
            return Err(SlotError::TooMany(slots.len()));
        }
        Ok(PostingSchedule { zone, slots })
    }

    /// The zone the slots' local times are in.
    /// No slots, in a zone.
    pub fn empty(zone: TimeZone) -> Self {
        Self {
            zone,
            slots: Vec::new(),
        }
    }

    pub fn zone(&self) -> TimeZone {
        self.zone
    }

    /// The slots, Monday first, then by time of day.
    pub fn slots(&self) -> &[WeeklySlot] {
        &self.slots
    }

    /// The slot instants in `[from, until)`, in order, each once.
    ///
    /// Slots are resolved with [`SLOT_POLICY`]; two slots that land on the
    /// same instant (02:30 shifted out of a gap onto a 03:30 slot) count
    /// once. At most [`MAX_INSTANTS`] instants are returned — the first ones.
    pub fn instants_between(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        if self.slots.is_empty() || from >= until {
            return Vec::new();
        }
        // A UTC offset is less than a day, and a slot shifted out of a gap is
        // read with the offset before the gap, so the instant of a slot on
        // local date `d` lies strictly between `d - 1 day` and `d + 2 days`
        // (in UTC). Scanning local dates two days either side of the UTC
        // dates of the bounds therefore finds every instant in range.
        const MARGIN_DAYS: Days = Days::new(2);
        let first = saturating_sub_days(from.naive_utc().date(), MARGIN_DAYS);
        let last = saturating_add_days(until.naive_utc().date(), MARGIN_DAYS);

        // A set, because instants of neighbouring dates may interleave around
        // a DST change and two slots may resolve to the same instant.
        let mut found = BTreeSet::new();
        // Once enough instants are found, three more dates are scanned: their
        // instants may still sort before ones already found, later dates'
        // cannot (see the bounds above).
        let mut stop_after: Option<NaiveDate> = None;
        let mut date = first;
        loop {
            for slot in self.slots_on(date.weekday()) {
                if let Ok(instant) = resolve_local(self.zone, date.and_time(slot.time), SLOT_POLICY)
                    && from <= instant
                    && instant < until
                {
                    found.insert(instant);
                }
            }
            if stop_after.is_none() && found.len() >= MAX_INSTANTS {
                stop_after = Some(saturating_add_days(date, Days::new(3)));
            }
            if date >= last || stop_after.is_some_and(|stop| date >= stop) {
                break;
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        found.into_iter().take(MAX_INSTANTS).collect()
    }

    /// The first slot instant at or after `from` that is not in `taken`,
    /// looking at most `max_weeks` weeks ahead (`[from, from + max_weeks
    /// weeks)`). `None` when there are no slots or every slot in that time
    /// is taken.
    pub fn next_free(
        &self,
        from: DateTime<Utc>,
        taken: &BTreeSet<DateTime<Utc>>,
        max_weeks: u32,
    ) -> Option<DateTime<Utc>> {
        if self.slots.is_empty() {
            return None;
        }
        // Week by week, so that a large `max_weeks` costs only as many weeks
        // as it takes to get past the taken slots: every week holds at least
        // one slot, so this runs at most `taken.len() + 1` times before it
        // finds a free one (or reaches the end of the calendar).
        let mut week_start = from;
        for week in 1..=u64::from(max_weeks) {
            let week_end = weeks_after(self.zone, from, week);
            if let Some(free) = self
                .instants_between(week_start, week_end)
                .into_iter()
                .find(|instant| !taken.contains(instant))
            {
                return Some(free);
            }
            if week_end <= week_start || week_end == DateTime::<Utc>::MAX_UTC {
                break;
            }
            week_start = week_end;
        }
        None
    }

    /// The slots on one weekday; `self.slots` is sorted Monday first.
    fn slots_on(&self, weekday: Weekday) -> &[WeeklySlot] {
        let day = weekday.num_days_from_monday();
        let start = self
            .slots
            .partition_point(|slot| slot.weekday.num_days_from_monday() < day);
        let end = self
            .slots
            .partition_point(|slot| slot.weekday.num_days_from_monday() <= day);
        self.slots.get(start..end).unwrap_or_default()
    }
}

/// Spreads `count` posts evenly over the free slots of the coming week(s)
/// starting at `from`.
///
/// It uses W = ⌈count / free slots in the first week⌉ weeks (at least 1, at
/// most 52; more when later weeks are fuller than the first), collects the n
/// free slot instants in `[from, from + W weeks)` and picks those at indices
/// ⌊i·n/count⌋ for i in 0..count, so five posts over fifteen weekday slots
/// land on five different days rather than in the first five slots. A taken
/// slot is never used, no slot is used twice, and the result is sorted.
/// `count == 0` gives an empty result.
///
/// # Errors
///
/// - [`SlotError::NoSlots`] when the schedule is empty;
/// - [`SlotError::NotEnoughSlots`] when the coming 52 weeks have fewer free
///   slots than `count`.
pub fn distribute(
    schedule: &PostingSchedule,
    from: DateTime<Utc>,
    count: usize,
    taken: &BTreeSet<DateTime<Utc>>,
) -> Result<Vec<DateTime<Utc>>, SlotError> {
    if schedule.slots.is_empty() {
        return Err(SlotError::NoSlots);
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut weeks = Vec::with_capacity(MAX_SPREAD_WEEKS);
    let mut week_start = from;
    for week in 1..=MAX_SPREAD_WEEKS as u64 {
        let week_end = weeks_after(schedule.zone, from, week);
        let free: Vec<_> = schedule
            .instants_between(week_start, week_end)
            .into_iter()
            .filter(|instant| !taken.contains(instant))
            .collect();
        weeks.push(free);
        week_start = week_end;
    }
    spread(&weeks, count)
}

/// Spreads `count` posts evenly over a daily local window when there are no
/// slots.
///
/// Days start at the local date of `from` in `zone`; each day offers the
/// times `window_start`, `window_start + 30 min`, … before `window_end`,
/// resolved with [`SLOT_POLICY`], keeping only instants at or after `from`
/// and not in `taken`. Week k is days 7k to 7k+6. Posts are then picked as in
/// [`distribute`]: W = ⌈count / candidates of the first week⌉ weeks (at most
/// 52), evenly spaced indices, sorted result. `count == 0` gives an empty
/// result.
///
/// # Errors
///
/// - [`SlotError::EmptyWindow`] when `window_end <= window_start`;
/// - [`SlotError::NotEnoughSlots`] when the coming 52 weeks have fewer free
///   candidate times than `count`.
pub fn distribute_in_window(
    zone: TimeZone,
    window_start: NaiveTime,
    window_end: NaiveTime,
    from: DateTime<Utc>,
    count: usize,
    taken: &BTreeSet<DateTime<Utc>>,
) -> Result<Vec<DateTime<Utc>>, SlotError> {
    if window_end <= window_start {
        return Err(SlotError::EmptyWindow);
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let times = window_times(window_start, window_end);
    let mut weeks = vec![Vec::new(); MAX_SPREAD_WEEKS];
    // Only at the very ends of chrono's calendar is there no local date;
    // then no candidate exists and the error below says so.
    if let Some(first_day) = zone.local_of(from).map(|local| local.date()) {
        // Two window times can resolve to one instant around a DST change
        // (and a date's time can sort after the next date's); `seen` keeps
        // each instant in exactly one week.
        let mut seen = BTreeSet::new();
        for (week, candidates) in weeks.iter_mut().enumerate() {
            for day in 0..7 {
                let Some(date) = first_day.checked_add_days(Days::new((week * 7 + day) as u64))
                else {
                    break;
                };
                for time in &times {
                    if let Ok(instant) = resolve_local(zone, date.and_time(*time), SLOT_POLICY)
                        && instant >= from
                        && !taken.contains(&instant)
                        && seen.insert(instant)
                    {
                        candidates.push(instant);
                    }
                }
            }
        }
    }
    spread(&weeks, count)
}

/// Parses a slot written `DAY@HH:MM` (or `DAY@HH:MM:SS`), e.g. `"mon@09:00"`
/// or `"Tue@12:30"`. The day is an English weekday name or its three-letter
/// abbreviation, in any case; whitespace around either part is ignored.
///
/// # Errors
///
/// A message naming the input and the expected form.
pub fn parse_slot(input: &str) -> Result<WeeklySlot, String> {
    const EXPECTED: &str = "expected DAY@HH:MM, e.g. \"mon@09:00\"";
    let Some((day, time)) = input.split_once('@') else {
        return Err(format!("invalid slot {:?}: {EXPECTED}", echo(input)));
    };
    let weekday = day.trim().parse::<Weekday>().map_err(|_| {
        format!(
            "invalid slot {:?}: unknown weekday {:?}; expected mon, tue, wed, thu, fri, sat or sun",
            echo(input),
            echo(day.trim())
        )
    })?;
    let time = parse_time_of_day(time)
        .map_err(|error| format!("invalid slot {:?}: {error}", echo(input)))?;
    Ok(WeeklySlot { weekday, time })
}

/// Picks `count` of the free instants grouped by week (`weeks[k]` holds week
/// k's, each instant in one week only), as described on [`distribute`].
fn spread(weeks: &[Vec<DateTime<Utc>>], count: usize) -> Result<Vec<DateTime<Utc>>, SlotError> {
    let available: usize = weeks.iter().map(Vec::len).sum();
    if count > available {
        return Err(SlotError::NotEnoughSlots {
            available,
            requested: count,
        });
    }
    let first_week = weeks.first().map_or(0, Vec::len);
    // A first week without free slots says nothing about how many weeks are
    // needed; start from one and widen until there are enough.
    let mut span = if first_week == 0 {
        1
    } else {
        count.div_ceil(first_week)
    };
    span = span.clamp(1, weeks.len().max(1));
    let mut pool: Vec<_> = weeks.iter().take(span).flatten().copied().collect();
    // Later weeks may be fuller than the first; `count <= available`
    // guarantees this ends by the last week.
    while pool.len() < count && span < weeks.len() {
        if let Some(week) = weeks.get(span) {
            pool.extend_from_slice(week);
        }
        span += 1;
    }
    pool.sort_unstable();
    let n = pool.len();
    // n ≥ count, so the indices ⌊i·n/count⌋ are strictly increasing: no slot
    // twice, and the picks come out sorted. n is at most 52 weeks of slots or
    // window times (a few ten thousand), so i·n cannot overflow.
    Ok((0..count)
        .filter_map(|i| pool.get(i * n / count).copied())
        .collect())
}

/// The candidate times of a daily window, every 30 minutes from `start`
/// while before `end`.
fn window_times(start: NaiveTime, end: NaiveTime) -> Vec<NaiveTime> {
    let step = TimeDelta::minutes(WINDOW_STEP_MINUTES);
    let mut times = Vec::new();
    let mut time = start;
    while time < end {
        times.push(time);
        let (next, wrapped) = time.overflowing_add_signed(step);
        // Past midnight the day is over, whatever `end` says.
        if wrapped != 0 {
            break;
        }
        time = next;
    }
    times
}

/// `weeks` calendar weeks after `from` in `zone`: the same local time that
/// many days × 7 later, resolved with [`SLOT_POLICY`]. Falls back to
/// elapsed weeks if the local time cannot be computed, and saturates at the
/// end of chrono's range.
fn weeks_after(zone: TimeZone, from: DateTime<Utc>, weeks: u64) -> DateTime<Utc> {
    let calendar = zone
        .local_of(from)
        .zip(weeks.checked_mul(7))
        .and_then(|(local, days)| local.checked_add_days(Days::new(days)))
        .and_then(|local| resolve_local(zone, local, SLOT_POLICY).ok())
        .filter(|instant| *instant > from);
    calendar
        .or_else(|| {
            let elapsed = TimeDelta::try_weeks(i64::try_from(weeks).ok()?)?;
            from.checked_add_signed(elapsed)
        })
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn saturating_add_days(date: NaiveDate, days: Days) -> NaiveDate {
    date.checked_add_days(days).unwrap_or(NaiveDate::MAX)
}

fn saturating_sub_days(date: NaiveDate, days: Days) -> NaiveDate {
    date.checked_sub_days(days).unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{format_local, parse_local_datetime};

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).unwrap()
    }

    fn time(hour: u32, minute: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(hour, minute, 0).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The instant of a wall-clock time in `name` (which must be unambiguous).
    fn at(name: &str, local: &str) -> DateTime<Utc> {
        resolve_local(
            zone(name),
            parse_local_datetime(local).unwrap(),
            DstPolicy::default(),
        )
        .unwrap()
    }

    fn slot(text: &str) -> WeeklySlot {
        parse_slot(text).unwrap()
    }

    /// Mon–Fri at 09:00, 12:30 and 17:00 in Paris: 15 slots a week.
    fn paris_office() -> PostingSchedule {
        let mut slots = Vec::new();
        for day in ["mon", "tue", "wed", "thu", "fri"] {
            for clock in ["09:00", "12:30", "17:00"] {
                slots.push(slot(&format!("{day}@{clock}")));
            }
        }
        PostingSchedule::new(zone("Europe/Paris"), slots).unwrap()
    }

    fn locals(instants: &[DateTime<Utc>], name: &str) -> Vec<String> {
        instants
            .iter()
            .map(|instant| format_local(*instant, zone(name)))
            .collect()
    }

    fn distinct_days(instants: &[DateTime<Utc>], name: &str) -> BTreeSet<NaiveDate> {
        instants
            .iter()
            .map(|instant| zone(name).local_of(*instant).unwrap().date())
            .collect()
    }

    #[test]
    fn slots_order_monday_first_then_time_and_dedupe() {
        let schedule = PostingSchedule::new(
            zone("UTC"),
            vec![
                slot("sun@08:00"),
                slot("mon@17:00"),
                slot("Mon@09:00"),
                slot("monday@17:00"),
            ],
        )
        .unwrap();
        assert_eq!(
            schedule.slots(),
            [slot("mon@09:00"), slot("mon@17:00"), slot("sun@08:00")]
        );
        assert!(slot("sun@00:00") > slot("mon@23:59"));
        assert_eq!(schedule.zone(), TimeZone::UTC);
    }

    #[test]
    fn too_many_distinct_slots_are_refused_but_duplicates_are_not_counted() {
        let many: Vec<_> = (0..=MAX_SLOTS as u32)
            .map(|minute| WeeklySlot {
                weekday: Weekday::Wed,
                time: time(minute / 60, minute % 60),
            })
            .collect();
        assert_eq!(
            PostingSchedule::new(zone("UTC"), many.clone()),
            Err(SlotError::TooMany(MAX_SLOTS + 1))
        );
        assert!(PostingSchedule::new(zone("UTC"), many[..MAX_SLOTS].to_vec()).is_ok());
        let repeated = vec![slot("wed@10:00"); 1_000];
        let schedule = PostingSchedule::new(zone("UTC"), repeated).unwrap();
        assert_eq!(schedule.slots().len(), 1);
        assert_eq!(
            SlotError::TooMany(201).to_string(),
            "at most 200 posting slots, got 201"
        );
    }

    #[test]
    fn instants_of_a_summer_and_a_winter_week_in_paris() {
        let schedule = paris_office();
        // 2025-10-20 is a Monday; Paris leaves summer time on Sunday 26th.
        let instants = schedule.instants_between(
            at("Europe/Paris", "2025-10-20T00:00"),
            at("Europe/Paris", "2025-11-03T00:00"),
        );
        assert_eq!(instants.len(), 30);
        assert!(instants.windows(2).all(|pair| pair[0] < pair[1]));
        // Summer time (UTC+2) in the first week…
        assert_eq!(
            instants[..3],
            [
                utc("2025-10-20T07:00:00Z"),
                utc("2025-10-20T10:30:00Z"),
                utc("2025-10-20T15:00:00Z")
            ]
        );
        assert_eq!(instants[14], utc("2025-10-24T15:00:00Z"));
        // …winter time (UTC+1) in the second: same wall clock, an hour later.
        assert_eq!(
            instants[15..18],
            [
                utc("2025-10-27T08:00:00Z"),
                utc("2025-10-27T11:30:00Z"),
                utc("2025-10-27T16:00:00Z")
            ]
        );
        assert_eq!(instants[29], utc("2025-10-31T16:00:00Z"));
        let shown = locals(&instants, "Europe/Paris");
        assert!(shown.iter().all(|local| local.ends_with("T09:00:00")
            || local.ends_with("T12:30:00")
            || local.ends_with("T17:00:00")));
    }

    #[test]
    fn instants_between_is_half_open() {
        let schedule = paris_office();
        let nine = at("Europe/Paris", "2025-10-20T09:00");
        let half_past_twelve = at("Europe/Paris", "2025-10-20T12:30");
        assert_eq!(
            schedule.instants_between(nine, half_past_twelve),
            [nine],
            "from is included, until is not"
        );
        assert!(schedule.instants_between(half_past_twelve, nine).is_empty());
        assert!(schedule.instants_between(nine, nine).is_empty());
        let empty = PostingSchedule::new(zone("Europe/Paris"), Vec::new()).unwrap();
        assert!(
            empty
                .instants_between(nine, nine + TimeDelta::weeks(10))
                .is_empty()
        );
    }

    #[test]
    fn a_slot_in_the_spring_forward_gap_happens_just_after_it() {
        // Paris jumps from 02:00 to 03:00 on Sunday 2027-03-28.
        let schedule = PostingSchedule::new(
            zone("Europe/Paris"),
            vec![slot("sun@02:30"), slot("sun@03:30"), slot("sun@10:00")],
        )
        .unwrap();
        let instants = schedule.instants_between(
            at("Europe/Paris", "2027-03-27T00:00"),
            at("Europe/Paris", "2027-03-29T00:00"),
        );
        // 02:30 is shifted to 03:30 CEST (01:30Z) and coincides with the
        // 03:30 slot: one instant, not two posts at once.
        assert_eq!(
            instants,
            [utc("2027-03-28T01:30:00Z"), utc("2027-03-28T08:00:00Z")]
        );
        assert_eq!(
            format_local(instants[0], zone("Europe/Paris")),
            "2027-03-28T03:30:00"
        );
        // The week before, 02:30 exists and is a separate instant.
        let before = schedule.instants_between(
            at("Europe/Paris", "2027-03-21T00:00"),
            at("Europe/Paris", "2027-03-22T00:00"),
        );
        assert_eq!(before.len(), 3);
        assert_eq!(before[0], utc("2027-03-21T01:30:00Z"));
    }

    #[test]
    fn a_slot_in_the_fall_back_overlap_happens_once() {
        // Paris goes back from 03:00 to 02:00 on Sunday 2027-10-31.
        let schedule = PostingSchedule::new(zone("Europe/Paris"), vec![slot("sun@02:30")]).unwrap();
        let instants = schedule.instants_between(
            at("Europe/Paris", "2027-10-30T00:00"),
            at("Europe/Paris", "2027-11-01T00:00"),
        );
        assert_eq!(instants, [utc("2027-10-31T00:30:00Z")]);
    }

    #[test]
    fn next_free_skips_taken_slots_and_crosses_into_next_week() {
        let schedule = paris_office();
        // Friday 2025-10-24, after the 12:30 slot.
        let from = at("Europe/Paris", "2025-10-24T13:00");
        let friday_five = at("Europe/Paris", "2025-10-24T17:00");
        let monday_nine = at("Europe/Paris", "2025-10-27T09:00");
        let monday_half_past_twelve = at("Europe/Paris", "2025-10-27T12:30");

        let nothing_taken = BTreeSet::new();
        assert_eq!(
            schedule.next_free(from, &nothing_taken, 1),
            Some(friday_five)
        );
        // A slot exactly at `from` is free to take.
        assert_eq!(
            schedule.next_free(friday_five, &nothing_taken, 1),
            Some(friday_five)
        );

        let taken = BTreeSet::from([friday_five, monday_nine]);
        assert_eq!(
            schedule.next_free(from, &taken, 1),
            Some(monday_half_past_twelve)
        );
        assert_eq!(schedule.next_free(from, &taken, 0), None);

        // With one slot a week, taking it pushes the answer a week on — and
        // past a one-week horizon.
        let fridays = PostingSchedule::new(zone("Europe/Paris"), vec![slot("fri@17:00")]).unwrap();
        let taken = BTreeSet::from([friday_five]);
        assert_eq!(fridays.next_free(from, &taken, 1), None);
        assert_eq!(
            fridays.next_free(from, &taken, 2),
            Some(at("Europe/Paris", "2025-10-31T17:00"))
        );

        let empty = PostingSchedule::new(zone("Europe/Paris"), Vec::new()).unwrap();
        assert_eq!(empty.next_free(from, &nothing_taken, 52), None);
    }

    #[test]
    fn next_free_finds_the_one_free_slot_after_many_taken_weeks() {
        let schedule = PostingSchedule::new(zone("Asia/Kolkata"), vec![slot("wed@10:00")]).unwrap();
        let from = at("Asia/Kolkata", "2025-01-01T00:00");
        let taken: BTreeSet<_> = schedule
            .instants_between(from, from + TimeDelta::weeks(30))
            .into_iter()
            .collect();
        assert_eq!(taken.len(), 30);
        assert_eq!(
            schedule.next_free(from, &taken, u32::MAX),
            Some(from + TimeDelta::weeks(30) + TimeDelta::hours(10))
        );
        assert_eq!(schedule.next_free(from, &taken, 30), None);
    }

    #[test]
    fn distributing_five_posts_over_fifteen_slots_spreads_them_over_the_week() {
        let from = at("Europe/Paris", "2025-10-20T00:00");
        let posts = distribute(&paris_office(), from, 5, &BTreeSet::new()).unwrap();
        assert_eq!(
            locals(&posts, "Europe/Paris"),
            [
                "2025-10-20T09:00:00",
                "2025-10-21T09:00:00",
                "2025-10-22T09:00:00",
                "2025-10-23T09:00:00",
                "2025-10-24T09:00:00"
            ]
        );
        assert!(distinct_days(&posts, "Europe/Paris").len() >= 4);
    }

    #[test]
    fn distributing_mid_week_wraps_into_the_next_week() {
        // Wednesday noon: the first week runs to next Wednesday noon.
        let from = at("Europe/Paris", "2025-10-22T12:00");
        let posts = distribute(&paris_office(), from, 5, &BTreeSet::new()).unwrap();
        assert_eq!(posts.len(), 5);
        assert!(posts[0] >= from);
        assert!(*posts.last().unwrap() < at("Europe/Paris", "2025-10-29T12:00"));
        assert!(distinct_days(&posts, "Europe/Paris").len() >= 4);
    }

    #[test]
    fn distributing_twenty_posts_uses_two_weeks_and_avoids_taken_slots() {
        let schedule = paris_office();
        let from = at("Europe/Paris", "2025-10-20T00:00");
        let two_weeks_later = at("Europe/Paris", "2025-11-03T00:00");
        let taken = BTreeSet::from([
            at("Europe/Paris", "2025-10-20T09:00"),
            at("Europe/Paris", "2025-10-22T12:30"),
            at("Europe/Paris", "2025-10-28T17:00"),
        ]);
        let posts = distribute(&schedule, from, 20, &taken).unwrap();
        assert_eq!(posts.len(), 20);
        assert!(
            posts.windows(2).all(|pair| pair[0] < pair[1]),
            "sorted, distinct"
        );
        assert!(posts.iter().all(|post| !taken.contains(post)));
        assert!(
            posts
                .iter()
                .all(|post| from <= *post && *post < two_weeks_later)
        );
        let slots: BTreeSet<_> = schedule
            .instants_between(from, two_weeks_later)
            .into_iter()
            .collect();
        assert!(posts.iter().all(|post| slots.contains(post)));
        // Spread over both weeks, not packed into the first free slots.
        let second_week = at("Europe/Paris", "2025-10-27T00:00");
        assert!(posts.iter().filter(|post| **post < second_week).count() >= 8);
        assert!(posts.iter().filter(|post| **post >= second_week).count() >= 8);
    }

    #[test]
    fn distribute_widens_when_the_first_week_is_full() {
        let schedule =
            PostingSchedule::new(zone("America/New_York"), vec![slot("tue@08:00")]).unwrap();
        let from = at("America/New_York", "2025-03-03T00:00");
        let taken = BTreeSet::from([at("America/New_York", "2025-03-04T08:00")]);
        let posts = distribute(&schedule, from, 2, &taken).unwrap();
        assert_eq!(
            posts,
            [
                at("America/New_York", "2025-03-11T08:00"),
                at("America/New_York", "2025-03-18T08:00")
            ]
        );
    }

    #[test]
    fn not_enough_slots_in_52_weeks() {
        let schedule = PostingSchedule::new(zone("UTC"), vec![slot("fri@18:00")]).unwrap();
        let from = utc("2025-01-06T00:00:00Z");
        assert_eq!(
            distribute(&schedule, from, 53, &BTreeSet::new()),
            Err(SlotError::NotEnoughSlots {
                available: 52,
                requested: 53
            })
        );
        let taken = BTreeSet::from([utc("2025-01-10T18:00:00Z")]);
        let error = distribute(&schedule, from, 52, &taken).unwrap_err();
        assert_eq!(
            error.to_string(),
            "only 51 free slots in the coming 52 weeks for 52 posts"
        );
        assert_eq!(distribute(&schedule, from, 51, &taken).unwrap().len(), 51);
        assert!(matches!(
            distribute(&schedule, from, usize::MAX, &BTreeSet::new()),
            Err(SlotError::NotEnoughSlots { .. })
        ));
    }

    #[test]
    fn distribute_without_slots_or_posts() {
        let empty = PostingSchedule::new(zone("UTC"), Vec::new()).unwrap();
        let from = utc("2025-01-06T00:00:00Z");
        assert_eq!(
            distribute(&empty, from, 3, &BTreeSet::new()),
            Err(SlotError::NoSlots)
        );
        assert_eq!(
            distribute(&paris_office(), from, 0, &BTreeSet::new()),
            Ok(Vec::new())
        );
    }

    #[test]
    fn a_window_spreads_seven_posts_over_seven_days() {
        let from = at("America/New_York", "2025-06-02T00:00");
        let posts = distribute_in_window(
            zone("America/New_York"),
            time(9, 0),
            time(18, 0),
            from,
            7,
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(
            locals(&posts, "America/New_York"),
            [
                "2025-06-02T09:00:00",
                "2025-06-03T09:00:00",
                "2025-06-04T09:00:00",
                "2025-06-05T09:00:00",
                "2025-06-06T09:00:00",
                "2025-06-07T09:00:00",
                "2025-06-08T09:00:00"
            ]
        );
    }

    #[test]
    fn a_window_starting_mid_day_skips_past_times_and_taken_ones() {
        let from = at("Europe/Paris", "2025-06-02T17:10");
        let taken = BTreeSet::from([at("Europe/Paris", "2025-06-02T17:30")]);
        let posts = distribute_in_window(
            zone("Europe/Paris"),
            time(9, 0),
            time(18, 0),
            from,
            100,
            &taken,
        )
        .unwrap();
        assert_eq!(posts.len(), 100);
        assert!(posts.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(
            posts
                .iter()
                .all(|post| *post >= from && !taken.contains(post))
        );
        let shown = locals(&posts, "Europe/Paris");
        assert!(shown.iter().all(|local| {
            let clock = &local[11..];
            ("09:00:00".."18:00:00").contains(&clock)
                && (clock.ends_with(":00:00") || clock.ends_with(":30:00"))
        }));
        // The first week offers 0 (Monday after 17:10, 17:30 taken) + 6 × 18
        // times: 100 posts fit into it.
        assert!(*posts.last().unwrap() < at("Europe/Paris", "2025-06-09T00:00"));
    }

    #[test]
    fn an_empty_window_is_refused() {
        let from = utc("2025-01-06T00:00:00Z");
        for (start, end) in [(time(18, 0), time(9, 0)), (time(9, 0), time(9, 0))] {
            assert_eq!(
                distribute_in_window(zone("UTC"), start, end, from, 1, &BTreeSet::new()),
                Err(SlotError::EmptyWindow)
            );
        }
        // 23:45–23:59 holds one candidate a day.
        let late = distribute_in_window(
            zone("UTC"),
            time(23, 45),
            time(23, 59),
            from,
            365,
            &BTreeSet::new(),
        );
        assert_eq!(
            late,
            Err(SlotError::NotEnoughSlots {
                available: 364,
                requested: 365
            })
        );
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let schedule = paris_office();
        let taken = BTreeSet::new();
        let all = schedule.instants_between(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        assert_eq!(all.len(), MAX_INSTANTS);
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
        for from in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MAX_UTC - TimeDelta::days(3),
        ] {
            let _ = schedule.next_free(from, &taken, u32::MAX);
            let _ = distribute(&schedule, from, 3, &taken);
            let _ = distribute_in_window(
                zone("Pacific/Kiritimati"),
                time(0, 0),
                time(23, 59),
                from,
                3,
                &taken,
            );
        }
        assert!(matches!(
            distribute(&schedule, DateTime::<Utc>::MAX_UTC, 1, &taken),
            Err(SlotError::NotEnoughSlots { available: 0, .. })
        ));
    }

    #[test]
    fn parses_slots() {
        assert_eq!(
            parse_slot("mon@09:00"),
            Ok(WeeklySlot {
                weekday: Weekday::Mon,
                time: time(9, 0)
            })
        );
        assert_eq!(
            parse_slot(" Tue @ 12:30 "),
            Ok(WeeklySlot {
                weekday: Weekday::Tue,
                time: time(12, 30)
            })
        );
        assert_eq!(parse_slot("SUNDAY@23:59").unwrap().weekday, Weekday::Sun);
        // Display reads back.
        for text in ["Mon@09:00", "Sat@00:05", "Wed@10:00:30"] {
            assert_eq!(slot(text).to_string(), text);
        }
        for (text, expected) in [
            ("", "DAY@HH:MM"),
            ("mon 09:00", "DAY@HH:MM"),
            ("mo@09:00", "unknown weekday \"mo\""),
            ("@09:00", "unknown weekday"),
            ("mon@9:00", "HH:MM"),
            ("mon@24:00", "hour 24"),
            ("mon@12:60", "minute 60"),
            ("mon@", "HH:MM"),
            ("mon@09:00@10:00", "HH:MM"),
        ] {
            let message = parse_slot(text).unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains(&format!("{text:?}")), "{text}: {message}");
        }
        let long = format!("mon@{}", "9".repeat(10_000));
        assert!(parse_slot(&long).unwrap_err().len() < 400);
    }
}
