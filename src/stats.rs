//! Queue health kept in memory so that reading it costs no scan: posts per
//! business and status (seeded from the database at start-up, then moved by
//! every state change), and the lateness of recent first attempts in
//! per-minute and per-hour histograms.
//!
//! The counters describe what this process has seen change; several
//! replicas would each see only their own changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::domain::PostStatus;

/// Upper bounds (ms) of the lateness buckets; the last bucket is open.
const BUCKET_BOUNDS_MS: [f64; 24] = [
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    50.0,
    75.0,
    100.0,
    150.0,
    250.0,
    500.0,
    1_000.0,
    2_000.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    3_600_000.0,
];
const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;
/// Index of the bucket ending at 1 s: fires up to there were "on time".
const ONE_SECOND_BUCKET: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
struct Histogram {
    counts: [u64; BUCKETS],
}

impl Histogram {
    fn record(&mut self, lateness_ms: f64) {
        let bucket = BUCKET_BOUNDS_MS
            .iter()
            .position(|bound| lateness_ms <= *bound)
            .unwrap_or(BUCKETS - 1);
        self.counts[bucket] += 1;
    }

    fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding the quantile: an upper
    /// estimate, exact to the bucket.
    fn quantile_ms(&self, quantile: f64) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let rank = (quantile * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return BUCKET_BOUNDS_MS
                    .get(index)
                    .copied()
                    .unwrap_or(BUCKET_BOUNDS_MS[BUCKETS - 2]);
            }
        }
        BUCKET_BOUNDS_MS[BUCKETS - 2]
    }
}

/// Histograms by time slot (minute or hour since the epoch).
#[derive(Debug, Default)]
struct Timeline {
    slots: VecDeque<(i64, Histogram)>,
}

impl Timeline {
    fn record(&mut self, slot: i64, keep: i64, lateness_ms: f64) {
        match self.slots.back_mut() {
            Some((last, histogram)) if *last == slot => histogram.record(lateness_ms),
            _ => {
                let mut histogram = Histogram::default();
                histogram.record(lateness_ms);
                self.slots.push_back((slot, histogram));
            }
        }
        while self
            .slots
            .front()
            .is_some_and(|(first, _)| *first <= slot - keep)
        {
            self.slots.pop_front();
        }
    }

    fn since(&self, first_slot: i64) -> Histogram {
        let mut sum = Histogram::default();
        for (_, histogram) in self.slots.iter().filter(|(slot, _)| *slot >= first_slot) {
            sum.add(histogram);
        }
        sum
    }
}

#[derive(Debug, Default)]
struct Lateness {
    by_minute: Timeline,
    by_hour: Timeline,
}

#[derive(Debug, Default)]
struct State {
    counts: HashMap<String, [i64; PostStatus::ALL.len()]>,
    lateness: HashMap<String, Lateness>,
    all_lateness: Lateness,
}

/// How punctual recent fires were.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OnTime {
    pub fires: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub within_one_second: f64,
}

/// A snapshot for one business or for all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsSnapshot {
    pub counts: Vec<(PostStatus, i64)>,
    pub last_hour: OnTime,
    pub last_day: OnTime,
}

#[derive(Debug, Default)]
pub struct QueueStatsTracker {
    state: Mutex<State>,
}

fn status_index(status: PostStatus) -> usize {
    PostStatus::ALL
        .iter()
        .position(|candidate| *candidate == status)
        .unwrap_or(0)
}

