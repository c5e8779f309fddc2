//! Suggested posting times.
//!
//! This module owns the scoring of candidate posting hours for a business on
//! a platform, and the choice of the best few. It knows nothing of where the
//! history comes from; the caller passes engagement samples in.
//!
//! # Hours of the week
//!
//! Everything is scored per *hour of the week* in the business's zone: 168
//! buckets, bucket 0 being Monday 00:00–00:59 local, bucket 167 Sunday
//! 23:00–23:59. A post published at 12:40 on a Tuesday in `Asia/Kathmandu`
//! counts for Tuesday 12:00 there, whatever the UTC time.
//!
//! # The prior
//!
//! With no history, the platform's *prior* decides: a weight in 0..=1 per
//! hour of the week saying how good that hour usually is on the platform.
//! [`default_prior`] builds it from the tables below, written in the same
//! rule syntax operators use to override them ([`parse_prior`]): rules
//! `DAYS@HH-HH=WEIGHT`, separated by commas, applied in order, later rules
//! overwriting earlier ones; hours are `[start, end)`; hours no rule covers
//! weigh 0.
//!
//! | platform | rules |
//! |---|---|
//! | `instagram` | `*@00-24=0.05, *@07-23=0.25, sat-sun@10-13=0.45, mon-fri@11-14=0.7, mon-fri@19-22=0.7` |
//! | `linkedin` | `*@00-24=0.03, *@07-20=0.15, mon-fri@07-19=0.35, tue-thu@08-10=0.7, tue-thu@12-13=0.7, sat-sun@00-24=0.05` |
//! | `facebook` | `*@00-24=0.05, *@08-21=0.25, mon-fri@09-15=0.7` |
//! | `x` (or `twitter`) | `*@00-24=0.05, *@07-22=0.25, mon-fri@12-15=0.6, mon-fri@08-10=0.7` |
//! | anything else | `*@00-24=0.05, *@08-20=0.2, mon-fri@08-18=0.45, mon-fri@09-12=0.6, mon-fri@14-16=0.6` |
//!
//! In words: Instagram weekdays 11:00–14:00 and 19:00–22:00 high, weekend
//! late mornings medium, nights low; LinkedIn Tuesday–Thursday 08:00–10:00
//! and 12:00–13:00 high, office hours fair, weekends low; Facebook weekdays
//! 09:00–15:00; X weekdays 08:00–10:00 and 12:00–15:00; any other platform a
//! generic office-hours curve.
//!
//! The peaks are 0.7, not 1: the business's own best hour counts as 1 (see
//! below), so enough proof — about a dozen posts — that a generically quiet
//! hour works for *this* audience lets it overtake the platform's peak.
//!
//! # The business's own data
//!
//! A sample's engagement rate is `(clicks + reactions) / max(impressions,
//! 1)` (negative counts count as 0). For each bucket b with n_b samples the
//! mean rate r_b is normalised by the highest bucket mean, giving an
//! observed score in 0..=1, and blended with the prior p_b:
//!
//! ```text
//! score_b = (K·p_b + n_b·observed_b) / (K + n_b),   K = 5
//! ```
//!
//! K is the prior's strength in samples: with no history the prior decides,
//! one post barely moves it, and many posts outweigh it.
//!
//! # Choosing
//!
//! The candidates are the whole local hours (minute 0) in `[from, to)`, at
//! most 62 days of them. The best are taken greedily by score (earlier first
//! on ties), skipping any within `min_gap` of an already scheduled post or of
//! a suggestion already chosen. A local hour skipped by a spring-forward jump
//! is no candidate; one repeated by a fall-back is two.
//!
//! Nothing here panics on any input: bad or absurd parameters give an empty
//! or shorter result, and weights that are not finite count as 0.

use super::echo;
use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Days, NaiveDateTime, TimeDelta, Timelike, Utc, Weekday};

use crate::domain::time::{DstPolicy, GapPolicy, OverlapPolicy, TimeZone, resolve_local};

/// The number of hour-of-week buckets.
pub const HOURS_PER_WEEK: usize = 168;

/// The prior's strength, in samples: a bucket's own data weighs as much as
/// the prior once it has this many samples.
pub const PRIOR_STRENGTH: f64 = 5.0;

/// From how many samples a bucket's reason cites the business's own data.
const MIN_SAMPLES_FOR_REASON: usize = 3;

/// How far ahead [`suggest`] looks at most: `to` is clamped to `from` plus
/// this many days, so a request cannot make it score years of hours.
pub const MAX_SUGGEST_DAYS: u64 = 62;

/// The most candidates [`suggest`] scores: every hour of [`MAX_SUGGEST_DAYS`]
/// days.
const MAX_CANDIDATES: usize = 24 * MAX_SUGGEST_DAYS as usize;

