-- Which trainer process runs a run: with several replicas, a run is abandoned only when the
-- process that owns it is gone (it no longer holds its advisory lock), never by a replica that
-- merely started.
ALTER TABLE runs ADD COLUMN owner text;
