CREATE TABLE predictions (
    request_id text PRIMARY KEY,
    project text NOT NULL,
    entity_id text NOT NULL,
    model_version int,
    feature_names text[] NOT NULL,
    values float8[] NOT NULL,
    predicted text,
    served_at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

-- Every label ever given, corrections included; the newest per request counts.
CREATE TABLE labels (
    feedback_id text PRIMARY KEY,
    request_id text NOT NULL REFERENCES predictions (request_id),
    project text NOT NULL,
    label text NOT NULL,
    correct boolean NOT NULL,
    submitted_at timestamptz NOT NULL,
    labeled_at timestamptz NOT NULL DEFAULT now(),
    delay_s float8 NOT NULL
);
CREATE INDEX labels_by_request ON labels (request_id, labeled_at);

-- Feedback whose prediction has not arrived yet; it waits up to the horizon.
CREATE TABLE pending (
    feedback_id text PRIMARY KEY,
    request_id text NOT NULL,
    project text NOT NULL,
    label text NOT NULL,
    submitted_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload bytea NOT NULL
);
CREATE INDEX pending_by_request ON pending (request_id);
