-- Every column that holds one of a fixed set of values says so: the lineage node kinds were the
-- last without a CHECK (roles, statuses, decisions, vias, outbox kinds and checkpoint reasons
-- have had theirs since they were created). The values are those of the Rust enums
-- (`lineage::NodeKind`), which refuse to read anything else.
ALTER TABLE lineage_edges
    ADD CONSTRAINT lineage_edges_from_kind_check CHECK (from_kind IN
        ('dataset_version', 'code_commit', 'run', 'model_version', 'deployment')),
    ADD CONSTRAINT lineage_edges_to_kind_check CHECK (to_kind IN
        ('dataset_version', 'code_commit', 'run', 'model_version', 'deployment'));
