-- How many rows the reference accuracy was measured on (its uncertainty); NULL for references
-- stored before profiles recorded it.
ALTER TABLE refs ADD COLUMN holdout_rows int;
-- Which path judged a window: 'window' (a window tested alone) or 'sequential' (the evidence
-- accumulated across steps reached its threshold: the window spans the run of that evidence).
ALTER TABLE windows ADD COLUMN detector text NOT NULL DEFAULT 'window'
    CHECK (detector IN ('window', 'sequential'));
-- The sequential detectors of each judged version and kind: where they got to, their evidence
-- and baseline. Written in the evaluation's transaction, so a restart neither forgets evidence
-- nor raises an alarm twice.
CREATE TABLE sequences (
    project text NOT NULL,
    model_version int NOT NULL,
    kind text NOT NULL CHECK (kind IN ('data', 'performance')),
    last_seq bigint NOT NULL,
    state jsonb NOT NULL,
    evidence jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, model_version, kind)
);