/// Prior weights from which a reason calls an hour strong, or (below the
/// second) quiet.
const STRONG_PRIOR: f64 = 0.6;
const FAIR_PRIOR: f64 = 0.3;

/// The default prior tables, in [`parse_prior`] syntax (see the module docs).
const INSTAGRAM: &str =
    "*@00-24=0.05, *@07-23=0.25, sat-sun@10-13=0.45, mon-fri@11-14=0.7, mon-fri@19-22=0.7";
const LINKEDIN: &str = "*@00-24=0.03, *@07-20=0.15, mon-fri@07-19=0.35, tue-thu@08-10=0.7, \
                        tue-thu@12-13=0.7, sat-sun@00-24=0.05";
const FACEBOOK: &str = "*@00-24=0.05, *@08-21=0.25, mon-fri@09-15=0.7";
const X: &str = "*@00-24=0.05, *@07-22=0.25, mon-fri@12-15=0.6, mon-fri@08-10=0.7";
const GENERIC: &str = "*@00-24=0.05, *@08-20=0.2, mon-fri@08-18=0.45, mon-fri@09-12=0.6, \
                       mon-fri@14-16=0.6";

/// How a rule must look, quoted in [`parse_prior`]'s errors.
const RULE_FORMAT: &str = "expected DAYS@HH-HH=WEIGHT, e.g. \"mon-fri@09-12=0.9\"";

/// The platform's default prior (see the module docs for the tables).
/// Platform names are matched case-insensitively; `twitter` is `x`; an
/// unknown platform gets the generic office-hours curve.
pub fn default_prior(platform: &str) -> [f64; HOURS_PER_WEEK] {
    let table = match platform.trim().to_ascii_lowercase().as_str() {
        "instagram" => INSTAGRAM,
        "linkedin" => LINKEDIN,
        "facebook" => FACEBOOK,
        "x" | "twitter" => X,
        _ => GENERIC,
    };
    // The tables are constants that the tests parse; a flat prior is only a
    // safe answer should one ever be edited into something unparsable.
    parse_prior(table).unwrap_or([FAIR_PRIOR; HOURS_PER_WEEK])
}

/// Parses an operator's prior, e.g.
/// `"*@00-24=0.1, mon-fri@09-12=0.9, sat-sun@10-14=0.6"`.
///
/// Comma-separated rules `DAYS@HH-HH=WEIGHT`, applied in order — a later rule
/// overwrites what earlier ones set, so put the catch-all `*` rule first:
///
/// - `DAYS`: `*` (every day), a day (`mon` … `sun`, or full English names,
///   any case) or a range `mon-fri`; a range may wrap (`fri-mon` is Friday
///   to Monday);
/// - `HH-HH`: hours `[start, end)`, 0 ≤ start < end ≤ 24 (`09-12` is 09:00
///   to 11:59);
/// - `WEIGHT`: a number from 0 to 1.
///
/// Hours no rule covers weigh 0. Whitespace around the parts is ignored.
///
/// # Errors
///
/// A message naming the offending rule and what was expected.
pub fn parse_prior(spec: &str) -> Result<[f64; HOURS_PER_WEEK], String> {
    if spec.trim().is_empty() {
        return Err(format!("empty prior: {RULE_FORMAT}"));
    }
    let mut prior = [0.0; HOURS_PER_WEEK];
    for (index, rule) in spec.split(',').enumerate() {
        let (days, hours, weight) = parse_rule(rule)
            .map_err(|reason| format!("prior rule {} {:?}: {reason}", index + 1, echo(rule)))?;
        for day in days {
            let base = day.num_days_from_monday() as usize * 24;
            for hour in hours.clone() {
                if let Some(slot) = prior.get_mut(base + hour) {
                    *slot = weight;
                }
            }
        }
    }
    Ok(prior)
}

/// One past post's engagement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngagementSample {
    /// When the post was published.
    pub published_at: DateTime<Utc>,
    /// How many people saw it.
    pub impressions: i64,
    /// Link clicks.
    pub clicks: i64,
    /// Likes, comments, shares and the like.
    pub reactions: i64,
}

/// A suggested posting time.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    /// The instant to post at.
    pub instant: DateTime<Utc>,
    /// The same, as wall-clock time in the business's zone (a whole hour).
    pub local: NaiveDateTime,
    /// The blended score, 0..=1; higher is better.
    pub score: f64,
    /// One line saying why, for people.
    pub reason: String,
}

/// What [`suggest`] works from.
#[derive(Debug, Clone, Copy)]
pub struct SuggestParams<'a> {
    /// The business's zone: hours of the week are local to it.
    pub zone: TimeZone,
    /// The platform's prior, from [`default_prior`] or [`parse_prior`].
    pub prior: &'a [f64; HOURS_PER_WEEK],
    /// The business's past posts on the platform.
    pub history: &'a [EngagementSample],
    /// The start of the window to suggest in (inclusive).
    pub from: DateTime<Utc>,
    /// The end of the window (exclusive); clamped to 62 days after `from`.
    pub to: DateTime<Utc>,
    /// How many suggestions are wanted.
    pub count: usize,
    /// Instants of posts already scheduled.
    pub taken: &'a [DateTime<Utc>],
    /// The least time between two posts (taken or suggested); a negative gap
    /// counts as zero. A taken instant itself is never suggested.
    pub min_gap: TimeDelta,
}

