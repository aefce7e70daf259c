//! From parsed filters and order keys to one bound SQL statement, for any searched table (a
//! [`Subject`]): conditions, sort expressions, keyset cursors. User text only ever reaches
//! PostgreSQL as bind parameters; the statement's text is assembled from fixed fragments.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::row::NamedRow;
use diesel::sql_types::{Array, Float8, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::Value;
use uuid::Uuid;

use super::filter::{
    check_operand, parse_filter, parse_order_key, Comparison, Entity, Key, Literal, Op, OrderKey,
    SyntaxError, ValueType,
};
use crate::db::{Conn, Prepared};
use crate::error::{Error, Result};
use crate::ids::TypedId;
use crate::projects::Readable;
use crate::runs::RunStatus;

/// The most order keys a search takes (the row id always breaks ties last).
pub const MAX_ORDER_KEYS: usize = 5;
const MAX_CURSOR_CHARS: usize = 8_000;

/// What a search searches: its tables and columns (fixed SQL text, never user input) and the
/// attributes a filter may name.
pub struct Subject {
    /// The rows, e.g. `runs r`.
    pub from: &'static str,
    /// The searched row's columns in the result, e.g. `r.*`.
    pub row: &'static str,
    pub id: &'static str,
    pub project: &'static str,
    pub tags: &'static str,
    /// The run whose metrics and params `metrics.` and `params.` mean; `None`: not searchable.
    pub run: Option<&'static str>,
    pub attributes: &'static [AttributeSpec],
}

/// One attribute: its names (MLflow's first), column, type and how it compares.
pub struct AttributeSpec {
    pub names: &'static [&'static str],
    pub column: &'static str,
    pub value_type: ValueType,
    pub rule: Rule,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Plain,
    /// Run statuses as MLflow writes them (`FINISHED`), stored as Custody's (`finished`).
    RunStatus,
    /// A model version's aliases, free or governed (follows its stage): `=` and `IN` only, not
    /// sortable.
    Alias,
    /// A model name as MLflow's API writes it, bare or qualified with its project: a value
    /// holding `separator` compares with `qualified` (the expression of
    /// `<project><separator><model>`), any other with the attribute's column; sorts on the column.
    QualifiedName {
        qualified: &'static str,
        separator: char,
    },
}

impl Subject {
    fn attribute(&self, key: &Key) -> Result<&AttributeSpec, SyntaxError> {
        let name = key.name.to_ascii_lowercase();
        self.attributes
            .iter()
            .find(|a| a.names.contains(&name.as_str()))
            .ok_or_else(|| {
                let known: Vec<&str> = self.attributes.iter().map(|a| a.names[0]).collect();
                SyntaxError::at(
                    key.column,
                    format!(
                        "unknown attribute `{}`: expected one of {}",
                        key.name,
                        known.join(", ")
                    ),
                )
            })
    }

    fn run_column(&self, key: &Key) -> Result<&'static str, SyntaxError> {
        self.run.ok_or_else(|| {
            SyntaxError::at(
                key.column,
                format!("`{key}`: only runs and model versions have {}", key.entity),
            )
        })
    }
}

/// A checked search: what to match, in what order, from where.
#[derive(Debug, Clone)]
pub struct Search {
    clauses: Vec<Comparison>,
    order: Vec<SortKey>,
    after: Option<Vec<Value>>,
    limit: i64,
}

#[derive(Debug, Clone)]
struct SortKey {
    key: Key,
    value_type: ValueType,
    descending: bool,
}

/// A filter or order error as the API shows it: which input, which column, what is wrong.
fn invalid(what: &str, err: SyntaxError) -> Error {
    Error::invalid(format!("{what}: {err}"))
}

