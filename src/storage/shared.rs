//! [`SharedDatabase`]: the PostgreSQL database as several replicas share it.
//! Only a PostgreSQL [`super::Storage`] has one, so nothing that coordinates
//! replicas can be called on SQLite: partition leases and membership
//! (`leases.rs`), `LISTEN`/`NOTIFY` (`notify.rs`), the fences that tie claims
//! and outcome writes to a lease, and counts across replicas.

use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool as DeadPool;

use super::sql::SqlCondition;

/// The database's clock in µs since the Unix epoch: every replica times
/// leases by this one clock, so their own clocks may disagree.
pub(super) const PG_NOW_US: &str = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";

/// Leases, membership and notifications of replicas sharing PostgreSQL.
/// Cheap to clone.
#[derive(Clone)]
pub struct SharedDatabase {
    /// The same pool as the [`super::Storage`] it came from.
    pub(super) connections: DeadPool<AsyncPgConnection>,
    /// Where a listening connection, which is not pooled, connects.
    pub(super) url: Arc<str>,
    /// The replica whose partition leases fence claims and outcome writes;
    /// `None` for a tool that is no replica (it fences nothing).
    pub(super) fencing_owner: Option<Arc<str>>,
}

impl SharedDatabase {
    /// The claim's fencing condition, and the expression of the epoch it
    /// records; `None` without a fencing owner.
    pub(super) fn claim_fence(&self) -> Option<(SqlCondition, &'static str)> {
        let owner = self.fencing_owner.as_deref()?;
        Some((
            SqlCondition::around(
                "EXISTS (SELECT 1 FROM partition_leases l \
                 WHERE l.partition_no = posts.partition_no AND l.owner = ",
                owner.to_owned(),
                format!(" AND l.expires_at_us > {PG_NOW_US} FOR KEY SHARE)"),
            ),
            "(SELECT l.epoch FROM partition_leases l WHERE l.partition_no = posts.partition_no)",
        ))
    }

    /// The condition on a write that finishes a claim: the lease it was
    /// claimed under is still this replica's and unexpired. The lease row is
    /// locked `FOR KEY SHARE`: a takeover (which locks it `FOR UPDATE SKIP
    /// LOCKED`) waits for the write, or the write sees the new owner, while
    /// renewals (which take a weaker lock) run alongside without deadlocks.
    pub(super) fn finish_fence(&self) -> Option<SqlCondition> {
        let owner = self.fencing_owner.as_deref()?;
        Some(SqlCondition::around(
            "EXISTS (SELECT 1 FROM partition_leases l \
             WHERE l.partition_no = posts.partition_no AND l.owner = ",
            owner.to_owned(),
            format!(
                " AND l.epoch = posts.claim_epoch AND l.expires_at_us > {PG_NOW_US} FOR KEY SHARE)"
            ),
        ))
    }

    /// The attempts a recovery returns to pending: those of partitions this
    /// replica now owns that were claimed under an earlier lease epoch (the
    /// attempts of a replica that lost them). `None` without a fencing
    /// owner.
    pub(super) fn recovery_scope(&self) -> Option<SqlCondition> {
        let owner = self.fencing_owner.as_deref()?;
        Some(SqlCondition::around(
            "posts.claim_epoch < (SELECT l.epoch FROM partition_leases l \
             WHERE l.partition_no = posts.partition_no AND l.owner = ",
            owner.to_owned(),
            ")",
        ))
    }
}
