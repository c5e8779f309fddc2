//! Replicas sharing one PostgreSQL. The coordinator keeps this replica's
//! heartbeat, renews its partition leases, shares partitions out fairly among
//! the live replicas (taking over those of a replica that died, handing some
//! over when one joins), and feeds the engine the posts that other replicas
//! write, from PostgreSQL notifications.
//!
//! PostgreSQL is the only coordinator: no replica talks to another. A lease
//! lapses unless renewed; whoever takes a partition over bumps its epoch,
//! which fences every claim and outcome write of the previous owner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::domain::{PARTITION_COUNT, PostId};
use crate::engine::{EngineHandle, Ownership};
use crate::events::{EventBus, EventKind, RelayedEvent};
use crate::storage::{MemberCount, Notice, SharedDatabase, Storage};
use crate::telemetry::Metrics;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Unique per process: leases name their owner by it.
    pub replica_id: String,
    /// How long a lease lasts without renewal: a replica that dies has its
    /// partitions taken over after at most this plus a renewal period.
    pub lease_duration: Duration,
}

impl ClusterConfig {
    /// Leases are renewed this often: three chances before one lapses.
    fn renew_period(&self) -> Duration {
        self.lease_duration / 3
    }

    /// A lease is trusted locally until this long before the database may
    /// let it lapse, counted from when its renewal was sent.
    fn safety_margin(&self) -> Duration {
        self.lease_duration / 4
    }
}

/// A name for this process: the host (a pod's name in Kubernetes) and a
/// random suffix, so that a restarted process is a new owner.
pub fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "punctual".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Runs until stopped; then releases every lease at once, so that the other
/// replicas take over without waiting for them to lapse.
pub struct Coordinator {
    /// Reads posts, and recovers the attempts of partitions taken over.
    storage: Storage,
    /// Leases, membership and notifications.
    shared: SharedDatabase,
    engine: EngineHandle,
    ownership: Arc<Ownership>,
    config: ClusterConfig,
    /// Partition → epoch of the leases held.
    held: BTreeMap<u16, i64>,
    /// Partitions being handed over, and when to stop waiting for their
    /// attempts in flight.
    draining: BTreeMap<u16, Instant>,
    /// Leases were acquired but the attempts of their previous owner not yet
    /// recovered.
    recovery_due: bool,
    /// The last round could not reach the database: retry soon.
    unreachable: bool,
    /// After the database was unreachable, every replica's leases look
    /// lapsed at once; each first revives its own, and nobody takes others'
    /// partitions before this instant.
    settle_until: Option<Instant>,
    wake: Arc<Notify>,
    metrics: Metrics,
    events: EventBus,
    /// This replica's events, to announce to the others' watchers.
    relay: Option<mpsc::UnboundedReceiver<RelayedEvent>>,
    /// No other replica is alive: nobody to announce events to.
    alone: Arc<std::sync::atomic::AtomicBool>,
}

/// Events of other replicas waiting to be read and handed to this one's
/// watchers; beyond this, they are dropped (watching is best effort).
const RELAYED_BACKLOG: usize = 4_096;

/// Most events announced in one statement.
const RELAY_BATCH: usize = 512;

