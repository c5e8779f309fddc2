DROP TABLE engagement;
DROP TABLE posting_slots;
DROP TABLE queue_pauses;
DROP INDEX posts_dead_letters;
DROP INDEX posts_pending_by_business;
ALTER TABLE posts DROP COLUMN attempt_log;
