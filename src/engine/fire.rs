//! From a fired timer to a recorded outcome: claim, admit, publish, record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::FireContext;
use super::ownership::InFlight;
use crate::domain::{AttemptOutcome, AttemptRecord, Post, PostId, PostStatus, Transition};
use crate::publisher::{PublishOutcome, PublishRequest};
use crate::storage::{Change, Claim, DueEntry, FinishedAttempt, PostPatch, StorageError};
use crate::telemetry::{self, AttemptLabel};

/// How long the write that records an outcome is retried while the
/// database is unreachable (a restart, a fail-over). Giving up leaves the
/// post `PUBLISHING`, to be published again by whoever recovers it: a
/// duplicate the idempotency key has to absorb, so it is worth waiting.
const RECORD_RETRY_WINDOW: Duration = Duration::from_secs(120);

/// Longest pause between two tries of an outcome write.
const RECORD_RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// How often a claimed post whose lease is not trusted right now (renewals
/// failing) looks again.
const LEASE_RECHECK: Duration = Duration::from_millis(100);

/// Most posts claimed in one statement.
const CLAIM_BATCH: usize = 256;

/// Most outcomes written in one transaction.
const OUTCOME_BATCH: usize = 256;

/// An outcome to record, and where its result goes.
pub(super) struct OutcomeWrite {
    attempt: FinishedAttempt,
    done: oneshot::Sender<Result<Option<Post>, StorageError>>,
}

/// The one task that writes outcomes: the outcomes that arrive while a
/// transaction commits are written together in the next, so a burst costs
/// a commit per batch rather than per post. At most
/// `max_concurrent_outcome_writes` transactions run at once, which leaves
/// the rest of the connection pool to API calls.
pub(super) async fn record_outcomes(
    context: Arc<FireContext>,
    mut outcomes: mpsc::UnboundedReceiver<OutcomeWrite>,
    stop: CancellationToken,
) {
    let writers = TaskTracker::new();
    loop {
        let first = tokio::select! {
            outcome = outcomes.recv() => match outcome {
                Some(outcome) => outcome,
                None => break,
            },
            _ = stop.cancelled() => break,
        };
        let Ok(permit) = Arc::clone(&context.outcome_writes).acquire_owned().await else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < OUTCOME_BATCH {
            match outcomes.try_recv() {
                Ok(outcome) => batch.push(outcome),
                Err(_) => break,
            }
        }
        let context = Arc::clone(&context);
        writers.spawn(async move {
            write_outcomes(&context, batch).await;
            drop(permit);
        });
    }
    writers.close();
    writers.wait().await;
}

async fn write_outcomes(context: &FireContext, batch: Vec<OutcomeWrite>) {
    let now = context.clock.now();
    let (attempts, senders): (Vec<FinishedAttempt>, Vec<_>) = batch
        .into_iter()
        .map(|write| (write.attempt, write.done))
        .unzip();
    match context.storage.finish_attempts(&attempts, now).await {
        Ok(results) => {
            for (done, result) in senders.into_iter().zip(results) {
                let _ = done.send(Ok(result));
            }
        }
        Err(error) => {
            // One bad row must not fail the others: each is tried on its own.
            tracing::warn!(%error, outcomes = attempts.len(), "writing a batch of outcomes failed; writing them one by one");
            for (done, attempt) in senders.into_iter().zip(&attempts) {
                let (expected, patch) = attempt.as_compare_and_set();
                let result = context
                    .storage
                    .compare_and_set(&expected, &patch, now)
                    .await;
                let _ = done.send(result);
            }
        }
    }
}