impl Coordinator {
    // Each is a separate part of the wiring, as in `app.rs`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: Storage,
        shared: SharedDatabase,
        engine: EngineHandle,
        ownership: Arc<Ownership>,
        config: ClusterConfig,
        metrics: Metrics,
        events: EventBus,
        relay: mpsc::UnboundedReceiver<RelayedEvent>,
    ) -> Self {
        Self {
            storage,
            shared,
            engine,
            ownership,
            config,
            held: BTreeMap::new(),
            draining: BTreeMap::new(),
            recovery_due: false,
            unreachable: false,
            settle_until: None,
            wake: Arc::new(Notify::new()),
            metrics,
            events,
            relay: Some(relay),
            alone: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let listener_stop = stop.child_token();
        let (relayed, relayed_backlog) = mpsc::channel(RELAYED_BACKLOG);
        let listener = tokio::spawn(listen(
            Listening {
                shared: self.shared.clone(),
                engine: self.engine.clone(),
                wake: Arc::clone(&self.wake),
                replica_id: self.config.replica_id.clone(),
                relayed,
            },
            listener_stop.clone(),
        ));
        let delivering = tokio::spawn(deliver_relayed(
            self.storage.clone(),
            self.events.clone(),
            relayed_backlog,
        ));
        let announcing = self.relay.take().map(|relay| {
            tokio::spawn(announce_events(
                self.shared.clone(),
                self.config.replica_id.clone(),
                relay,
                Arc::clone(&self.alone),
                listener_stop.clone(),
            ))
        });
        tracing::info!(replica_id = %self.config.replica_id, lease_ms = self.config.lease_duration.as_millis() as u64, "joining the cluster");
        self.rebalance().await;
        self.metrics
            .set_partitions_owned(self.held.len() - self.draining.len());
        if let Err(error) = self.shared.notify_cluster("joined").await {
            tracing::warn!(%error, "could not announce this replica");
        }
        loop {
            let pause = if self.unreachable {
                // Renew before the leases lapse, as soon as the database is back.
                Duration::from_millis(250)
            } else if self.draining.is_empty() {
                self.config.renew_period()
            } else {
                // Hand drained partitions over promptly.
                Duration::from_millis(100)
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => {}
            }
            self.rebalance().await;
            self.metrics
                .set_partitions_owned(self.held.len() - self.draining.len());
        }
        listener_stop.cancel();
        let _ = listener.await;
        let _ = delivering.await;
        if let Some(announcing) = announcing {
            let _ = announcing.await;
        }
        self.leave().await;
    }

    /// One round: heartbeat, renew, finish hand-overs, then give or take
    /// partitions towards a fair share.
    async fn rebalance(&mut self) {
        let replica = self.config.replica_id.clone();
        let lease = self.config.lease_duration;
        let sent_at = Instant::now();
        // The heartbeat goes first, so it lapses before the leases do: by the
        // time a dead replica's leases are free, it no longer counts as live
        // and its partitions are shared among the others at once.
        if let Err(error) = self.shared.heartbeat(&replica, lease).await {
            if !self.unreachable {
                tracing::warn!(%error, "heartbeat failed; leases are trusted until their margin");
            }
            self.unreachable = true;
            return;
        }
        let renewed = match self.shared.renew_leases(&replica, lease).await {
            Ok(renewed) => renewed,
            Err(error) => {
                if !self.unreachable {
                    tracing::warn!(%error, "renewing leases failed; they are trusted until their margin");
                }
                self.unreachable = true;
                return;
            }
        };
        if self.unreachable {
            tracing::info!(
                leases = renewed.len(),
                "the database is reachable again; leases renewed"
            );
            self.unreachable = false;
            self.settle_until = Some(Instant::now() + self.config.renew_period());
        }
        let trusted_until = sent_at + lease.saturating_sub(self.config.safety_margin());
        let still_held: BTreeMap<u16, i64> = renewed
            .iter()
            .map(|lease| (lease.partition, lease.epoch))
            .collect();
        let lost: Vec<u16> = self
            .held
            .keys()
            .filter(|partition| !still_held.contains_key(partition))
            .copied()
            .collect();
        if !lost.is_empty() {
            tracing::warn!(partitions = ?lost, "leases lapsed; their posts are another replica's now");
            for partition in &lost {
                self.ownership.revoke(*partition);
                self.draining.remove(partition);
            }
            self.engine.partitions_released(lost);
        }
        for (partition, epoch) in &still_held {
            self.ownership.grant(*partition, *epoch, trusted_until);
        }
        self.held = still_held;

        self.recover().await;
        self.finish_hand_overs().await;

        let view = match self.shared.cluster_view().await {
            Ok(view) => view,
            Err(error) => {
                tracing::warn!(%error, "could not read the cluster");
                return;
            }
        };
        self.alone.store(
            view.live_members.iter().all(|member| *member == replica),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mine = self.held.len() - self.draining.len();
        match fair_share_change(&view, &replica, mine) {
            ShareChange::Give(count) => self.start_hand_over(count),
            ShareChange::Take(count) => self.take(count).await,
            ShareChange::Keep => {}
        }
    }

    /// Stops claiming in `count` partitions; they are released once their
    /// attempts in flight are done.
    fn start_hand_over(&mut self, count: usize) {
        let deadline = Instant::now() + self.config.lease_duration / 2;
        let chosen: Vec<u16> = self
            .held
            .keys()
            .rev()
            .filter(|partition| !self.draining.contains_key(partition))
            .take(count)
            .copied()
            .collect();
        for partition in &chosen {
            self.ownership.drain(*partition);
            self.draining.insert(*partition, deadline);
        }
        tracing::info!(partitions = ?chosen, "handing partitions over to balance the cluster");
        self.engine.partitions_released(chosen);
    }

    async fn finish_hand_overs(&mut self) {
        let now = Instant::now();
        let ready: Vec<u16> = self
            .draining
            .iter()
            .filter(|(partition, deadline)| {
                self.ownership.in_flight(**partition) == 0 || now >= **deadline
            })
            .map(|(partition, _)| *partition)
            .collect();
        if ready.is_empty() {
            return;
        }
        match self
            .shared
            .release_leases(&self.config.replica_id, &ready)
            .await
        {
            Ok(()) => {
                for partition in &ready {
                    self.ownership.revoke(*partition);
                    self.draining.remove(partition);
                    self.held.remove(partition);
                }
                tracing::info!(partitions = ?ready, "partitions handed over");
                if let Err(error) = self.shared.notify_cluster("released").await {
                    tracing::warn!(%error, "could not announce released partitions");
                }
            }
            Err(error) => tracing::warn!(%error, "could not release partitions; retrying"),
        }
    }

    async fn take(&mut self, count: usize) {
        if self
            .settle_until
            .is_some_and(|settle_until| Instant::now() < settle_until)
        {
            return;
        }
        let sent_at = Instant::now();
        let acquired = match self
            .shared
            .acquire_leases(&self.config.replica_id, count, self.config.lease_duration)
            .await
        {
            Ok(acquired) => acquired,
            Err(error) => {
                tracing::warn!(%error, "could not acquire partitions");
                return;
            }
        };
        if acquired.is_empty() {
            return;
        }
        let trusted_until = sent_at
            + self
                .config
                .lease_duration
                .saturating_sub(self.config.safety_margin());
        // Before the partitions' timers load: the previous owner's attempts
        // become pending again and load with them.
        self.recovery_due = true;
        self.recover().await;
        let partitions: Vec<u16> = acquired.iter().map(|lease| lease.partition).collect();
        for lease in &acquired {
            self.ownership
                .grant(lease.partition, lease.epoch, trusted_until);
            self.held.insert(lease.partition, lease.epoch);
        }
        tracing::info!(partitions = ?partitions, "took partitions over");
        self.engine.partitions_acquired(partitions);
    }

    /// Posts left `PUBLISHING` under an earlier epoch of a partition this
    /// replica now holds go back to pending, with the same idempotency key.
    async fn recover(&mut self) {
        if !self.recovery_due {
            return;
        }
        match self.storage.recover_interrupted(chrono::Utc::now()).await {
            Ok(recovered) => {
                self.recovery_due = false;
                for post in &recovered {
                    tracing::warn!(post.id = %post.id, "attempt of a previous owner interrupted; publishing again with the same idempotency key");
                    self.engine.arm(post.id, post.next_attempt_at);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not recover interrupted attempts; retrying")
            }
        }
    }

    async fn leave(&mut self) {
        for partition in self.held.keys() {
            self.ownership.drain(*partition);
        }
        match self.shared.leave_cluster(&self.config.replica_id).await {
            Ok(()) => {
                for partition in self.held.keys() {
                    self.ownership.revoke(*partition);
                }
                tracing::info!(
                    partitions = self.held.len(),
                    "left the cluster; partitions released"
                );
                if let Err(error) = self.shared.notify_cluster("left").await {
                    tracing::warn!(%error, "could not announce leaving");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not release leases; they lapse on their own");
            }
        }
        self.held.clear();
        self.metrics.set_partitions_owned(0);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ShareChange {
    Give(usize),
    Take(usize),
    Keep,
}

/// Towards an even share: every replica holds ⌊P/n⌋ or ⌈P/n⌉ partitions.
/// Above the ceiling gives the surplus away; above the floor gives one away
/// while some live replica is below the floor; below the ceiling takes from
/// the partitions nobody holds.
fn fair_share_change(view: &MemberCount, me: &str, mine: usize) -> ShareChange {
    let partitions = usize::from(PARTITION_COUNT);
    let live = view
        .live_members
        .iter()
        .filter(|member| member.as_str() != me)
        .count()
        + 1;
    let floor = partitions / live;
    let ceiling = partitions.div_ceil(live);
    if mine > ceiling {
        return ShareChange::Give(mine - ceiling);
    }
    let someone_starved = view.live_members.iter().any(|member| {
        member != me && view.leases_by_owner.get(member).copied().unwrap_or(0) < floor
    });
    if mine > floor && someone_starved && view.orphans == 0 {
        return ShareChange::Give(1);
    }
    if mine < ceiling && view.orphans > 0 {
        return ShareChange::Take((ceiling - mine).min(view.orphans));
    }
    ShareChange::Keep
}

/// What the listener hands notifications to.
struct Listening {
    shared: SharedDatabase,
    engine: EngineHandle,
    wake: Arc<Notify>,
    replica_id: String,
    relayed: mpsc::Sender<(EventKind, PostId, DateTime<Utc>)>,
}

/// Listens for changes written by any replica, and reconnects when the
/// connection drops; after every reconnect the engine reads its partitions
/// again, for whatever was announced while nobody listened.
async fn listen(listening: Listening, stop: CancellationToken) {
    let Listening {
        shared,
        engine,
        wake,
        replica_id,
        relayed,
    } = listening;
    const KEEPALIVE: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(200);
    let mut connected_before = false;
    loop {
        let connection = tokio::select! {
            _ = stop.cancelled() => return,
            connection = shared.listen() => connection,
        };
        match connection {
            Ok(mut listener) => {
                backoff = Duration::from_millis(200);
                if connected_before {
                    tracing::info!("listening for changes again; reloading timers");
                    engine.reload();
                    wake.notify_one();
                }
                connected_before = true;
                loop {
                    let notice = tokio::select! {
                        _ = stop.cancelled() => return,
                        notice = listener.next(KEEPALIVE) => notice,
                    };
                    match notice {
                        Ok(Notice::Pending(entry)) => engine.arm(entry.id, entry.due),
                        Ok(Notice::Cluster) => wake.notify_one(),
                        Ok(Notice::Event {
                            origin,
                            kind,
                            at,
                            id,
                        }) => {
                            if origin != replica_id
                                && let Some(kind) = EventKind::parse(&kind)
                            {
                                // Full: this replica's watchers miss it.
                                let _ = relayed.try_send((kind, id, at));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "lost the notification connection; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_ms = backoff.as_millis() as u64, "could not listen for changes");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Announces this replica's events to the other replicas, a batch per
/// statement. Best effort: an event that cannot be announced is dropped.
async fn announce_events(
    shared: SharedDatabase,
    replica_id: String,
    mut relay: mpsc::UnboundedReceiver<RelayedEvent>,
    alone: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let first = tokio::select! {
            event = relay.recv() => match event {
                Some(event) => event,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let mut batch = vec![first];
        while batch.len() < RELAY_BATCH {
            match relay.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        if alone.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let payloads: Vec<String> = batch
            .iter()
            .map(|event| {
                format!(
                    "{replica_id} {} {} {}",
                    event.kind.as_str(),
                    event.at.timestamp_micros(),
                    event.post_id
                )
            })
            .collect();
        match shared.notify_events(&payloads).await {
            Ok(()) => failing = false,
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, events = payloads.len(), "could not announce events to other replicas' watchers");
                }
                failing = true;
            }
        }
    }
}

/// Reads the posts of other replicas' events and hands them to this
/// replica's watchers, if it has any.
async fn deliver_relayed(
    storage: Storage,
    events: EventBus,
    mut relayed: mpsc::Receiver<(EventKind, PostId, DateTime<Utc>)>,
) {
    while let Some((kind, id, at)) = relayed.recv().await {
        if !events.has_watchers() {
            continue;
        }
        match storage.get(id).await {
            Ok(Some(post)) => events.deliver_relayed(kind, post, at),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, post.id = %id, "could not read a relayed event's post")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn view(members: &[(&str, usize)], orphans: usize) -> MemberCount {
        MemberCount {
            live_members: members.iter().map(|(name, _)| name.to_string()).collect(),
            leases_by_owner: members
                .iter()
                .filter(|(_, count)| *count > 0)
                .map(|(name, count)| (name.to_string(), *count))
                .collect::<HashMap<_, _>>(),
            orphans,
        }
    }

    #[test]
    fn a_lone_replica_takes_everything() {
        assert_eq!(
            fair_share_change(&view(&[("a", 0)], 64), "a", 0),
            ShareChange::Take(64)
        );
        // Not yet visible as live (heartbeat not read back): counts itself.
        assert_eq!(
            fair_share_change(&view(&[], 64), "a", 0),
            ShareChange::Take(64)
        );
    }

    #[test]
    fn a_new_replica_makes_the_others_give_way() {
        let cluster = view(&[("a", 22), ("b", 21), ("c", 21), ("d", 0)], 0);
        assert_eq!(fair_share_change(&cluster, "a", 22), ShareChange::Give(6));
        assert_eq!(fair_share_change(&cluster, "b", 21), ShareChange::Give(5));
        assert_eq!(fair_share_change(&cluster, "d", 0), ShareChange::Keep);
        let released = view(&[("a", 16), ("b", 16), ("c", 16), ("d", 0)], 16);
        assert_eq!(fair_share_change(&released, "d", 0), ShareChange::Take(16));
    }

    #[test]
    fn the_partitions_of_a_dead_replica_are_shared_out() {
        // c died: its heartbeat lapsed, and so did its 21 leases.
        let cluster = view(&[("a", 22), ("b", 21)], 21);
        assert_eq!(fair_share_change(&cluster, "a", 22), ShareChange::Take(10));
        assert_eq!(fair_share_change(&cluster, "b", 21), ShareChange::Take(11));
    }

    #[test]
    fn a_balanced_cluster_stays_put() {
        let cluster = view(&[("a", 22), ("b", 21), ("c", 21)], 0);
        for (me, mine) in [("a", 22), ("b", 21), ("c", 21)] {
            assert_eq!(fair_share_change(&cluster, me, mine), ShareChange::Keep);
        }
        // Uneven but within bounds only moves when someone is starved.
        let skewed = view(&[("a", 22), ("b", 22), ("c", 20)], 0);
        assert_eq!(fair_share_change(&skewed, "a", 22), ShareChange::Give(1));
        assert_eq!(fair_share_change(&skewed, "c", 20), ShareChange::Keep);
    }
}
