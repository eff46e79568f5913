-- The precision the reference's rows were stored at; live values are brought to it before they
-- are compared. References stored before profiles named it were rounded to 6 decimals.
ALTER TABLE refs ADD COLUMN precision text NOT NULL DEFAULT 'decimals6';
