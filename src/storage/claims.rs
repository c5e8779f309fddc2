//! The fire path: what the engine arms timers for, claims of due posts,
//! the outcomes of attempts, and the recovery of attempts that were cut off.
//! Claims and the writes that finish them are fenced by partition leases
//! where replicas share the database ([`super::SharedDatabase`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::pool::{with_connection, with_write_connection};
use super::posts::{Change, PostPatch};
use super::rows::{self, PostRow, micros};
use super::schema::posts;
use super::sql::{ReusedStatement, SqlCondition, is_pending, not_paused, partition_numbers};
use super::{Storage, StorageError};
use crate::domain::{Post, PostId, PostStatus, Transition};

/// The end of a publish attempt, as recorded: every field an outcome
/// writes. It applies only while the post is still `PUBLISHING` at the
/// version it was claimed with, under the lease it was claimed under.
#[derive(Debug, Clone)]
pub struct FinishedAttempt {
    pub id: PostId,
    pub claimed_version: i64,
    /// The attempts the claim counted.
    pub attempts: u32,
    /// [`Transition::Publish`], [`Transition::Retry`] or
    /// [`Transition::GiveUp`].
    pub transition: Transition,
    pub next_attempt_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub external_id: Option<String>,
    pub last_error: Option<String>,
    pub attempt_history: Vec<crate::domain::AttemptRecord>,
}

impl FinishedAttempt {
    /// The same write as a single compare-and-set.
    pub fn as_compare_and_set(&self) -> (Change, PostPatch) {
        let patch = PostPatch {
            next_attempt_at: Some(self.next_attempt_at),
            published_at: Some(self.published_at),
            external_id: Some(self.external_id.clone()),
            last_error: Some(self.last_error.clone()),
            attempt_history: Some(self.attempt_history.clone()),
            ..PostPatch::default()
        };
        (self.change(), patch)
    }

    /// The transition of the claimed post this outcome makes.
    fn change(&self) -> Change {
        Change {
            transition: self.transition,
            id: self.id,
            from: PostStatus::Publishing,
            attempts: self.attempts,
            version: Some(self.claimed_version),
            due_by: None,
        }
    }

    /// The status the outcome writes: the same on both databases and in
    /// the single compare-and-set, since all take it from [`Change::outcome`].
    pub fn status(&self) -> PostStatus {
        self.change().outcome().0
    }
}

/// A claimed post and the lease epoch it was claimed under.
#[derive(Debug, Clone)]
pub struct Claim {
    pub post: Post,
    pub epoch: i64,
}

/// A pending post's id and next attempt instant: all the engine needs to arm
/// a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueEntry {
    pub id: PostId,
    pub due: DateTime<Utc>,
}

impl Storage {
    /// The claim's fencing condition, and the expression of the epoch it
    /// records: always true and epoch 0 where no lease fences claims.
    fn claim_fence(&self) -> (SqlCondition, &'static str) {
        self.shared
            .as_ref()
            .and_then(|shared| shared.claim_fence())
            .unwrap_or_else(|| (SqlCondition::none(), "0"))
    }

    /// The condition on a write that finishes a claim; always true where no
    /// lease fences claims.
    pub(super) fn finish_fence(&self) -> SqlCondition {
        self.shared
            .as_ref()
            .and_then(|shared| shared.finish_fence())
            .unwrap_or_else(SqlCondition::none)
    }

    /// Pending posts whose next attempt is in `[from, until)`, in due order,
    /// continuing after `after`: what the engine arms timers for. `partitions`
    /// limits the read to those partitions; `None` reads all.
    pub async fn pending_due_in(
        &self,
        from: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
        after: Option<DueEntry>,
        limit: i64,
        partitions: Option<&[u16]>,
    ) -> Result<Vec<DueEntry>, StorageError> {
        let partitions: Option<Vec<i32>> = partitions.map(partition_numbers);
        let until = micros(until);
        let after = after.map(|entry| (micros(entry.due), entry.id.to_string()));
        // Each page starts at the previous page's last instant, so reading
        // every page stays linear in the number of rows.
        let from = from
            .map(micros)
            .unwrap_or(i64::MIN)
            .max(after.as_ref().map_or(i64::MIN, |(due, _)| *due));
        let rows: Vec<(String, i64)> = with_connection!(self, |conn| {
            let mut query = posts::table
                .filter(is_pending())
                .filter(posts::next_attempt_at_us.ge(from))
                .filter(posts::next_attempt_at_us.lt(until))
                .select((posts::id, posts::next_attempt_at_us))
                .into_boxed();
            if let Some(partitions) = &partitions {
                query = query.filter(posts::partition_no.eq_any(partitions));
            }
            if let Some((due_us, id)) = &after {
                // A row-value comparison, which both databases answer with
                // a range scan of the (next attempt, id) index.
                query = query.filter(
                    diesel::dsl::sql::<diesel::sql_types::Bool>("(next_attempt_at_us, id) > (")
                        .bind::<diesel::sql_types::BigInt, _>(*due_us)
                        .sql(", ")
                        .bind::<diesel::sql_types::Text, _>(id.clone())
                        .sql(")"),
                );
            }
            query
                .order((posts::next_attempt_at_us.asc(), posts::id.asc()))
                .limit(limit)
                .load(conn)
                .await?
        });
        rows.into_iter()
            .map(|(id, due_us)| {
                let post_id = PostId::parse("id", &id).map_err(|error| StorageError::Corrupt {
                    id: id.clone(),
                    reason: error.to_string(),
                })?;
                let due = rows::from_micros(&id, due_us)?;
                Ok(DueEntry { id: post_id, due })
            })
            .collect()
    }

