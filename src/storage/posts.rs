//! Posts one at a time: inserts (committed in groups), reads, listings, and
//! the compare-and-set every change of a post goes through.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::pool::{with_connection, with_write_connection};
use super::rows::{self, OnDuplicateRequest, PostRow, micros};
use super::schema::posts;
use super::sql::SqlCondition;
use super::{Storage, StorageError};
use crate::domain::time::TimeZone;
use crate::domain::{Post, PostId, PostStatus, Transition};

/// Request ids per lookup of posts by request id: keeps the statement under
/// both backends' limits on bound parameters (SQLite allows 32,766).
const LOOKUP_CHUNK_IDS: usize = 1_000;

/// Filters of a listing, already validated.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub business_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub statuses: Vec<PostStatus>,
    pub platform: Option<String>,
    /// Every one of these must hold.
    pub labels: Vec<crate::domain::LabelCondition>,
}

/// Where the previous page ended: listings are ordered by
/// `(scheduled_for, id)`, so a page continues strictly after this pair and
/// rows inserted meanwhile neither repeat nor shift the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub scheduled_for_us: i64,
    pub id: String,
}

/// One post's [`Transition`], as a compare-and-set: it applies only if the
/// post is still in one of the transition's source statuses, at the version
/// it was read with, and (for a transition that ends a claim) under the
/// lease it was claimed under. The new status and attempt count are the
/// transition's, from the status and attempts the post was read with.
#[derive(Debug, Clone)]
pub struct Change {
    pub transition: Transition,
    pub id: PostId,
    /// The status the post was read with.
    pub from: PostStatus,
    /// The attempts the post was read with.
    pub attempts: u32,
    /// The version the change was computed from.
    pub version: Option<i64>,
    /// Only if the post's next attempt is due at or before this instant: a
    /// stale timer can never publish a post whose instant moved later.
    pub due_by: Option<DateTime<Utc>>,
}

impl Change {
    /// `transition` of `post` as read.
    pub fn of(transition: Transition, post: &Post) -> Self {
        Self {
            transition,
            id: post.id,
            from: post.status,
            attempts: post.attempts,
            version: Some(post.version),
            due_by: None,
        }
    }

    /// The status and attempt count the post has once the change applies.
    pub fn outcome(&self) -> (PostStatus, Option<u32>) {
        let attempts = self.transition.attempts_after(self.attempts);
        let status = self
            .transition
            .target(self.from, attempts.unwrap_or(self.attempts));
        (status, attempts)
    }
}

/// The fields a compare-and-set changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PostPatch {
    pub platform: Option<String>,
    pub payload: Option<crate::domain::Payload>,
    pub labels: Option<crate::domain::Labels>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub time_zone: Option<TimeZone>,
    pub last_error: Option<Option<String>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub published_at: Option<Option<DateTime<Utc>>>,
    pub external_id: Option<Option<String>>,
    pub attempt_history: Option<Vec<crate::domain::AttemptRecord>>,
}

/// A compare-and-set with its values converted for binding.
pub(super) struct PreparedCas {
    pub(super) id: String,
    pub(super) statuses: SqlCondition,
    pub(super) changes: rows::PostChanges,
    pub(super) version: Option<i64>,
    pub(super) due_by_us: i64,
    pub(super) fence: SqlCondition,
}

/// Runs a [`PreparedCas`] on `$conn`: the changed row, or `None` when the
/// post no longer matched.
macro_rules! apply_cas {
    ($cas:expr, |$statement:ident| $run:expr) => {{
        use $crate::storage::rows::PostRow;
        use $crate::storage::schema::posts;
        use $crate::storage::sql::ReusedStatement;
        let cas = &$cas;
        let filtered = diesel::update(posts::table)
            .filter(posts::id.eq(&cas.id))
            .filter(cas.statuses.clone())
            .filter(posts::next_attempt_at_us.le(cas.due_by_us))
            .filter(cas.fence.clone());
        match cas.version {
            Some(version) => {
                let $statement = ReusedStatement(
                    filtered
                        .filter(posts::version.eq(version))
                        .set((&cas.changes, posts::version.eq(posts::version + 1)))
                        .returning(PostRow::as_returning()),
                );
                $run
            }
            None => {
                let $statement = ReusedStatement(
                    filtered
                        .set((&cas.changes, posts::version.eq(posts::version + 1)))
                        .returning(PostRow::as_returning()),
                );
                $run
            }
        }
        .optional()
    }};
}
pub(super) use apply_cas;

