-- Who made each change: the name of the token that called (recorded by the registry, never
-- taken from a request body).
ALTER TABLE projects ADD COLUMN applied_by text;
ALTER TABLE model_versions ADD COLUMN registered_by text;

-- Changes to a project that its approval mode holds for an approver: a spec that would take the
-- project out of approval mode waits here until someone other than its author accepts it.
CREATE TABLE project_changes (
    id bigserial PRIMARY KEY,
    project text NOT NULL,
    spec jsonb NOT NULL,
    spec_sha256 text NOT NULL,
    requested_by text NOT NULL,
    reason text NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'approved', 'rejected', 'superseded')),
    decided_by text,
    decision_reason text,
    decided_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX project_changes_once ON project_changes (project, spec_sha256)
    WHERE state = 'pending';
