//! Which partitions this process may fire, and until when it may trust
//! that. The database decides ownership (leases with an epoch); this is the
//! process's own view of it, checked on the fire path without a round trip.
//!
//! A lease is trusted locally until a margin before the database can let it
//! expire (the margin is counted from when the renewal was *sent*), so a
//! process that was frozen or cut off stops publishing before anyone else
//! may take its partitions over.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::domain::PARTITION_COUNT;

/// `epoch` of a partition that is not held.
const NOT_HELD: i64 = -1;

#[derive(Debug)]
struct Slot {
    epoch: AtomicI64,
    /// Milliseconds since `Ownership::base`; `u64::MAX` for ever.
    trusted_until_ms: AtomicU64,
    /// Being handed over: no new claims, attempts in flight may finish.
    draining: AtomicBool,
    /// Posts claimed and not yet finished.
    in_flight: AtomicU32,
}

impl Slot {
    fn new(epoch: i64, trusted_until_ms: u64) -> Self {
        Self {
            epoch: AtomicI64::new(epoch),
            trusted_until_ms: AtomicU64::new(trusted_until_ms),
            draining: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
        }
    }
}

/// Shared between the engine, which reads it on every claim and publish,
/// and the coordinator, which grants, extends and revokes.
#[derive(Debug)]
pub struct Ownership {
    base: Instant,
    slots: Vec<Slot>,
}

impl Ownership {
    /// Every partition, for ever: the one process of a SQLite database.
    pub fn exclusive() -> Self {
        Self {
            base: Instant::now(),
            slots: (0..PARTITION_COUNT)
                .map(|_| Slot::new(0, u64::MAX))
                .collect(),
        }
    }

    /// Nothing yet: partitions come with leases.
    pub fn leased() -> Self {
        Self {
            base: Instant::now(),
            slots: (0..PARTITION_COUNT)
                .map(|_| Slot::new(NOT_HELD, 0))
                .collect(),
        }
    }

