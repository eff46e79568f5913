-- Online store: each entity's recent records (only the fields per-entity features need).
CREATE TABLE entity_events (
    project text NOT NULL,
    entity_id text NOT NULL,
    record_id text NOT NULL,
    event_time timestamptz NOT NULL,
    values jsonb NOT NULL,
    PRIMARY KEY (project, entity_id, record_id)
);
CREATE INDEX entity_events_by_time ON entity_events (project, entity_id, event_time);

-- Offline store: one feature row per record, as of its event time.
CREATE TABLE rows (
    project text NOT NULL,
    record_id text NOT NULL,
    entity_id text NOT NULL,
    project_version int NOT NULL,
    event_time timestamptz NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    feature_names text[] NOT NULL,
    values float8[] NOT NULL,
    label text,
    PRIMARY KEY (project, record_id)
);
CREATE INDEX rows_by_entity_time ON rows (project, entity_id, event_time);
