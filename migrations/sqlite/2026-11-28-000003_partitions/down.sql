DROP TABLE cluster_members;
DROP TABLE partition_leases;
ALTER TABLE posts DROP COLUMN claim_epoch;
ALTER TABLE posts DROP COLUMN partition_no;
