//! Partition leases and cluster membership, kept in PostgreSQL: the only
//! coordination between replicas. Every expiry is measured by the database's
//! clock, and every change of owner bumps the partition's epoch, which is the
//! fencing token claims are recorded under.

use std::collections::HashMap;
use std::time::Duration;

use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::RunQueryDsl;

use super::StorageError;
use super::shared::{PG_NOW_US, SharedDatabase};
use super::sql::partition_numbers;

/// A partition held by this replica, and the epoch of its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub partition: u16,
    pub epoch: i64,
}

/// Who is alive and how many partitions each holds, as the database sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberCount {
    /// Live replicas (heartbeat unexpired), this one included.
    pub live_members: Vec<String>,
    /// Unexpired leases per owner.
    pub leases_by_owner: HashMap<String, usize>,
    /// Partitions nobody holds: never taken, released, or expired.
    pub orphans: usize,
}

#[derive(QueryableByName)]
struct LeaseRow {
    #[diesel(sql_type = Integer)]
    partition_no: i32,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

#[derive(QueryableByName)]
struct MemberRow {
    #[diesel(sql_type = Text)]
    replica_id: String,
}

#[derive(QueryableByName)]
struct OwnerRow {
    #[diesel(sql_type = Nullable<Text>)]
    owner: Option<String>,
    #[diesel(sql_type = BigInt)]
    partitions: i64,
}

fn micros_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn into_leases(rows: Vec<LeaseRow>) -> Vec<Lease> {
    rows.into_iter()
        .filter_map(|row| {
            Some(Lease {
                partition: u16::try_from(row.partition_no).ok()?,
                epoch: row.epoch,
            })
        })
        .collect()
}

impl SharedDatabase {
    /// Records that `replica` is alive for `ttl`, and forgets replicas that
    /// have been silent for a minute.
    pub async fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<(), StorageError> {
        let mut conn = self.connections.get().await?;
        sql_query(format!(
            "INSERT INTO cluster_members (replica_id, expires_at_us) VALUES ($1, {PG_NOW_US} + $2) \
             ON CONFLICT (replica_id) DO UPDATE SET expires_at_us = EXCLUDED.expires_at_us"
        ))
        .bind::<Text, _>(replica)
        .bind::<BigInt, _>(micros_of(ttl))
        .execute(&mut conn)
        .await?;
        sql_query(format!(
            "DELETE FROM cluster_members WHERE expires_at_us < {PG_NOW_US} - 60000000"
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    /// The live replicas and the unexpired leases of each.
    pub async fn cluster_view(&self) -> Result<MemberCount, StorageError> {
        let mut conn = self.connections.get().await?;
        let members: Vec<MemberRow> = sql_query(format!(
            "SELECT replica_id FROM cluster_members WHERE expires_at_us > {PG_NOW_US} \
             ORDER BY replica_id"
        ))
        .load(&mut conn)
        .await?;
        let owners: Vec<OwnerRow> = sql_query(format!(
            "SELECT CASE WHEN expires_at_us > {PG_NOW_US} THEN owner END AS owner, \
             count(*) AS partitions FROM partition_leases GROUP BY 1"
        ))
        .load(&mut conn)
        .await?;
        let mut view = MemberCount {
            live_members: members.into_iter().map(|row| row.replica_id).collect(),
            ..MemberCount::default()
        };
        for row in owners {
            let count = usize::try_from(row.partitions).unwrap_or(0);
            match row.owner {
                Some(owner) => *view.leases_by_owner.entry(owner).or_default() += count,
                None => view.orphans += count,
            }
        }
        Ok(view)
    }

    /// Extends every lease `replica` still owns by `ttl`; returns them. A
    /// lease that lapsed (the database was unreachable for a while) but that
    /// nobody took meanwhile is revived under the same epoch: taking it
    /// would have changed its owner, so no one else has claimed under it.
    pub async fn renew_leases(
        &self,
        replica: &str,
        ttl: Duration,
    ) -> Result<Vec<Lease>, StorageError> {
        let mut conn = self.connections.get().await?;
        let rows: Vec<LeaseRow> = sql_query(format!(
            "UPDATE partition_leases SET expires_at_us = {PG_NOW_US} + $2 \
             WHERE owner = $1 RETURNING partition_no, epoch"
        ))
        .bind::<Text, _>(replica)
        .bind::<BigInt, _>(micros_of(ttl))
        .load(&mut conn)
        .await?;
        Ok(into_leases(rows))
    }

    /// Takes up to `max` partitions that nobody holds, each under a new
    /// epoch. Replicas acquiring at once skip each other's rows.
    pub async fn acquire_leases(
        &self,
        replica: &str,
        max: usize,
        ttl: Duration,
    ) -> Result<Vec<Lease>, StorageError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.connections.get().await?;
        let rows: Vec<LeaseRow> = sql_query(format!(
            "UPDATE partition_leases SET owner = $1, epoch = epoch + 1, \
                 expires_at_us = {PG_NOW_US} + $3 \
             WHERE partition_no IN ( \
                 SELECT partition_no FROM partition_leases \
                 WHERE owner IS NULL OR expires_at_us <= {PG_NOW_US} \
                 ORDER BY random() LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING partition_no, epoch"
        ))
        .bind::<Text, _>(replica)
        .bind::<BigInt, _>(i64::try_from(max).unwrap_or(i64::MAX))
        .bind::<BigInt, _>(micros_of(ttl))
        .load(&mut conn)
        .await?;
        Ok(into_leases(rows))
    }

    /// Gives up leases so that another replica can take them at once.
    pub async fn release_leases(
        &self,
        replica: &str,
        partitions: &[u16],
    ) -> Result<(), StorageError> {
        let partitions = partition_numbers(partitions);
        let mut conn = self.connections.get().await?;
        sql_query(
            "UPDATE partition_leases SET owner = NULL, expires_at_us = 0 \
             WHERE owner = $1 AND partition_no = ANY($2)",
        )
        .bind::<Text, _>(replica)
        .bind::<Array<Integer>, _>(partitions)
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    /// Leaves the cluster: no more heartbeat, every lease released.
    pub async fn leave_cluster(&self, replica: &str) -> Result<(), StorageError> {
        let mut conn = self.connections.get().await?;
        sql_query("UPDATE partition_leases SET owner = NULL, expires_at_us = 0 WHERE owner = $1")
            .bind::<Text, _>(replica)
            .execute(&mut conn)
            .await?;
        sql_query("DELETE FROM cluster_members WHERE replica_id = $1")
            .bind::<Text, _>(replica)
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}
