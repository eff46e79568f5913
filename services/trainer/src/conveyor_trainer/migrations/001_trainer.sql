CREATE TABLE examples (
    project text NOT NULL,
    example_id text NOT NULL,
    source text NOT NULL CHECK (source IN ('record', 'feedback')),
    observed_at timestamptz NOT NULL,
    arrived_at timestamptz NOT NULL DEFAULT now(),
    feature_names text[] NOT NULL,
    values float8[] NOT NULL,
    label text NOT NULL,
    PRIMARY KEY (project, example_id)
);
CREATE INDEX examples_by_time ON examples (project, observed_at);
CREATE INDEX examples_by_arrival ON examples (project, arrived_at);

CREATE TABLE runs (
    run_id text PRIMARY KEY,
    project text NOT NULL,
    trigger text NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    reason text NOT NULL DEFAULT '',
    params jsonb NOT NULL DEFAULT '{}',
    metrics jsonb NOT NULL DEFAULT '{}',
    champion_metrics jsonb NOT NULL DEFAULT '{}',
    model_version int,
    promoted boolean NOT NULL DEFAULT false,
    training_rows int NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    logs text NOT NULL DEFAULT ''
);
CREATE INDEX runs_by_project ON runs (project, started_at);
-- At most one active run per project, whatever the number of replicas.
CREATE UNIQUE INDEX one_active_run ON runs (project) WHERE status = 'running';

CREATE TABLE requests (
    request_id text PRIMARY KEY,
    project text NOT NULL,
    run_id text,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE episodes (
    episode_id text PRIMARY KEY,
    project text NOT NULL,
    onset_at timestamptz NOT NULL,
    opened_at timestamptz NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'started', 'closed')),
    run_id text,
    note text NOT NULL DEFAULT ''
);
