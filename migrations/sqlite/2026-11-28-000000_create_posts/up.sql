-- Instants are microseconds since the Unix epoch (UTC) in both backends, so
-- the same query code and the same comparisons work on SQLite and PostgreSQL.
CREATE TABLE posts (
    id TEXT PRIMARY KEY NOT NULL,
    business_id TEXT NOT NULL,
    content_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    payload TEXT NOT NULL,
    scheduled_for_us BIGINT NOT NULL,
    time_zone TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at_us BIGINT NOT NULL,
    published_at_us BIGINT,
    external_id TEXT,
    version BIGINT NOT NULL,
    request_id TEXT,
    create_time_us BIGINT NOT NULL,
    update_time_us BIGINT NOT NULL,
    UNIQUE (business_id, request_id)
);

CREATE INDEX posts_by_instant ON posts (scheduled_for_us, id);
CREATE INDEX posts_by_business_instant ON posts (business_id, scheduled_for_us, id);
CREATE INDEX posts_pending_by_next_attempt ON posts (next_attempt_at_us)
    WHERE status IN ('SCHEDULED', 'RETRY_SCHEDULED');
CREATE INDEX posts_publishing ON posts (id) WHERE status = 'PUBLISHING';
