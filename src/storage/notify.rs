//! Change notifications between replicas (PostgreSQL `LISTEN`/`NOTIFY`).
//! A trigger announces every post that becomes pending or moves, whichever
//! replica wrote it; replicas announce joins and released partitions.
//! Notifications are a shortcut, never the only path: whoever listens reads
//! the database again after a reconnect.

use std::time::Duration;

use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;

use super::shared::SharedDatabase;
use super::{DueEntry, StorageError, rows};
use crate::domain::PostId;

/// Written by the `posts` triggers: `"<id> <next attempt µs>"`.
const POSTS_CHANNEL: &str = "punctual_posts";
/// Cluster changes; the payload is informational.
const CLUSTER_CHANNEL: &str = "punctual_cluster";
/// Events for other replicas' watchers: `"<origin> <kind> <at µs> <id>"`.
const EVENTS_CHANNEL: &str = "punctual_events";

/// Something another replica (or this one) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A post is pending with this next attempt.
    Pending(DueEntry),
    /// A replica joined, left or released partitions.
    Cluster,
    /// Something happened to a post on replica `origin`.
    Event {
        origin: String,
        kind: String,
        at: chrono::DateTime<chrono::Utc>,
        id: PostId,
    },
}

/// A dedicated connection that listens; it is not from the pool, because it
/// must stay open and notifications are per connection.
pub struct Listener {
    conn: AsyncPgConnection,
}

impl SharedDatabase {
    /// Opens a listening connection.
    pub async fn listen(&self) -> Result<Listener, StorageError> {
        let mut conn = AsyncPgConnection::establish(&self.url).await?;
        for channel in [POSTS_CHANNEL, CLUSTER_CHANNEL, EVENTS_CHANNEL] {
            diesel::sql_query(format!("LISTEN {channel}"))
                .execute(&mut conn)
                .await?;
        }
        Ok(Listener { conn })
    }

    /// Announces events to the other replicas' watchers, many per statement.
    pub async fn notify_events(&self, payloads: &[String]) -> Result<(), StorageError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut conn = self.connections.get().await?;
        diesel::sql_query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind::<Text, _>(EVENTS_CHANNEL)
            .bind::<Array<Text>, _>(payloads)
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// Wakes every replica's rebalancing (a replica joined, or released
    /// partitions).
    pub async fn notify_cluster(&self, message: &str) -> Result<(), StorageError> {
        let mut conn = self.connections.get().await?;
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CLUSTER_CHANNEL)
            .bind::<Text, _>(message)
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}

impl Listener {
    /// Waits for the next notice. Every `keepalive` without one, the
    /// connection is checked, so a dead connection is noticed even when
    /// nothing is written. An error means the connection is gone: listen
    /// again, then read what may have been missed.
    pub async fn next(&mut self, keepalive: Duration) -> Result<Notice, StorageError> {
        loop {
            let received = {
                let mut stream = std::pin::pin!(self.conn.notifications_stream());
                tokio::time::timeout(keepalive, stream.next()).await
            };
            match received {
                Ok(Some(Ok(notification))) => {
                    if let Some(notice) = parse(&notification.channel, &notification.payload) {
                        return Ok(notice);
                    }
                    tracing::warn!(
                        channel = %notification.channel,
                        payload = %notification.payload,
                        "ignoring an unreadable notification"
                    );
                }
                // Whatever fails on this connection, it is lost.
                Ok(Some(Err(error))) => return Err(StorageError::Unavailable(Box::new(error))),
                Ok(None) => {
                    return Err(StorageError::Unavailable(
                        "the listening connection closed".into(),
                    ));
                }
                Err(_quiet) => {
                    diesel::sql_query("SELECT 1")
                        .execute(&mut self.conn)
                        .await
                        .map_err(|error| StorageError::Unavailable(Box::new(error)))?;
                }
            }
        }
    }
}

fn parse(channel: &str, payload: &str) -> Option<Notice> {
    match channel {
        CLUSTER_CHANNEL => Some(Notice::Cluster),
        EVENTS_CHANNEL => {
            let mut fields = payload.split(' ');
            let origin = fields.next()?.to_owned();
            let kind = fields.next()?.to_owned();
            let at = rows::from_micros(payload, fields.next()?.parse().ok()?).ok()?;
            let id = PostId::parse("id", fields.next()?).ok()?;
            Some(Notice::Event {
                origin,
                kind,
                at,
                id,
            })
        }
        POSTS_CHANNEL => {
            let (id, due_us) = payload.split_once(' ')?;
            let id = PostId::parse("id", id).ok()?;
            let due = rows::from_micros(payload, due_us.trim().parse().ok()?).ok()?;
            Some(Notice::Pending(DueEntry { id, due }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_trigger_payload() {
        let id = PostId::new();
        let notice = parse(POSTS_CHANNEL, &format!("{id} 1767225600000000"));
        let expected_due = chrono::DateTime::from_timestamp_micros(1_767_225_600_000_000);
        assert_eq!(
            notice,
            expected_due.map(|due| Notice::Pending(DueEntry { id, due }))
        );
        assert_eq!(parse(CLUSTER_CHANNEL, "joined"), Some(Notice::Cluster));
        assert_eq!(parse(POSTS_CHANNEL, "not-an-id 12"), None);
        assert_eq!(parse(POSTS_CHANNEL, &format!("{id} soon")), None);
        assert_eq!(parse("elsewhere", ""), None);
        let event = parse(
            EVENTS_CHANNEL,
            &format!("r1 published 1767225600000000 {id}"),
        );
        assert!(matches!(
            event,
            Some(Notice::Event { ref origin, ref kind, id: event_id, .. })
                if origin == "r1" && kind == "published" && event_id == id
        ));
    }
}
