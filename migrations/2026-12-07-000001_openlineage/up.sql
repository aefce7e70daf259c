-- OpenLineage ingest, impact analysis and dataset recall.

-- An OpenLineage job (a pipeline step: an Airflow task, a Spark job, a dbt model): a JOB
-- lineage node. Its (namespace, name) is its identity across events and projects.
CREATE TABLE jobs (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id),
    namespace   text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name)
);
CREATE INDEX jobs_project_idx ON jobs (project_id);

-- An OpenLineage run is a Custody run of its job; the client's runId finds it again.
CREATE TABLE openlineage_runs (
    openlineage_run_id  uuid PRIMARY KEY,
    run_id              uuid NOT NULL UNIQUE REFERENCES runs (id),
    job_id              uuid NOT NULL REFERENCES jobs (id)
);

-- The Custody dataset that stands for an OpenLineage dataset (namespace, name), wherever it is
-- named: one physical table is one dataset however many pipelines read it.
CREATE TABLE openlineage_datasets (
    namespace   text NOT NULL,
    name        text NOT NULL,
    dataset_id  uuid NOT NULL UNIQUE REFERENCES datasets (id),
    PRIMARY KEY (namespace, name)
);

-- Events already applied, by the SHA-256 of their canonical JSON: a replay changes nothing.
CREATE TABLE openlineage_events (
    sha256       text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- A dataset version found to hold data that may not be used. At most one recall is in force
-- per version; lifting it is a recorded decision of its own (who, when, why).
CREATE TABLE dataset_recalls (
    id                  uuid PRIMARY KEY,
    dataset_version_id  uuid NOT NULL REFERENCES dataset_versions (id),
    reason              text NOT NULL CHECK (length(btrim(reason)) > 0),
    recalled_by         uuid NOT NULL REFERENCES users (id),
    recalled_at         timestamptz NOT NULL DEFAULT now(),
    lifted_by           uuid REFERENCES users (id),
    lifted_at           timestamptz,
    lift_reason         text,
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL)
       AND (lifted_at IS NULL) = (lift_reason IS NULL))
);
CREATE UNIQUE INDEX dataset_recalls_in_force_idx ON dataset_recalls (dataset_version_id)
    WHERE lifted_at IS NULL;
CREATE INDEX dataset_recalls_version_idx ON dataset_recalls (dataset_version_id, recalled_at);

-- Lineage nodes gain the JOB kind.
ALTER TABLE lineage_edges
    DROP CONSTRAINT lineage_edges_from_kind_check,
    DROP CONSTRAINT lineage_edges_to_kind_check,
    ADD CONSTRAINT lineage_edges_from_kind_check CHECK (from_kind IN
        ('dataset_version', 'code_commit', 'run', 'model_version', 'deployment', 'job')),
    ADD CONSTRAINT lineage_edges_to_kind_check CHECK (to_kind IN
        ('dataset_version', 'code_commit', 'run', 'model_version', 'deployment', 'job'));

-- The outbox also carries OpenLineage events for a configured catalog (`openlineage::emit`).
ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check,
    ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('email', 'webhook', 'openlineage'));
