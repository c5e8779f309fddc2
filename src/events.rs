//! Every state change of a post, broadcast to whoever watches. Delivery is
//! best effort per watcher: a watcher too slow to keep up is told how many
//! events it missed rather than slowing the scheduler down.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::domain::Post;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Scheduled,
    Updated,
    Cancelled,
    Publishing,
    Published,
    RetryScheduled,
    DeadLettered,
}

#[derive(Debug, Clone)]
pub struct PostEvent {
    pub kind: EventKind,
    /// The post as it is after the change.
    pub post: Post,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<PostEvent>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    pub fn emit(&self, kind: EventKind, post: Post, at: DateTime<Utc>) {
        // No watcher is not an error: the event is simply not needed.
        let _ = self.sender.send(Arc::new(PostEvent { kind, post, at }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PostEvent>> {
        self.sender.subscribe()
    }
}