/// Suggests up to `count` posting times in `[from, to)`, best first (see the
/// module docs for the scoring). Fewer when the window holds fewer
/// acceptable hours; none when `from >= to` or `count == 0`.
pub fn suggest(params: &SuggestParams) -> Vec<Suggestion> {
    if params.count == 0 || params.from >= params.to {
        return Vec::new();
    }
    let history = History::of(params.zone, params.history);
    let prior = params.prior.map(sanitize);

    let mut candidates: Vec<Scored> = candidates(params)
        .into_iter()
        .filter_map(|(local, instant)| {
            let bucket = bucket_of(local)?;
            Some(Scored {
                local,
                instant,
                bucket,
                score: history.score(bucket, *prior.get(bucket)?),
            })
        })
        .collect();
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.instant.cmp(&b.instant)));

    let min_gap = params.min_gap.max(TimeDelta::zero());
    let mut blocked: BTreeSet<DateTime<Utc>> = params.taken.iter().copied().collect();
    let mut chosen = Vec::new();
    for candidate in candidates {
        if chosen.len() >= params.count {
            break;
        }
        if too_close(&blocked, candidate.instant, min_gap) {
            continue;
        }
        blocked.insert(candidate.instant);
        let prior_weight = prior.get(candidate.bucket).copied().unwrap_or(0.0);
        chosen.push(Suggestion {
            instant: candidate.instant,
            local: candidate.local,
            score: candidate.score,
            reason: history.reason(candidate.local, candidate.bucket, prior_weight),
        });
    }
    // Already in score order (then time): candidates were visited that way.
    chosen
}

/// A candidate hour with its score.
struct Scored {
    local: NaiveDateTime,
    instant: DateTime<Utc>,
    bucket: usize,
    score: f64,
}

/// The business's engagement per hour-of-week bucket.
struct History {
    /// Samples per bucket.
    samples: [usize; HOURS_PER_WEEK],
    /// Mean engagement rate per bucket (0 where there are no samples).
    mean_rate: [f64; HOURS_PER_WEEK],
    /// The highest bucket mean, which scales observed scores to 0..=1.
    best_rate: f64,
}

impl History {
    fn of(zone: TimeZone, samples: &[EngagementSample]) -> Self {
        let mut counts = [0_usize; HOURS_PER_WEEK];
        let mut sums = [0.0_f64; HOURS_PER_WEEK];
        for sample in samples {
            let Some(bucket) = zone.local_of(sample.published_at).and_then(bucket_of) else {
                continue;
            };
            if let (Some(count), Some(sum)) = (counts.get_mut(bucket), sums.get_mut(bucket)) {
                *count += 1;
                *sum += engagement_rate(sample);
            }
        }
        let mut mean_rate = [0.0; HOURS_PER_WEEK];
        for ((mean, sum), count) in mean_rate.iter_mut().zip(sums).zip(counts) {
            if count > 0 {
                *mean = sum / count as f64;
            }
        }
        let best_rate = mean_rate.iter().copied().fold(0.0, f64::max);
        History {
            samples: counts,
            mean_rate,
            best_rate,
        }
    }

    /// The blended score of `bucket` given its prior weight.
    fn score(&self, bucket: usize, prior: f64) -> f64 {
        let samples = self.samples.get(bucket).copied().unwrap_or(0);
        if samples == 0 {
            return prior;
        }
        let observed = if self.best_rate > 0.0 {
            self.mean_rate.get(bucket).copied().unwrap_or(0.0) / self.best_rate
        } else {
            // Posts there, and nobody engaged with any post anywhere.
            0.0
        };
        let n = samples as f64;
        sanitize((PRIOR_STRENGTH * prior + n * sanitize(observed)) / (PRIOR_STRENGTH + n))
    }

    /// Why `local` (in `bucket`) was suggested: the business's own numbers
    /// when it has posted there often enough, else what the prior says.
    fn reason(&self, local: NaiveDateTime, bucket: usize, prior: f64) -> String {
        let samples = self.samples.get(bucket).copied().unwrap_or(0);
        if samples >= MIN_SAMPLES_FOR_REASON {
            let rate = self.mean_rate.get(bucket).copied().unwrap_or(0.0);
            return format!(
                "your posts at {} {:02}:00 averaged {:.1}% engagement over {samples} posts",
                local.weekday(),
                local.hour(),
                rate * 100.0
            );
        }
        // The parameters carry the prior, not the platform's name, so the
        // reason cannot name it.
        if prior >= STRONG_PRIOR {
            "typically a strong time on this platform".to_owned()
        } else if prior >= FAIR_PRIOR {
            "typically a fair time on this platform".to_owned()
        } else {
            "a quiet time on this platform".to_owned()
        }
    }
}

