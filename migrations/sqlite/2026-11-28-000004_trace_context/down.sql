ALTER TABLE posts DROP COLUMN trace_parent;
