-- Quality: the findings a record was accepted with, why a record was rejected (contract or
-- quality), and each project's profile (what its accepted records usually look like).
ALTER TABLE raw_records ADD COLUMN flags text[] NOT NULL DEFAULT '{}';
ALTER TABLE rejects ADD COLUMN stage text NOT NULL DEFAULT 'contract';

CREATE TABLE profiles (
    project text PRIMARY KEY,
    profile jsonb NOT NULL,
    built_at timestamptz NOT NULL
);

-- Profiles are built from a project's first (or newest) records by arrival.
CREATE INDEX raw_records_by_project_arrival ON raw_records (project, ingested_at);
