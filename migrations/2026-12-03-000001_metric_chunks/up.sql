-- Charts of long metric histories without reading them whole.
--
-- Each series (run, key) numbers its points in the order they were logged (0, 1, 2, ...);
-- `run_latest_metrics.points` is how many it has, so the statement that logs a batch
-- (`runs::log_metrics`) knows the numbers of its new points, and `earliest_*` is its first point
-- (lowest step, then time), as the latest columns are its last. Every run of 2^level consecutive
-- numbers is a chunk, summarised at two levels (32 and 1,024 points) by its count and its
-- lowest and highest point. `metric_history` answers a long series from these summaries (about a
-- thousand rows for a million points) instead of sorting every point.
ALTER TABLE run_latest_metrics
    ADD COLUMN points bigint NOT NULL DEFAULT 0,
    ADD COLUMN earliest_value double precision,
    ADD COLUMN earliest_step bigint,
    ADD COLUMN earliest_at timestamptz;

CREATE TABLE run_metric_chunks (
    run_id uuid NOT NULL REFERENCES runs (id),
    key text NOT NULL,
    level smallint NOT NULL CHECK (level IN (5, 10)),
    chunk bigint NOT NULL,
    points integer NOT NULL,
    min_value double precision NOT NULL,
    min_step bigint NOT NULL,
    min_at timestamptz NOT NULL,
    max_value double precision NOT NULL,
    max_step bigint NOT NULL,
    max_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, key, level, chunk)
);

-- Existing histories: numbered by step and time, as nothing recorded their logging order.
WITH numbered AS (
    SELECT run_id, key, value, step, at,
           row_number() OVER (PARTITION BY run_id, key ORDER BY step, at) - 1 AS n
    FROM run_metrics
), chunked AS (
    SELECT numbered.*, level, n >> level AS chunk
    FROM numbered CROSS JOIN (VALUES (5::smallint), (10::smallint)) AS levels (level)
), lows AS (
    SELECT DISTINCT ON (run_id, key, level, chunk) run_id, key, level, chunk, value, step, at
    FROM chunked ORDER BY run_id, key, level, chunk, value, step, at
), highs AS (
    SELECT DISTINCT ON (run_id, key, level, chunk) run_id, key, level, chunk, value, step, at
    FROM chunked ORDER BY run_id, key, level, chunk, value DESC, step, at
), counts AS (
    SELECT run_id, key, level, chunk, count(*) AS points
    FROM chunked GROUP BY run_id, key, level, chunk
)
INSERT INTO run_metric_chunks
SELECT c.run_id, c.key, c.level, c.chunk, c.points,
       l.value, l.step, l.at, h.value, h.step, h.at
FROM counts c
JOIN lows l USING (run_id, key, level, chunk)
JOIN highs h USING (run_id, key, level, chunk);

UPDATE run_latest_metrics latest
SET points = counted.points, earliest_value = first.value, earliest_step = first.step,
    earliest_at = first.at
FROM (SELECT run_id, key, count(*) AS points FROM run_metrics GROUP BY run_id, key) counted,
     (SELECT DISTINCT ON (run_id, key) run_id, key, value, step, at
      FROM run_metrics ORDER BY run_id, key, step, at, value) first
WHERE latest.run_id = counted.run_id AND latest.key = counted.key
  AND latest.run_id = first.run_id AND latest.key = first.key;

ALTER TABLE run_latest_metrics
    ALTER COLUMN earliest_value SET NOT NULL,
    ALTER COLUMN earliest_step SET NOT NULL,
    ALTER COLUMN earliest_at SET NOT NULL,
    ALTER COLUMN points DROP DEFAULT;
