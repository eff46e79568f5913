-- The reference each project's champion is judged against (from the registry's profile).
CREATE TABLE refs (
    project text PRIMARY KEY,
    model_version int NOT NULL,
    feature_names text[] NOT NULL,
    sample float8[][] NOT NULL,
    holdout_accuracy float8 NOT NULL,
    activated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE observations (
    seq bigserial PRIMARY KEY,
    request_id text NOT NULL UNIQUE,
    project text NOT NULL,
    model_version int NOT NULL,
    values float8[] NOT NULL,
    predicted text,
    served_at timestamptz NOT NULL
);
CREATE INDEX observations_by_version ON observations (project, model_version, seq);

CREATE TABLE labels (
    seq bigserial PRIMARY KEY,
    feedback_id text NOT NULL UNIQUE,
    project text NOT NULL,
    model_version int NOT NULL,
    correct boolean NOT NULL,
    predicted_at timestamptz NOT NULL
);
CREATE INDEX labels_by_version ON labels (project, model_version, seq);

-- Where each kind of window has got to, per project and version: state survives restarts.
CREATE TABLE cursors (
    project text NOT NULL,
    model_version int NOT NULL,
    kind text NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (project, model_version, kind)
);

CREATE TABLE windows (
    id bigserial PRIMARY KEY,
    project text NOT NULL,
    model_version int NOT NULL,
    kind text NOT NULL CHECK (kind IN ('data', 'performance')),
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    size int NOT NULL,
    drifted boolean NOT NULL,
    evidence jsonb NOT NULL
);
CREATE INDEX windows_by_version ON windows (project, model_version, id);

CREATE TABLE episodes (
    episode_id text PRIMARY KEY,
    project text NOT NULL,
    model_version int NOT NULL,
    state text NOT NULL CHECK (state IN ('open', 'closed')),
    opened_at timestamptz NOT NULL,
    onset_at timestamptz NOT NULL,
    evidence jsonb NOT NULL,
    closed_at timestamptz,
    reason text
);
CREATE UNIQUE INDEX one_open_episode ON episodes (project, model_version) WHERE state = 'open';
