//! Database rows and their conversion to and from domain posts.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::StorageError;
use super::schema::posts;
use crate::domain::time::TimeZone;
use crate::domain::{AttemptRecord, Labels, Payload, Post, PostId, PostStatus};

fn attempt_log_json(history: &[AttemptRecord]) -> String {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string(history).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) fn micros(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_micros()
}

pub(super) fn from_micros(id: &str, value: i64) -> Result<DateTime<Utc>, StorageError> {
    DateTime::from_timestamp_micros(value).ok_or_else(|| StorageError::Corrupt {
        id: id.to_owned(),
        reason: format!("instant {value} µs is out of range"),
    })
}

// `None` is inserted as NULL rather than DEFAULT, which lets SQLite take
// many rows in one INSERT.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = posts, treat_none_as_default_value = false)]
pub(super) struct PostRow {
    id: String,
    business_id: String,
    content_id: String,
    platform: String,
    payload: String,
    scheduled_for_us: i64,
    time_zone: String,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at_us: i64,
    published_at_us: Option<i64>,
    external_id: Option<String>,
    version: i64,
    request_id: Option<String>,
    create_time_us: i64,
    update_time_us: i64,
    attempt_log: String,
    partition_no: i32,
    /// The lease epoch of the latest claim (0 before any claim, and always
    /// on SQLite).
    claim_epoch: i64,
    trace_parent: Option<String>,
    /// The labels as a JSON object with keys in order ([`Labels::to_json`]).
    labels: String,
}

impl PostRow {
    pub(super) fn from_post(post: &Post) -> Self {
        Self {
            id: post.id.to_string(),
            business_id: post.business_id.clone(),
            content_id: post.content_id.clone(),
            platform: post.platform.clone(),
            payload: post.payload.as_str().to_owned(),
            labels: post.labels.to_json(),
            scheduled_for_us: micros(post.scheduled_for),
            time_zone: post.time_zone.name().to_owned(),
            status: post.status.as_str().to_owned(),
            attempts: i32::try_from(post.attempts).unwrap_or(i32::MAX),
            last_error: post.last_error.clone(),
            next_attempt_at_us: micros(post.next_attempt_at),
            published_at_us: post.published_at.map(micros),
            external_id: post.external_id.clone(),
            version: post.version,
            request_id: post.request_id.clone(),
            create_time_us: micros(post.create_time),
            update_time_us: micros(post.update_time),
            attempt_log: attempt_log_json(&post.attempt_history),
            partition_no: i32::from(post.id.partition()),
            claim_epoch: 0,
            trace_parent: post.trace_parent.clone(),
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn into_id(self) -> String {
        self.id
    }

    pub(super) fn claim_epoch(&self) -> i64 {
        self.claim_epoch
    }

    pub(super) fn into_post(mut self) -> Result<Post, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            id: self.id.clone(),
            reason,
        };
        let id = PostId::parse("id", &self.id).map_err(|e| corrupt(e.to_string()))?;
        let payload = Payload::from_stored(std::mem::take(&mut self.payload))
            .ok_or_else(|| corrupt("payload is not JSON".to_owned()))?;
        let labels = Labels::from_stored(&self.labels)
            .ok_or_else(|| corrupt("labels are not a JSON object of strings".to_owned()))?;
        let time_zone = TimeZone::parse(&self.time_zone).map_err(|e| corrupt(e.to_string()))?;
        let status: PostStatus = self.status.parse().map_err(corrupt)?;
        let attempt_history =
            serde_json::from_str(&self.attempt_log).map_err(|e| corrupt(e.to_string()))?;
        Ok(Post {
            id,
            payload,
            labels,
            time_zone,
            status,
            scheduled_for: from_micros(&self.id, self.scheduled_for_us)?,
            next_attempt_at: from_micros(&self.id, self.next_attempt_at_us)?,
            published_at: self
                .published_at_us
                .map(|us| from_micros(&self.id, us))
                .transpose()?,
            create_time: from_micros(&self.id, self.create_time_us)?,
            update_time: from_micros(&self.id, self.update_time_us)?,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            business_id: self.business_id,
            content_id: self.content_id,
            platform: self.platform,
            last_error: self.last_error,
            external_id: self.external_id,
            version: self.version,
            request_id: self.request_id,
            attempt_history,
            trace_parent: self.trace_parent,
        })
    }
}

