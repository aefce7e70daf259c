DROP TABLE mlflow_run_inputs;
DROP TABLE mlflow_datasets;
DROP TABLE mlflow_run_outputs;
DROP TABLE mlflow_logged_models;
ALTER TABLE runs DROP COLUMN deleted_at;
ALTER TABLE projects DROP COLUMN mlflow_tags, DROP COLUMN mlflow_name;
