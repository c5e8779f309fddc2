DROP INDEX posts_by_request_id;
ALTER TABLE posts ADD CONSTRAINT posts_business_id_request_id_key UNIQUE (business_id, request_id);

ALTER TABLE posts
    ALTER COLUMN id TYPE TEXT COLLATE "default",
    ALTER COLUMN business_id TYPE TEXT COLLATE "default",
    ALTER COLUMN request_id TYPE TEXT COLLATE "default";