impl Search {
    /// Parses and checks the filter (MLflow syntax), the order keys (`metrics.auc DESC`), the
    /// cursor of the previous page and the page size, against what `subject` holds.
    pub fn new(
        subject: &Subject,
        filter: Option<&str>,
        order_by: &[String],
        after: Option<&str>,
        limit: i64,
    ) -> Result<Self> {
        let clauses = parse_filter(filter.unwrap_or_default())
            .map_err(|e| invalid("filter", e))?
            .clauses;
        // Everything a clause needs beyond its syntax (an attribute of this subject, a status
        // name, a time, an id) is checked now, so a bad one is a clear error before any SQL runs.
        for clause in &clauses {
            condition(subject, clause, &mut Statement::default())
                .map_err(|e| invalid("filter", e))?;
        }
        if order_by.len() > MAX_ORDER_KEYS {
            return Err(Error::invalid(format!(
                "orderBy takes at most {MAX_ORDER_KEYS} keys"
            )));
        }
        let order = order_by
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let what = format!("orderBy[{i}]");
                let OrderKey { key, descending } =
                    parse_order_key(text).map_err(|e| invalid(&what, e))?;
                let value_type = sort_type(subject, &key).map_err(|e| invalid(&what, e))?;
                Ok(SortKey {
                    key,
                    value_type,
                    descending,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let after = after
            .map(|cursor| decode_cursor(cursor, &order))
            .transpose()?;
        Ok(Search {
            clauses,
            order,
            after,
            limit,
        })
    }

    /// The statement: the rows of the readable projects that match, in order, after the cursor,
    /// at most `limit + 1` of them (the extra one says that another page follows), each with the
    /// sort values its cursor is made of (column `sort_values`).
    ///
    /// Ordered by a metric or param first, the statement is two ordered halves: the rows that
    /// have the key, read along its `(key, value, run_id)` index from the right end and stopping
    /// after one page, then — only if that page is not full — those without it (NULLs sort
    /// last). One ordered LEFT JOIN would instead look up the key for every matching row and
    /// sort them all (100,000 runs: about 100 ms instead of a few).
    pub fn statement(&self, subject: &Subject, readable: &Readable) -> Statement {
        let mut st = Statement::default();
        let readable = st.readable(subject.project, readable);
        // Per order key: its join (metrics and params) and its expression.
        let mut joins: Vec<Option<(&'static str, String)>> = Vec::with_capacity(self.order.len());
        let mut sort_exprs = Vec::with_capacity(self.order.len());
        for (i, sort) in self.order.iter().enumerate() {
            let key = &sort.key;
            let expr = match key.entity {
                Entity::Metric | Entity::Param => {
                    let run = subject.run.expect("checked in Search::new");
                    let table = table_of(key.entity);
                    let name = st.bind(Bind::Text(key.name.clone()));
                    joins.push(Some((
                        table,
                        format!("s{i}.run_id = {run} AND s{i}.key = {name}"),
                    )));
                    format!("s{i}.value")
                }
                Entity::Tag => {
                    joins.push(None);
                    let name = st.bind(Bind::Text(key.name.clone()));
                    format!("({} ->> {name})", subject.tags)
                }
                Entity::Attribute => {
                    joins.push(None);
                    subject
                        .attribute(key)
                        .expect("checked in Search::new")
                        .column
                        .to_owned()
                }
            };
            sort_exprs.push(expr);
        }
        let mut conditions = vec![readable];
        for clause in &self.clauses {
            conditions.push(condition(subject, clause, &mut st).expect("checked in Search::new"));
        }
        if let Some(after) = &self.after {
            conditions.push(self.after_cursor(subject, after, &sort_exprs, &mut st));
        }
        let direction = |key: &SortKey| if key.descending { "DESC" } else { "ASC" };
        let mut order: Vec<String> = sort_exprs
            .iter()
            .zip(&self.order)
            .map(|(expr, key)| format!("{expr} {} NULLS LAST", direction(key)))
            .collect();
        order.push(format!("{} DESC", subject.id));
        // As text, each in a form its type parses back from exactly (see `SortValues`): cheaper
        // for PostgreSQL than a JSON array per row (`jsonb_build_array` was a tenth of its work in
        // a search of 100 versions), and parsed only for the cursors asked for.
        let cursor_values: Vec<String> = sort_exprs
            .iter()
            .zip(self.order.iter().map(|k| k.value_type))
            .chain([(&subject.id.to_owned(), ValueType::Id)])
            .map(|(expr, value_type)| as_text(expr, value_type))
            .collect();
        let limit = st.bind(Bind::Int(self.limit + 1));
        let join_sql = |kind: &str, skip_first: bool| -> String {
            joins
                .iter()
                .enumerate()
                .skip(usize::from(skip_first))
                .filter_map(|(i, join)| {
                    join.as_ref()
                        .map(|(table, on)| format!(" {kind} {table} s{i} ON {on}"))
                })
                .collect()
        };
        let select = |columns: &str, joins: &str, extra: &[String], order: &[String]| {
            let mut all = conditions.clone();
            all.extend_from_slice(extra);
            format!(
                "SELECT {}, ARRAY[{}] AS sort_values{columns} FROM {}{joins} WHERE {} ORDER BY {} LIMIT {limit}",
                subject.row,
                cursor_values.join(", "),
                subject.from,
                all.join(" AND "),
                order.join(", "),
            )
        };
        let Some(Some((table, on))) = <[_]>::first(&joins) else {
            st.sql = select("", &join_sql("LEFT JOIN", false), &[], &order);
            return st;
        };
        let first = &self.order[0];
        let others = join_sql("LEFT JOIN", true);
        // The first half: only rows with the key, in the index's own order (no NULLs here, so
        // the NULLS placement that the index cannot promise is left out), from the cursor on.
        let mut with_key_order = order.clone();
        with_key_order[0] = format!("s0.value {}", direction(first));
        let mut from_cursor = Vec::new();
        if let Some(after) = &self.after {
            match &after[0] {
                Value::Null => from_cursor.push("FALSE".to_owned()),
                value => {
                    let bound = st.bind_json(first.value_type, value);
                    let cmp = if first.descending { "<=" } else { ">=" };
                    from_cursor.push(format!("s0.value {cmp} {bound}"));
                }
            }
        }
        let columns = |half: u8| {
            let keys: String = sort_exprs
                .iter()
                .enumerate()
                .map(|(i, expr)| format!(", {expr} AS search_k{i}"))
                .collect();
            format!(", {half} AS search_half{keys}, {} AS search_id", subject.id)
        };
        let with_key = select(
            &columns(0),
            &format!(" JOIN {table} s0 ON {on}{others}"),
            &from_cursor,
            &with_key_order,
        );
        let without_key = select(
            &columns(1),
            &format!(" LEFT JOIN {table} s0 ON {on}{others}"),
            &["s0.run_id IS NULL".to_owned()],
            &order,
        );
        let mut outer_order = vec!["search_half".to_owned()];
        outer_order.extend(
            self.order
                .iter()
                .enumerate()
                .map(|(i, key)| format!("search_k{i} {} NULLS LAST", direction(key))),
        );
        outer_order.push("search_id DESC".to_owned());
        // The second half runs only when the first did not fill the page (an InitPlan gate):
        // it is an anti-join over every matching row, the cost the first half avoids.
        st.sql = format!(
            "WITH with_key AS MATERIALIZED ({with_key}) \
             SELECT * FROM (SELECT * FROM with_key UNION ALL \
             SELECT * FROM ({without_key}) without_key \
             WHERE (SELECT count(*) FROM with_key) < {limit}) hits \
             ORDER BY {} LIMIT {limit}",
            outer_order.join(", ")
        );
        st
    }

    /// Rows strictly after the cursor in the sort order: for some key, equal on every key before
    /// it and after it on that one. NULLs sort last in both directions.
    fn after_cursor(
        &self,
        subject: &Subject,
        after: &[Value],
        sort_exprs: &[String],
        st: &mut Statement,
    ) -> String {
        let mut alternatives = Vec::new();
        let mut equal_so_far: Vec<String> = Vec::new();
        for ((expr, key), value) in sort_exprs.iter().zip(&self.order).zip(after) {
            if value.is_null() {
                // After a NULL come only the other NULLs (with later tie-breaks).
                equal_so_far.push(format!("{expr} IS NULL"));
                continue;
            }
            let bound = st.bind_json(key.value_type, value);
            let cmp = if key.descending { "<" } else { ">" };
            let mut alternative = equal_so_far.clone();
            alternative.push(format!("({expr} {cmp} {bound} OR {expr} IS NULL)"));
            alternatives.push(format!("({})", alternative.join(" AND ")));
            equal_so_far.push(format!("{expr} = {bound}"));
        }
        let id = after.last().expect("cursor holds the row id");
        let id = st.bind_json(ValueType::Id, id);
        equal_so_far.push(format!("{} < {id}", subject.id));
        alternatives.push(format!("({})", equal_so_far.join(" AND ")));
        format!("({})", alternatives.join(" OR "))
    }
}

/// A sort value as text that parses back to exactly that value: numbers in PostgreSQL's shortest
/// exact form, times in RFC 3339 (UTC, microseconds), ids and text as they are.
fn as_text(expr: &str, value_type: ValueType) -> String {
    match value_type {
        ValueType::Time => {
            format!("to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        }
        ValueType::Number | ValueType::Id | ValueType::Text => format!("({expr})::text"),
    }
}

/// A found row's sort values as the statement gave them (text, NULL for none), in the order's
/// keys then the row id.
type SortValues = Vec<Option<String>>;

/// A page of search hits. The cursor after a row is made from its sort values only when asked
/// for: MLflow's answers carry one (after the last row), not one per row.
pub struct Page<T> {
    pub rows: Vec<T>,
    sort_values: Vec<SortValues>,
    /// The type of each sort value (the order's keys, then the id).
    types: Vec<ValueType>,
    pub has_next: bool,
}

impl<T> Page<T> {
    /// The cursor of the next page (MLflow's `next_page_token`), if one follows.
    pub fn next_cursor(&self) -> Option<String> {
        self.has_next
            .then(|| self.sort_values.last().map(|v| self.cursor(v)))
            .flatten()
    }

    /// Each row with the cursor after it (GraphQL's edges).
    pub fn with_cursors(self) -> impl Iterator<Item = (T, String)> {
        let cursors: Vec<String> = self.sort_values.iter().map(|v| self.cursor(v)).collect();
        self.rows.into_iter().zip(cursors)
    }

    fn cursor(&self, values: &SortValues) -> String {
        let values = values
            .iter()
            .zip(&self.types)
            .map(|(value, value_type)| match (value, value_type) {
                (None, _) => Value::Null,
                (Some(n), ValueType::Number) => n
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number),
                (Some(text), _) => Value::String(text.clone()),
            })
            .collect();
        encode_cursor(&Value::Array(values))
    }
}

/// One row of a search's result: the searched row and its sort values (the cursor). Written
/// out because diesel's derive does not take a type parameter in an embedded field.
struct Hit<T> {
    row: T,
    sort_values: SortValues,
}

impl<T: QueryableByName<Pg>> QueryableByName<Pg> for Hit<T> {
    fn build<'a>(row: &impl NamedRow<'a, Pg>) -> diesel::deserialize::Result<Self> {
        Ok(Hit {
            row: T::build(row)?,
            sort_values: NamedRow::get::<Array<Nullable<Text>>, SortValues>(row, "sort_values")?,
        })
    }
}

/// Runs `search` over the rows of `subject` in the projects the caller may read.
pub async fn page<T>(
    conn: &mut Conn,
    subject: &Subject,
    readable: &Readable,
    search: &Search,
) -> Result<Page<T>>
where
    T: QueryableByName<Pg> + Send + 'static,
{
    let statement = search.statement(subject, readable);
    let hits: Vec<Hit<T>> = if prepared_shape(&statement.sql) {
        Prepared(statement.query()).load(conn).await?
    } else {
        statement.query().load(conn).await?
    };
    let has_next = hits.len() as i64 > search.limit;
    let (rows, sort_values) = hits
        .into_iter()
        .take(search.limit as usize)
        .map(|hit| (hit.row, hit.sort_values))
        .unzip();
    let types = search
        .order
        .iter()
        .map(|key| key.value_type)
        .chain([ValueType::Id])
        .collect();
    Ok(Page {
        rows,
        sort_values,
        types,
        has_next,
    })
}

/// How many distinct search statements a process prepares (per connection).
///
/// A statement's text depends only on the search's shape — which keys, operators and order, never
/// the values, which are bound — so the few shapes a dashboard or an MLflow client repeats are
/// parsed and planned once per connection instead of on every call (a third of PostgreSQL's work
/// in a search of 100 model versions). Shapes beyond the bound run unprepared, as any one-off
/// query does: a caller inventing shapes cannot grow the connections' statement caches.
const MAX_PREPARED_SHAPES: usize = 64;

/// Whether this statement text is one of the process's prepared shapes (admitting it while
/// there is room).
fn prepared_shape(sql: &str) -> bool {
    static SHAPES: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
    admit_shape(
        &mut SHAPES.lock().unwrap_or_else(PoisonError::into_inner),
        sql,
    )
}

fn admit_shape(shapes: &mut HashSet<String>, sql: &str) -> bool {
    if shapes.contains(sql) {
        return true;
    }
    shapes.len() < MAX_PREPARED_SHAPES && shapes.insert(sql.to_owned())
}

/// What an order key sorts on, checked against the subject.
fn sort_type(subject: &Subject, key: &Key) -> Result<ValueType, SyntaxError> {
    match key.entity {
        Entity::Metric => subject.run_column(key).map(|_| ValueType::Number),
        Entity::Param => subject.run_column(key).map(|_| ValueType::Text),
        Entity::Tag => Ok(ValueType::Text),
        Entity::Attribute => {
            let attribute = subject.attribute(key)?;
            if attribute.rule == Rule::Alias {
                return Err(SyntaxError::at(
                    key.column,
                    format!("`{key}` filters but does not sort"),
                ));
            }
            Ok(attribute.value_type)
        }
    }
}

/// The opaque cursor of a row: its sort values (a JSON array).
pub fn encode_cursor(sort_values: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sort_values.to_string())
}

/// The sort values a cursor carries, checked against the order's keys (a cursor from another
/// order, or edited by hand, is refused rather than half-understood).
fn decode_cursor(cursor: &str, order: &[SortKey]) -> Result<Vec<Value>> {
    let refuse =
        || Error::invalid("after: not a cursor of this search (take it from the previous page)");
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(refuse());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| refuse())?;
    let Ok(Value::Array(values)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(refuse());
    };
    if values.len() != order.len() + 1 {
        return Err(refuse());
    }
    let types = order
        .iter()
        .map(|key| (key.value_type, true))
        .chain([(ValueType::Id, false)]);
    for ((value_type, nullable), value) in types.zip(&values) {
        let fits = match (value_type, value) {
            (_, Value::Null) => nullable,
            (ValueType::Number, Value::Number(n)) => n.as_f64().is_some_and(f64::is_finite),
            (ValueType::Text, Value::String(_)) => true,
            (ValueType::Time, Value::String(t)) => DateTime::parse_from_rfc3339(t).is_ok(),
            (ValueType::Id, Value::String(t)) => t.parse::<Uuid>().is_ok(),
            _ => false,
        };
        if !fits {
            return Err(refuse());
        }
    }
    Ok(values)
}

/// One bound value of a statement. Ids are plain UUIDs here: a cursor names a run, a model or a
/// model version depending on the search, and the statement only compares them.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Texts(Vec<String>),
    Float(f64),
    Int(i64),
    Time(DateTime<Utc>),
    Uuid(Uuid),
    Uuids(Vec<Uuid>),
}

