//! Chart series of metric histories: at most `maxPoints` points per (run, key), downsampled so
//! spikes survive, without reading a long history whole.
//!
//! A series short enough (`EXACT_UP_TO` points) is read and cut into buckets of consecutive
//! points in step order. A longer one is answered from the chunk summaries that `logMetrics`
//! keeps (`run_metric_chunks`: every 32 and every 1,024 consecutive points as logged, with their
//! lowest and highest point) and from its first and last point (`run_latest_metrics`): about a
//! thousand rows for a million points. Either way each bucket keeps its lowest and highest point,
//! plus the series' first and last point, so no spike is averaged away.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Float8, Int2, Int4, Int8, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

use crate::db::{Conn, Prepared};
use crate::error::{Error, Result};
use crate::ids::RunId;

/// Default, and bounds, of a request: most runs and keys it names, and most points it may
/// answer in all.
pub const DEFAULT_HISTORY_POINTS: i32 = 1_000;
const HISTORY_MAX_RUNS: usize = 50;
const HISTORY_MAX_KEYS: usize = 50;
const HISTORY_MAX_TOTAL_POINTS: usize = 50_000;

/// Series up to this many points are bucketed from their points; longer ones from chunks. At
/// this size both cost about the same; beyond it, reading points grows with the history.
const EXACT_UP_TO: i64 = 32_768;

/// The chunk sizes `logMetrics` summarises, as powers of two (32 and 1,024 points); the
/// migration `metric_chunks` names the same.
const FINE_LEVEL: i16 = 5;
const COARSE_LEVEL: i16 = 10;

/// Points to append, as columns (one entry per point), of one run or several.
#[derive(Default)]
pub struct Points {
    pub runs: Vec<RunId>,
    pub keys: Vec<String>,
    pub values: Vec<f64>,
    pub steps: Vec<i64>,
    pub ats: Vec<DateTime<Utc>>,
}

