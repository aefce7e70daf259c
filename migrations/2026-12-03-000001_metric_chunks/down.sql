DROP TABLE run_metric_chunks;
ALTER TABLE run_latest_metrics
    DROP COLUMN points,
    DROP COLUMN earliest_value,
    DROP COLUMN earliest_step,
    DROP COLUMN earliest_at;