/// `(clicks + reactions) / max(impressions, 1)`, counting negative (bogus)
/// counts as 0.
fn engagement_rate(sample: &EngagementSample) -> f64 {
    let engaged = sample.clicks.max(0) as f64 + sample.reactions.max(0) as f64;
    engaged / sample.impressions.max(1) as f64
}

/// The whole local hours in `[from, to)` (`to` clamped), in order, as
/// (wall-clock time, instant) pairs.
fn candidates(params: &SuggestParams) -> Vec<(NaiveDateTime, DateTime<Utc>)> {
    let horizon = Days::new(MAX_SUGGEST_DAYS);
    let to = params
        .from
        .checked_add_days(horizon)
        .map_or(params.to, |limit| limit.min(params.to));
    let Some(start) = params.zone.local_of(params.from) else {
        return Vec::new();
    };
    let Some(mut hour) = start.date().and_hms_opt(start.hour(), 0, 0) else {
        return Vec::new();
    };
    // Walking wall-clock hours rather than elapsed ones finds the whole
    // local hours in any zone (Kathmandu's are at :15 UTC) and visits a
    // fall-back hour's two instants. The window is at most 62 days, and UTC
    // offsets change by hours at most, so this many steps always suffice.
    const MAX_STEPS: usize = MAX_CANDIDATES + 2 * 24;
    let earlier = DstPolicy {
        gap: GapPolicy::Reject,
        overlap: OverlapPolicy::Earlier,
    };
    let later = DstPolicy {
        overlap: OverlapPolicy::Later,
        ..earlier
    };
    let mut found = Vec::new();
    for _ in 0..MAX_STEPS {
        // Both policies reject gap hours: a wall-clock hour that never
        // happens is no candidate.
        let first = resolve_local(params.zone, hour, earlier).ok();
        let second = resolve_local(params.zone, hour, later).ok();
        if first.is_some_and(|instant| instant >= to) {
            break;
        }
        for instant in [first, second.filter(|second| Some(*second) != first)]
            .into_iter()
            .flatten()
        {
            if params.from <= instant && instant < to && found.len() < MAX_CANDIDATES {
                found.push((hour, instant));
            }
        }
        match hour.checked_add_signed(TimeDelta::hours(1)) {
            Some(next) => hour = next,
            None => break,
        }
    }
    found
}

/// Whether `instant` lies within `min_gap` of a blocked instant, or on one.
fn too_close(
    blocked: &BTreeSet<DateTime<Utc>>,
    instant: DateTime<Utc>,
    min_gap: TimeDelta,
) -> bool {
    let before = blocked.range(..=instant).next_back();
    let after = blocked.range(instant..).next();
    [before, after].into_iter().flatten().any(|other| {
        let distance = (instant - *other).abs();
        distance.is_zero() || distance < min_gap
    })
}

/// The hour-of-week bucket of a wall-clock time: Monday 00:00 is 0.
fn bucket_of(local: NaiveDateTime) -> Option<usize> {
    let day = local.weekday().num_days_from_monday() as usize;
    let bucket = day * 24 + local.hour() as usize;
    (bucket < HOURS_PER_WEEK).then_some(bucket)
}

/// A weight or score forced into 0..=1, with NaN as 0: a hand-built prior
/// must not poison the ordering.
fn sanitize(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

/// Parses one prior rule into its days, hours and weight.
fn parse_rule(rule: &str) -> Result<(Vec<Weekday>, std::ops::Range<usize>, f64), String> {
    let Some((days, rest)) = rule.split_once('@') else {
        return Err(RULE_FORMAT.to_owned());
    };
    let Some((hours, weight)) = rest.split_once('=') else {
        return Err(RULE_FORMAT.to_owned());
    };
    let days = parse_days(days.trim())?;
    let hours = parse_hours(hours.trim())?;
    let weight = weight.trim();
    let value = weight
        .parse::<f64>()
        .map_err(|_| format!("weight {:?} is not a number; {RULE_FORMAT}", echo(weight)))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("weight {:?} is not between 0 and 1", echo(weight)));
    }
    Ok((days, hours, value))
}

/// `*`, a day, or a range of days (which may wrap past Sunday).
fn parse_days(text: &str) -> Result<Vec<Weekday>, String> {
    if text == "*" {
        return Ok(WEEK.to_vec());
    }
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (parse_day(first.trim())?, parse_day(last.trim())?),
        None => {
            let day = parse_day(text)?;
            (day, day)
        }
    };
    let mut days = vec![first];
    let mut day = first;
    while day != last {
        day = day.succ();
        days.push(day);
    }
    Ok(days)
}

