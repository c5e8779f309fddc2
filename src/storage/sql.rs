//! SQL that diesel's DSL does not write for us: conditions written as text
//! around one bound value, statements kept prepared by their text, and the
//! conditions every query of pending posts shares.

use std::borrow::Cow;

use diesel::QueryResult;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};

use crate::domain::PostStatus;

/// A condition written as SQL, around at most one bound text (the
/// replica's name). Conditions that depend on the backend, on fencing or on
/// a set of statuses all have this shape.
///
/// Unlike diesel's `sql()` literals, which make every statement that holds
/// one be parsed and planned anew on each call, a statement holding these is
/// prepared once per connection and reused: the text is this module's own,
/// never a caller's, so the text alone names the statement.
#[derive(Debug, Clone)]
pub(super) struct SqlCondition {
    pub(super) before: Cow<'static, str>,
    pub(super) bind: Option<String>,
    pub(super) after: Cow<'static, str>,
}

impl SqlCondition {
    /// A condition with nothing bound.
    pub(super) fn literal(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            before: sql.into(),
            bind: None,
            after: "".into(),
        }
    }

    /// `before`, the bound text, then `after`.
    pub(super) fn around(
        before: impl Into<Cow<'static, str>>,
        bind: String,
        after: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            before: before.into(),
            bind: Some(bind),
            after: after.into(),
        }
    }

    /// Always true.
    pub(super) fn none() -> Self {
        Self::literal("1 = 1")
    }

    /// `status IN (…)`, with the statuses written out: they are the
    /// domain's own names, and a partial index on pending posts matches only
    /// a condition written as literals.
    pub(super) fn status_in(statuses: &[PostStatus]) -> Self {
        if statuses.is_empty() {
            return Self::literal("1 = 0");
        }
        Self::literal(format!("status IN ({})", quoted_names(statuses)))
    }

    /// `status IN (…)` in a form no index matches, for a statement that
    /// must find its rows by id. Matching the partial index of pending posts
    /// lets PostgreSQL plan a claim of 256 ids as a scan of every pending
    /// post due by the claim's instant: statistics gathered before a burst
    /// of new posts count a few dozen where there are 10,000, and each one
    /// scanned also locks its lease row (measured: 51 ms a claim on average
    /// instead of 18). The instant's condition is written `+ 0` for the same
    /// reason.
    pub(super) fn status_in_unindexed(statuses: &[PostStatus]) -> Self {
        Self::literal(format!(
            "(posts.status || '') IN ({})",
            quoted_names(statuses)
        ))
    }
}

/// `'SCHEDULED', 'RETRY_SCHEDULED'`: statuses as SQL string literals.
fn quoted_names(statuses: &[PostStatus]) -> String {
    let names: Vec<String> = statuses
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    names.join(", ")
}

impl diesel::expression::Expression for SqlCondition {
    type SqlType = diesel::sql_types::Bool;
}

impl<QS> diesel::expression::AppearsOnTable<QS> for SqlCondition {}

impl<QS> diesel::expression::SelectableExpression<QS> for SqlCondition {}

impl diesel::expression::ValidGrouping<()> for SqlCondition {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl QueryId for SqlCondition {
    type QueryId = ();
    // Keyed by its SQL text in the statement caches.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for SqlCondition
where
    DB: diesel::backend::Backend + diesel::sql_types::HasSqlType<diesel::sql_types::Text>,
    String: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(&self.before);
        if let Some(bind) = &self.bind {
            out.push_bind_param::<diesel::sql_types::Text, String>(bind)?;
        }
        out.push_sql(&self.after);
        Ok(())
    }
}

/// A statement to prepare once per connection and reuse, keyed by its SQL
/// text. diesel prepares every UPDATE anew on each call (it marks them all
/// uncacheable, because optional changesets vary the text under one type),
/// and likewise anything holding a `sql()` literal or `sql_query`: on the
/// fire path that was a parse and plan per post. Wrap only statements whose
/// text this module writes and whose number of shapes is small: every
/// distinct text stays in the connection's cache.
#[derive(Debug, Clone)]
pub(super) struct ReusedStatement<Q>(pub(super) Q);

impl<Q: Query> Query for ReusedStatement<Q> {
    type SqlType = Q::SqlType;
}

// For the synchronous SQLite connection on a blocking thread; the async
// `RunQueryDsl` covers every type already.
impl<Q, Conn> diesel::RunQueryDsl<Conn> for ReusedStatement<Q> {}

impl<Q> QueryId for ReusedStatement<Q> {
    type QueryId = ();
    // Keyed by its SQL text, never by its type.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, DB> QueryFragment<DB> for ReusedStatement<Q>
where
    Q: QueryFragment<DB>,
    DB: diesel::backend::Backend,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

/// `status` is pending, written out as literals: SQLite uses a partial index
/// only when the query's condition matches the index's own condition, which
/// a bound parameter never does (PostgreSQL's generic plans likewise).
pub(super) fn is_pending() -> SqlCondition {
    SqlCondition::status_in(&PostStatus::PENDING)
}

/// The post's business, and its platform, are not paused.
macro_rules! not_paused {
    () => {{
        use $crate::storage::schema::{posts, queue_pauses};
        diesel::dsl::not(diesel::dsl::exists(
            queue_pauses::table
                .filter(queue_pauses::business_id.eq(posts::business_id))
                .filter(
                    queue_pauses::platform
                        .eq("")
                        .or(queue_pauses::platform.eq(posts::platform)),
                ),
        ))
    }};
}
pub(super) use not_paused;

/// Partition numbers as the database stores them.
pub(super) fn partition_numbers(partitions: &[u16]) -> Vec<i32> {
    partitions.iter().copied().map(i32::from).collect()
}
