-- Promotions a project's policy holds for approval, and what became of them.
CREATE TABLE promotion_requests (
    id bigserial PRIMARY KEY,
    project text NOT NULL,
    alias text NOT NULL,
    version int NOT NULL,
    requested_by text NOT NULL,
    reason text NOT NULL,
    evidence jsonb NOT NULL DEFAULT '{}',
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'approved', 'rejected', 'superseded')),
    decided_by text,
    decision_reason text,
    decided_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX promotion_requests_pending ON promotion_requests (project, alias) WHERE state = 'pending';
-- One open request per version and alias: asking twice is the same request.
CREATE UNIQUE INDEX promotion_requests_once ON promotion_requests (project, alias, version)
    WHERE state = 'pending';

-- A version exists from the moment a run starts training it (pending), then becomes ready or
-- failed exactly once.
ALTER TABLE model_versions DROP CONSTRAINT model_versions_status_check;
ALTER TABLE model_versions ADD CONSTRAINT model_versions_status_check
    CHECK (status IN ('pending', 'ready', 'failed'));
