CREATE TABLE raw_records (
    record_id text PRIMARY KEY,
    project text NOT NULL,
    project_version int NOT NULL,
    entity_id text NOT NULL,
    event_time timestamptz NOT NULL,
    fields jsonb NOT NULL,
    source text NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_records_by_project_time ON raw_records (project, event_time);

CREATE TABLE rejects (
    id bigserial PRIMARY KEY,
    project text,
    source text NOT NULL,
    reason text NOT NULL,
    payload jsonb,
    rejected_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE duplicates (
    project text PRIMARY KEY,
    count bigint NOT NULL
);
