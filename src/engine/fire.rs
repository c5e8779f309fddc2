//! One publish attempt: claim, call the publisher, record the outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::FireContext;
use crate::domain::{Post, PostStatus};
use crate::events::EventKind;
use crate::publisher::{PublishOutcome, PublishRequest};
use crate::storage::{DueEntry, Expectation, PostPatch, StorageError};

/// Writes that record an outcome are retried this often before giving up;
/// a post left `PUBLISHING` is recovered at the next start.
const RECORD_ATTEMPTS: u32 = 5;

pub(super) async fn attempt(context: &FireContext, entry: DueEntry) {
    // Bounded concurrency: a burst waits here instead of opening a
    // connection per post. The semaphore is never closed.
    let _permit = tokio::select! {
        permit = context.permits.acquire() => match permit {
            Ok(permit) => permit,
            Err(_) => return,
        },
        // Not started yet: the post stays pending and is loaded at the next start.
        _ = context.stopping.cancelled() => return,
    };
    let now = context.clock.now();
    let lateness = (now - entry.due).to_std().unwrap_or_default();
    if lateness > context.config.missed_fire_window {
        dead_letter_missed(context, entry, now, lateness).await;
        return;
    }

    let claimed = match context.storage.claim(entry.id, now).await {
        Ok(Some(post)) => post,
        Ok(None) => return reconcile(context, entry).await,
        Err(error) => {
            tracing::error!(post.id = %entry.id, %error, "claim failed; retrying in 1 s");
            context
                .handle
                .arm(entry.id, now + chrono::Duration::seconds(1));
            return;
        }
    };
    context
        .events
        .emit(EventKind::Publishing, claimed.clone(), now);

    let request = PublishRequest {
        post_id: claimed.idempotency_key(),
        business_id: claimed.business_id.clone(),
        content_id: claimed.content_id.clone(),
        platform: claimed.platform.clone(),
        payload: claimed.payload.clone(),
        scheduled_for: claimed.scheduled_for,
        attempt: claimed.attempts,
    };
    let started = std::time::Instant::now();
    let outcome = context.publisher.publish(&request).await;
    let finished_at = context.clock.now();
    tracing::info!(
        post.id = %claimed.id,
        post.platform = %claimed.platform,
        attempt = claimed.attempts,
        lateness_ms = lateness.as_secs_f64() * 1e3,
        latency_ms = started.elapsed().as_secs_f64() * 1e3,
        outcome = ?outcome,
        "publish attempt finished"
    );
    record_outcome(context, &claimed, outcome, finished_at).await;
}

/// The claim matched nothing: the post was edited, cancelled or claimed
/// meanwhile. If it is still pending, make sure its real instant is armed.
async fn reconcile(context: &FireContext, entry: DueEntry) {
    match context.storage.get(entry.id).await {
        Ok(Some(post)) if post.status.is_pending() => {
            context.handle.arm(post.id, post.next_attempt_at);
        }
        Ok(_) => {}
        Err(error) => {
            tracing::error!(post.id = %entry.id, %error, "could not re-read a post whose claim failed");
        }
    }
}

async fn dead_letter_missed(
    context: &FireContext,
    entry: DueEntry,
    now: DateTime<Utc>,
    lateness: Duration,
) {
    let reason = format!(
        "missed: due at {} but the service could only fire it {}s late (missed-fire window {}s)",
        entry.due.to_rfc3339(),
        lateness.as_secs(),
        context.config.missed_fire_window.as_secs()
    );
    let patch = PostPatch {
        status: Some(PostStatus::DeadLettered),
        last_error: Some(Some(reason)),
        ..PostPatch::default()
    };
    let expected = Expectation {
        id: entry.id,
        version: None,
        statuses: &PostStatus::PENDING,
        due_by: Some(now),
    };
    match context
        .storage
        .compare_and_set(&expected, &patch, now)
        .await
    {
        Ok(Some(post)) => {
            tracing::warn!(post.id = %post.id, lateness_ms = lateness.as_millis() as u64, "post missed its instant; dead-lettered");
            context.events.emit(EventKind::DeadLettered, post, now);
        }
        Ok(None) => reconcile(context, entry).await,
        Err(error) => {
            tracing::error!(post.id = %entry.id, %error, "could not dead-letter a missed post")
        }
    }
}

async fn record_outcome(
    context: &FireContext,
    claimed: &Post,
    outcome: PublishOutcome,
    now: DateTime<Utc>,
) {
    let retry = &context.config.retry;
    let (kind, patch) = match outcome {
        PublishOutcome::Published { external_id, .. } => (
            EventKind::Published,
            PostPatch {
                status: Some(PostStatus::Published),
                published_at: Some(Some(now)),
                external_id: Some(external_id),
                last_error: Some(None),
                ..PostPatch::default()
            },
        ),
        PublishOutcome::Retryable {
            error, retry_after, ..
        } if retry.has_attempts_left(claimed.attempts) => {
            let delay = retry.backoff(claimed.attempts, retry_after);
            let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
            (
                EventKind::RetryScheduled,
                PostPatch {
                    status: Some(PostStatus::RetryScheduled),
                    next_attempt_at: Some(crate::domain::truncate_to_micros(next)),
                    last_error: Some(Some(error)),
                    ..PostPatch::default()
                },
            )
        }
        PublishOutcome::Retryable { error, .. } => (
            EventKind::DeadLettered,
            PostPatch {
                status: Some(PostStatus::DeadLettered),
                last_error: Some(Some(format!(
                    "gave up after {} attempts: {error}",
                    claimed.attempts
                ))),
                ..PostPatch::default()
            },
        ),
        PublishOutcome::Permanent { error, .. } => (
            EventKind::DeadLettered,
            PostPatch {
                status: Some(PostStatus::DeadLettered),
                last_error: Some(Some(format!("rejected by the publisher: {error}"))),
                ..PostPatch::default()
            },
        ),
    };
    let expected = Expectation {
        id: claimed.id,
        version: Some(claimed.version),
        statuses: &[PostStatus::Publishing],
        due_by: None,
    };
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=RECORD_ATTEMPTS {
        match context
            .storage
            .compare_and_set(&expected, &patch, now)
            .await
        {
            Ok(Some(post)) => {
                if post.status == PostStatus::RetryScheduled {
                    context.handle.arm(post.id, post.next_attempt_at);
                }
                context.events.emit(kind, post, now);
                return;
            }
            Ok(None) => {
                tracing::warn!(post.id = %claimed.id, "post changed while it was being published; outcome not recorded");
                return;
            }
            Err(error @ StorageError::Unavailable(_)) if attempt < RECORD_ATTEMPTS => {
                tracing::warn!(post.id = %claimed.id, %error, "recording the outcome failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(error) => {
                tracing::error!(post.id = %claimed.id, %error, "could not record the outcome; the post is recovered at the next start");
                return;
            }
        }
    }
}
