-- Timers are loaded in pages ordered by (next attempt, id): one index serves
-- both the order and the page boundary.
CREATE INDEX posts_pending_by_next_attempt_id ON posts (next_attempt_at_us, id)
    WHERE status IN ('SCHEDULED', 'RETRY_SCHEDULED');
DROP INDEX posts_pending_by_next_attempt;
