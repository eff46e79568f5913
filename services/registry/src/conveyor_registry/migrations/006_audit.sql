-- The audit log: every change and who made it, as each service recorded it with the change
-- (audit.events, through its outbox). One row per event id: an event read twice is kept once.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    role text NOT NULL,
    via text NOT NULL,
    action text NOT NULL,
    project text,
    target text NOT NULL,
    reason text NOT NULL,
    request_id text,
    details jsonb NOT NULL DEFAULT '{}',
    source text NOT NULL
);
CREATE INDEX audit_log_project ON audit_log (project, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
