CREATE OR REPLACE FUNCTION punctual_notify_pending() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('punctual_posts', NEW.id || ' ' || NEW.next_attempt_at_us);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE INDEX posts_pending_by_partition ON posts (partition_no, next_attempt_at_us, id)
    WHERE status IN ('SCHEDULED', 'RETRY_SCHEDULED');
