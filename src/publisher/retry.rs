//! How many times a post is attempted and how long to wait between attempts.

use std::time::Duration;

use rand::Rng;

/// A server's Retry-After is honoured up to this long; beyond it the post
/// would drift too far from its scheduled instant to be worth holding on to
/// the server's word.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Exponential backoff with jitter, bounded by a number of attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// The delay after the first failed attempt, before jitter.
    pub base_delay: Duration,
    /// The delay never grows past this, before a server's Retry-After.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt that follows `failed_attempt` (1-based).
    ///
    /// The nominal delay is `base_delay * 2^(failed_attempt - 1)`, capped at
    /// `max_delay`, and the result is drawn from `[d/2, d]` ("equal jitter")
    /// so that posts failing together do not retry together, while the
    /// delay still grows. A `retry_after` from the server is a lower bound,
    /// capped at [`MAX_RETRY_AFTER`]; the result never exceeds
    /// `max(max_delay, retry_after)`.
    pub fn backoff(&self, failed_attempt: u32, retry_after: Option<Duration>) -> Duration {
        let nominal = self.nominal_delay(failed_attempt);
        let half = nominal / 2;
        let jittered = half + random_up_to(nominal - half);

        // The jittered delay is at most max_delay, so the result can only
        // exceed max_delay by honouring the (capped) retry_after.
        match retry_after {
            None => jittered,
            Some(retry_after) => jittered.max(retry_after.min(MAX_RETRY_AFTER)),
        }
    }

    /// `base_delay * 2^(failed_attempt - 1)` capped at `max_delay`; any
    /// overflow along the way means "more than the cap".
    fn nominal_delay(&self, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1);
        2u32.checked_pow(exponent)
            .and_then(|factor| self.base_delay.checked_mul(factor))
            .map_or(self.max_delay, |delay| delay.min(self.max_delay))
    }

    /// Whether another attempt is allowed after `attempts_made`.
    pub fn has_attempts_left(&self, attempts_made: u32) -> bool {
        attempts_made < self.max_attempts
    }
}

/// A uniformly random duration in `[0, max]`, at nanosecond resolution.
///
/// Works on whole nanoseconds rather than `Duration::mul_f64`, whose float
/// rounding can overshoot (and panic) for very large durations.
fn random_up_to(max: Duration) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let nanos = rand::rng().random_range(0..=max.as_nanos());
    // nanos <= max.as_nanos(), so the seconds part fits in a u64 and the
    // remainder is below one second; the fallback is unreachable.
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: usize = 2_000;

    fn policy(base_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(max_ms),
        }
    }

    fn samples(
        policy: &RetryPolicy,
        failed_attempt: u32,
        retry_after: Option<Duration>,
    ) -> Vec<Duration> {
        (0..SAMPLES)
            .map(|_| policy.backoff(failed_attempt, retry_after))
            .collect()
    }

    /// Every sample lies in [nominal/2, nominal], and the samples spread over
    /// that range rather than sitting at one point.
    fn assert_equal_jitter(delays: &[Duration], nominal: Duration) {
        let min = delays.iter().min().copied().unwrap();
        let max = delays.iter().max().copied().unwrap();
        assert!(min >= nominal / 2, "{min:?} below half of {nominal:?}");
        assert!(max <= nominal, "{max:?} above {nominal:?}");
        let tenth = nominal / 10;
        assert!(
            min < nominal / 2 + tenth,
            "never near the low end: min {min:?}"
        );
        assert!(
            max > nominal - tenth,
            "never near the high end: max {max:?}"
        );
    }

    #[test]
    fn defaults() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 3);
        assert_eq!(policy.base_delay, Duration::from_secs(2));
        assert_eq!(policy.max_delay, Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_half_to_full_exponential_delay() {
        let policy = policy(1_000, 3_600_000);
        for (failed_attempt, nominal_ms) in [(1, 1_000), (2, 2_000), (3, 4_000), (5, 16_000)] {
            let delays = samples(&policy, failed_attempt, None);
            assert_equal_jitter(&delays, Duration::from_millis(nominal_ms));
        }
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first() {
        let delays = samples(&policy(1_000, 60_000), 0, None);
        assert_equal_jitter(&delays, Duration::from_secs(1));
    }

    #[test]
    fn delay_is_capped_at_max_delay() {
        let policy = policy(1_000, 10_000);
        // 2^(7-1) s = 64 s nominal, well past the 10 s cap.
        let delays = samples(&policy, 7, None);
        assert_equal_jitter(&delays, Duration::from_secs(10));
    }

    #[test]
    fn base_above_max_is_capped_too() {
        let delays = samples(&policy(50_000, 10_000), 1, None);
        assert_equal_jitter(&delays, Duration::from_secs(10));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = policy(2_000, 300_000);
        for failed_attempt in [31, 32, 33, 64, 1_000, u32::MAX] {
            let delays = samples(&policy, failed_attempt, None);
            assert_equal_jitter(&delays, Duration::from_secs(300));
        }
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
        };
        for failed_attempt in [1, 2, 1_000] {
            let delay = policy.backoff(failed_attempt, Some(Duration::MAX));
            assert!(delay >= Duration::MAX / 2);
        }
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let policy = policy(1_000, 300_000);
        let retry_after = Duration::from_secs(30);
        for delay in samples(&policy, 1, Some(retry_after)) {
            assert_eq!(delay, retry_after);
        }
    }

    #[test]
    fn retry_after_shorter_than_backoff_leaves_the_backoff() {
        let policy = policy(8_000, 300_000);
        let delays = samples(&policy, 1, Some(Duration::from_secs(1)));
        assert_equal_jitter(&delays, Duration::from_secs(8));
    }

    #[test]
    fn retry_after_may_exceed_max_delay() {
        let policy = policy(1_000, 10_000);
        let retry_after = Duration::from_secs(120);
        assert_eq!(policy.backoff(1, Some(retry_after)), retry_after);
    }

    #[test]
    fn retry_after_is_capped_at_one_hour() {
        let policy = policy(1_000, 10_000);
        let delay = policy.backoff(1, Some(Duration::from_secs(24 * 60 * 60)));
        assert_eq!(delay, MAX_RETRY_AFTER);
    }

    #[test]
    fn max_delay_above_one_hour_still_bounds_a_capped_retry_after() {
        let policy = policy(1_000, 2 * 3_600_000);
        let retry_after = Duration::from_secs(10 * 60 * 60);
        for delay in samples(&policy, 1_000, Some(retry_after)) {
            assert!(delay >= MAX_RETRY_AFTER, "{delay:?}");
            assert!(delay <= Duration::from_secs(2 * 60 * 60), "{delay:?}");
        }
    }

    #[test]
    fn zero_base_delay_means_no_wait() {
        assert_eq!(policy(0, 10_000).backoff(3, None), Duration::ZERO);
    }

    #[test]
    fn attempts_left_counts_the_first_attempt() {
        let policy = RetryPolicy::default();
        assert!(policy.has_attempts_left(0));
        assert!(policy.has_attempts_left(1));
        assert!(policy.has_attempts_left(2));
        assert!(!policy.has_attempts_left(3));
        assert!(!policy.has_attempts_left(4));
        assert!(!policy.has_attempts_left(u32::MAX));

        let single = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert!(single.has_attempts_left(0));
        assert!(!single.has_attempts_left(1));
    }
}