/// The one task that claims due posts, in the order their timers fire, a
/// batch per database round trip. Timers fire `claim_lead` before the
/// instant, so the claim's round trip is off the fire path: a claimed post
/// waits for its exact instant, then takes one of the
/// `max_concurrent_publishes` permits and is published. Claiming in one
/// place keeps rate limits in instant order and spares SQLite from writers
/// queueing for its lock. A claim slot bounds how many posts are claimed
/// and not yet finished.
pub(super) async fn claim_due_posts(
    context: Arc<FireContext>,
    mut ready: mpsc::UnboundedReceiver<DueEntry>,
    attempts: TaskTracker,
) {
    loop {
        let first = tokio::select! {
            entry = ready.recv() => match entry {
                Some(entry) => entry,
                None => return,
            },
            // Not started: the posts stay pending and load at the next start.
            _ = context.stopping.cancelled() => return,
        };
        let first_permit = tokio::select! {
            permit = Arc::clone(&context.claim_slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = context.stopping.cancelled() => return,
        };
        let mut batch = vec![(first, first_permit)];
        while batch.len() < CLAIM_BATCH {
            let Ok(permit) = Arc::clone(&context.claim_slots).try_acquire_owned() else {
                break;
            };
            match ready.try_recv() {
                Ok(entry) => batch.push((entry, permit)),
                Err(_) => break,
            }
        }
        claim_batch(&context, batch, &attempts).await;
    }
}

async fn claim_batch(
    context: &Arc<FireContext>,
    batch: Vec<(DueEntry, OwnedSemaphorePermit)>,
    attempts: &TaskTracker,
) {
    let now = context.clock.now();
    let lead = chrono::Duration::from_std(context.config.claim_lead).unwrap_or_default();
    let (batch, unclaimable): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|(entry, _)| context.ownership.may_claim(entry.id.partition()));
    for (entry, _) in unclaimable {
        // The lease is being handed over (its timers go with it) or cannot
        // be renewed right now: try again shortly if it is still ours.
        context
            .handle
            .arm(entry.id, entry.due.max(now + chrono::Duration::seconds(1)));
    }
    if batch.is_empty() {
        return;
    }
    let mut due: HashMap<PostId, _> = batch
        .into_iter()
        .map(|(entry, permit)| (entry.id, (entry, permit)))
        .collect();
    let ids: Vec<PostId> = due.keys().copied().collect();
    let mut claimed = match context.storage.claim_many(&ids, now + lead, now).await {
        Ok(claimed) => claimed,
        Err(error) => {
            tracing::error!(posts = ids.len(), %error, "claim failed; retrying in 1 s");
            for id in ids {
                context.handle.arm(id, now + chrono::Duration::seconds(1));
            }
            return;
        }
    };
    context.handle.progress.claimed();
    claimed.sort_by_key(|claim| (claim.post.next_attempt_at, claim.post.id));
    for claim in claimed {
        let Some((_, permit)) = due.remove(&claim.post.id) else {
            continue;
        };
        start_attempt(context, claim, permit, now, attempts).await;
    }
    // Not claimed: edited, cancelled, paused or gone meanwhile.
    for (entry, _) in due.into_values() {
        reconcile(context, entry).await;
    }
}

/// A claimed post: publish it unless it was paused meanwhile or its rate
/// limit defers it.
async fn start_attempt(
    context: &Arc<FireContext>,
    claim: Claim,
    claim_slot: OwnedSemaphorePermit,
    now: DateTime<Utc>,
    attempts: &TaskTracker,
) {
    let Claim {
        post: claimed,
        epoch,
    } = claim;
    let partition = claimed.id.partition();
    let tracked: InFlight = context.ownership.track(partition);
    // Admitted only while not paused; a pause waits for admitted attempts.
    let Some(in_flight) = context.gate.admit(&claimed.business_id, &claimed.platform) else {
        give_back(context, &claimed, claimed.next_attempt_at, now).await;
        return;
    };
    // Checked after the claim, which skips paused posts: a post held by a
    // pause is settled by the resume's policy, not dead-lettered here.
    let lateness = (now - claimed.next_attempt_at).to_std().unwrap_or_default();
    if lateness > context.config.missed_fire_window {
        dead_letter_missed(context, &claimed, now, lateness).await;
        return;
    }
    let publish_at = claimed.next_attempt_at.max(now);
    let allowed_at = context.limiter.reserve(
        claimed.id,
        &claimed.business_id,
        &claimed.platform,
        publish_at,
    );
    if allowed_at > publish_at {
        tracing::debug!(post.id = %claimed.id, allowed_at = %allowed_at, "rate limited; deferred");
        if give_back(context, &claimed, allowed_at, now).await {
            context.handle.arm(claimed.id, allowed_at);
        } else {
            context.limiter.release(
                claimed.id,
                &claimed.business_id,
                &claimed.platform,
                allowed_at,
            );
        }
        return;
    }
    let context = Arc::clone(context);
    attempts.spawn(async move {
        wait_for_instant(&context, claimed.next_attempt_at).await;
        let publish_permit = loop {
            // The semaphore is never closed.
            let Ok(publish_permit) = context.permits.acquire().await else {
                return;
            };
            // The last moment to notice a lost lease before the publisher
            // hears of the post.
            if context.ownership.holds(partition, epoch) {
                break publish_permit;
            }
            drop(publish_permit);
            if context.ownership.epoch(partition) != Some(epoch) {
                tracing::warn!(post.id = %claimed.id, partition, epoch, "lease lost before publishing; the partition's new owner publishes the post");
                return;
            }
            // Not renewed in time, not known lost either (the database may
            // be restarting): publish late rather than risk publishing
            // alongside a new owner.
            tokio::select! {
                _ = context.stopping.cancelled() => return,
                _ = tokio::time::sleep(LEASE_RECHECK) => {}
            }
        };
        let started = context.clock.now();
        context.lifecycle.announce_attempt_start(&claimed, started);
        let lateness = (started - claimed.next_attempt_at)
            .to_std()
            .unwrap_or_default();
        context.metrics.record_lateness(lateness, &claimed.platform);
        let span = telemetry::publish_span(&claimed, lateness);
        publish(&context, claimed, epoch, started, lateness, publish_permit)
            .instrument(span)
            .await;
        drop(in_flight);
        drop(tracked);
        drop(claim_slot);
    });
}