/// SQL text with `$n` placeholders and the values they stand for, in order.
#[derive(Default)]
pub struct Statement {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl Statement {
    /// Adds a bound value and returns its placeholder.
    pub fn bind(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    /// The condition that `column` (a project id) names a project the caller may read.
    pub fn readable(&mut self, column: &str, readable: &Readable) -> String {
        match readable {
            Readable::Every => "TRUE".to_owned(),
            Readable::MemberOf(user) => {
                let user = self.bind(Bind::Uuid(user.uuid()));
                format!("{column} IN (SELECT project_id FROM memberships WHERE user_id = {user})")
            }
            Readable::Ids(ids) => {
                let ids = self.bind(Bind::Uuids(ids.iter().map(|p| p.uuid()).collect()));
                format!("{column} = ANY({ids})")
            }
        }
    }

    /// Binds a cursor value (already checked against its type by [`decode_cursor`]).
    fn bind_json(&mut self, value_type: ValueType, value: &Value) -> String {
        let bind = match value_type {
            ValueType::Number => Bind::Float(value.as_f64().unwrap_or_default()),
            ValueType::Text => Bind::Text(value.as_str().unwrap_or_default().to_owned()),
            ValueType::Time => Bind::Time(
                value
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_default(),
            ),
            ValueType::Id => Bind::Uuid(
                value
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_default(),
            ),
        };
        self.bind(bind)
    }

    /// The statement as a diesel query, its values bound in order.
    pub fn query(self) -> BoxedSqlQuery<'static, Pg, SqlQuery> {
        let mut query = diesel::sql_query(self.sql).into_boxed::<Pg>();
        for bind in self.binds {
            query = match bind {
                Bind::Text(v) => query.bind::<Text, _>(v),
                Bind::Texts(v) => query.bind::<Array<Text>, _>(v),
                Bind::Float(v) => query.bind::<Float8, _>(v),
                Bind::Int(v) => query.bind::<Int8, _>(v),
                Bind::Time(v) => query.bind::<Timestamptz, _>(v),
                Bind::Uuid(v) => query.bind::<SqlUuid, _>(v),
                Bind::Uuids(v) => query.bind::<Array<SqlUuid>, _>(v),
            };
        }
        query
    }
}

/// The SQL condition of one clause, its values bound. Fails on what parses but means nothing
/// here (an attribute this subject lacks, an unknown status, a malformed time or id).
fn condition(
    subject: &Subject,
    clause: &Comparison,
    st: &mut Statement,
) -> Result<String, SyntaxError> {
    let Comparison { key, op, value, .. } = clause;
    let at = clause.value_column;
    match key.entity {
        Entity::Metric | Entity::Param => {
            let run = subject.run_column(key)?;
            let name = st.bind(Bind::Text(key.name.clone()));
            let (table, test) = match (key.entity, op, value) {
                (_, Op::IsNull | Op::IsNotNull, _) => (table_of(key.entity), String::new()),
                (Entity::Metric, op, Literal::Number(n)) => {
                    let v = st.bind(Bind::Float(*n));
                    (
                        "run_latest_metrics",
                        format!(" AND x.value {} {v}", op.sql()),
                    )
                }
                (Entity::Param, op, value) => (
                    "run_params",
                    format!(" AND {}", text_test("x.value", *op, value, st)),
                ),
                _ => unreachable!("the parser checks metric values"),
            };
            let exists = format!(
                "EXISTS (SELECT 1 FROM {table} x WHERE x.run_id = {run} AND x.key = {name}{test})"
            );
            // `key IS NULL` holds for rows without the metric or param: no row EXISTS.
            Ok(if *op == Op::IsNull {
                format!("NOT {exists}")
            } else {
                exists
            })
        }
        Entity::Tag => {
            let name = st.bind(Bind::Text(key.name.clone()));
            let column = format!("({} ->> {name})", subject.tags);
            Ok(match op {
                Op::IsNull | Op::IsNotNull => format!("{column} {}", op.sql()),
                _ => text_test(&column, *op, value, st),
            })
        }
        Entity::Attribute => {
            let attribute = subject.attribute(key)?;
            check_operand(key, *op, value, at, attribute.value_type)?;
            let column = attribute.column;
            if matches!(op, Op::IsNull | Op::IsNotNull) && attribute.rule != Rule::Alias {
                return Ok(format!("{column} {}", op.sql()));
            }
            match (attribute.rule, attribute.value_type) {
                (Rule::RunStatus, _) => status_test(column, *op, value, at, st),
                (Rule::Alias, _) => alias_test(key, *op, value, st),
                (
                    Rule::QualifiedName {
                        qualified,
                        separator,
                    },
                    _,
                ) => Ok(qualified_name_test(
                    column, qualified, separator, *op, value, st,
                )),
                (Rule::Plain, ValueType::Text) => Ok(text_test(column, *op, value, st)),
                (Rule::Plain, ValueType::Number) => match value {
                    Literal::Number(n) => {
                        let v = st.bind(Bind::Float(*n));
                        Ok(format!("{column} {} {v}", op.sql()))
                    }
                    _ => unreachable!("checked by check_operand"),
                },
                (Rule::Plain, ValueType::Id) => {
                    let ids = scalars(value)
                        .into_iter()
                        .map(|v| match v {
                            Literal::Text(t) => t
                                .parse::<Uuid>()
                                .map_err(|_| SyntaxError::at(at, format!("`{t}` is not an id"))),
                            _ => unreachable!("checked by check_operand"),
                        })
                        .collect::<Result<Vec<Uuid>, _>>()?;
                    let list = st.bind(Bind::Uuids(ids));
                    Ok(match op {
                        Op::Eq | Op::In => format!("{column} = ANY({list})"),
                        _ => format!("{column} <> ALL({list})"),
                    })
                }
                (Rule::Plain, ValueType::Time) => {
                    let time = match value {
                        Literal::Number(ms) => Utc
                            .timestamp_millis_opt(*ms as i64)
                            .single()
                            .ok_or_else(|| SyntaxError::at(at, "this time is out of range"))?,
                        Literal::Text(t) => DateTime::parse_from_rfc3339(t)
                            .map_err(|_| {
                                SyntaxError::at(
                                    at,
                                    format!("`{t}` is not an RFC 3339 time (2026-12-02T10:00:00Z)"),
                                )
                            })?
                            .with_timezone(&Utc),
                        _ => unreachable!("checked by check_operand"),
                    };
                    let v = st.bind(Bind::Time(time));
                    Ok(format!("{column} {} {v}", op.sql()))
                }
            }
        }
    }
}

/// The table of a run's latest metric values or of its params.
fn table_of(entity: Entity) -> &'static str {
    if entity == Entity::Metric {
        "run_latest_metrics"
    } else {
        "run_params"
    }
}

