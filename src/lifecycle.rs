//! The one writer of a post's status. The service and the engine name the
//! [`Transition`] they make; [`LifeCycle::apply`] writes it as a
//! compare-and-set and announces what applied on the event bus, which moves
//! the queue counters from the status the counters last saw and reaches
//! the watchers. Transitions written in batches on the fire path (claims,
//! outcomes, recovery) are written by storage from the same [`Transition`]
//! and announced here.

use chrono::{DateTime, Utc};

use crate::domain::{EventKind, Post, PostStatus, Transition};
use crate::events::EventBus;
use crate::storage::{Change, PostPatch, Storage, StorageError};

/// Storage and the event bus, joined where a post changes status.
#[derive(Clone)]
pub struct LifeCycle {
    storage: Storage,
    events: EventBus,
}

impl LifeCycle {
    pub fn new(storage: Storage, events: EventBus) -> Self {
        Self { storage, events }
    }

    /// Applies `change` with `patch` (the fields it sets besides status and
    /// attempts) and announces it. `None` when the post no longer matched:
    /// it changed meanwhile, and nothing was written or announced.
    pub async fn apply(
        &self,
        change: &Change,
        patch: &PostPatch,
        now: DateTime<Utc>,
    ) -> Result<Option<Post>, StorageError> {
        let applied = self.storage.compare_and_set(change, patch, now).await?;
        if let Some(post) = &applied {
            self.announce_copy(change.transition, post, change.from, change.attempts, now);
        }
        Ok(applied)
    }

    /// Announces a transition that was written (an outcome of a batch):
    /// `post` as it is afterwards, `from` and `attempts` as it was. The post
    /// moves to the watchers, uncopied.
    pub fn announce(
        &self,
        transition: Transition,
        post: Post,
        from: PostStatus,
        attempts: u32,
        at: DateTime<Utc>,
    ) {
        if let Some((kind, counted)) = announcement(transition, from, attempts) {
            self.events.emit(kind, post, counted, at);
        }
    }

    /// As [`LifeCycle::announce`], for a post the caller keeps: it is
    /// copied only for watchers.
    fn announce_copy(
        &self,
        transition: Transition,
        post: &Post,
        from: PostStatus,
        attempts: u32,
        at: DateTime<Utc>,
    ) {
        if let Some((kind, counted)) = announcement(transition, from, attempts) {
            self.events.emit_copy(kind, post, counted, at);
        }
    }

    /// Announces a new post.
    pub fn announce_created(&self, post: &Post, at: DateTime<Utc>) {
        self.announce_copy(Transition::Create, post, post.status, 0, at);
    }

    /// Announces a claimed post whose attempt starts now: the claim itself
    /// is not announced when it is written, so that a claim given back
    /// moves nothing.
    pub fn announce_attempt_start(&self, claimed: &Post, at: DateTime<Utc>) {
        let before_claim = PostStatus::pending_after(claimed.attempts.saturating_sub(1));
        self.events
            .emit_copy(EventKind::Publishing, claimed, Some(before_claim), at);
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }
}

/// The event announcing `transition`, and the status the counters move the
/// post from; `None` for a transition nobody outside sees.
fn announcement(
    transition: Transition,
    from: PostStatus,
    attempts: u32,
) -> Option<(EventKind, Option<PostStatus>)> {
    let kind = transition.event()?;
    Some((kind, counted_from(transition, from, attempts)))
}

/// The status the queue counters hold the post in before `transition`: its
/// stored status, except for a claim not yet announced (handed back or
/// missed before its attempt started), which they still count as pending.
fn counted_from(transition: Transition, from: PostStatus, attempts: u32) -> Option<PostStatus> {
    match transition {
        Transition::Create => None,
        Transition::GiveBack | Transition::Miss => {
            Some(PostStatus::pending_after(attempts.saturating_sub(1)))
        }
        _ => Some(from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unannounced_claim_is_still_counted_as_pending() {
        assert_eq!(
            counted_from(Transition::Miss, PostStatus::Publishing, 1),
            Some(PostStatus::Scheduled)
        );
        assert_eq!(
            counted_from(Transition::GiveBack, PostStatus::Publishing, 3),
            Some(PostStatus::RetryScheduled)
        );
        assert_eq!(
            counted_from(Transition::Publish, PostStatus::Publishing, 1),
            Some(PostStatus::Publishing)
        );
        assert_eq!(
            counted_from(Transition::Cancel, PostStatus::DeadLettered, 2),
            Some(PostStatus::DeadLettered)
        );
        assert_eq!(
            counted_from(Transition::Create, PostStatus::Scheduled, 0),
            None
        );
    }
}
