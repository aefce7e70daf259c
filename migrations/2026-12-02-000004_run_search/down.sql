DROP INDEX run_params_key_value_idx;
DROP TABLE run_latest_metrics;