/// A comparison of a text column: =, <>, LIKE, ILIKE, IN (as `= ANY`), NOT IN (as `<> ALL`).
fn text_test(column: &str, op: Op, value: &Literal, st: &mut Statement) -> String {
    match (op, value) {
        (Op::In | Op::NotIn, Literal::List(_)) => {
            let list = st.bind(Bind::Texts(texts(value)));
            if op == Op::In {
                format!("{column} = ANY({list})")
            } else {
                format!("{column} <> ALL({list})")
            }
        }
        (op, Literal::Text(t)) => {
            let v = st.bind(Bind::Text(t.clone()));
            format!("{column} {} {v}", op.sql())
        }
        _ => unreachable!("the parser checks text values"),
    }
}

/// A name compared as written: bare values with the `bare` column, values holding the separator
/// with the `qualified` expression; an IN list may mix both.
fn qualified_name_test(
    bare: &str,
    qualified: &str,
    separator: char,
    op: Op,
    value: &Literal,
    st: &mut Statement,
) -> String {
    match (op, value) {
        (Op::In | Op::NotIn, Literal::List(_)) => {
            let (with, without): (Vec<String>, Vec<String>) = texts(value)
                .into_iter()
                .partition(|t| t.contains(separator));
            let tests: Vec<String> = [(bare, without), (qualified, with)]
                .into_iter()
                .filter(|(_, names)| !names.is_empty())
                .map(|(column, names)| {
                    let list = Literal::List(names.into_iter().map(Literal::Text).collect());
                    text_test(column, op, &list, st)
                })
                .collect();
            if tests.is_empty() {
                return text_test(bare, op, value, st);
            }
            let joiner = if op == Op::In { " OR " } else { " AND " };
            format!("({})", tests.join(joiner))
        }
        (_, Literal::Text(t)) if t.contains(separator) => text_test(qualified, op, value, st),
        _ => text_test(bare, op, value, st),
    }
}

