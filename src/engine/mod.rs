//! The engine owns the timers. One task holds a [`DelayQueue`] with the next
//! attempt instant of every pending post due within the look-ahead horizon,
//! and wakes exactly at each instant: nothing polls for due work.
//!
//! A timer is only a wake-up. When one fires, the post is claimed in the
//! database with a compare-and-set (pending, and due by now) before the
//! publisher is called, so a stale timer can neither publish early nor
//! publish a post that was edited, cancelled or already claimed.
//!
//! Other tasks reach the engine through an [`EngineHandle`]; later posts
//! come in through an occasional read of the next stretch of the horizon.
//!
//! The engine holds timers only for the partitions it owns ([`Ownership`]):
//! all of them on SQLite, its leased share when replicas share PostgreSQL.
//! Claims and outcome writes are fenced by the lease in the database, and a
//! post is published only while its lease is still trusted locally.

mod fire;
pub mod gate;
pub mod limits;
pub mod ownership;

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::clock::Clock;
use crate::domain::PostId;
use crate::events::EventBus;
use crate::lifecycle::LifeCycle;
use crate::publisher::{Publisher, RetryPolicy};
use crate::storage::{DueEntry, Storage};
use crate::telemetry::Metrics;
use gate::PauseGate;
use limits::RateLimiter;
pub use ownership::Ownership;

/// `DelayQueue` panics beyond 2^36 ms (~795 days); the horizon stays well
/// inside that.
pub const MAX_HORIZON: Duration = Duration::from_secs(700 * 24 * 3600);

/// Posts that may be claimed ahead of publishing, at least.
const MIN_CLAIM_SLOTS: usize = 1_024;

/// Rows per read when loading timers.
const LOAD_PAGE: i64 = 5_000;

/// A read of at least this many timers is followed by handing freed memory
/// back to the operating system.
const RETURN_MEMORY_AFTER_LOADING: usize = 10_000;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Timers are held only for posts due within this much of now. From 1 s
    /// to [`MAX_HORIZON`], as `--lookahead-horizon` is bounded.
    pub horizon: Duration,
    /// A post found more than this late (e.g. after downtime) is
    /// dead-lettered as missed instead of published.
    pub missed_fire_window: Duration,
    /// At most this many publish attempts run at once; at least 1.
    pub max_concurrent_publishes: usize,
    /// Outcome writes running at once, at least 1; keep it below the
    /// connection pool's size so that API calls always find a connection.
    pub max_concurrent_outcome_writes: usize,
    /// Posts are claimed this long before their instant, so the database
    /// round trip is done when the instant comes; during it a post can no
    /// longer be edited or cancelled.
    pub claim_lead: Duration,
    pub retry: RetryPolicy,
    /// How long shutdown waits for attempts in flight.
    pub shutdown_grace: Duration,
    /// Most publishes per business per window, by platform.
    pub rate_limits: HashMap<String, limits::RateLimit>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(3600),
            missed_fire_window: Duration::from_secs(3600),
            max_concurrent_publishes: 64,
            claim_lead: Duration::from_millis(100),
            max_concurrent_outcome_writes: 4,
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(10),
            rate_limits: HashMap::new(),
        }
    }
}

#[derive(Debug)]
enum Command {
    /// Arm (or move) the timer of a post.
    Arm(DueEntry),
    /// Arm timers read from the database. A post that has a timer keeps the
    /// earlier of the two: the read may be older than the timer, and an
    /// early wake-up costs a re-read while a late one would fire late.
    Load(Vec<DueEntry>),
    /// A read of the database's timers is complete: this many were read.
    /// Sent through the queue, so that memory is handed back only once
    /// every page before it has been armed and freed.
    Loaded(usize),
    Disarm(PostId),
    /// Partitions newly owned: read their timers.
    Acquired(Vec<u16>),
    /// Partitions no longer owned: drop their timers.
    Released(Vec<u16>),
    /// Read every owned partition again (notifications may have been missed).
    Reload,
    /// Answered by the engine's loop: it is turning.
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// Cheap, cloneable way to tell the engine about changes.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::UnboundedSender<Command>,
    horizon: Duration,
    progress: Arc<Progress>,
}

/// What the health watchdog reads of the engine's work.
#[derive(Debug)]
struct Progress {
    base: std::time::Instant,
    /// Milliseconds after `base` of the last successful claim, plus one (0:
    /// none yet).
    last_claim_ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            base: std::time::Instant::now(),
            last_claim_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn claimed(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_claim_ms
            .store(ms + 1, std::sync::atomic::Ordering::Release);
    }