    fn slot(&self, partition: u16) -> Option<&Slot> {
        self.slots.get(usize::from(partition))
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    fn trusted(&self, slot: &Slot) -> bool {
        self.millis(Instant::now()) < slot.trusted_until_ms.load(Ordering::Acquire)
    }

    /// The partition is this process's (trusted or not): its timers are
    /// kept.
    pub fn is_assigned(&self, partition: u16) -> bool {
        self.slot(partition)
            .is_some_and(|slot| slot.epoch.load(Ordering::Acquire) != NOT_HELD)
    }

    /// Timers of the partition are kept: assigned and not being handed over.
    pub fn keeps_timers(&self, partition: u16) -> bool {
        self.slot(partition).is_some_and(|slot| {
            slot.epoch.load(Ordering::Acquire) != NOT_HELD && !slot.draining.load(Ordering::Acquire)
        })
    }

    /// New claims may be made in the partition.
    pub fn may_claim(&self, partition: u16) -> bool {
        self.slot(partition).is_some_and(|slot| {
            slot.epoch.load(Ordering::Acquire) != NOT_HELD
                && !slot.draining.load(Ordering::Acquire)
                && self.trusted(slot)
        })
    }

    /// A post claimed under `epoch` may still be published: the lease is
    /// the same and trusted.
    pub fn holds(&self, partition: u16, epoch: i64) -> bool {
        self.slot(partition)
            .is_some_and(|slot| slot.epoch.load(Ordering::Acquire) == epoch && self.trusted(slot))
    }

    /// Partitions whose timers are kept, in order.
    pub fn timer_partitions(&self) -> Vec<u16> {
        (0..PARTITION_COUNT)
            .filter(|partition| self.keeps_timers(*partition))
            .collect()
    }

    /// All partitions are held, for ever: no need to filter reads.
    pub fn is_exclusive(&self) -> bool {
        self.slots
            .iter()
            .all(|slot| slot.trusted_until_ms.load(Ordering::Acquire) == u64::MAX)
    }

    pub fn epoch(&self, partition: u16) -> Option<i64> {
        self.slot(partition)
            .map(|slot| slot.epoch.load(Ordering::Acquire))
            .filter(|epoch| *epoch != NOT_HELD)
    }

    /// A lease was acquired or renewed; trust it until `trusted_until`.
    pub fn grant(&self, partition: u16, epoch: i64, trusted_until: Instant) {
        if let Some(slot) = self.slot(partition) {
            if slot.epoch.swap(epoch, Ordering::AcqRel) != epoch {
                slot.draining.store(false, Ordering::Release);
            }
            slot.trusted_until_ms
                .store(self.millis(trusted_until), Ordering::Release);
        }
    }

    /// Stop claiming in the partition ahead of handing it over.
    pub fn drain(&self, partition: u16) {
        if let Some(slot) = self.slot(partition) {
            slot.draining.store(true, Ordering::Release);
        }
    }

    /// The lease is gone (lost or released).
    pub fn revoke(&self, partition: u16) {
        if let Some(slot) = self.slot(partition) {
            slot.epoch.store(NOT_HELD, Ordering::Release);
            slot.trusted_until_ms.store(0, Ordering::Release);
            slot.draining.store(false, Ordering::Release);
        }
    }

    /// Posts of the partition claimed and not yet finished.
    pub fn in_flight(&self, partition: u16) -> u32 {
        self.slot(partition)
            .map_or(0, |slot| slot.in_flight.load(Ordering::Acquire))
    }

    /// Counts a claimed post until the guard is dropped.
    pub(super) fn track(self: &std::sync::Arc<Self>, partition: u16) -> InFlight {
        if let Some(slot) = self.slot(partition) {
            slot.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        InFlight {
            ownership: std::sync::Arc::clone(self),
            partition,
        }
    }
}

/// A claimed post of a partition, counted until dropped.
#[derive(Debug)]
pub(super) struct InFlight {
    ownership: std::sync::Arc<Ownership>,
    partition: u16,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(slot) = self.ownership.slot(self.partition) {
            slot.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn exclusive_ownership_holds_everything_for_ever() {
        let ownership = Ownership::exclusive();
        assert!(ownership.is_exclusive());
        assert_eq!(
            ownership.timer_partitions().len(),
            usize::from(PARTITION_COUNT)
        );
        assert!(ownership.may_claim(7));
        assert!(ownership.holds(7, 0));
        assert!(!ownership.holds(7, 1));
        assert!(!ownership.may_claim(PARTITION_COUNT));
    }

    #[test]
    fn a_lease_is_trusted_only_until_its_margin() {
        let ownership = Ownership::leased();
        assert!(!ownership.is_assigned(3));
        ownership.grant(3, 5, Instant::now() + Duration::from_secs(60));
        assert!(ownership.may_claim(3));
        assert!(ownership.holds(3, 5));
        assert!(
            !ownership.holds(3, 4),
            "a claim under an older epoch is fenced"
        );
        // Renewal stalled: the lease is still assigned (timers kept) but no
        // longer trusted for claims or publishing.
        ownership.grant(3, 5, Instant::now());
        assert!(ownership.is_assigned(3));
        assert!(!ownership.may_claim(3));
        assert!(!ownership.holds(3, 5));
        ownership.revoke(3);
        assert!(!ownership.is_assigned(3));
        assert_eq!(ownership.timer_partitions(), Vec::<u16>::new());
    }

    #[test]
    fn draining_stops_claims_but_lets_claimed_posts_finish() {
        let ownership = Arc::new(Ownership::leased());
        ownership.grant(9, 1, Instant::now() + Duration::from_secs(60));
        let guard = ownership.track(9);
        ownership.drain(9);
        assert!(!ownership.may_claim(9));
        assert!(ownership.holds(9, 1));
        assert_eq!(ownership.in_flight(9), 1);
        drop(guard);
        assert_eq!(ownership.in_flight(9), 0);
        // Retaken under a new epoch, it is claimable again.
        ownership.grant(9, 2, Instant::now() + Duration::from_secs(60));
        assert!(ownership.may_claim(9));
    }
}
