-- A feature row revised by late records replaces the example's values (highest revision).
ALTER TABLE examples ADD COLUMN revision int NOT NULL DEFAULT 0;