fn status_test(
    column: &str,
    op: Op,
    value: &Literal,
    at: usize,
    st: &mut Statement,
) -> Result<String, SyntaxError> {
    if matches!(op, Op::Like | Op::ILike) {
        return Ok(text_test(&format!("upper({column})"), op, value, st));
    }
    let statuses = texts(value)
        .into_iter()
        .map(|t| {
            t.to_ascii_lowercase()
                .parse::<RunStatus>()
                .map(|s| s.as_str().to_owned())
                .map_err(|_| {
                    SyntaxError::at(
                        at,
                        format!(
                            "unknown run status `{t}` (expected RUNNING, FINISHED, FAILED or KILLED)"
                        ),
                    )
                })
        })
        .collect::<Result<Vec<String>, _>>()?;
    let list = st.bind(Bind::Texts(statuses));
    Ok(match op {
        Op::Eq | Op::In => format!("{column} = ANY({list})"),
        _ => format!("{column} <> ALL({list})"),
    })
}

/// A model version named by one of the aliases: a free alias row, or a governed alias of its
/// project whose stage the version holds. `v` and `m` are the version and its model.
fn alias_test(
    key: &Key,
    op: Op,
    value: &Literal,
    st: &mut Statement,
) -> Result<String, SyntaxError> {
    if !matches!(op, Op::Eq | Op::In) {
        return Err(SyntaxError::at(
            key.column,
            format!("`{key}` compares with = or IN"),
        ));
    }
    let list = st.bind(Bind::Texts(texts(value)));
    Ok(format!(
        "(EXISTS (SELECT 1 FROM model_aliases a WHERE a.model_version_id = v.id AND a.alias = ANY({list})) \
         OR EXISTS (SELECT 1 FROM governed_aliases g WHERE g.project_id = m.project_id \
         AND g.alias = ANY({list}) AND g.stage = v.stage))"
    ))
}

