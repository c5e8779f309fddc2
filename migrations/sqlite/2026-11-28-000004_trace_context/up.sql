-- The W3C traceparent of the call that created the post, linked from its
-- publish spans. NULL for posts created before it was kept, or without
-- tracing.
ALTER TABLE posts ADD COLUMN trace_parent TEXT;
