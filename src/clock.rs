//! The one source of wall-clock time. Instants are UTC wall-clock times;
//! timers run on tokio's monotonic clock. A [`Clock`] converts the former
//! into the latter, so tests can step the wall clock and the engine re-checks
//! it when a timer fires.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock instant.
    fn now(&self) -> DateTime<Utc>;

    /// The monotonic deadline at which the wall clock is expected to reach
    /// `at`; now when `at` has passed.
    fn deadline_for(&self, at: DateTime<Utc>) -> tokio::time::Instant {
        let monotonic_now = tokio::time::Instant::now();
        let remaining = (at - self.now()).to_std().unwrap_or_default();
        monotonic_now + remaining
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by an adjustable offset: lets a test step the
/// wall clock backwards or forwards while real timers keep running.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_micros: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the wall clock by `delta` (negative steps it back).
    pub fn step(&self, delta: chrono::Duration) {
        let micros = delta.num_microseconds().unwrap_or(0);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::microseconds(self.offset_micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deadline_follows_the_wall_clock_offset() {
        let clock = OffsetClock::new();
        let target = clock.now() + chrono::Duration::seconds(10);
        let before = clock.deadline_for(target);
        clock.step(chrono::Duration::seconds(-5));
        let after = clock.deadline_for(target);
        let moved = after - before;
        assert!(
            moved >= std::time::Duration::from_millis(4_900),
            "{moved:?}"
        );
        let past = clock.deadline_for(clock.now() - chrono::Duration::hours(1));
        assert!(past <= tokio::time::Instant::now());
    }
}
