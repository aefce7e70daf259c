-- Downstream walks (impact analysis) read only an edge's source: covered by the index on its
-- target, they never touch the table (an index-only scan per level).
DROP INDEX lineage_edges_to_idx;
CREATE INDEX lineage_edges_to_idx ON lineage_edges (to_id) INCLUDE (from_kind, from_id);
