-- What the MLflow REST API needs beyond Custody's own tables.

-- An MLflow experiment is a project. Experiment names MLflow users write (`/Shared/churn`) are
-- not project names: such a project keeps the name it was created under here (its project name
-- is a slug of it). Experiment tags are the project's MLflow tags.
ALTER TABLE projects
    ADD COLUMN mlflow_name text UNIQUE CHECK (mlflow_name <> '' AND length(mlflow_name) <= 500),
    ADD COLUMN mlflow_tags jsonb NOT NULL DEFAULT '{}';

-- MLflow deletes runs softly: a deleted run leaves MLflow's searches and can be restored. The
-- record stays (a governance log does not forget a run); the time says when it was deleted.
ALTER TABLE runs ADD COLUMN deleted_at timestamptz;

-- MLflow 3 logged models: a named folder of a run's files (`mlflow-models/<id>/`) with a status,
-- params and tags. A model version registered from one takes that folder's files.
CREATE TABLE mlflow_logged_models (
    id text PRIMARY KEY CHECK (id ~ '^m-[0-9a-f]{32}$'),
    project_id uuid NOT NULL REFERENCES projects (id),
    run_id uuid NOT NULL REFERENCES runs (id),
    name text NOT NULL,
    model_type text,
    status text NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    params jsonb NOT NULL DEFAULT '{}',
    tags jsonb NOT NULL DEFAULT '{}',
    created_by uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mlflow_logged_models_project ON mlflow_logged_models (project_id, created_at DESC);
CREATE INDEX mlflow_logged_models_run ON mlflow_logged_models (run_id);

-- `log-outputs`: the logged models a run produced, at a step.
CREATE TABLE mlflow_run_outputs (
    run_id uuid NOT NULL REFERENCES runs (id),
    logged_model_id text NOT NULL REFERENCES mlflow_logged_models (id),
    step bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, logged_model_id)
);

-- `log-inputs`: MLflow's description of a dataset version. Its digest is MLflow's fingerprint
-- of the data, not a content hash, so the dataset version's SHA-256 is that of this description.
CREATE TABLE mlflow_datasets (
    dataset_version_id uuid PRIMARY KEY REFERENCES dataset_versions (id),
    name text NOT NULL,
    digest text NOT NULL,
    source_type text NOT NULL,
    source text NOT NULL,
    schema text,
    profile text
);

-- The tags of a run's input (`mlflow.data.context` = `training`, …).
CREATE TABLE mlflow_run_inputs (
    run_id uuid NOT NULL REFERENCES runs (id),
    dataset_version_id uuid NOT NULL REFERENCES dataset_versions (id),
    tags jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, dataset_version_id)
);
