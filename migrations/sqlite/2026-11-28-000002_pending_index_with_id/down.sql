CREATE INDEX posts_pending_by_next_attempt ON posts (next_attempt_at_us)
    WHERE status IN ('SCHEDULED', 'RETRY_SCHEDULED');
DROP INDEX posts_pending_by_next_attempt_id;
