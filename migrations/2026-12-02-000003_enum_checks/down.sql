ALTER TABLE lineage_edges
    DROP CONSTRAINT lineage_edges_to_kind_check,
    DROP CONSTRAINT lineage_edges_from_kind_check;
