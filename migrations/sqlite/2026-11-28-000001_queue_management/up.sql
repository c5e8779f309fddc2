-- Every publish attempt of a post, as a JSON array, written in the same
-- compare-and-set that records the attempt's outcome.
ALTER TABLE posts ADD COLUMN attempt_log TEXT NOT NULL DEFAULT '[]';

CREATE INDEX posts_pending_by_business ON posts (business_id, next_attempt_at_us)
    WHERE status IN ('SCHEDULED', 'RETRY_SCHEDULED');
CREATE INDEX posts_dead_letters ON posts (business_id, scheduled_for_us, id)
    WHERE status = 'DEAD_LETTERED';

-- A paused business (platform = '') or one platform of it.
CREATE TABLE queue_pauses (
    business_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    pause_time_us BIGINT NOT NULL,
    PRIMARY KEY (business_id, platform)
);

-- Weekly posting slots of a business on a platform, as a JSON array of
-- {"weekday": 1-7, "time": "HH:MM"}.
CREATE TABLE posting_slots (
    business_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    slots TEXT NOT NULL,
    update_time_us BIGINT NOT NULL,
    PRIMARY KEY (business_id, platform)
);

-- What a published post achieved, reported by the caller.
CREATE TABLE engagement (
    post_id TEXT PRIMARY KEY NOT NULL,
    business_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    published_at_us BIGINT NOT NULL,
    impressions BIGINT NOT NULL,
    clicks BIGINT NOT NULL,
    reactions BIGINT NOT NULL,
    record_time_us BIGINT NOT NULL
);
CREATE INDEX engagement_by_business ON engagement (business_id, platform, published_at_us);