impl Points {
    pub fn with_capacity(n: usize) -> Self {
        Points {
            runs: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            steps: Vec::with_capacity(n),
            ats: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, run: RunId, key: String, value: f64, step: i64, at: DateTime<Utc>) {
        self.runs.push(run);
        self.keys.push(key);
        self.values.push(value);
        self.steps.push(step);
        self.ats.push(at);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn point(&self, i: usize) -> Point {
        Point {
            step: self.steps[i],
            value: self.values[i],
            at: self.ats[i],
        }
    }
}

/// One batch of points summarised per series (run and key), in (run, key) order: how many
/// points, the first (lowest step, then time, then value) and the latest (highest step, then
/// time, then value). As arrays, for the statement that upserts `run_latest_metrics`.
#[derive(Default)]
pub struct BatchSeries {
    pub runs: Vec<RunId>,
    pub keys: Vec<String>,
    pub points: Vec<i64>,
    pub latest_values: Vec<f64>,
    pub latest_steps: Vec<i64>,
    pub latest_ats: Vec<DateTime<Utc>>,
    pub earliest_values: Vec<f64>,
    pub earliest_steps: Vec<i64>,
    pub earliest_ats: Vec<DateTime<Utc>>,
}

impl BatchSeries {
    pub fn of(batch: &Points) -> Self {
        // (run, key) → (count, earliest, latest)
        let mut by_series: BTreeMap<(RunId, &str), (i64, Point, Point)> = BTreeMap::new();
        for (i, key) in batch.keys.iter().enumerate() {
            let point = batch.point(i);
            let entry = by_series
                .entry((batch.runs[i], key))
                .or_insert((0, point, point));
            entry.0 += 1;
            if point.along(&entry.1).is_lt() {
                entry.1 = point;
            }
            if point.along(&entry.2).is_gt() {
                entry.2 = point;
            }
        }
        let mut series = BatchSeries::default();
        for ((run, key), (points, earliest, latest)) in by_series {
            series.runs.push(run);
            series.keys.push(key.to_owned());
            series.points.push(points);
            series.latest_values.push(latest.value);
            series.latest_steps.push(latest.step);
            series.latest_ats.push(latest.at);
            series.earliest_values.push(earliest.value);
            series.earliest_steps.push(earliest.step);
            series.earliest_ats.push(earliest.at);
        }
        series
    }
}

/// The lowest and highest point of one chunk of a series, and how many points it holds.
struct ChunkSummary {
    points: i32,
    low: Point,
    high: Point,
}

/// Folds a logged batch into the chunk summaries of its series. `counts` is each series' point
/// count including this batch (from the `run_latest_metrics` upsert), so the batch's points of a
/// series are numbered `count - n … count - 1` in the order they were given. Computed here,
/// upserted in one statement: a few dozen rows for a batch of 1,000 points.
pub async fn record_chunks(
    conn: &mut Conn,
    batch: &Points,
    counts: &HashMap<(RunId, String), i64>,
) -> Result<()> {
    let mut in_batch: HashMap<(RunId, &str), i64> = HashMap::new();
    for (run, key) in batch.runs.iter().zip(&batch.keys) {
        *in_batch.entry((*run, key)).or_default() += 1;
    }
    // The next number of each series' points.
    let mut next: HashMap<(RunId, &str), i64> = in_batch
        .iter()
        .map(|(&(run, key), n)| {
            let count = counts.get(&(run, key.to_owned())).copied().unwrap_or(*n);
            ((run, key), count - n)
        })
        .collect();
    let mut chunks: BTreeMap<(RunId, &str, i16, i64), ChunkSummary> = BTreeMap::new();
    for (i, key) in batch.keys.iter().enumerate() {
        let run = batch.runs[i];
        let number = next
            .get_mut(&(run, key.as_str()))
            .expect("every series is counted");
        let point = batch.point(i);
        for level in [FINE_LEVEL, COARSE_LEVEL] {
            let summary =
                chunks
                    .entry((run, key, level, *number >> level))
                    .or_insert(ChunkSummary {
                        points: 0,
                        low: point,
                        high: point,
                    });
            summary.points += 1;
            if point.value < summary.low.value {
                summary.low = point;
            }
            if point.value > summary.high.value {
                summary.high = point;
            }
        }
        *number += 1;
    }
    let mut rows = ChunkRows::default();
    for ((run, key, level, chunk), summary) in chunks {
        rows.push(run, key, level, chunk, &summary);
    }
    // Rows in (run, key, level, chunk) order: concurrent batches lock them in the same order.
    Prepared(
        diesel::sql_query(
            "INSERT INTO run_metric_chunks AS c
             (run_id, key, level, chunk, points, min_value, min_step, min_at,
              max_value, max_step, max_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::int8[], $5::int4[],
             $6::float8[], $7::int8[], $8::timestamptz[], $9::float8[], $10::int8[],
             $11::timestamptz[])
         ON CONFLICT (run_id, key, level, chunk) DO UPDATE
         SET points = c.points + EXCLUDED.points,
             min_value = LEAST(c.min_value, EXCLUDED.min_value),
             min_step = CASE WHEN EXCLUDED.min_value < c.min_value
                 THEN EXCLUDED.min_step ELSE c.min_step END,
             min_at = CASE WHEN EXCLUDED.min_value < c.min_value
                 THEN EXCLUDED.min_at ELSE c.min_at END,
             max_value = GREATEST(c.max_value, EXCLUDED.max_value),
             max_step = CASE WHEN EXCLUDED.max_value > c.max_value
                 THEN EXCLUDED.max_step ELSE c.max_step END,
             max_at = CASE WHEN EXCLUDED.max_value > c.max_value
                 THEN EXCLUDED.max_at ELSE c.max_at END",
        )
        .bind::<Array<SqlUuid>, _>(&rows.runs)
        .bind::<Array<Text>, _>(&rows.keys)
        .bind::<Array<Int2>, _>(&rows.levels)
        .bind::<Array<Int8>, _>(&rows.chunks)
        .bind::<Array<Int4>, _>(&rows.points)
        .bind::<Array<Float8>, _>(&rows.min_values)
        .bind::<Array<Int8>, _>(&rows.min_steps)
        .bind::<Array<Timestamptz>, _>(&rows.min_ats)
        .bind::<Array<Float8>, _>(&rows.max_values)
        .bind::<Array<Int8>, _>(&rows.max_steps)
        .bind::<Array<Timestamptz>, _>(&rows.max_ats),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Chunk summaries as column arrays, for one `unnest`.
#[derive(Default)]
struct ChunkRows<'a> {
    runs: Vec<RunId>,
    keys: Vec<&'a str>,
    levels: Vec<i16>,
    chunks: Vec<i64>,
    points: Vec<i32>,
    min_values: Vec<f64>,
    min_steps: Vec<i64>,
    min_ats: Vec<DateTime<Utc>>,
    max_values: Vec<f64>,
    max_steps: Vec<i64>,
    max_ats: Vec<DateTime<Utc>>,
}

impl<'a> ChunkRows<'a> {
    fn push(&mut self, run: RunId, key: &'a str, level: i16, chunk: i64, summary: &ChunkSummary) {
        self.runs.push(run);
        self.keys.push(key);
        self.levels.push(level);
        self.chunks.push(chunk);
        self.points.push(summary.points);
        self.min_values.push(summary.low.value);
        self.min_steps.push(summary.low.step);
        self.min_ats.push(summary.low.at);
        self.max_values.push(summary.high.value);
        self.max_steps.push(summary.high.step);
        self.max_ats.push(summary.high.at);
    }
}

/// A checked request for chart series: the keys, and at most how many points per series.
pub struct HistoryRequest {
    keys: Vec<String>,
    max_points: i32,
}

impl HistoryRequest {
    /// Checks the bounds: 1 to 50 runs (`runs` named), 1 to 50 keys, 4 to 10,000 points per
    /// series (default 1,000), and runs × keys × points ≤ 50,000.
    pub fn new(runs: usize, keys: Vec<String>, max_points: Option<i32>) -> Result<Self> {
        let max_points = max_points.unwrap_or(DEFAULT_HISTORY_POINTS);
        if runs == 0 || runs > HISTORY_MAX_RUNS {
            return Err(Error::invalid(format!(
                "runIds must name 1 to {HISTORY_MAX_RUNS} runs"
            )));
        }
        if keys.is_empty() || keys.len() > HISTORY_MAX_KEYS {
            return Err(Error::invalid(format!(
                "keys must name 1 to {HISTORY_MAX_KEYS} metric keys"
            )));
        }
        if !(4..=10_000).contains(&max_points) {
            return Err(Error::invalid(format!(
                "maxPoints must be between 4 and 10000, got {max_points}"
            )));
        }
        let total = runs * keys.len() * max_points as usize;
        if total > HISTORY_MAX_TOTAL_POINTS {
            return Err(Error::invalid(format!(
                "runIds × keys × maxPoints is {total}; at most {HISTORY_MAX_TOTAL_POINTS} points per request"
            )));
        }
        Ok(HistoryRequest { keys, max_points })
    }

    /// Buckets of a downsampled series: two points each, plus the first and the last point.
    fn buckets(&self) -> usize {
        ((self.max_points as usize - 2) / 2).max(1)
    }
}

/// One metric of one run, as a chart needs it.
pub struct Series {
    pub run_id: RunId,
    pub key: String,
    /// How many points the whole history has.
    pub total_points: i64,
    /// Whether `points` is a downsampled selection.
    pub downsampled: bool,
    /// Ordered by step, then time.
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub step: i64,
    pub value: f64,
    pub at: DateTime<Utc>,
}

impl Point {
    fn order(&self) -> (i64, DateTime<Utc>) {
        (self.step, self.at)
    }

    /// Orders points along a series: by step, then time, then value (the rule
    /// `run_latest_metrics` keeps the latest value by).
    fn along(&self, other: &Point) -> std::cmp::Ordering {
        self.order()
            .cmp(&other.order())
            .then(self.value.total_cmp(&other.value))
    }
}

/// The history of each (run, key) series of `run_ids` (already authorized) that has points, in
/// at most `max_points` points, ordered by run and key.
pub async fn metric_history(
    conn: &mut Conn,
    run_ids: &[RunId],
    request: &HistoryRequest,
) -> Result<Vec<Series>> {
    let series = series_of(conn, run_ids, &request.keys).await?;
    let (exact, summarised): (Vec<&SeriesEnds>, Vec<&SeriesEnds>) =
        series.iter().partition(|s| s.points <= EXACT_UP_TO);
    let mut answered = bucketed_points(conn, &exact, request).await?;
    answered.extend(from_chunks(conn, &summarised, request).await?);
    answered.sort_by(|a, b| (a.run_id, &a.key).cmp(&(b.run_id, &b.key)));
    Ok(answered)
}

/// A series' size and its first and last point, as `logMetrics` keeps them.
#[derive(QueryableByName)]
struct SeriesEnds {
    #[diesel(sql_type = SqlUuid)]
    run_id: RunId,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Int8)]
    points: i64,
    #[diesel(sql_type = Float8)]
    earliest_value: f64,
    #[diesel(sql_type = Int8)]
    earliest_step: i64,
    #[diesel(sql_type = Timestamptz)]
    earliest_at: DateTime<Utc>,
    #[diesel(sql_type = Float8)]
    value: f64,
    #[diesel(sql_type = Int8)]
    step: i64,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

async fn series_of(conn: &mut Conn, run_ids: &[RunId], keys: &[String]) -> Result<Vec<SeriesEnds>> {
    Ok(Prepared(diesel::sql_query(
        "SELECT run_id, key, points, earliest_value, earliest_step, earliest_at, value, step, at
         FROM run_latest_metrics WHERE run_id = ANY($1) AND key = ANY($2)",
    )
    .bind::<Array<SqlUuid>, _>(run_ids)
    .bind::<Array<Text>, _>(keys)
    ).load(conn)
    .await?)
}

#[derive(QueryableByName)]
struct SeriesPoint {
    #[diesel(sql_type = SqlUuid)]
    run_id: RunId,
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Int8)]
    step: i64,
    #[diesel(sql_type = Float8)]
    value: f64,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// Short series from their points: one that fits is answered whole; a longer one is cut into
/// buckets of consecutive points (by step, then time), keeping the lowest and highest point of
/// each bucket plus the first and last point. One statement for all of them.
async fn bucketed_points(
    conn: &mut Conn,
    series: &[&SeriesEnds],
    request: &HistoryRequest,
) -> Result<Vec<Series>> {
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let run_ids: Vec<RunId> = series.iter().map(|s| s.run_id).collect();
    let keys: Vec<&str> = series.iter().map(|s| s.key.as_str()).collect();
    let rows: Vec<SeriesPoint> = Prepared(diesel::sql_query(
        "WITH points AS (
           SELECT m.run_id, m.key, step, value, at,
                  row_number() OVER (PARTITION BY m.run_id, m.key ORDER BY step, at) - 1 AS i,
                  count(*) OVER (PARTITION BY m.run_id, m.key) AS total
           FROM unnest($1::uuid[], $2::text[]) AS s (run_id, key)
           JOIN run_metrics m ON m.run_id = s.run_id AND m.key = s.key
         ), bucketed AS (
           SELECT *, (i * $4) / total AS bucket FROM points
         ), ranked AS (
           SELECT *,
                  row_number() OVER (PARTITION BY run_id, key, bucket ORDER BY value, i) AS low,
                  row_number() OVER (PARTITION BY run_id, key, bucket ORDER BY value DESC, i) AS high
           FROM bucketed
         )
         SELECT run_id, key, step, value, at FROM ranked
         WHERE total <= $3 OR low = 1 OR high = 1 OR i = 0 OR i = total - 1
         ORDER BY run_id, key, step, at",
    )
    .bind::<Array<SqlUuid>, _>(&run_ids)
    .bind::<Array<Text>, _>(&keys)
    .bind::<Int8, _>(i64::from(request.max_points))
    .bind::<Int8, _>(request.buckets() as i64)
    ).load(conn)
    .await?;
    // Rows come ordered by run and key: each change of either starts a series.
    let mut answered: Vec<Series> = Vec::new();
    for row in rows {
        let continues = answered
            .last()
            .is_some_and(|s| s.run_id == row.run_id && s.key == row.key);
        if !continues {
            let total = series
                .iter()
                .find(|s| s.run_id == row.run_id && s.key == row.key)
                .map_or(0, |s| s.points);
            answered.push(Series {
                run_id: row.run_id,
                key: row.key.clone(),
                total_points: total,
                downsampled: total > i64::from(request.max_points),
                points: Vec::new(),
            });
        }
        answered
            .last_mut()
            .expect("a series is open")
            .points
            .push(Point {
                step: row.step,
                value: row.value,
                at: row.at,
            });
    }
    Ok(answered)
}

