-- The trace each prediction was served in and each label recorded in (W3C traceparent): a drift
-- episode's span links to the requests behind it.
ALTER TABLE observations ADD COLUMN traceparent text;
ALTER TABLE labels ADD COLUMN traceparent text;
