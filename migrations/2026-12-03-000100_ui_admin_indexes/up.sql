-- The web UI's reads: a person's own runs, newest first (home page), and the audit log filtered
-- by who acted (audit page, exports), each read along an index ordered the way the page shows it.
CREATE INDEX runs_created_by_idx ON runs (created_by, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq);