/// Sleeps until the wall clock reaches `instant`. The timer only estimates
/// when that is, so the clock is read again after each sleep: a clock
/// stepped back makes this wait longer, never publish early.
async fn wait_for_instant(context: &FireContext, instant: DateTime<Utc>) {
    loop {
        let remaining = instant - context.clock.now();
        let Ok(remaining) = remaining.to_std() else {
            return;
        };
        if remaining.is_zero() {
            return;
        }
        tokio::time::sleep(remaining).await;
    }
}

/// One call to the publisher and the recording of its outcome.
async fn publish(
    context: &FireContext,
    claimed: Post,
    epoch: i64,
    now: DateTime<Utc>,
    lateness: Duration,
    publish_permit: tokio::sync::SemaphorePermit<'_>,
) {
    let request = PublishRequest {
        post_id: claimed.idempotency_key(),
        business_id: claimed.business_id.clone(),
        content_id: claimed.content_id.clone(),
        platform: claimed.platform.clone(),
        payload: claimed.payload.clone(),
        scheduled_for: claimed.scheduled_for,
        attempt: claimed.attempts,
        trace_parent: telemetry::current_trace_parent(),
    };
    let started = std::time::Instant::now();
    let outcome = context.publisher.publish(&request).await;
    // The permit bounds calls to the publisher; the next post need not wait
    // for this outcome's database write.
    drop(publish_permit);
    let finished_at = context.clock.now();
    let latency = started.elapsed();
    tracing::info!(
        post.id = %claimed.id,
        post.platform = %claimed.platform,
        attempt = claimed.attempts,
        lateness_ms = lateness.as_secs_f64() * 1e3,
        latency_ms = latency.as_secs_f64() * 1e3,
        outcome = ?outcome,
        "publish attempt finished"
    );
    let attempt = Attempt {
        started_at: now,
        finished_at,
        latency,
    };
    record_outcome(context, &claimed, epoch, outcome, attempt).await;
}

/// When an attempt ran and how long the publisher took.
struct Attempt {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    latency: Duration,
}

/// Returns a claimed post to pending, due at `due`, as if the claim had not
/// happened (the attempt is not counted). `false` if the post changed.
async fn give_back(
    context: &FireContext,
    claimed: &Post,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    let patch = PostPatch {
        next_attempt_at: Some(crate::domain::truncate_to_micros(due)),
        ..PostPatch::default()
    };
    let change = Change::of(Transition::GiveBack, claimed);
    match context.lifecycle.apply(&change, &patch, now).await {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(error) => {
            tracing::error!(post.id = %claimed.id, %error, "could not give a claim back; the post is recovered at the next start");
            false
        }
    }
}

/// The claim matched nothing: the post was edited, cancelled, claimed or
/// paused meanwhile. If it is still pending and not paused, make sure its
/// real instant is armed; a resume re-arms paused posts.
async fn reconcile(context: &FireContext, entry: DueEntry) {
    match context.storage.get(entry.id).await {
        Ok(Some(post))
            if post.status.is_pending()
                && !context.gate.is_paused(&post.business_id, &post.platform) =>
        {
            context.handle.arm(post.id, post.next_attempt_at);
        }
        Ok(_) => {}
        Err(error) => {
            tracing::error!(post.id = %entry.id, %error, "could not re-read a post whose claim failed");
        }
    }
}

/// A claimed post found later than the missed-fire window (e.g. after
/// downtime) is kept for review instead of published late. The claim is
/// not counted as an attempt.
async fn dead_letter_missed(
    context: &FireContext,
    claimed: &Post,
    now: DateTime<Utc>,
    lateness: Duration,
) {
    let reason = format!(
        "missed: due at {} but the service could only fire it {}s late (missed-fire window {}s)",
        claimed.next_attempt_at.to_rfc3339(),
        lateness.as_secs(),
        context.config.missed_fire_window.as_secs()
    );
    let patch = PostPatch {
        last_error: Some(Some(reason)),
        ..PostPatch::default()
    };
    let change = Change::of(Transition::Miss, claimed);
    match context.lifecycle.apply(&change, &patch, now).await {
        Ok(Some(post)) => {
            context
                .metrics
                .record_attempt(AttemptLabel::Missed, &post.platform);
            tracing::warn!(post.id = %post.id, lateness_ms = lateness.as_millis() as u64, "post missed its instant; dead-lettered");
        }
        Ok(None) => {}
        Err(error) => {
            tracing::error!(post.id = %claimed.id, %error, "could not dead-letter a missed post; it is recovered at the next start")
        }
    }
}