    /// Claims due posts for an attempt: `PUBLISHING`, one more attempt, new
    /// version. A post no longer pending, not due by `due_by` (edited,
    /// cancelled, or claimed already) or paused is left out, so a post is
    /// never published early and never twice by this node.
    pub async fn claim_many(
        &self,
        ids: &[PostId],
        due_by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, StorageError> {
        let due_by_us = micros(due_by);
        let now_us = micros(now);
        let (fence, epoch) = self.claim_fence();
        let listed = self.pool.id_in(ids);
        let claimed = Transition::Claim.target(PostStatus::Scheduled, 1);
        let rows: Vec<PostRow> = with_write_connection!(self, |conn| {
            ReusedStatement(
                diesel::update(posts::table)
                    .filter(listed)
                    .filter(SqlCondition::status_in_unindexed(
                        Transition::Claim.sources(),
                    ))
                    .filter(fence)
                    // `+ 0`: see `status_in_unindexed`.
                    .filter((posts::next_attempt_at_us + 0_i64).le(due_by_us))
                    .filter(not_paused!())
                    // `Transition::Claim`: PUBLISHING, one attempt more.
                    .set((
                        posts::status.eq(claimed.as_str()),
                        posts::attempts.eq(posts::attempts + 1),
                        posts::version.eq(posts::version + 1),
                        posts::update_time_us.eq(now_us),
                        posts::claim_epoch.eq(diesel::dsl::sql::<diesel::sql_types::BigInt>(epoch)),
                    ))
                    .returning(PostRow::as_returning()),
            )
            .get_results(conn)
            .await?
        });
        rows.into_iter()
            .map(|row| {
                let epoch = row.claim_epoch();
                Ok(Claim {
                    post: row.into_post()?,
                    epoch,
                })
            })
            .collect()
    }

    /// Records the outcomes of several attempts in one transaction, so one
    /// commit serves them all (a burst). Each applies or not on its own, as
    /// the compare-and-set of [`FinishedAttempt::as_compare_and_set`]; the
    /// result for each is its updated post, or `None` where it did not
    /// apply. An error fails them all.
    pub async fn finish_attempts(
        &self,
        attempts: &[FinishedAttempt],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<Post>>, StorageError> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let prepare = |attempt: &FinishedAttempt| {
            let (change, patch) = attempt.as_compare_and_set();
            self.prepare_cas(&change, &patch, now)
        };
        let rows = self
            .pool
            .finish_attempts(
                &self.writer,
                attempts,
                prepare,
                self.finish_fence(),
                micros(now),
            )
            .await?;
        rows.into_iter()
            .map(|row| row.map(PostRow::into_post).transpose())
            .collect()
    }

    /// Posts left `PUBLISHING` by a process that stopped mid-attempt go back
    /// to pending at their old instant; the interrupted attempt is not
    /// counted, and the post keeps its id and so its idempotency key.
    ///
    /// With fencing (several replicas), only the posts of partitions this
    /// replica now owns that were claimed under an earlier lease epoch: the
    /// attempts of a replica that lost them. Without, every such post: the
    /// one process of the database has just started.
    pub async fn recover_interrupted(&self, now: DateTime<Utc>) -> Result<Vec<Post>, StorageError> {
        let now_us = micros(now);
        let message = "previous attempt was interrupted (restart or lost lease)";
        let scope = self
            .shared
            .as_ref()
            .and_then(|shared| shared.recovery_scope())
            .unwrap_or_else(SqlCondition::none);
        // `Transition::Recover`, in two statements: a first attempt goes
        // back to the status of a post never tried, a later one to that of a
        // post being retried.
        let interrupted = SqlCondition::status_in(Transition::Recover.sources());
        let never_tried = Transition::Recover.target(PostStatus::Publishing, 0);
        let retried_status = Transition::Recover.target(PostStatus::Publishing, 1);
        let rows: Vec<PostRow> = with_write_connection!(self, |conn| {
            let mut recovered: Vec<PostRow> = diesel::update(posts::table)
                .filter(interrupted.clone())
                .filter(scope.clone())
                .filter(posts::attempts.le(1))
                .set((
                    posts::status.eq(never_tried.as_str()),
                    posts::attempts.eq(0),
                    posts::version.eq(posts::version + 1),
                    posts::update_time_us.eq(now_us),
                ))
                .returning(PostRow::as_returning())
                .get_results(conn)
                .await?;
            let retried: Vec<PostRow> = diesel::update(posts::table)
                .filter(interrupted.clone())
                .filter(scope.clone())
                .set((
                    posts::status.eq(retried_status.as_str()),
                    posts::attempts.eq(posts::attempts - 1),
                    posts::last_error.eq(message),
                    posts::version.eq(posts::version + 1),
                    posts::update_time_us.eq(now_us),
                ))
                .returning(PostRow::as_returning())
                .get_results(conn)
                .await?;
            recovered.extend(retried);
            recovered
        });
        rows.into_iter().map(PostRow::into_post).collect()
    }
}
