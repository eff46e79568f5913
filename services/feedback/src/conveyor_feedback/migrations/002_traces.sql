-- The trace each prediction was served in and each feedback arrived in (W3C traceparent): a
-- joined label's span links to its prediction's, so an SRE walks from one to the other.
ALTER TABLE predictions ADD COLUMN traceparent text;
ALTER TABLE pending ADD COLUMN traceparent text;
