CREATE OR REPLACE FUNCTION punctual_notify_pending() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('punctual_posts', NEW.id || ' ' || NEW.next_attempt_at_us);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