fn parse_day(text: &str) -> Result<Weekday, String> {
    text.parse::<Weekday>().map_err(|_| {
        format!(
            "unknown day {:?}; expected *, mon … sun, or a range such as mon-fri",
            echo(text)
        )
    })
}

/// `HH-HH`, the hours `[start, end)`.
fn parse_hours(text: &str) -> Result<std::ops::Range<usize>, String> {
    let hour = |part: &str| -> Result<usize, String> {
        let part = part.trim();
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("hours {:?} are not HH-HH, e.g. 09-12", echo(text)));
        }
        let value = part
            .parse::<usize>()
            .map_err(|_| format!("hours {:?} are not HH-HH, e.g. 09-12", echo(text)))?;
        if value > 24 {
            return Err(format!("hour {value} is out of range (00-24)"));
        }
        Ok(value)
    };
    let Some((start, end)) = text.split_once('-') else {
        return Err(format!("hours {:?} are not HH-HH, e.g. 09-12", echo(text)));
    };
    let (start, end) = (hour(start)?, hour(end)?);
    if start >= end {
        return Err(format!(
            "hours {:?} are empty: the end must be after the start (a rule cannot wrap past midnight; split it in two)",
            echo(text)
        ));
    }
    Ok(start..end)
}

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_local_datetime;

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).unwrap()
    }

    fn local(text: &str) -> NaiveDateTime {
        parse_local_datetime(text).unwrap()
    }

    fn at(name: &str, wall: &str) -> DateTime<Utc> {
        resolve_local(zone(name), local(wall), DstPolicy::default()).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn bucket(day: Weekday, hour: usize) -> usize {
        day.num_days_from_monday() as usize * 24 + hour
    }

    /// A week from Monday 2025-06-02 00:00 in `name`.
    fn week_params<'a>(
        name: &str,
        prior: &'a [f64; HOURS_PER_WEEK],
        history: &'a [EngagementSample],
        count: usize,
    ) -> SuggestParams<'a> {
        SuggestParams {
            zone: zone(name),
            prior,
            history,
            from: at(name, "2025-06-02T00:00"),
            to: at(name, "2025-06-09T00:00"),
            count,
            taken: &[],
            min_gap: TimeDelta::zero(),
        }
    }

    /// `count` posts at the local time `wall` in the weeks before it, each
    /// with an engagement rate of `rate_percent`.
    fn samples(name: &str, wall: &str, count: usize, rate_percent: i64) -> Vec<EngagementSample> {
        (1..=count as i64)
            .map(|week| EngagementSample {
                // Stepped in wall-clock time: some weeks are in winter time.
                published_at: resolve_local(
                    zone(name),
                    local(wall) - TimeDelta::weeks(week),
                    DstPolicy::default(),
                )
                .unwrap(),
                impressions: 1_000,
                clicks: rate_percent * 10 / 2,
                reactions: rate_percent * 10 / 2,
            })
            .collect()
    }

    #[test]
    fn every_default_table_parses_and_stays_in_range() {
        for table in [INSTAGRAM, LINKEDIN, FACEBOOK, X, GENERIC] {
            let prior = parse_prior(table).unwrap();
            assert!(prior.iter().all(|w| (0.0..=1.0).contains(w)), "{table}");
            // No hour is left at an accidental 0.
            assert!(prior.iter().all(|w| *w > 0.0), "{table}");
        }
    }

    #[test]
    fn default_priors_follow_the_documented_tables() {
        let instagram = default_prior("instagram");
        assert_eq!(instagram[bucket(Weekday::Tue, 12)], 0.7);
        assert_eq!(instagram[bucket(Weekday::Thu, 20)], 0.7);
        assert_eq!(instagram[bucket(Weekday::Sat, 11)], 0.45);
        assert_eq!(instagram[bucket(Weekday::Wed, 3)], 0.05);
        assert_eq!(instagram[bucket(Weekday::Sun, 7)], 0.25);

        let linkedin = default_prior(" LinkedIn ");
        assert_eq!(linkedin[bucket(Weekday::Wed, 9)], 0.7);
        assert_eq!(linkedin[bucket(Weekday::Thu, 12)], 0.7);
        assert_eq!(linkedin[bucket(Weekday::Mon, 9)], 0.35);
        assert_eq!(linkedin[bucket(Weekday::Sat, 12)], 0.05);

        let facebook = default_prior("facebook");
        assert_eq!(facebook[bucket(Weekday::Fri, 14)], 0.7);
        assert_eq!(facebook[bucket(Weekday::Fri, 15)], 0.25);

        assert_eq!(default_prior("twitter"), default_prior("X"));
        assert_eq!(default_prior("x")[bucket(Weekday::Mon, 8)], 0.7);

        assert_eq!(default_prior("mastodon"), default_prior(""));
        assert_eq!(default_prior("mastodon"), parse_prior(GENERIC).unwrap());
        assert_ne!(default_prior("mastodon"), instagram);
    }

    #[test]
    fn parses_operator_priors() {
        let prior = parse_prior("*@00-24=0.1, mon-fri@09-12=0.9 ,sat-sun@10-14=0.6").unwrap();
        assert_eq!(prior[bucket(Weekday::Mon, 9)], 0.9);
        assert_eq!(prior[bucket(Weekday::Fri, 11)], 0.9);
        assert_eq!(
            prior[bucket(Weekday::Fri, 12)],
            0.1,
            "end hour is exclusive"
        );
        assert_eq!(prior[bucket(Weekday::Sun, 13)], 0.6);
        assert_eq!(prior[bucket(Weekday::Sun, 14)], 0.1);
        assert_eq!(prior[bucket(Weekday::Wed, 0)], 0.1);

        // Later rules overwrite earlier ones, even a catch-all.
        let flat = parse_prior("mon-fri@09-12=0.9,*@00-24=0.1").unwrap();
        assert!(flat.iter().all(|w| *w == 0.1));

        // Uncovered hours weigh 0; ranges may wrap; full names and any case.
        let prior = parse_prior("FRI-Mon@23-24=1, Wednesday@0-1=0.5").unwrap();
        for day in [Weekday::Fri, Weekday::Sat, Weekday::Sun, Weekday::Mon] {
            assert_eq!(prior[bucket(day, 23)], 1.0);
        }
        assert_eq!(prior[bucket(Weekday::Tue, 23)], 0.0);
        assert_eq!(prior[bucket(Weekday::Wed, 0)], 0.5);
        assert_eq!(prior.iter().filter(|w| **w > 0.0).count(), 5);
    }

    #[test]
    fn rejects_bad_priors_with_clear_messages() {
        for (spec, expected) in [
            ("", "empty prior"),
            ("   ", "empty prior"),
            ("mon-fri@09-12", "DAYS@HH-HH=WEIGHT"),
            ("mon-fri 09-12=0.5", "DAYS@HH-HH=WEIGHT"),
            ("*@00-24=0.1,", "prior rule 2 \"\""),
            ("moon@09-12=0.5", "unknown day \"moon\""),
            ("mon-xyz@09-12=0.5", "unknown day \"xyz\""),
            ("mon@09=0.5", "HH-HH"),
            ("mon@9-x=0.5", "HH-HH"),
            ("mon@09-25=0.5", "hour 25 is out of range"),
            ("mon@12-09=0.5", "end must be after the start"),
            ("mon@09-09=0.5", "end must be after the start"),
            ("mon@009-10=0.5", "HH-HH"),
            ("mon@09-12=1.5", "not between 0 and 1"),
            ("mon@09-12=-0.1", "not between 0 and 1"),
            ("mon@09-12=NaN", "not between 0 and 1"),
            ("mon@09-12=inf", "not between 0 and 1"),
            ("mon@09-12=high", "not a number"),
            ("*@00-24=0.1,tue@25-26=1", "prior rule 2"),
        ] {
            let message = parse_prior(spec).unwrap_err();
            assert!(message.contains(expected), "{spec:?}: {message}");
        }
        let long = format!("mon@09-12={}", "9".repeat(10_000));
        assert!(parse_prior(&long).unwrap_err().len() < 400);
    }

    #[test]
    fn without_history_the_prior_decides() {
        let prior = default_prior("instagram");
        let suggestions = suggest(&week_params("Europe/Paris", &prior, &[], 5));
        assert_eq!(suggestions.len(), 5);
        for suggestion in &suggestions {
            let hour = suggestion.local.hour();
            assert!(
                suggestion.local.weekday().num_days_from_monday() < 5
                    && ((11..14).contains(&hour) || (19..22).contains(&hour)),
                "{suggestion:?}"
            );
            assert_eq!(suggestion.score, 0.7);
            assert_eq!(
                suggestion.reason,
                "typically a strong time on this platform"
            );
        }
        // Ties go to the earlier hour: Monday 11:00, 12:00, 13:00, 19:00, 20:00.
        assert_eq!(suggestions[0].local, local("2025-06-02T11:00"));
        assert_eq!(suggestions[0].instant, utc("2025-06-02T09:00:00Z"));
        assert_eq!(suggestions[4].local, local("2025-06-02T20:00"));
    }

    #[test]
    fn strong_history_at_a_poor_hour_ranks_it_first() {
        let prior = default_prior("instagram");
        // Sunday 07:00 is a middling-to-poor hour on Instagram (0.25).
        let history = samples("Europe/Paris", "2025-06-08T07:00", 20, 12);
        let suggestions = suggest(&week_params("Europe/Paris", &prior, &history, 3));
        let best = &suggestions[0];
        assert_eq!(best.local, local("2025-06-08T07:00"));
        assert!(best.score > 0.7, "{best:?}");
        assert_eq!(
            best.reason,
            "your posts at Sun 07:00 averaged 12.0% engagement over 20 posts"
        );
        // The other hours still come from the prior.
        assert_eq!(suggestions[1].score, 0.7);
    }

    #[test]
    fn thin_history_barely_moves_the_ranking() {
        let prior = default_prior("instagram");
        let none = suggest(&week_params("Europe/Paris", &prior, &[], 10));
        let history = samples("Europe/Paris", "2025-06-08T07:00", 1, 50);
        let thin = suggest(&week_params("Europe/Paris", &prior, &history, 10));
        let instants = |list: &[Suggestion]| list.iter().map(|s| s.instant).collect::<Vec<_>>();
        assert_eq!(instants(&thin), instants(&none));
        // The hour itself moved up a little, from 0.25 to (5·0.25 + 1)/6.
        let all = suggest(&week_params("Europe/Paris", &prior, &history, usize::MAX));
        let sunday = all
            .iter()
            .find(|s| s.local == local("2025-06-08T07:00"))
            .unwrap();
        assert!((sunday.score - 2.25 / 6.0).abs() < 1e-12, "{sunday:?}");
        // Too few posts to cite: the reason comes from the prior (0.25).
        assert_eq!(sunday.reason, "a quiet time on this platform");
    }

    #[test]
    fn poor_results_pull_an_hour_down() {
        let prior = default_prior("instagram");
        // Good engagement Monday 11:00, none at all Monday 12:00.
        let mut history = samples("Europe/Paris", "2025-06-02T11:00", 10, 5);
        history.extend(samples("Europe/Paris", "2025-06-02T12:00", 10, 0));
        let all = suggest(&week_params("Europe/Paris", &prior, &history, usize::MAX));
        let score_at = |wall: &str| all.iter().find(|s| s.local == local(wall)).unwrap().score;
        assert!((score_at("2025-06-02T11:00") - (3.5 + 10.0) / 15.0).abs() < 1e-12);
        assert!((score_at("2025-06-02T12:00") - 3.5 / 15.0).abs() < 1e-12);
        assert_eq!(all[0].local, local("2025-06-02T11:00"));
        assert_eq!(all.len(), 168);
        assert!(all.windows(2).all(|pair| pair[0].score >= pair[1].score));
    }

    #[test]
    fn min_gap_keeps_suggestions_apart_and_away_from_taken_posts() {
        let prior = default_prior("instagram");
        let taken = [at("Europe/Paris", "2025-06-02T12:00")];
        let params = SuggestParams {
            taken: &taken,
            min_gap: TimeDelta::hours(2),
            ..week_params("Europe/Paris", &prior, &[], 6)
        };
        let suggestions = suggest(&params);
        assert_eq!(suggestions.len(), 6);
        let mut instants: Vec<_> = suggestions.iter().map(|s| s.instant).collect();
        instants.extend(taken);
        instants.sort();
        assert!(
            instants
                .windows(2)
                .all(|pair| pair[1] - pair[0] >= TimeDelta::hours(2)),
            "{instants:?}"
        );
        // Monday 11:00 and 13:00 are within two hours of the taken noon post;
        // 19:00 and 21:00 (not 20:00) are two apart.
        let locals: Vec<_> = suggestions.iter().map(|s| s.local).collect();
        assert_eq!(
            locals[..3],
            [
                local("2025-06-02T19:00"),
                local("2025-06-02T21:00"),
                local("2025-06-03T11:00")
            ]
        );
        assert_eq!(locals[3], local("2025-06-03T13:00"));

        // Without a gap a taken instant is still never suggested.
        let params = SuggestParams {
            taken: &taken,
            ..week_params("Europe/Paris", &prior, &[], 3)
        };
        let suggestions = suggest(&params);
        assert!(suggestions.iter().all(|s| s.instant != taken[0]));
        assert_eq!(suggestions[1].local, local("2025-06-02T13:00"));
    }

    #[test]
    fn hours_are_bucketed_in_the_business_zone() {
        // Only Wednesday 10:00–10:59 is any good.
        let prior = parse_prior("*@00-24=0.1, wed@10-11=0.9").unwrap();
        let params = week_params("Asia/Kathmandu", &prior, &[], 1);
        let suggestions = suggest(&params);
        assert_eq!(suggestions.len(), 1);
        // 10:00 in Kathmandu (UTC+05:45) is 04:15 UTC.
        assert_eq!(suggestions[0].instant, utc("2025-06-04T04:15:00Z"));
        assert_eq!(suggestions[0].local, local("2025-06-04T10:00"));

        // Samples are bucketed by their local hour too: published 04:20 UTC
        // is Wednesday 10:05 in Kathmandu.
        let history: Vec<_> = (1..=20)
            .map(|week| EngagementSample {
                published_at: utc("2025-06-04T04:20:00Z") - TimeDelta::weeks(week),
                impressions: 100,
                clicks: 1,
                reactions: 1,
            })
            .collect();
        let all = suggest(&SuggestParams {
            history: &history,
            count: usize::MAX,
            ..params
        });
        let best = &all[0];
        assert_eq!(best.local, local("2025-06-04T10:00"));
        assert_eq!(
            best.reason,
            "your posts at Wed 10:00 averaged 2.0% engagement over 20 posts"
        );
        // Every candidate is a whole hour in Kathmandu, i.e. :15 in UTC.
        assert!(
            all.iter()
                .all(|s| s.local.minute() == 0 && s.instant.minute() == 15)
        );
    }

    #[test]
    fn dst_days_have_23_and_25_candidate_hours() {
        let prior = [0.5; HOURS_PER_WEEK];
        let day = |start: &str, end: &str| SuggestParams {
            zone: zone("Europe/Paris"),
            prior: &prior,
            history: &[],
            from: at("Europe/Paris", start),
            to: at("Europe/Paris", end),
            count: 100,
            taken: &[],
            min_gap: TimeDelta::zero(),
        };
        let spring = suggest(&day("2025-03-30T00:00", "2025-03-31T00:00"));
        assert_eq!(spring.len(), 23);
        assert!(spring.iter().all(|s| s.local.hour() != 2));
        let autumn = suggest(&day("2025-10-26T00:00", "2025-10-27T00:00"));
        assert_eq!(autumn.len(), 25);
        let twos: Vec<_> = autumn.iter().filter(|s| s.local.hour() == 2).collect();
        assert_eq!(twos.len(), 2);
        assert_eq!(twos[1].instant - twos[0].instant, TimeDelta::hours(1));
    }

    #[test]
    fn from_is_rounded_up_to_the_next_whole_hour() {
        let prior = [0.5; HOURS_PER_WEEK];
        let params = SuggestParams {
            zone: TimeZone::UTC,
            prior: &prior,
            history: &[],
            from: utc("2025-06-02T10:20:00Z"),
            to: utc("2025-06-02T13:00:00Z"),
            count: 10,
            taken: &[],
            min_gap: TimeDelta::zero(),
        };
        let instants: Vec<_> = suggest(&params).iter().map(|s| s.instant).collect();
        assert_eq!(
            instants,
            [utc("2025-06-02T11:00:00Z"), utc("2025-06-02T12:00:00Z")]
        );
    }

    #[test]
    fn empty_results_and_no_panics() {
        let prior = default_prior("instagram");
        let params = week_params("Europe/Paris", &prior, &[], 5);
        assert!(suggest(&SuggestParams { count: 0, ..params }).is_empty());
        assert!(
            suggest(&SuggestParams {
                to: params.from,
                ..params
            })
            .is_empty()
        );
        assert!(
            suggest(&SuggestParams {
                from: params.to,
                to: params.from,
                ..params
            })
            .is_empty()
        );

        // A far `to` is clamped to 62 days of hours.
        let far = suggest(&SuggestParams {
            to: DateTime::<Utc>::MAX_UTC,
            count: usize::MAX,
            ..params
        });
        assert_eq!(far.len(), MAX_CANDIDATES);
        let limit = params.from + TimeDelta::days(62);
        assert!(far.iter().all(|s| s.instant < limit));

        // Garbage weights and samples, and the ends of time.
        let mut weird = [f64::NAN; HOURS_PER_WEEK];
        weird[0] = f64::INFINITY;
        weird[1] = -3.0;
        let history = [
            EngagementSample {
                published_at: DateTime::<Utc>::MAX_UTC,
                impressions: i64::MIN,
                clicks: i64::MAX,
                reactions: i64::MAX,
            },
            EngagementSample {
                published_at: DateTime::<Utc>::MIN_UTC,
                impressions: -5,
                clicks: -1,
                reactions: 0,
            },
            EngagementSample {
                published_at: params.from,
                impressions: 0,
                clicks: 0,
                reactions: 0,
            },
        ];
        let taken = [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC];
        for (from, to) in [
            (params.from, params.to),
            (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC),
            (
                DateTime::<Utc>::MAX_UTC - TimeDelta::hours(30),
                DateTime::<Utc>::MAX_UTC,
            ),
        ] {
            let result = suggest(&SuggestParams {
                zone: zone("Pacific/Kiritimati"),
                prior: &weird,
                history: &history,
                from,
                to,
                count: 1_000,
                taken: &taken,
                min_gap: TimeDelta::MAX,
            });
            assert!(result.iter().all(|s| (0.0..=1.0).contains(&s.score)));
            assert!(result.len() <= 1);
        }
    }
}
