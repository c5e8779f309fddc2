-- Posts belong to one of 64 partitions, fixed by the low six bits of the
-- post id (its random part). A SQLite database has one process, which owns
-- every partition; the columns keep one schema for both backends.
ALTER TABLE posts ADD COLUMN partition_no INTEGER NOT NULL DEFAULT 0;
UPDATE posts SET partition_no =
    ((instr('0123456789abcdef', lower(substr(id, -2, 1))) - 1) % 4) * 16
    + (instr('0123456789abcdef', lower(substr(id, -1, 1))) - 1);
ALTER TABLE posts ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE partition_leases (
    partition_no INTEGER PRIMARY KEY NOT NULL,
    owner TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    expires_at_us BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE cluster_members (
    replica_id TEXT PRIMARY KEY NOT NULL,
    expires_at_us BIGINT NOT NULL
);
