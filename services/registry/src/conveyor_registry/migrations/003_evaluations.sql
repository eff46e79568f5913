-- What a request to the model looks like (a few holdout inputs by feature name), and its
-- metrics on named datasets (holdout, regression set), the champion's beside them.
ALTER TABLE model_versions ADD COLUMN input_example jsonb NOT NULL DEFAULT '[]';
ALTER TABLE model_versions ADD COLUMN evaluations jsonb NOT NULL DEFAULT '{}';
