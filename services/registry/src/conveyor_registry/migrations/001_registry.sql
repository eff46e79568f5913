CREATE TABLE projects (
    name text NOT NULL,
    version int NOT NULL,
    spec jsonb NOT NULL,
    spec_sha256 text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE model_versions (
    project text NOT NULL,
    version int NOT NULL,
    run_id text NOT NULL,
    project_version int NOT NULL,
    status text NOT NULL CHECK (status IN ('ready', 'failed')),
    failure_reason text,
    artifact bytea,
    sha256 text,
    metrics jsonb NOT NULL DEFAULT '{}',
    signature jsonb NOT NULL DEFAULT '{}',
    profile jsonb NOT NULL DEFAULT '{}',
    lineage jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project, version),
    UNIQUE (project, run_id)
);

CREATE TABLE aliases (
    project text NOT NULL,
    alias text NOT NULL,
    version int NOT NULL,
    PRIMARY KEY (project, alias)
);

CREATE TABLE alias_history (
    id bigserial PRIMARY KEY,
    project text NOT NULL,
    alias text NOT NULL,
    from_version int,
    to_version int NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alias_history_by_alias ON alias_history (project, alias, id);