/// An insert queued for a group commit, and where its result goes.
pub(super) struct PendingInsert {
    row: PostRow,
    done: tokio::sync::oneshot::Sender<Result<(), StorageError>>,
}

fn lock_queue(
    queue: &std::sync::Mutex<Vec<PendingInsert>>,
) -> std::sync::MutexGuard<'_, Vec<PendingInsert>> {
    // Pushing and taking cannot leave the queue half-changed.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Commits a group of inserts in one statement per backend and answers each
/// caller: inserted, or [`StorageError::DuplicateRequest`] for a post whose
/// request id its business had used already (in the database or earlier in
/// the group).
async fn commit_group(pool: &super::pool::Pool, batch: Vec<PendingInsert>) {
    let (rows, senders): (Vec<PostRow>, Vec<_>) = batch
        .into_iter()
        .map(|pending| (pending.row, pending.done))
        .unzip();
    let ids: Vec<String> = rows.iter().map(|row| row.id().to_owned()).collect();
    match pool.insert_rows(rows, OnDuplicateRequest::Skip).await {
        Ok(inserted) => {
            let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
            for (done, id) in senders.into_iter().zip(ids) {
                let result = if inserted.contains(&id) {
                    Ok(())
                } else {
                    Err(StorageError::DuplicateRequest)
                };
                let _ = done.send(result);
            }
        }
        Err(error) => {
            // Every insert of the group failed with it; a caller may retry
            // its own alone.
            let error = Arc::new(error);
            for done in senders {
                let _ = done.send(Err(StorageError::Unavailable(Box::new(Arc::clone(&error)))));
            }
        }
    }
}

impl Storage {
    /// Inserts one post. A `request_id` already used by the business gives
    /// [`StorageError::DuplicateRequest`] and inserts nothing.
    ///
    /// Group commit: inserts that arrive while one group commits are queued,
    /// and the next writer commits all of them in one statement and one
    /// transaction. A commit (an fsync) costs about as much for one post as
    /// for a hundred, so concurrent callers share it.
    pub async fn insert(&self, post: &Post) -> Result<(), StorageError> {
        let row = PostRow::from_post(post);
        let (done, mut result) = tokio::sync::oneshot::channel();
        lock_queue(&self.inserts).push(PendingInsert { row, done });
        let writer = self.writer.lock().await;
        // A writer that took this insert has answered it before letting the
        // lock go. Callers answered so are let through at once: were they to
        // commit what arrived meanwhile, each would commit a group of one.
        if let Ok(answer) = result.try_recv() {
            drop(writer);
            return answer;
        }
        // Unanswered, so this insert is still queued: the group holds it.
        let batch = std::mem::take(&mut *lock_queue(&self.inserts));
        // Spawned, so that the group is committed and answered even if this
        // caller goes away meanwhile.
        let pool = self.pool.clone();
        let group = tokio::spawn(async move {
            commit_group(&pool, batch).await;
            drop(writer);
        });
        if let Err(error) = group.await {
            tracing::error!(%error, "group insert task failed");
        }
        result
            .await
            .unwrap_or_else(|_| Err(StorageError::Unavailable("the insert was abandoned".into())))
    }

    /// Inserts all posts or none, in one transaction.
    pub async fn insert_all(&self, new_posts: &[Post]) -> Result<(), StorageError> {
        let rows: Vec<PostRow> = new_posts.iter().map(PostRow::from_post).collect();
        let _turn = self.write_turn().await;
        self.pool
            .insert_rows(rows, OnDuplicateRequest::Fail)
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: PostId) -> Result<Option<Post>, StorageError> {
        let id = id.to_string();
        let row: Option<PostRow> = with_connection!(self, |conn| {
            posts::table
                .find(&id)
                .select(PostRow::as_select())
                .first(conn)
                .await
                .optional()?
        });
        row.map(PostRow::into_post).transpose()
    }