/// The SET clause of a compare-and-set; `None` fields are left out.
#[derive(Debug, AsChangeset)]
#[diesel(table_name = posts)]
pub(super) struct PostChanges {
    platform: Option<String>,
    payload: Option<String>,
    labels: Option<String>,
    scheduled_for_us: Option<i64>,
    time_zone: Option<String>,
    status: Option<String>,
    attempts: Option<i32>,
    last_error: Option<Option<String>>,
    next_attempt_at_us: Option<i64>,
    published_at_us: Option<Option<i64>>,
    external_id: Option<Option<String>>,
    attempt_log: Option<String>,
    update_time_us: i64,
}

impl PostChanges {
    /// The SET clause of `patch`, with the status and attempts its
    /// transition decided.
    pub(super) fn from_patch(
        patch: &super::PostPatch,
        status: PostStatus,
        attempts: Option<u32>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            platform: patch.platform.clone(),
            payload: patch
                .payload
                .as_ref()
                .map(|payload| payload.as_str().to_owned()),
            labels: patch.labels.as_ref().map(Labels::to_json),
            scheduled_for_us: patch.scheduled_for.map(micros),
            time_zone: patch.time_zone.map(|zone| zone.name().to_owned()),
            status: Some(status.as_str().to_owned()),
            attempts: attempts.map(|attempts| i32::try_from(attempts).unwrap_or(i32::MAX)),
            last_error: patch.last_error.clone(),
            next_attempt_at_us: patch.next_attempt_at.map(micros),
            published_at_us: patch.published_at.map(|at| at.map(micros)),
            external_id: patch.external_id.clone(),
            attempt_log: patch.attempt_history.as_deref().map(attempt_log_json),
            update_time_us: micros(now),
        }
    }
}

/// Declares [`PostColumns`] from one list of the inserted columns, so that
/// the struct, the statement's column list and its bound arrays cannot fall
/// out of order.
macro_rules! post_columns {
    ($($column:ident: $rust:ty => $sql:ty),+ $(,)?) => {
        /// Posts as one array per column. PostgreSQL takes any number of them
        /// in one `INSERT … SELECT unnest(…), …` of one bound array per
        /// column: one short statement, parsed and planned alike for 1 post
        /// or 10,000, where a multi-row `VALUES` list is a new statement (and
        /// plan) for every row count and costs the server a parse of every
        /// value.
        #[derive(Default)]
        pub(super) struct PostColumns {
            $($column: Vec<$rust>,)+
        }

        impl PostColumns {
            const NAMES: &'static [&'static str] = &[$(stringify!($column)),+];

            pub(super) fn from_rows(rows: Vec<PostRow>) -> Self {
                let mut columns = Self::default();
                for row in rows {
                    $(columns.$column.push(row.$column);)+
                }
                columns
            }

            fn bind_all(self, query: BoxedPgQuery) -> BoxedPgQuery {
                use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
                query$(.bind::<Array<$sql>, _>(self.$column))+
            }
        }
    };
}

type BoxedPgQuery =
    diesel::query_builder::BoxedSqlQuery<'static, diesel::pg::Pg, diesel::query_builder::SqlQuery>;

post_columns! {
    id: String => Text,
    business_id: String => Text,
    content_id: String => Text,
    platform: String => Text,
    payload: String => Text,
    scheduled_for_us: i64 => BigInt,
    time_zone: String => Text,
    status: String => Text,
    attempts: i32 => Integer,
    last_error: Option<String> => Nullable<Text>,
    next_attempt_at_us: i64 => BigInt,
    published_at_us: Option<i64> => Nullable<BigInt>,
    external_id: Option<String> => Nullable<Text>,
    version: i64 => BigInt,
    request_id: Option<String> => Nullable<Text>,
    create_time_us: i64 => BigInt,
    update_time_us: i64 => BigInt,
    attempt_log: String => Text,
    partition_no: i32 => Integer,
    claim_epoch: i64 => BigInt,
    trace_parent: Option<String> => Nullable<Text>,
    labels: String => Text,
}

/// What a post already holding its business's request id does to an insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnDuplicateRequest {
    /// The whole statement fails with a unique violation.
    Fail,
    /// That post alone is left out; the ids of the inserted posts come back.
    Skip,
}

/// The id of an inserted post.
#[derive(QueryableByName)]
pub(super) struct InsertedId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub(super) id: String,
}

