//! Counts and summaries of the queue, read from the database.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::pool::with_connection;
use super::rows::{self, micros};
use super::schema::posts;
use super::shared::SharedDatabase;
use super::sql::{is_pending, not_paused, partition_numbers};
use super::{Storage, StorageError};
use crate::domain::PostStatus;

impl Storage {
    /// Posts per business and status: read once at start-up to seed the
    /// in-memory counters.
    pub async fn count_by_business_and_status(
        &self,
    ) -> Result<Vec<(String, PostStatus, i64)>, StorageError> {
        let rows: Vec<(String, String, i64)> = with_connection!(self, |conn| {
            posts::table
                .group_by((posts::business_id, posts::status))
                .select((posts::business_id, posts::status, diesel::dsl::count_star()))
                .load(conn)
                .await?
        });
        rows.into_iter()
            .map(|(business_id, status, count)| {
                let status = status.parse().map_err(|reason| StorageError::Corrupt {
                    id: format!("status of {business_id}"),
                    reason,
                })?;
                Ok((business_id, status, count))
            })
            .collect()
    }

    /// The earliest pending attempt and the number of pending posts already
    /// due, read through the pending-only indexes.
    pub async fn due_summary(
        &self,
        business_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Option<DateTime<Utc>>, i64), StorageError> {
        let now_us = micros(now);
        let (next, overdue): (Option<i64>, i64) = with_connection!(self, |conn| {
            let mut next_query = posts::table
                .filter(is_pending())
                .select(diesel::dsl::min(posts::next_attempt_at_us))
                .into_boxed();
            let mut overdue_query = posts::table
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.le(now_us))
                .select(diesel::dsl::count_star())
                .into_boxed();
            if let Some(business_id) = business_id {
                next_query = next_query.filter(posts::business_id.eq(business_id));
                overdue_query = overdue_query.filter(posts::business_id.eq(business_id));
            }
            let next: Option<i64> = next_query.first(conn).await?;
            let overdue: i64 = overdue_query.first(conn).await?;
            (next, overdue)
        });
        let next = next
            .map(|us| rows::from_micros("next due", us))
            .transpose()?;
        Ok((next, overdue))
    }

    /// Whether a pending, unpaused post of these partitions (all when
    /// `None`) was due before `before`: with a working engine there is none
    /// for long.
    pub async fn has_overdue_posts(
        &self,
        before: DateTime<Utc>,
        partitions: Option<&[u16]>,
    ) -> Result<bool, StorageError> {
        let before_us = micros(before);
        let partitions: Option<Vec<i32>> = partitions.map(partition_numbers);
        let found: Option<String> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.lt(before_us))
                .filter(not_paused!())
                .select(posts::id)
                .into_boxed();
            if let Some(partitions) = &partitions {
                query = query.filter(posts::partition_no.eq_any(partitions));
            }
            query.first(conn).await.optional()?
        });
        Ok(found.is_some())
    }
}

impl SharedDatabase {
    /// Posts per status, of one business or of all, whichever replica
    /// changed them: where replicas share the database, the counts each
    /// process keeps see only its own changes.
    pub async fn count_by_status(
        &self,
        business_id: Option<&str>,
    ) -> Result<Vec<(PostStatus, i64)>, StorageError> {
        let rows: Vec<(String, i64)> = {
            let mut conn = self.connections.get().await?;
            let mut query = posts::table
                .group_by(posts::status)
                .select((posts::status, diesel::dsl::count_star()))
                .into_boxed();
            if let Some(business_id) = business_id {
                query = query.filter(posts::business_id.eq(business_id));
            }
            query.load(&mut conn).await?
        };
        rows.into_iter()
            .map(|(status, count)| {
                let status = status.parse().map_err(|reason| StorageError::Corrupt {
                    id: "status count".to_owned(),
                    reason,
                })?;
                Ok((status, count))
            })
            .collect()
    }
}
