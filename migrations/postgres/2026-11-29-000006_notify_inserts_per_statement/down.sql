DROP TRIGGER posts_notify_insert ON posts;
DROP FUNCTION punctual_notify_inserted();
CREATE TRIGGER posts_notify_insert AFTER INSERT ON posts
    FOR EACH ROW WHEN (NEW.status IN ('SCHEDULED', 'RETRY_SCHEDULED'))
    EXECUTE FUNCTION punctual_notify_pending();
