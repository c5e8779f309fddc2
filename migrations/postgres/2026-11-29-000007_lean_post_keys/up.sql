-- Posts' identifiers compare byte by byte (collation "C") whatever the
-- database's default collation, as SQLite compares them: every index entry
-- written or looked up compares with memcmp instead of the locale's strcoll,
-- and listings order ids the same way on both backends.
ALTER TABLE posts
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN business_id TYPE TEXT COLLATE "C",
    ALTER COLUMN request_id TYPE TEXT COLLATE "C";

-- A post without a request id can never conflict on one, so only posts
-- with a request id get an entry in its unique index.
ALTER TABLE posts DROP CONSTRAINT posts_business_id_request_id_key;
CREATE UNIQUE INDEX posts_by_request_id ON posts (business_id, request_id)
    WHERE request_id IS NOT NULL;
