//! Queues of a business: pauses, and the reads behind pausing, dead
//! letters and the calendar.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::pool::{with_connection, with_write_connection};
use super::rows::{self, PostRow, micros};
use super::schema::{self, posts};
use super::sql::is_pending;
use super::{Storage, StorageError};
use crate::domain::{Post, PostStatus};

/// A pause in force: a business, or one platform of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRecord {
    pub business_id: String,
    /// `None` when the whole business is paused.
    pub platform: Option<String>,
    pub paused_at: DateTime<Utc>,
}

impl Storage {
    /// Records a pause; pausing twice keeps the first pause time.
    pub async fn insert_pause(&self, pause: &PauseRecord) -> Result<(), StorageError> {
        use schema::queue_pauses;
        let values = (
            queue_pauses::business_id.eq(&pause.business_id),
            queue_pauses::platform.eq(pause.platform.as_deref().unwrap_or("")),
            queue_pauses::pause_time_us.eq(micros(pause.paused_at)),
        );
        with_write_connection!(self, |conn| {
            diesel::insert_into(queue_pauses::table)
                .values(values)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Lifts the pause of a platform, or every pause of the business when
    /// `platform` is `None`. Returns the pauses lifted.
    pub async fn delete_pauses(
        &self,
        business_id: &str,
        platform: Option<&str>,
    ) -> Result<Vec<PauseRecord>, StorageError> {
        use schema::queue_pauses;
        let rows: Vec<(String, String, i64)> = with_write_connection!(self, |conn| {
            let of_business = queue_pauses::business_id.eq(business_id);
            match platform {
                Some(platform) => {
                    diesel::delete(
                        queue_pauses::table
                            .filter(of_business)
                            .filter(queue_pauses::platform.eq(platform)),
                    )
                    .returning(PAUSE_COLUMNS)
                    .get_results(conn)
                    .await?
                }
                None => {
                    diesel::delete(queue_pauses::table.filter(of_business))
                        .returning(PAUSE_COLUMNS)
                        .get_results(conn)
                        .await?
                }
            }
        });
        rows.into_iter().map(pause_from_row).collect()
    }

    pub async fn list_pauses(
        &self,
        business_id: Option<&str>,
    ) -> Result<Vec<PauseRecord>, StorageError> {
        use schema::queue_pauses;
        let rows: Vec<(String, String, i64)> = with_connection!(self, |conn| {
            let mut query = queue_pauses::table
                .select(PAUSE_COLUMNS)
                .order((queue_pauses::business_id, queue_pauses::platform))
                .into_boxed();
            if let Some(business_id) = business_id {
                query = query.filter(queue_pauses::business_id.eq(business_id));
            }
            query.load(conn).await?
        });
        rows.into_iter().map(pause_from_row).collect()
    }

    /// Pending posts of a business (optionally one platform) whose next
    /// attempt is before `until`, in due order, at most `limit`.
    pub async fn pending_of_business(
        &self,
        business_id: &str,
        platform: Option<&str>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Post>, StorageError> {
        let until = micros(until);
        let rows: Vec<PostRow> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(posts::business_id.eq(business_id))
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.lt(until))
                .select(PostRow::as_select())
                .order((posts::next_attempt_at_us.asc(), posts::id.asc()))
                .limit(limit)
                .into_boxed();
            if let Some(platform) = platform {
                query = query.filter(posts::platform.eq(platform));
            }
            query.load(conn).await?
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }

    /// Posts of a business in `(scheduled_for, id)` order within `[from, to)`,
    /// any status but those given, at most `limit`.
    pub async fn posts_between(
        &self,
        business_id: &str,
        platform: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        excluded: &[PostStatus],
        limit: i64,
    ) -> Result<Vec<Post>, StorageError> {
        let excluded: Vec<&str> = excluded.iter().map(|s| s.as_str()).collect();
        let (from, to) = (micros(from), micros(to));
        let rows: Vec<PostRow> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(posts::business_id.eq(business_id))
                .filter(posts::scheduled_for_us.ge(from))
                .filter(posts::scheduled_for_us.lt(to))
                .filter(posts::status.ne_all(&excluded))
                .select(PostRow::as_select())
                .order((posts::scheduled_for_us.asc(), posts::id.asc()))
                .limit(limit)
                .into_boxed();
            if let Some(platform) = platform {
                query = query.filter(posts::platform.eq(platform));
            }
            query.load(conn).await?
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }
}

/// The columns a pause is read back from, in [`pause_from_row`]'s order.
const PAUSE_COLUMNS: (
    schema::queue_pauses::business_id,
    schema::queue_pauses::platform,
    schema::queue_pauses::pause_time_us,
) = (
    schema::queue_pauses::business_id,
    schema::queue_pauses::platform,
    schema::queue_pauses::pause_time_us,
);

fn pause_from_row(
    (business_id, platform, pause_time_us): (String, String, i64),
) -> Result<PauseRecord, StorageError> {
    Ok(PauseRecord {
        paused_at: rows::from_micros(&business_id, pause_time_us)?,
        platform: (!platform.is_empty()).then_some(platform),
        business_id,
    })
}
