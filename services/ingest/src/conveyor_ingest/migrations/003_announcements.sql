-- Records stored and not yet announced on records.accepted: one row per stored batch, deleted
-- once its announcements are acknowledged (conveyor_db.announce). Replaces the outbox for them.
CREATE TABLE announcements (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    keys text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