    fn last_claim(&self) -> Option<std::time::Instant> {
        match self
            .last_claim_ms
            .load(std::sync::atomic::Ordering::Acquire)
        {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }
}

impl EngineHandle {
    /// Posts due within this much of now have timers.
    pub fn horizon(&self) -> Duration {
        self.horizon
    }

    /// The post's next attempt is at `due`.
    pub fn arm(&self, id: PostId, due: DateTime<Utc>) {
        // A send fails only once the engine has stopped, at shutdown; the
        // post is in the database and is loaded again at the next start.
        let _ = self.commands.send(Command::Arm(DueEntry { id, due }));
    }

    pub fn disarm(&self, id: PostId) {
        let _ = self.commands.send(Command::Disarm(id));
    }

    pub fn partitions_acquired(&self, partitions: Vec<u16>) {
        let _ = self.commands.send(Command::Acquired(partitions));
    }

    pub fn partitions_released(&self, partitions: Vec<u16>) {
        let _ = self.commands.send(Command::Released(partitions));
    }

    pub fn reload(&self) {
        let _ = self.commands.send(Command::Reload);
    }

    /// Whether the engine's loop answers within `timeout`.
    pub async fn is_responsive(&self, timeout: Duration) -> bool {
        let (answer, answered) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Ping(answer)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, answered).await, Ok(Ok(())))
    }

    /// When the engine last claimed posts (`None`: never yet).
    pub fn last_claim(&self) -> Option<std::time::Instant> {
        self.progress.last_claim()
    }

    fn load(&self, entries: Vec<DueEntry>) {
        let _ = self.commands.send(Command::Load(entries));
    }

    fn loaded(&self, count: usize) {
        let _ = self.commands.send(Command::Loaded(count));
    }
}

/// What a publish attempt needs, shared by all attempts.
struct FireContext {
    storage: Storage,
    /// Writes each change of a post's status and announces it.
    lifecycle: LifeCycle,
    publisher: Arc<dyn Publisher>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    handle: EngineHandle,
    /// Bounds concurrent calls to the publisher.
    permits: Semaphore,
    /// Bounds posts claimed and not yet finished.
    claim_slots: Arc<Semaphore>,
    /// Bounds concurrent writes of outcomes.
    outcome_writes: Arc<Semaphore>,
    /// Outcomes waiting to be written, a batch per transaction.
    outcomes: mpsc::UnboundedSender<fire::OutcomeWrite>,
    gate: Arc<PauseGate>,
    limiter: RateLimiter,
    ownership: Arc<Ownership>,
    /// Lateness, attempt outcomes and timers held, for operators.
    metrics: Metrics,
    /// Cancelled when the engine stops: attempts not yet started stay
    /// pending in the database instead of starting during shutdown.
    stopping: CancellationToken,
}

/// The engine task. Build it with [`Engine::new`], hand out
/// [`Engine::handle`], then [`Engine::run`] it until cancelled.
pub struct Engine {
    context: Arc<FireContext>,
    commands: mpsc::UnboundedReceiver<Command>,
    queue: DelayQueue<PostId>,
    /// The live timer of each post; an entry is removed when its timer fires
    /// or is replaced, so a stale key is never used.
    timers: HashMap<PostId, (delay_queue::Key, DateTime<Utc>)>,
    /// Posts due before this instant have timers (or are being loaded).
    horizon_end: DateTime<Utc>,
    /// Fired timers, in firing order, for the claiming task.
    ready: mpsc::UnboundedSender<DueEntry>,
    ready_receiver: Option<mpsc::UnboundedReceiver<DueEntry>>,
    outcome_receiver: Option<mpsc::UnboundedReceiver<fire::OutcomeWrite>>,
    attempts: TaskTracker,
}

/// What the engine works with, shared with the rest of the service.
pub struct EngineParts {
    pub storage: Storage,
    pub publisher: Arc<dyn Publisher>,
    pub events: EventBus,
    pub clock: Arc<dyn Clock>,
    pub gate: Arc<PauseGate>,
    pub ownership: Arc<Ownership>,
    pub metrics: Metrics,
}

