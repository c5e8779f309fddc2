DROP TRIGGER posts_notify_update ON posts;
DROP TRIGGER posts_notify_insert ON posts;
DROP FUNCTION punctual_notify_pending();
DROP TABLE cluster_members;
DROP TABLE partition_leases;
DROP INDEX posts_publishing_by_partition;
DROP INDEX posts_pending_by_partition;
ALTER TABLE posts DROP COLUMN claim_epoch;
ALTER TABLE posts DROP COLUMN partition_no;
