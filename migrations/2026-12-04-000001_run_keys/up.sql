-- The keys a project's runs have used, in the search syntax (`metrics.auc`, `params.depth`,
-- `tags.team`): what the runs table offers as columns and the filter box completes. Kept by the
-- statements that add a key to a run (a run's first point of a metric, a new param, a tag set),
-- so listing them reads this small table instead of every run's metrics. A deleted tag's key
-- stays: it was used, and old runs may still be searched by it.
CREATE TABLE run_keys (
    project_id uuid NOT NULL REFERENCES projects (id),
    key text NOT NULL,
    PRIMARY KEY (project_id, key)
);

INSERT INTO run_keys (project_id, key)
SELECT DISTINCT r.project_id, 'metrics.' || m.key
FROM run_latest_metrics m JOIN runs r ON r.id = m.run_id
UNION
SELECT DISTINCT r.project_id, 'params.' || p.key
FROM run_params p JOIN runs r ON r.id = p.run_id
UNION
SELECT DISTINCT r.project_id, 'tags.' || t.key
FROM runs r, jsonb_object_keys(r.tags) AS t(key);
