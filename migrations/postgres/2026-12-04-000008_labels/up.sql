-- Caller-chosen labels of a post, as a JSON object with keys in order and
-- no spaces (`{"campaign":"spring"}`); list filters match it with LIKE.
ALTER TABLE posts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