impl QueueStatsTracker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the counters with what the database holds.
    pub fn seed(&self, counts: impl IntoIterator<Item = (String, PostStatus, i64)>) {
        let mut state = self.lock();
        state.counts.clear();
        for (business_id, status, count) in counts {
            state.counts.entry(business_id).or_default()[status_index(status)] += count;
        }
    }

    /// A post moved from `previous` (none for a new post) to `next`.
    pub fn on_change(&self, business_id: &str, previous: Option<PostStatus>, next: PostStatus) {
        let mut state = self.lock();
        let counts = state.counts.entry(business_id.to_owned()).or_default();
        if let Some(previous) = previous {
            counts[status_index(previous)] -= 1;
        }
        counts[status_index(next)] += 1;
    }

    /// A first attempt started `lateness` after the post's instant.
    pub fn on_fire(&self, business_id: &str, at: DateTime<Utc>, lateness: chrono::Duration) {
        let lateness_ms = lateness.num_microseconds().unwrap_or(i64::MAX) as f64 / 1_000.0;
        let minute = at.timestamp().div_euclid(60);
        let hour = at.timestamp().div_euclid(3_600);
        let mut guard = self.lock();
        let state = &mut *guard;
        for lateness_record in [
            &mut state.all_lateness,
            state.lateness.entry(business_id.to_owned()).or_default(),
        ] {
            lateness_record.by_minute.record(minute, 60, lateness_ms);
            lateness_record.by_hour.record(hour, 24, lateness_ms);
        }
    }

    /// Posts per status, summed over every business.
    pub fn counts_by_status(&self) -> Vec<(PostStatus, i64)> {
        let state = self.lock();
        let mut counts = [0i64; PostStatus::ALL.len()];
        for business_counts in state.counts.values() {
            for (total, count) in counts.iter_mut().zip(business_counts) {
                *total += count;
            }
        }
        PostStatus::ALL
            .iter()
            .zip(counts)
            .map(|(status, count)| (*status, count.max(0)))
            .collect()
    }

    pub fn snapshot(&self, business_id: Option<&str>, now: DateTime<Utc>) -> StatsSnapshot {
        let state = self.lock();
        let mut counts = [0i64; PostStatus::ALL.len()];
        for (business, business_counts) in &state.counts {
            if business_id.is_none_or(|wanted| wanted == business) {
                for (total, count) in counts.iter_mut().zip(business_counts) {
                    *total += count;
                }
            }
        }
        let lateness = match business_id {
            Some(business) => state.lateness.get(business),
            None => Some(&state.all_lateness),
        };
        let minute = now.timestamp().div_euclid(60);
        let hour = now.timestamp().div_euclid(3_600);
        let (last_hour, last_day) = lateness.map_or_else(Default::default, |lateness| {
            (
                on_time(&lateness.by_minute.since(minute - 59)),
                on_time(&lateness.by_hour.since(hour - 23)),
            )
        });
        StatsSnapshot {
            counts: PostStatus::ALL
                .iter()
                .zip(counts)
                .map(|(status, count)| (*status, count.max(0)))
                .collect(),
            last_hour,
            last_day,
        }
    }
}

fn on_time(histogram: &Histogram) -> OnTime {
    let fires = histogram.total();
    if fires == 0 {
        return OnTime::default();
    }
    let on_time: u64 = histogram.counts[..=ONE_SECOND_BUCKET].iter().sum();
    OnTime {
        fires,
        p50_ms: histogram.quantile_ms(0.50),
        p99_ms: histogram.quantile_ms(0.99),
        within_one_second: on_time as f64 / fires as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_state_changes() {
        let tracker = QueueStatsTracker::default();
        tracker.seed([("b".to_owned(), PostStatus::Scheduled, 3)]);
        tracker.on_change("b", Some(PostStatus::Scheduled), PostStatus::Publishing);
        tracker.on_change("c", None, PostStatus::Scheduled);
        let now = Utc::now();
        let count = |snapshot: &StatsSnapshot, status| {
            snapshot
                .counts
                .iter()
                .find(|(s, _)| *s == status)
                .unwrap()
                .1
        };
        let b = tracker.snapshot(Some("b"), now);
        assert_eq!(count(&b, PostStatus::Scheduled), 2);
        assert_eq!(count(&b, PostStatus::Publishing), 1);
        let all = tracker.snapshot(None, now);
        assert_eq!(count(&all, PostStatus::Scheduled), 3);
    }

    #[test]
    fn lateness_quantiles_and_on_time_share() {
        let tracker = QueueStatsTracker::default();
        let now = Utc::now();
        for ms in [1, 1, 1, 2, 2, 3, 4, 4, 900, 1_500] {
            tracker.on_fire("b", now, chrono::Duration::milliseconds(ms));
        }
        let snapshot = tracker.snapshot(Some("b"), now);
        assert_eq!(snapshot.last_hour.fires, 10);
        assert_eq!(snapshot.last_hour.p50_ms, 2.0);
        assert_eq!(snapshot.last_hour.p99_ms, 2_000.0);
        assert!((snapshot.last_hour.within_one_second - 0.9).abs() < 1e-9);
        assert_eq!(snapshot.last_day.fires, 10);
        // An hour later the minute view is empty, the day view is not.
        let later = now + chrono::Duration::minutes(61);
        let snapshot = tracker.snapshot(Some("b"), later);
        assert_eq!(snapshot.last_hour.fires, 0);
        assert_eq!(snapshot.last_day.fires, 10);
        assert_eq!(tracker.snapshot(Some("nobody"), now).last_day.fires, 0);
    }
}
