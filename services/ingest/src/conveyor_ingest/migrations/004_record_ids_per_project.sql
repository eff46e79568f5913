-- A record id is unique within its project, not across projects: two projects' producers may
-- well use the same ids. Announcements owed name their records within a scope, the project
-- (conveyor_db.announce); those owed from before are given theirs while ids are still unique
-- (a note names the records of one project).
ALTER TABLE announcements ADD COLUMN scope text NOT NULL DEFAULT '';
UPDATE announcements a
SET scope = coalesce((SELECT r.project FROM raw_records r WHERE r.record_id = a.keys[1]), '');

ALTER TABLE raw_records DROP CONSTRAINT raw_records_pkey;
ALTER TABLE raw_records ADD PRIMARY KEY (project, record_id);