/// One chunk summary of a series.
#[derive(QueryableByName)]
struct Chunk {
    #[diesel(sql_type = SqlUuid)]
    run_id: RunId,
    #[diesel(sql_type = Text)]
    key: String,
    /// Its place in the series' logging order.
    #[diesel(sql_type = Int8)]
    chunk: i64,
    #[diesel(sql_type = Float8)]
    min_value: f64,
    #[diesel(sql_type = Int8)]
    min_step: i64,
    #[diesel(sql_type = Timestamptz)]
    min_at: DateTime<Utc>,
    #[diesel(sql_type = Float8)]
    max_value: f64,
    #[diesel(sql_type = Int8)]
    max_step: i64,
    #[diesel(sql_type = Timestamptz)]
    max_at: DateTime<Utc>,
}

/// Long series from their chunk summaries: the coarse chunks when there are enough of them to
/// fill every bucket, else the fine ones. The chunks, in logging order, are grouped into the
/// buckets; each bucket keeps the lowest and highest of its chunks' extremes.
async fn from_chunks(
    conn: &mut Conn,
    series: &[&SeriesEnds],
    request: &HistoryRequest,
) -> Result<Vec<Series>> {
    if series.is_empty() {
        return Ok(Vec::new());
    }
    let buckets = request.buckets();
    let level = |points: i64| {
        if (points >> COARSE_LEVEL) as usize >= buckets {
            COARSE_LEVEL
        } else {
            FINE_LEVEL
        }
    };
    let mut chunks: Vec<Chunk> = Vec::new();
    for chosen in [FINE_LEVEL, COARSE_LEVEL] {
        let at_level: Vec<&&SeriesEnds> = series
            .iter()
            .filter(|s| level(s.points) == chosen)
            .collect();
        if at_level.is_empty() {
            continue;
        }
        let run_ids: Vec<RunId> = at_level.iter().map(|s| s.run_id).collect();
        let keys: Vec<&str> = at_level.iter().map(|s| s.key.as_str()).collect();
        // `= ANY` on each column keeps the read on the primary key whatever the planner thinks
        // of the arrays; the pairs the arrays cross into are dropped below.
        let found: Vec<Chunk> = Prepared(diesel::sql_query(
            "SELECT run_id, key, chunk, min_value, min_step, min_at, max_value, max_step, max_at
             FROM run_metric_chunks
             WHERE run_id = ANY($1) AND key = ANY($2) AND level = $3",
        )
        .bind::<Array<SqlUuid>, _>(&run_ids)
        .bind::<Array<Text>, _>(&keys)
        .bind::<Int2, _>(chosen)
        ).load(conn)
        .await?;
        let wanted: HashSet<(RunId, &str)> = at_level
            .iter()
            .map(|s| (s.run_id, s.key.as_str()))
            .collect();
        chunks.extend(
            found
                .into_iter()
                .filter(|c| wanted.contains(&(c.run_id, c.key.as_str()))),
        );
    }
    // Ordered here rather than in SQL: a sort in the statement costs more than the read (it
    // spills to disk at 30,000 chunks).
    chunks.sort_unstable_by(|a, b| (a.run_id, &a.key, a.chunk).cmp(&(b.run_id, &b.key, b.chunk)));
    let by_series: HashMap<(RunId, &str), &SeriesEnds> = series
        .iter()
        .map(|s| ((s.run_id, s.key.as_str()), *s))
        .collect();
    let mut answered = Vec::with_capacity(series.len());
    for own in chunks.chunk_by(|a, b| a.run_id == b.run_id && a.key == b.key) {
        let Some(ends) = by_series.get(&(own[0].run_id, own[0].key.as_str())) else {
            continue;
        };
        answered.push(Series {
            run_id: ends.run_id,
            key: ends.key.clone(),
            total_points: ends.points,
            downsampled: true,
            points: extremes(ends, own, buckets),
        });
    }
    Ok(answered)
}

/// The first and last point of a series and the lowest and highest point of each bucket of its
/// chunks, ordered by step and time, without repeats.
fn extremes(ends: &SeriesEnds, chunks: &[Chunk], buckets: usize) -> Vec<Point> {
    let mut points = vec![
        Point {
            step: ends.earliest_step,
            value: ends.earliest_value,
            at: ends.earliest_at,
        },
        Point {
            step: ends.step,
            value: ends.value,
            at: ends.at,
        },
    ];
    let per_bucket = chunks.len().div_ceil(buckets).max(1);
    for bucket in chunks.chunks(per_bucket) {
        let low = bucket
            .iter()
            .min_by(|a, b| a.min_value.total_cmp(&b.min_value))
            .expect("a bucket has chunks");
        let high = bucket
            .iter()
            .max_by(|a, b| a.max_value.total_cmp(&b.max_value))
            .expect("a bucket has chunks");
        points.push(Point {
            step: low.min_step,
            value: low.min_value,
            at: low.min_at,
        });
        points.push(Point {
            step: high.max_step,
            value: high.max_value,
            at: high.max_at,
        });
    }
    points.sort_by(Point::along);
    points.dedup();
    points
}
