//! Every state change of a post, broadcast to whoever watches. Delivery is
//! best effort per watcher: a watcher too slow to keep up is told how many
//! events it missed rather than slowing the scheduler down.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::domain::{Post, PostStatus};
use crate::stats::QueueStatsTracker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Scheduled,
    Updated,
    Cancelled,
    Publishing,
    Published,
    RetryScheduled,
    DeadLettered,
    Discarded,
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
}

impl EventBus {
    pub fn new(capacity: usize, stats: Arc<QueueStatsTracker>) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender, stats }
    }

    /// `post` moved from `previous` (none for a new post) to its status.
    pub fn emit(
        &self,
        kind: EventKind,
        post: Post,
        previous: Option<PostStatus>,
        at: DateTime<Utc>,
    ) {
        self.stats
            .on_change(&post.business_id, previous, post.status);
        if kind == EventKind::Publishing && post.attempts == 1 {
            self.stats
                .on_fire(&post.business_id, at, at - post.scheduled_for);
        }
        // No watcher is not an error: the event is simply not needed.
        let _ = self.sender.send(Arc::new(PostEvent { kind, post, at }));
    }

    pub fn stats(&self) -> &QueueStatsTracker {
        &self.stats
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PostEvent>> {
        self.sender.subscribe()
    }
}
