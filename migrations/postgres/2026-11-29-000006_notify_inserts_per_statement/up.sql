-- Inserts are announced once per statement, over the statement's inserted
-- rows: a group of posts written in one INSERT calls the function once
-- instead of once per post. Updates keep their row trigger, whose WHEN
-- clause skips the rows that did not become pending without calling any
-- function at all.
DROP TRIGGER posts_notify_insert ON posts;

CREATE FUNCTION punctual_notify_inserted() RETURNS trigger AS $$
DECLARE
    writer TEXT := nullif(current_setting('punctual.replica_id', true), '');
BEGIN
    PERFORM pg_notify('punctual_posts', inserted.id || ' ' || inserted.next_attempt_at_us)
    FROM inserted_posts AS inserted
    LEFT JOIN partition_leases AS lease ON lease.partition_no = inserted.partition_no
    WHERE inserted.status IN ('SCHEDULED', 'RETRY_SCHEDULED')
        AND (writer IS NULL OR writer IS DISTINCT FROM lease.owner);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER posts_notify_insert AFTER INSERT ON posts
    REFERENCING NEW TABLE AS inserted_posts
    FOR EACH STATEMENT EXECUTE FUNCTION punctual_notify_inserted();
