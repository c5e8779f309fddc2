//! Every state change of a post, broadcast to whoever watches. Delivery is
//! best effort per watcher: a watcher too slow to keep up is told how many
//! events it missed rather than slowing the scheduler down.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc};

use crate::domain::{Post, PostId, PostStatus};
use crate::stats::QueueStatsTracker;

pub use crate::domain::EventKind;

/// What other replicas need to hear of an event: they read the post itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayedEvent {
    pub kind: EventKind,
    pub post_id: PostId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct PostEvent {
    pub kind: EventKind,
    /// The post as it is after the change.
    pub post: Post,
    pub at: DateTime<Utc>,
}

/// Every state change passes through here: it moves the queue counters and
/// reaches the watchers.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<PostEvent>>,
    stats: Arc<QueueStatsTracker>,
    /// Where this replica's events go for the watchers of other replicas
    /// (several replicas on PostgreSQL).
    relay: Option<mpsc::UnboundedSender<RelayedEvent>>,
}

impl EventBus {
    pub fn new(capacity: usize, stats: Arc<QueueStatsTracker>) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            stats,
            relay: None,
        }
    }

    /// Also hands every event to `relay`, for other replicas' watchers.
    pub fn relayed_to(mut self, relay: mpsc::UnboundedSender<RelayedEvent>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// An event of another replica, for this replica's watchers only: the
    /// counters are the other replica's business.
    pub fn deliver_relayed(&self, kind: EventKind, post: Post, at: DateTime<Utc>) {
        self.to_watchers(kind, post, at);
    }

    pub fn has_watchers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// `post` moved from `previous` (none for a new post) to its status.
    pub fn emit(
        &self,
        kind: EventKind,
        post: Post,
        previous: Option<PostStatus>,
        at: DateTime<Utc>,
    ) {
        self.count_and_relay(kind, &post, previous, at);
        self.to_watchers(kind, post, at);
    }

    /// As [`EventBus::emit`], for a post the caller keeps: it is copied only
    /// when a watcher is there to see it (a bulk request would otherwise copy
    /// thousands of posts for nobody).
    pub fn emit_copy(
        &self,
        kind: EventKind,
        post: &Post,
        previous: Option<PostStatus>,
        at: DateTime<Utc>,
    ) {
        self.count_and_relay(kind, post, previous, at);
        if self.has_watchers() {
            self.to_watchers(kind, post.clone(), at);
        }
    }

    fn to_watchers(&self, kind: EventKind, post: Post, at: DateTime<Utc>) {
        // No watcher is not an error: the event is simply not needed.
        let _ = self.sender.send(Arc::new(PostEvent { kind, post, at }));
    }

    fn count_and_relay(
        &self,
        kind: EventKind,
        post: &Post,
        previous: Option<PostStatus>,
        at: DateTime<Utc>,
    ) {
        self.stats
            .on_change(&post.business_id, previous, post.status);
        if kind == EventKind::Publishing && post.attempts == 1 {
            self.stats
                .on_fire(&post.business_id, at, at - post.scheduled_for);
        }
        if let Some(relay) = &self.relay {
            // Fails only once the relay stopped, at shutdown.
            let _ = relay.send(RelayedEvent {
                kind,
                post_id: post.id,
                at,
            });
        }
    }

    pub fn stats(&self) -> &QueueStatsTracker {
        &self.stats
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PostEvent>> {
        self.sender.subscribe()
    }
}
