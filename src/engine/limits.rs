//! Per-platform publish rate limits, per business. A burst beyond the limit
//! is smoothed: each post over the limit is given the next instant the
//! window allows, in the order the posts fell due, instead of being sent to
//! the publisher to fail.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::PostId;

/// At most `max` publishes per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Parses `N/DURATION`, e.g. `25/1h`.
    pub fn parse(input: &str) -> Result<Self, String> {
        let (max, window) = input
            .split_once('/')
            .ok_or_else(|| format!("{input:?}: expected N/DURATION, e.g. 25/1h"))?;
        let max: u32 = max
            .trim()
            .parse()
            .map_err(|_| format!("{input:?}: {max:?} is not a count"))?;
        let window = humantime::parse_duration(window.trim())
            .map_err(|error| format!("{input:?}: {error}"))?;
        if max == 0 || window.is_zero() {
            return Err(format!("{input:?}: count and window must be positive"));
        }
        Ok(Self { max, window })
    }
}

#[derive(Debug, Default)]
struct Bookings {
    /// Publish instants granted within the window, per business and platform.
    granted: HashMap<(String, String), VecDeque<DateTime<Utc>>>,
    /// Posts deferred to a later instant, which is already counted above:
    /// when they come back at that instant they use it instead of queueing
    /// again behind later posts.
    deferred: HashMap<PostId, DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    limits: HashMap<String, RateLimit>,
    bookings: Mutex<Bookings>,
}

impl RateLimiter {
    pub fn new(limits: HashMap<String, RateLimit>) -> Self {
        Self {
            limits,
            bookings: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bookings> {
        self.bookings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The instant at or after `now` when this post may be published, and
    /// books it. Equal to `now` when the limit allows it at once.
    pub fn reserve(
        &self,
        post: PostId,
        business_id: &str,
        platform: &str,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let Some(limit) = self.limits.get(platform) else {
            return now;
        };
        let window = chrono::Duration::from_std(limit.window).unwrap_or(chrono::Duration::MAX);
        let mut bookings = self.lock();
        if let Some(booked) = bookings.deferred.remove(&post) {
            if booked <= now {
                return now;
            }
            bookings.deferred.insert(post, booked);
            return booked;
        }
        let times = bookings
            .granted
            .entry((business_id.to_owned(), platform.to_owned()))
            .or_default();
        while times.front().is_some_and(|first| *first + window <= now) {
            times.pop_front();
        }
        let max = limit.max as usize;
        // Booked instants are increasing, so the window containing the new
        // one starts `max` bookings back.
        let at = match times.len().checked_sub(max) {
            Some(index) => times
                .get(index)
                .map_or(now, |first| (*first + window).max(now)),
            None => now,
        };
        // Deferred posts get distinct instants at least a timer tick apart,
        // so they come back in the order they were deferred.
        let spacing = if at > now {
            chrono::Duration::milliseconds(1)
        } else {
            chrono::Duration::zero()
        };
        let at = times.back().map_or(at, |last| at.max(*last + spacing));
        times.push_back(at);
        // Attempts running concurrently read slightly different clocks; a
        // booking this close to now is no deferral.
        if at > now + chrono::Duration::milliseconds(1) {
            bookings.deferred.insert(post, at);
            at
        } else {
            now
        }
    }

    /// Gives back a booking that will not be used (the post changed).
    pub fn release(&self, post: PostId, business_id: &str, platform: &str, at: DateTime<Utc>) {
        if !self.limits.contains_key(platform) {
            return;
        }
        let mut bookings = self.lock();
        bookings.deferred.remove(&post);
        if let Some(times) = bookings
            .granted
            .get_mut(&(business_id.to_owned(), platform.to_owned()))
            && let Some(position) = times.iter().rposition(|time| *time == at)
        {
            times.remove(position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, window_secs: u64) -> RateLimiter {
        RateLimiter::new(HashMap::from([(
            "x".to_owned(),
            RateLimit {
                max,
                window: Duration::from_secs(window_secs),
            },
        )]))
    }

    #[test]
    fn a_burst_beyond_the_limit_is_spread_over_windows_in_order() {
        let limiter = limiter(2, 10);
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let posts: Vec<PostId> = (0..5).map(|_| PostId::new()).collect();
        let times: Vec<i64> = posts
            .iter()
            .map(|post| limiter.reserve(*post, "b", "x", now).timestamp() - 1_000)
            .collect();
        assert_eq!(times, vec![0, 0, 10, 10, 20]);
        let third = limiter.reserve(PostId::new(), "b", "x", now);
        assert!(third > DateTime::from_timestamp(1_020, 0).unwrap());
        // A deferred post coming back at its instant uses its booking.
        let later = now + chrono::Duration::seconds(10);
        assert_eq!(limiter.reserve(posts[2], "b", "x", later), later);
        // Other businesses and unlimited platforms are not affected.
        assert_eq!(limiter.reserve(PostId::new(), "other", "x", now), now);
        assert_eq!(limiter.reserve(PostId::new(), "b", "instagram", now), now);
    }

    #[test]
    fn the_window_slides() {
        let limiter = limiter(1, 10);
        let start = DateTime::from_timestamp(1_000, 0).unwrap();
        assert_eq!(limiter.reserve(PostId::new(), "b", "x", start), start);
        let later = start + chrono::Duration::seconds(11);
        assert_eq!(limiter.reserve(PostId::new(), "b", "x", later), later);
    }

    #[test]
    fn a_released_booking_frees_its_place() {
        let limiter = limiter(1, 10);
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let post = PostId::new();
        let first = limiter.reserve(post, "b", "x", now);
        limiter.release(post, "b", "x", first);
        assert_eq!(limiter.reserve(PostId::new(), "b", "x", now), now);
    }

    #[test]
    fn limits_parse() {
        assert_eq!(
            RateLimit::parse("25/1h").unwrap(),
            RateLimit {
                max: 25,
                window: Duration::from_secs(3600)
            }
        );
        assert!(RateLimit::parse("0/1h").is_err());
        assert!(RateLimit::parse("25").is_err());
        assert!(RateLimit::parse("x/1h").is_err());
    }
}
