DROP TABLE run_keys;
