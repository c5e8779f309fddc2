//! Pauses and the attempts in flight, in memory, so that a pause can promise
//! that nothing of a business is published once the call returns: an
//! attempt is admitted only while its business and platform are not paused,
//! and a pause waits for the attempts already admitted.
//!
//! The database keeps the pauses across restarts; this gate mirrors them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// `(business_id, platform)`; an empty platform stands for the whole business.
type Key = (String, String);

#[derive(Debug, Default)]
struct GateState {
    paused: HashSet<Key>,
    in_flight: HashMap<Key, usize>,
}

#[derive(Debug, Default)]
pub struct PauseGate {
    state: Mutex<GateState>,
    /// Woken whenever an admitted attempt finishes.
    finished: Notify,
}

impl PauseGate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state stays consistent even if a holder panicked: every update
        // is a single insert or counter change.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn pause(&self, business_id: &str, platform: Option<&str>) {
        self.lock()
            .paused
            .insert((business_id.to_owned(), platform.unwrap_or("").to_owned()));
    }

    /// Lifts the pause of one platform, or every pause of the business.
    pub fn resume(&self, business_id: &str, platform: Option<&str>) {
        let mut state = self.lock();
        match platform {
            Some(platform) => {
                state
                    .paused
                    .remove(&(business_id.to_owned(), platform.to_owned()));
            }
            None => state.paused.retain(|(business, _)| business != business_id),
        }
    }

    pub fn is_paused(&self, business_id: &str, platform: &str) -> bool {
        is_paused(&self.lock(), business_id, platform)
    }

    /// Admits an attempt unless its business or platform is paused; the
    /// attempt counts as in flight until the guard is dropped.
    pub fn admit(self: &Arc<Self>, business_id: &str, platform: &str) -> Option<InFlight> {
        let mut state = self.lock();
        if is_paused(&state, business_id, platform) {
            return None;
        }
        let key = (business_id.to_owned(), platform.to_owned());
        *state.in_flight.entry(key.clone()).or_default() += 1;
        Some(InFlight {
            gate: Arc::clone(self),
            key,
        })
    }

    /// Waits until no admitted attempt of the business (or of one platform
    /// of it) is running; `false` if some still are after `limit`.
    pub async fn wait_idle(
        &self,
        business_id: &str,
        platform: Option<&str>,
        limit: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let finished = self.finished.notified();
            let busy = self
                .lock()
                .in_flight
                .iter()
                .any(|((business, plat), count)| {
                    *count > 0 && business == business_id && platform.is_none_or(|p| p == plat)
                });
            if !busy {
                return true;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return false;
            }
        }
    }
}

fn is_paused(state: &GateState, business_id: &str, platform: &str) -> bool {
    state
        .paused
        .contains(&(business_id.to_owned(), String::new()))
        || state
            .paused
            .contains(&(business_id.to_owned(), platform.to_owned()))
}

/// An admitted attempt; dropping it marks the attempt finished.
#[derive(Debug)]
pub struct InFlight {
    gate: Arc<PauseGate>,
    key: Key,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        if let Some(count) = state.in_flight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.in_flight.remove(&self.key);
            }
        }
        drop(state);
        self.gate.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_platform_or_business_admits_nothing() {
        let gate = PauseGate::new();
        gate.pause("b", Some("x"));
        assert!(gate.admit("b", "x").is_none());
        assert!(gate.admit("b", "instagram").is_some());
        gate.pause("b", None);
        assert!(gate.admit("b", "instagram").is_none());
        gate.resume("b", None);
        assert!(gate.admit("b", "x").is_some());
    }

    #[tokio::test]
    async fn waiting_for_idle_ends_when_the_attempt_finishes() {
        let gate = PauseGate::new();
        let attempt = gate.admit("b", "x").unwrap();
        assert!(!gate.wait_idle("b", None, Duration::from_millis(20)).await);
        assert!(
            gate.wait_idle("other", None, Duration::from_millis(20))
                .await
        );
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(
                async move { gate.wait_idle("b", Some("x"), Duration::from_secs(5)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(attempt);
        assert!(waiter.await.unwrap());
    }
}