impl Engine {
    pub fn new(parts: EngineParts, config: EngineConfig) -> Self {
        let EngineParts {
            storage,
            publisher,
            events,
            clock,
            gate,
            ownership,
            metrics,
        } = parts;
        let (sender, commands) = mpsc::unbounded_channel();
        let handle = EngineHandle {
            commands: sender,
            horizon: config.horizon,
            progress: Arc::new(Progress::new()),
        };
        let horizon_end = clock.now();
        let (ready, ready_receiver) = mpsc::unbounded_channel();
        let (outcomes, outcome_receiver) = mpsc::unbounded_channel();
        let permits = Semaphore::new(config.max_concurrent_publishes);
        let outcome_writes = Arc::new(Semaphore::new(config.max_concurrent_outcome_writes));
        let claim_slots = Arc::new(Semaphore::new(
            config
                .max_concurrent_publishes
                .saturating_mul(16)
                .max(MIN_CLAIM_SLOTS),
        ));
        let limiter = RateLimiter::new(config.rate_limits.clone());
        Self {
            context: Arc::new(FireContext {
                lifecycle: LifeCycle::new(storage.clone(), events),
                storage,
                publisher,
                clock,
                config,
                handle,
                permits,
                claim_slots,
                outcome_writes,
                outcomes,
                gate,
                limiter,
                ownership,
                metrics,
                stopping: CancellationToken::new(),
            }),
            commands,
            queue: DelayQueue::new(),
            timers: HashMap::new(),
            horizon_end,
            ready,
            ready_receiver: Some(ready_receiver),
            outcome_receiver: Some(outcome_receiver),
            attempts: TaskTracker::new(),
        }
    }

    pub fn handle(&self) -> EngineHandle {
        self.context.handle.clone()
    }

