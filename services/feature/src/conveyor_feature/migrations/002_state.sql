-- Online state: each entity's newest record (by event time) for plain features.
CREATE TABLE entity_state (
    project text NOT NULL,
    entity_id text NOT NULL,
    record_id text NOT NULL,
    event_time timestamptz NOT NULL,
    fields jsonb NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, entity_id)
);

-- A row revised by a late record (within the allowed lateness) keeps its id; its revision and
-- write time move on.
ALTER TABLE rows ADD COLUMN revision int NOT NULL DEFAULT 0;
