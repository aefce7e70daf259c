-- A pipeline's output versions are found by their identity (the digest of a version facet, a
-- content hash, or the producing run): without this index each lookup read every version of the
-- dataset, and a table a pipeline writes daily gains a version a day.
CREATE INDEX dataset_versions_identity_idx ON dataset_versions (dataset_id, sha256);
