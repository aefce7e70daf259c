DELETE FROM outbox WHERE kind = 'openlineage';
ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check,
    ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('email', 'webhook'));
DELETE FROM lineage_edges WHERE from_kind = 'job' OR to_kind = 'job';
ALTER TABLE lineage_edges
    DROP CONSTRAINT lineage_edges_from_kind_check,
    DROP CONSTRAINT lineage_edges_to_kind_check,
    ADD CONSTRAINT lineage_edges_from_kind_check CHECK (from_kind IN
        ('dataset_version', 'code_commit', 'run', 'model_version', 'deployment')),
    ADD CONSTRAINT lineage_edges_to_kind_check CHECK (to_kind IN
        ('dataset_version', 'code_commit', 'run', 'model_version', 'deployment'));
DROP TABLE dataset_recalls;
DROP TABLE openlineage_events;
DROP TABLE openlineage_datasets;
DROP TABLE openlineage_runs;
DROP TABLE jobs;
