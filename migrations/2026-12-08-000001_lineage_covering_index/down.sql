DROP INDEX lineage_edges_to_idx;
CREATE INDEX lineage_edges_to_idx ON lineage_edges (to_id);