impl PostColumns {
    /// The statement inserting every post; it returns the inserted ids.
    pub(super) fn insert_statement(self, on_duplicate: OnDuplicateRequest) -> BoxedPgQuery {
        let conflict = match on_duplicate {
            OnDuplicateRequest::Fail => "",
            // The unique index on request ids holds only posts that have one.
            OnDuplicateRequest::Skip => {
                " ON CONFLICT (business_id, request_id) WHERE request_id IS NOT NULL DO NOTHING"
            }
        };
        // One `unnest` per array in the select list, which PostgreSQL runs
        // in step and streams row by row; `FROM unnest(a, b, …)` first
        // copies every row into a tuple store, which took about 10 ms of
        // the 73 ms that a 5,000-post insert took.
        let columns: Vec<String> = (1..=Self::NAMES.len())
            .map(|index| format!("unnest(${index})"))
            .collect();
        let sql = format!(
            "INSERT INTO posts ({}) SELECT {}{conflict} RETURNING id",
            Self::NAMES.join(", "),
            columns.join(", ")
        );
        self.bind_all(diesel::sql_query(sql).into_boxed())
    }
}

/// Finished attempts as one array per column an outcome writes, for one
/// `UPDATE … FROM unnest(…)` that records a whole batch.
pub(super) struct FinishedColumns {
    id: Vec<String>,
    version: Vec<i64>,
    status: Vec<String>,
    last_error: Vec<Option<String>>,
    next_attempt_at_us: Vec<i64>,
    published_at_us: Vec<Option<i64>>,
    external_id: Vec<Option<String>>,
    attempt_log: Vec<String>,
}

impl FinishedColumns {
    pub(super) fn from_attempts(attempts: &[super::FinishedAttempt]) -> Self {
        let mut columns = Self {
            id: Vec::with_capacity(attempts.len()),
            version: Vec::with_capacity(attempts.len()),
            status: Vec::with_capacity(attempts.len()),
            last_error: Vec::with_capacity(attempts.len()),
            next_attempt_at_us: Vec::with_capacity(attempts.len()),
            published_at_us: Vec::with_capacity(attempts.len()),
            external_id: Vec::with_capacity(attempts.len()),
            attempt_log: Vec::with_capacity(attempts.len()),
        };
        for attempt in attempts {
            columns.id.push(attempt.id.to_string());
            columns.version.push(attempt.claimed_version);
            columns.status.push(attempt.status().as_str().to_owned());
            columns.last_error.push(attempt.last_error.clone());
            columns
                .next_attempt_at_us
                .push(micros(attempt.next_attempt_at));
            columns
                .published_at_us
                .push(attempt.published_at.map(micros));
            columns.external_id.push(attempt.external_id.clone());
            columns
                .attempt_log
                .push(attempt_log_json(&attempt.attempt_history));
        }
        columns
    }

    /// The statement recording every attempt that still holds its claim
    /// (`PUBLISHING` at the claimed version, and `fence`); it returns the
    /// updated posts. One text for any batch size, so PostgreSQL plans it
    /// alike every time.
    pub(super) fn update_statement(
        self,
        now_us: i64,
        fence: super::sql::SqlCondition,
    ) -> BoxedPgQuery {
        use diesel::sql_types::{Array, BigInt, Nullable, Text};
        let fence_bind = if fence.bind.is_some() { "$11" } else { "" };
        // The status is bound rather than written out: the planner would
        // otherwise match it to the partial index of publishing posts and,
        // trusting statistics from before a burst (no post publishing),
        // scan every publishing post for each batch instead of looking up
        // each id.
        let sql = format!(
            "UPDATE posts SET status = v.status, last_error = v.last_error, \
             next_attempt_at_us = v.next_attempt_at_us, published_at_us = v.published_at_us, \
             external_id = v.external_id, attempt_log = v.attempt_log, \
             update_time_us = $9, version = posts.version + 1 \
             FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) \
             AS v(id, version, status, last_error, next_attempt_at_us, published_at_us, \
             external_id, attempt_log) \
             WHERE posts.id = v.id AND posts.version = v.version \
             AND posts.status = $10 AND {before}{fence_bind}{after} \
             RETURNING posts.*",
            before = fence.before,
            after = fence.after,
        );
        let query = diesel::sql_query(sql)
            .into_boxed()
            .bind::<Array<Text>, _>(self.id)
            .bind::<Array<BigInt>, _>(self.version)
            .bind::<Array<Text>, _>(self.status)
            .bind::<Array<Nullable<Text>>, _>(self.last_error)
            .bind::<Array<BigInt>, _>(self.next_attempt_at_us)
            .bind::<Array<Nullable<BigInt>>, _>(self.published_at_us)
            .bind::<Array<Nullable<Text>>, _>(self.external_id)
            .bind::<Array<Text>, _>(self.attempt_log)
            .bind::<BigInt, _>(now_us)
            .bind::<Text, _>(PostStatus::Publishing.as_str());
        match fence.bind {
            Some(owner) => query.bind::<Text, _>(owner),
            None => query,
        }
    }
}
