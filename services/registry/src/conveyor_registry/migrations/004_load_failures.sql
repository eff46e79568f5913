-- Versions serving could not load, as its replicas reported them on serving.events: one row per
-- report, keyed by the event's id so that a report delivered again changes nothing. No foreign
-- key: a replica may report a version of another registry's changelog, and the report is kept
-- as it came.
CREATE TABLE load_failures (
    event_id text PRIMARY KEY,
    project text NOT NULL,
    version int NOT NULL,
    alias text NOT NULL,
    sha256 text NOT NULL,
    reason text NOT NULL,
    replica text NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX load_failures_by_version ON load_failures (project, version, occurred_at);
