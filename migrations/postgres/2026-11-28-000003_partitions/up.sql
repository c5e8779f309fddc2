-- Posts belong to one of 64 partitions, fixed by the low six bits of the
-- post id (its random part); replicas own partitions, not posts.
ALTER TABLE posts ADD COLUMN partition_no INTEGER NOT NULL DEFAULT 0;
UPDATE posts SET partition_no =
    ((strpos('0123456789abcdef', lower(substr(id, length(id) - 1, 1))) - 1) % 4) * 16
    + (strpos('0123456789abcdef', lower(right(id, 1))) - 1);

-- The lease epoch under which a post was claimed: its fencing token.
ALTER TABLE posts ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;

CREATE INDEX posts_pending_by_partition ON posts (partition_no, next_attempt_at_us, id)
    WHERE status IN ('SCHEDULED', 'RETRY_SCHEDULED');
CREATE INDEX posts_publishing_by_partition ON posts (partition_no)
    WHERE status = 'PUBLISHING';

-- Which replica owns each partition, until when (database clock, µs since
-- the epoch), and the epoch that grows on every change of owner.
CREATE TABLE partition_leases (
    partition_no INTEGER PRIMARY KEY NOT NULL,
    owner TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_at_us BIGINT NOT NULL DEFAULT 0
);
INSERT INTO partition_leases (partition_no) SELECT generate_series(0, 63);

-- Live replicas, so that partitions are shared out among all of them.
CREATE TABLE cluster_members (
    replica_id TEXT PRIMARY KEY NOT NULL,
    expires_at_us BIGINT NOT NULL
);

-- Every pending post written by any replica reaches the replica that owns
-- its partition at once; the payload is "<id> <next attempt µs>".
CREATE FUNCTION punctual_notify_pending() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('punctual_posts', NEW.id || ' ' || NEW.next_attempt_at_us);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER posts_notify_insert AFTER INSERT ON posts
    FOR EACH ROW WHEN (NEW.status IN ('SCHEDULED', 'RETRY_SCHEDULED'))
    EXECUTE FUNCTION punctual_notify_pending();
CREATE TRIGGER posts_notify_update AFTER UPDATE ON posts
    FOR EACH ROW WHEN (NEW.status IN ('SCHEDULED', 'RETRY_SCHEDULED')
        AND (OLD.status IS DISTINCT FROM NEW.status
             OR OLD.next_attempt_at_us IS DISTINCT FROM NEW.next_attempt_at_us))
    EXECUTE FUNCTION punctual_notify_pending();
