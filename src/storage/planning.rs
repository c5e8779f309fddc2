//! What planning keeps: the posting slots of each business and platform,
//! and the engagement reported for published posts.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::pool::{with_connection, with_write_connection};
use super::rows::{self, micros};
use super::schema;
use super::{Storage, StorageError};

/// The stored posting slots of a business on a platform; `slots` is the
/// JSON the scheduler wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotsRecord {
    pub time_zone: String,
    pub slots: String,
}

/// One engagement report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngagementRecord {
    pub post_id: String,
    pub business_id: String,
    pub platform: String,
    pub published_at: DateTime<Utc>,
    pub impressions: i64,
    pub clicks: i64,
    pub reactions: i64,
}

impl Storage {
    pub async fn upsert_slots(
        &self,
        business_id: &str,
        platform: &str,
        record: &SlotsRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        use schema::posting_slots;
        let values = (
            posting_slots::business_id.eq(business_id),
            posting_slots::platform.eq(platform),
            posting_slots::time_zone.eq(&record.time_zone),
            posting_slots::slots.eq(&record.slots),
            posting_slots::update_time_us.eq(micros(now)),
        );
        with_write_connection!(self, |conn| {
            diesel::insert_into(posting_slots::table)
                .values(values)
                .on_conflict((posting_slots::business_id, posting_slots::platform))
                .do_update()
                .set((
                    posting_slots::time_zone.eq(&record.time_zone),
                    posting_slots::slots.eq(&record.slots),
                    posting_slots::update_time_us.eq(micros(now)),
                ))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    pub async fn get_slots(
        &self,
        business_id: &str,
        platform: &str,
    ) -> Result<Option<SlotsRecord>, StorageError> {
        use schema::posting_slots;
        let row: Option<(String, String)> = with_connection!(self, |conn| {
            posting_slots::table
                .filter(posting_slots::business_id.eq(business_id))
                .filter(posting_slots::platform.eq(platform))
                .select((posting_slots::time_zone, posting_slots::slots))
                .first(conn)
                .await
                .optional()?
        });
        Ok(row.map(|(time_zone, slots)| SlotsRecord { time_zone, slots }))
    }

    /// Records (or replaces) the engagement of a post.
    pub async fn upsert_engagement(
        &self,
        record: &EngagementRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        use schema::engagement;
        let values = (
            engagement::post_id.eq(&record.post_id),
            engagement::business_id.eq(&record.business_id),
            engagement::platform.eq(&record.platform),
            engagement::published_at_us.eq(micros(record.published_at)),
            engagement::impressions.eq(record.impressions),
            engagement::clicks.eq(record.clicks),
            engagement::reactions.eq(record.reactions),
            engagement::record_time_us.eq(micros(now)),
        );
        with_write_connection!(self, |conn| {
            diesel::insert_into(engagement::table)
                .values(values)
                .on_conflict(engagement::post_id)
                .do_update()
                .set((
                    engagement::impressions.eq(record.impressions),
                    engagement::clicks.eq(record.clicks),
                    engagement::reactions.eq(record.reactions),
                    engagement::record_time_us.eq(micros(now)),
                ))
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// The most recent engagement reports of a business on a platform.
    pub async fn engagement_history(
        &self,
        business_id: &str,
        platform: &str,
        limit: i64,
    ) -> Result<Vec<EngagementRecord>, StorageError> {
        use schema::engagement;
        let rows: Vec<(String, String, String, i64, i64, i64, i64)> =
            with_connection!(self, |conn| {
                engagement::table
                    .filter(engagement::business_id.eq(business_id))
                    .filter(engagement::platform.eq(platform))
                    .order(engagement::published_at_us.desc())
                    .limit(limit)
                    .select((
                        engagement::post_id,
                        engagement::business_id,
                        engagement::platform,
                        engagement::published_at_us,
                        engagement::impressions,
                        engagement::clicks,
                        engagement::reactions,
                    ))
                    .load(conn)
                    .await?
            });
        rows.into_iter()
            .map(
                |(post_id, business_id, platform, published_us, impressions, clicks, reactions)| {
                    Ok(EngagementRecord {
                        published_at: rows::from_micros(&post_id, published_us)?,
                        post_id,
                        business_id,
                        platform,
                        impressions,
                        clicks,
                        reactions,
                    })
                },
            )
            .collect()
    }
}