async fn record_outcome(
    context: &FireContext,
    claimed: &Post,
    epoch: i64,
    outcome: PublishOutcome,
    attempt: Attempt,
) {
    let now = attempt.finished_at;
    let retry = &context.config.retry;
    let (http_status, error) = match &outcome {
        PublishOutcome::Published { http_status, .. } => (Some(*http_status), None),
        PublishOutcome::Retryable {
            error, http_status, ..
        }
        | PublishOutcome::Permanent { error, http_status } => (*http_status, Some(error.clone())),
    };
    // Fields the outcome does not change keep the claimed post's values,
    // which the claimed version guarantees are still the stored ones.
    let mut finished = FinishedAttempt {
        id: claimed.id,
        claimed_version: claimed.version,
        attempts: claimed.attempts,
        transition: Transition::Publish,
        next_attempt_at: claimed.next_attempt_at,
        published_at: claimed.published_at,
        external_id: claimed.external_id.clone(),
        last_error: None,
        attempt_history: Vec::new(),
    };
    let attempt_outcome = match outcome {
        PublishOutcome::Published { external_id, .. } => {
            finished.published_at = Some(now);
            finished.external_id = external_id;
            AttemptOutcome::Published
        }
        PublishOutcome::Retryable {
            error, retry_after, ..
        } if retry.has_attempts_left(claimed.attempts) => {
            let delay = retry.backoff(claimed.attempts, retry_after);
            let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
            finished.transition = Transition::Retry;
            finished.next_attempt_at = crate::domain::truncate_to_micros(next);
            finished.last_error = Some(error);
            AttemptOutcome::Retry
        }
        PublishOutcome::Retryable { error, .. } => {
            finished.transition = Transition::GiveUp;
            finished.last_error = Some(format!(
                "gave up after {} attempts: {error}",
                claimed.attempts
            ));
            AttemptOutcome::GaveUp
        }
        PublishOutcome::Permanent { error, .. } => {
            finished.transition = Transition::GiveUp;
            finished.last_error = Some(format!("rejected by the publisher: {error}"));
            AttemptOutcome::Rejected
        }
    };
    context
        .metrics
        .record_attempt(attempt_outcome.into(), &claimed.platform);
    let mut history = claimed.attempt_history.clone();
    history.push(AttemptRecord {
        attempt: claimed.attempts,
        started_at: crate::domain::truncate_to_micros(attempt.started_at),
        latency_ms: u64::try_from(attempt.latency.as_millis()).unwrap_or(u64::MAX),
        http_status,
        outcome: attempt_outcome,
        error,
    });
    finished.attempt_history = history;
    let transition = finished.transition;
    let (change, patch) = finished.as_compare_and_set();
    let (done, written) = oneshot::channel();
    let queued = context.outcomes.send(OutcomeWrite {
        attempt: finished,
        done,
    });
    let mut result = match queued {
        Ok(()) => written.await.unwrap_or_else(|_| {
            Err(StorageError::Unavailable(
                "the outcome writer stopped".into(),
            ))
        }),
        Err(_) => Err(StorageError::Unavailable(
            "the outcome writer stopped".into(),
        )),
    };
    let mut pause = Duration::from_millis(100);
    let give_up_at = std::time::Instant::now() + RECORD_RETRY_WINDOW;
    loop {
        match result {
            Ok(Some(post)) => {
                if post.status.is_pending() {
                    context.handle.arm(post.id, post.next_attempt_at);
                }
                context.lifecycle.announce(
                    transition,
                    post,
                    PostStatus::Publishing,
                    claimed.attempts,
                    now,
                );
                return;
            }
            Ok(None) => {
                tracing::warn!(post.id = %claimed.id, "post changed, or its lease was lost, while it was being published; outcome not recorded");
                return;
            }
            Err(error @ StorageError::Unavailable(_))
                if std::time::Instant::now() < give_up_at
                    && context.ownership.epoch(claimed.id.partition()) == Some(epoch) =>
            {
                tracing::warn!(post.id = %claimed.id, %error, "recording the outcome failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RECORD_RETRY_MAX_PAUSE);
                // Retries go alone: the batch writer is for the common case.
                let Ok(_permit) = context.outcome_writes.acquire().await else {
                    return;
                };
                result = context.storage.compare_and_set(&change, &patch, now).await;
            }
            Err(error) => {
                tracing::error!(post.id = %claimed.id, %error, "could not record the outcome; the post is recovered at the next start");
                return;
            }
        }
    }
}
