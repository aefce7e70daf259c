DROP TRIGGER runs_no_truncate ON runs;
DROP TRIGGER runs_no_delete ON runs;
DROP TRIGGER runs_identity_fixed ON runs;
ALTER TABLE run_metrics ADD CONSTRAINT run_metrics_run_id_fkey
    FOREIGN KEY (run_id) REFERENCES runs (id);
