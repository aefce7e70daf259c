DROP TABLE governed_aliases;
DROP TABLE model_aliases;
ALTER TABLE model_versions DROP COLUMN tags;
ALTER TABLE models DROP COLUMN tags;
