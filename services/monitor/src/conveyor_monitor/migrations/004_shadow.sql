-- What challengers answered in shadow mode, and the true label of each labeled request: the
-- monitor compares a challenger with the champion on the same requests.
CREATE TABLE shadow (
    request_id text NOT NULL,
    project text NOT NULL,
    model_version int NOT NULL,
    predicted text,
    served_at timestamptz NOT NULL,
    PRIMARY KEY (request_id, model_version)
);
CREATE INDEX shadow_by_version ON shadow (project, model_version);
ALTER TABLE labels ADD COLUMN request_id text;
ALTER TABLE labels ADD COLUMN label text;
CREATE INDEX labels_by_request ON labels (request_id);
