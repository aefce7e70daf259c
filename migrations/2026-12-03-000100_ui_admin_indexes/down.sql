DROP INDEX audit_log_actor_idx;
DROP INDEX runs_created_by_idx;