/// The values of a comparison: the items of a list, or the one value.
fn scalars(value: &Literal) -> Vec<&Literal> {
    match value {
        Literal::List(items) => items.iter().collect(),
        single => vec![single],
    }
}

fn texts(value: &Literal) -> Vec<String> {
    scalars(value)
        .into_iter()
        .filter_map(|v| match v {
            Literal::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::runs::RUNS;

    #[test]
    fn a_bounded_set_of_shapes_is_prepared() {
        let mut shapes = HashSet::new();
        let shape = |i: usize| format!("SELECT {i}");
        for i in 0..MAX_PREPARED_SHAPES {
            assert!(admit_shape(&mut shapes, &shape(i)), "shape {i} admitted");
        }
        assert!(!admit_shape(&mut shapes, &shape(MAX_PREPARED_SHAPES)));
        assert!(
            admit_shape(&mut shapes, &shape(0)),
            "an admitted shape stays"
        );
        assert_eq!(shapes.len(), MAX_PREPARED_SHAPES);
    }

    #[test]
    fn readable_projects_are_a_condition_of_the_statement() {
        let user = crate::ids::UserId::from_uuid(Uuid::nil());
        let project = crate::ids::ProjectId::from_uuid(Uuid::nil());
        let mut st = Statement::default();
        assert_eq!(st.readable("m.project_id", &Readable::Every), "TRUE");
        assert!(st.binds.is_empty());
        assert_eq!(
            st.readable("m.project_id", &Readable::MemberOf(user)),
            "m.project_id IN (SELECT project_id FROM memberships WHERE user_id = $1)"
        );
        assert_eq!(
            st.readable("m.project_id", &Readable::Ids(vec![project])),
            "m.project_id = ANY($2)"
        );
        assert_eq!(st.binds.len(), 2);
        // An empty list stays a bound array: `= ANY('{}')` matches no row.
        assert_eq!(
            st.readable("m.project_id", &Readable::Ids(Vec::new())),
            "m.project_id = ANY($3)"
        );
    }

    #[test]
    fn a_shape_is_the_same_text_whatever_the_values() {
        let project = Readable::Ids(vec![crate::ids::ProjectId::from_uuid(Uuid::nil())]);
        let text = |filter: &str| {
            Search::new(
                &RUNS,
                Some(filter),
                &["metrics.auc DESC".to_owned()],
                None,
                10,
            )
            .unwrap()
            .statement(&RUNS, &project)
            .sql
        };
        assert_eq!(
            text("params.model = 'a' and metrics.auc > 0.5"),
            text("params.depth = 'b''c' and metrics.loss > 7")
        );
        assert_ne!(text("params.model = 'a'"), text("params.model != 'a'"));
    }
}
