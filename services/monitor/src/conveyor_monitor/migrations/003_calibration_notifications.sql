-- The holdout's predicted class shares (prediction drift) and the calibration of the detectors
-- for this reference (window size, FDR level, the rates behind them).
ALTER TABLE refs ADD COLUMN predictions jsonb;
ALTER TABLE refs ADD COLUMN calibration jsonb;

-- Episodes opened and closed, to be posted to the project's webhooks. Written in the transaction
-- that opens or closes the episode; delivered (and retried) until the receiver answers 2xx.
CREATE TABLE notifications (
    id bigserial PRIMARY KEY,
    episode_id text NOT NULL,
    event text NOT NULL,
    url text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts int NOT NULL DEFAULT 0,
    next_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    failed_at timestamptz,
    last_error text,
    UNIQUE (episode_id, event, url)
);
CREATE INDEX notifications_due ON notifications (next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
