-- MLflow's registered-model names carry no project: a bare name is resolved on every registry
-- request across the caller's projects. Without this index that was a probe per project.
CREATE INDEX models_name ON models (name);
