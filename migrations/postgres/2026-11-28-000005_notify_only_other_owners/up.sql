-- A replica arms the timers of its own partitions directly; only a post
-- written by another replica (or by a session that does not say who it is)
-- needs a notification. Fewer notifications matter: every transaction that
-- notifies takes one cluster-wide lock at commit.
CREATE OR REPLACE FUNCTION punctual_notify_pending() RETURNS trigger AS $$
DECLARE
    writer TEXT := nullif(current_setting('punctual.replica_id', true), '');
BEGIN
    IF writer IS NULL OR writer IS DISTINCT FROM
        (SELECT owner FROM partition_leases WHERE partition_no = NEW.partition_no)
    THEN
        PERFORM pg_notify('punctual_posts', NEW.id || ' ' || NEW.next_attempt_at_us);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

-- Timer loading filters partitions on the rows of the pending index; a
-- second pending index per partition cost every insert more than it saved.
DROP INDEX posts_pending_by_partition;
