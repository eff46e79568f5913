-- Who sent each label over HTTP (its token's name; none from Kafka, where the cluster's ACLs
-- say who may produce): the labels of a leaked browser token can be found and judged.
ALTER TABLE labels ADD COLUMN sent_by text;
ALTER TABLE pending ADD COLUMN sent_by text;
