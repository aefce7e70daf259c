DROP TABLE audit_archives;
DROP TABLE audit_checkpoints;
DROP INDEX audit_log_at_idx;
ALTER TABLE users DROP COLUMN is_auditor;
