-- The trace of the drift episode (W3C traceparent): the run it starts continues it.
ALTER TABLE episodes ADD COLUMN traceparent text;