    /// Runs until `shutdown` is cancelled, then waits (bounded) for attempts
    /// in flight. Attempts cut off by the bound stay `PUBLISHING` and are
    /// recovered at the next start with the same idempotency key.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let horizon = self.context.config.horizon;
        // Stopped once every attempt is done: attempts wait for their
        // outcome's write, so none is pending then.
        let recorder_stop = CancellationToken::new();
        let recorder = self.outcome_receiver.take().map(|outcomes| {
            tokio::spawn(fire::record_outcomes(
                Arc::clone(&self.context),
                outcomes,
                recorder_stop.clone(),
            ))
        });
        if let Some(ready) = self.ready_receiver.take() {
            self.attempts.spawn(fire::claim_due_posts(
                Arc::clone(&self.context),
                ready,
                self.attempts.clone(),
            ));
        }
        self.extend_horizon(None);
        // Read the next stretch well before the current one runs out.
        let period = horizon / 2;
        let mut refill = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        refill.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(expired) = poll_fn(|cx| self.queue.poll_expired(cx)), if !self.queue.is_empty() => {
                    self.on_timer(expired.into_inner());
                }
                Some(command) = self.commands.recv() => self.apply(command),
                _ = refill.tick() => self.extend_horizon(Some(self.horizon_end)),
            }
            self.context.metrics.set_timers_held(self.queue.len());
        }
        self.context.stopping.cancel();
        self.attempts.close();
        let grace = self.context.config.shutdown_grace;
        if tokio::time::timeout(grace, self.attempts.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                shutdown_grace_ms = grace.as_millis() as u64,
                in_flight = self.attempts.len(),
                "publish attempts still running at shutdown; they resume at the next start"
            );
        }
        recorder_stop.cancel();
        if let Some(recorder) = recorder {
            let _ = recorder.await;
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Arm(entry) => self.arm(entry, true),
            Command::Load(entries) => {
                for entry in entries {
                    self.arm(entry, false);
                }
            }
            Command::Loaded(count) => {
                if count >= RETURN_MEMORY_AFTER_LOADING {
                    return_freed_memory();
                }
            }
            Command::Disarm(id) => {
                if let Some((key, _)) = self.timers.remove(&id) {
                    self.queue.remove(&key);
                }
            }
            Command::Acquired(partitions) => {
                let owned: Vec<u16> = partitions
                    .into_iter()
                    .filter(|partition| self.context.ownership.keeps_timers(*partition))
                    .collect();
                if !owned.is_empty() {
                    self.load(None, self.horizon_end, Some(owned));
                }
            }
            Command::Released(partitions) => {
                let queue = &mut self.queue;
                let ownership = &self.context.ownership;
                self.timers.retain(|id, (key, _)| {
                    let partition = id.partition();
                    let keep =
                        !partitions.contains(&partition) || ownership.keeps_timers(partition);
                    if !keep {
                        queue.remove(key);
                    }
                    keep
                });
            }
            Command::Ping(answer) => {
                let _ = answer.send(());
            }
            Command::Reload => {
                let partitions = self.owned_partitions();
                self.load(None, self.horizon_end, partitions);
            }
        }
    }

    /// `None` when every partition is owned for ever (no filter needed).
    fn owned_partitions(&self) -> Option<Vec<u16>> {
        let ownership = &self.context.ownership;
        if ownership.is_exclusive() {
            return None;
        }
        let partitions = ownership.timer_partitions();
        // Holding them all, a filter would only slow the read down.
        (partitions.len() < usize::from(crate::domain::PARTITION_COUNT)).then_some(partitions)
    }

    fn load(
        &mut self,
        from: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        partitions: Option<Vec<u16>>,
    ) {
        if partitions.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        let context = Arc::clone(&self.context);
        self.attempts
            .spawn(async move { load_timers(&context, from, until, partitions.as_deref()).await });
    }

    fn arm(&mut self, entry: DueEntry, replace: bool) {
        if !self.context.ownership.keeps_timers(entry.id.partition()) {
            // Another replica's post (this one may have just lost it).
            if let Some((key, _)) = self.timers.remove(&entry.id) {
                self.queue.remove(&key);
            }
            return;
        }
        if entry.due >= self.horizon_end {
            // The read of that stretch of the horizon will bring it in.
            if replace && let Some((key, _)) = self.timers.remove(&entry.id) {
                self.queue.remove(&key);
            }
            return;
        }
        let deadline = self
            .context
            .clock
            .deadline_for(entry.due - self.claim_lead());
        match self.timers.get_mut(&entry.id) {
            Some((key, due)) => {
                if (replace && *due != entry.due) || entry.due < *due {
                    self.queue.reset_at(key, deadline);
                    *due = entry.due;
                }
            }
            None => {
                let key = self.queue.insert_at(entry.id, deadline);
                self.timers.insert(entry.id, (key, entry.due));
            }
        }
    }

    fn on_timer(&mut self, id: PostId) {
        let Some((_, due)) = self.timers.remove(&id) else {
            return;
        };
        if !self.context.ownership.keeps_timers(id.partition()) {
            return;
        }
        // The wall clock may have been stepped back since the timer was set.
        if self.context.clock.now() + self.claim_lead() < due {
            self.arm(DueEntry { id, due }, true);
            return;
        }
        // Only fails once the claiming task has stopped, at shutdown.
        let _ = self.ready.send(DueEntry { id, due });
    }

    /// Moves the horizon to now + horizon and reads the posts due in the new
    /// stretch (everything before it on the first call). The end moves
    /// before the read starts, so a post committed after the read began
    /// arrives through its own `Arm` instead.
    fn extend_horizon(&mut self, from: Option<DateTime<Utc>>) {
        let horizon = chrono::Duration::from_std(self.context.config.horizon)
            .unwrap_or(chrono::Duration::hours(1));
        let until = self.context.clock.now() + horizon;
        if until <= self.horizon_end {
            return;
        }
        self.horizon_end = until;
        let partitions = self.owned_partitions();
        self.load(from, until, partitions);
    }

    fn claim_lead(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.context.config.claim_lead).unwrap_or_default()
    }
}

async fn load_timers(
    context: &FireContext,
    from: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
    partitions: Option<&[u16]>,
) {
    let mut after = None;
    let mut loaded = 0usize;
    loop {
        let page = match context
            .storage
            .pending_due_in(from, until, after, LOAD_PAGE, partitions)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(%error, "loading timers failed; retrying in 1 s");
                tokio::select! {
                    _ = context.stopping.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let last = page.last().copied();
        let count = page.len();
        loaded += count;
        context.handle.load(page);
        match last {
            Some(entry) if count as i64 == LOAD_PAGE => after = Some(entry),
            _ => break,
        }
    }
    tracing::debug!(timers_loaded = loaded, horizon_end = %until, "timers loaded");
    context.handle.loaded(loaded);
}

/// Hands the memory freed by a large read of timers back to the operating
/// system. The pages of rows were decoded on whichever threads ran the
/// queries, and glibc keeps what those threads freed in their own arenas
/// until asked: after loading 100,000 timers from SQLite that was ~5 MiB,
/// beside ~12 MiB for the timers themselves.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only returns free memory of glibc's arenas to
        // the kernel; it has no preconditions.
        unsafe { libc::malloc_trim(0) };
    });
}
