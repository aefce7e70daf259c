-- Searching runs by metrics and params without scanning their histories.

-- The latest value of each metric of each run (highest step, then latest time, then highest
-- value on a tie), kept by the statement that logs metrics (`runs::log_metrics`), so filters and
-- sorts on a metric read one row per run instead of its whole history.
CREATE TABLE run_latest_metrics (
    run_id uuid NOT NULL REFERENCES runs (id),
    key text NOT NULL,
    value double precision NOT NULL,
    step bigint NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (run_id, key)
);
-- "Runs whose auc is above 0.9", "ordered by auc": a range of one key.
CREATE INDEX run_latest_metrics_key_value_idx ON run_latest_metrics (key, value, run_id);

INSERT INTO run_latest_metrics (run_id, key, value, step, at)
SELECT DISTINCT ON (run_id, key) run_id, key, value, step, at
FROM run_metrics
ORDER BY run_id, key, step DESC, at DESC, value DESC;

-- "Runs whose param depth is 6": one key's values.
CREATE INDEX run_params_key_value_idx ON run_params (key, value, run_id);
