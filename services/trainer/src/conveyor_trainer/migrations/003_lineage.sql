-- Where each example was read (its topic, partition and offset): a training set's identity is
-- the offset ranges its examples came from, so it can be read again to reproduce a model.
ALTER TABLE examples ADD COLUMN topic text;
ALTER TABLE examples ADD COLUMN "partition" int;
ALTER TABLE examples ADD COLUMN "offset" bigint;
-- What started a run, structured (kind: person, request, drift, schedule), and its variant.
ALTER TABLE runs ADD COLUMN trigger_info jsonb NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN variant jsonb;
ALTER TABLE runs ADD COLUMN duration_s float8;
CREATE INDEX runs_by_finish ON runs (project, finished_at);
ALTER TABLE runs ADD COLUMN experiment_id text;
CREATE INDEX runs_by_experiment ON runs (experiment_id) WHERE experiment_id IS NOT NULL;

-- The project's fixed regression set: the holdout of its first successful run, never trained on
-- afterwards; every later candidate and the champion are also judged on it.
CREATE TABLE regression_sets (
    project text PRIMARY KEY,
    set_id text NOT NULL,
    run_id text NOT NULL,
    example_ids text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