    /// Posts of a business created with one of these request ids.
    pub async fn find_by_request_ids(
        &self,
        business_id: &str,
        request_ids: &[String],
    ) -> Result<Vec<Post>, StorageError> {
        let mut found = Vec::with_capacity(request_ids.len());
        for chunk in request_ids.chunks(LOOKUP_CHUNK_IDS) {
            let rows: Vec<PostRow> = with_connection!(self, |conn| {
                posts::table
                    .filter(posts::business_id.eq(business_id))
                    .filter(posts::request_id.eq_any(chunk))
                    .select(PostRow::as_select())
                    .load(conn)
                    .await?
            });
            for row in rows {
                found.push(row.into_post()?);
            }
        }
        Ok(found)
    }

    /// One page of posts in `(scheduled_for, id)` order.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&ListCursor>,
        limit: i64,
    ) -> Result<Vec<Post>, StorageError> {
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let label_conditions: Vec<SqlCondition> = filter
            .labels
            .iter()
            .map(|condition| self.pool.labels_contain(condition.stored_fragment()))
            .collect();
        let rows: Vec<PostRow> = with_connection!(self, |conn| {
            let mut query = posts::table.select(PostRow::as_select()).into_boxed();
            if let Some(business_id) = &filter.business_id {
                query = query.filter(posts::business_id.eq(business_id));
            }
            if let Some(from) = filter.from {
                query = query.filter(posts::scheduled_for_us.ge(micros(from)));
            }
            if let Some(to) = filter.to {
                query = query.filter(posts::scheduled_for_us.lt(micros(to)));
            }
            if !statuses.is_empty() {
                query = query.filter(posts::status.eq_any(&statuses));
            }
            if let Some(platform) = &filter.platform {
                query = query.filter(posts::platform.eq(platform));
            }
            for condition in &label_conditions {
                query = query.filter(condition.clone());
            }
            if let Some(cursor) = after {
                query = query.filter(
                    posts::scheduled_for_us
                        .gt(cursor.scheduled_for_us)
                        .or(posts::scheduled_for_us
                            .eq(cursor.scheduled_for_us)
                            .and(posts::id.gt(&cursor.id))),
                );
            }
            query
                .order((posts::scheduled_for_us.asc(), posts::id.asc()))
                .limit(limit)
                .load(conn)
                .await?
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }

    /// Applies `change` with `patch` if the post still matches it, bumping
    /// its version; `None` when it did not match (changed, wrong status, not
    /// due, lease lost, or gone). Callers go through
    /// [`crate::lifecycle::LifeCycle`], which announces what applied.
    pub async fn compare_and_set(
        &self,
        change: &Change,
        patch: &PostPatch,
        now: DateTime<Utc>,
    ) -> Result<Option<Post>, StorageError> {
        let cas = self.prepare_cas(change, patch, now);
        let row: Option<PostRow> =
            with_write_connection!(self, |conn| apply_cas!(cas, |statement| {
                statement.get_result(conn).await
            })?);
        row.map(PostRow::into_post).transpose()
    }

    pub(super) fn prepare_cas(
        &self,
        change: &Change,
        patch: &PostPatch,
        now: DateTime<Utc>,
    ) -> PreparedCas {
        let (status, attempts) = change.outcome();
        PreparedCas {
            id: change.id.to_string(),
            statuses: SqlCondition::status_in(change.transition.sources()),
            changes: rows::PostChanges::from_patch(patch, status, attempts, now),
            version: change.version,
            // Absent conditions become always-true comparisons so that one
            // statement shape serves every call.
            due_by_us: change.due_by.map(micros).unwrap_or(i64::MAX),
            fence: if change.transition.is_fenced() {
                self.finish_fence()
            } else {
                SqlCondition::none()
            },
        }
    }
}
