//! MLflow's search language, parsed: `metrics.auc > 0.9 and params.depth = '6' and
//! tags.team LIKE 'risk%' and attributes.status IN ('FINISHED', 'FAILED')`, and order keys such
//! as `metrics.auc DESC`. The parser only says what was asked; each search turns the clauses into
//! bound SQL of its own, so no user text ever becomes SQL. Errors name the column (1-based, in
//! characters) of the token at fault, because filters are typed by hand.

use std::fmt;

/// What a key names: `metrics.<key>`, `params.<key>`, `tags.<key>`, `attributes.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
}

impl Entity {
    /// The prefixes MLflow accepts for each entity (singular, plural and its aliases).
    fn from_prefix(prefix: &str) -> Option<Entity> {
        match prefix.to_ascii_lowercase().as_str() {
            "metric" | "metrics" => Some(Entity::Metric),
            "param" | "params" | "parameter" | "parameters" => Some(Entity::Param),
            "tag" | "tags" => Some(Entity::Tag),
            "attribute" | "attributes" | "attr" | "run" => Some(Entity::Attribute),
            _ => None,
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Metric => "metrics",
            Entity::Param => "params",
            Entity::Tag => "tags",
            Entity::Attribute => "attributes",
        })
    }
}

/// A key with the column where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub entity: Entity,
    pub name: String,
    pub column: usize,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.entity, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Op {
    /// The SQL operator of a plain binary comparison (`IN` and `IS` are written by the caller).
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }

    pub fn is_ordering(self) -> bool {
        matches!(self, Op::Gt | Op::Ge | Op::Lt | Op::Le)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Ne => "!=",
            other => other.sql(),
        })
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    List(Vec<Literal>),
    /// `IS NULL` / `IS NOT NULL` compare with nothing.
    None,
}

impl Literal {
    fn describe(&self) -> &'static str {
        match self {
            Literal::Number(_) => "a number",
            Literal::Text(_) => "a string",
            Literal::List(_) => "a list",
            Literal::None => "nothing",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub key: Key,
    pub op: Op,
    pub value: Literal,
    /// Where the value starts, for errors about it.
    pub value_column: usize,
}

/// Clauses joined by AND (MLflow's language has no OR).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    pub clauses: Vec<Comparison>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub key: Key,
    pub descending: bool,
}

/// A filter or order key that does not parse, with the column of the offending token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub column: usize,
    pub message: String,
}

impl SyntaxError {
    pub fn at(column: usize, message: impl Into<String>) -> Self {
        SyntaxError {
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

/// The longest filter accepted, in characters, and the most clauses: a filter is typed by a
/// person or built by a dashboard, never megabytes.
pub const MAX_FILTER_CHARS: usize = 4_000;
pub const MAX_CLAUSES: usize = 20;
pub const MAX_LIST_ITEMS: usize = 100;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A bare word: entity prefix, key, keyword (`and`, `like`, …).
    Word(String),
    /// A key written in backticks or double quotes (`metrics.\`val loss\``).
    QuotedKey(String),
    /// A string in single quotes (or double quotes, as MLflow also accepts).
    Text(String),
    Number(f64),
    Dot,
    Comma,
    Open,
    Close,
    Operator(Op),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("`{w}`"),
            Token::QuotedKey(k) => format!("`{k}`"),
            Token::Text(t) => format!("'{t}'"),
            Token::Number(n) => format!("{n}"),
            Token::Dot => "`.`".into(),
            Token::Comma => "`,`".into(),
            Token::Open => "`(`".into(),
            Token::Close => "`)`".into(),
            Token::Operator(op) => format!("`{op}`"),
        }
    }
}

/// A token and the column it starts at.
#[derive(Debug, Clone)]
struct Spanned {
    token: Token,
    column: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/' | ':')
}

fn tokenize(input: &str) -> Result<Vec<Spanned>, SyntaxError> {
    let chars: Vec<char> = input.chars().collect();
    if chars.len() > MAX_FILTER_CHARS {
        return Err(SyntaxError::at(
            MAX_FILTER_CHARS + 1,
            format!("a filter has at most {MAX_FILTER_CHARS} characters"),
        ));
    }
    let mut tokens = Vec::new();
    let mut i = 0;
    // Whether the previous token was a `.`: a quoted token right after it is a key, not a value.
    let after_dot =
        |tokens: &Vec<Spanned>| matches!(tokens.last(), Some(s) if s.token == Token::Dot);
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = match c {
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                i += 1;
                Token::Dot
            }
            ',' => {
                i += 1;
                Token::Comma
            }
            '(' => {
                i += 1;
                Token::Open
            }
            ')' => {
                i += 1;
                Token::Close
            }
            '=' => {
                i += if chars.get(i + 1) == Some(&'=') { 2 } else { 1 };
                Token::Operator(Op::Eq)
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Token::Operator(Op::Ne)
            }
            '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, width) = match (c, next) {
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some('=')) => (Op::Ge, 2),
                    _ => (Op::Gt, 1),
                };
                i += width;
                Token::Operator(op)
            }
            '\'' | '"' | '`' => {
                let (text, next) = quoted(&chars, i)?;
                i = next;
                if c == '`' || (c == '"' && after_dot(&tokens)) {
                    Token::QuotedKey(text)
                } else {
                    Token::Text(text)
                }
            }
            c if c.is_ascii_digit() || c == '.' || (c == '-' || c == '+') => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || chars[i] == '.'
                        || matches!(chars[i], 'e' | 'E')
                        || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number = text
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| SyntaxError::at(column, format!("`{text}` is not a number")))?;
                Token::Number(number)
            }
            c if is_word_char(c) => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                Token::Word(chars[start..i].iter().collect())
            }
            other => {
                return Err(SyntaxError::at(
                    column,
                    format!("unexpected character `{other}`"),
                ))
            }
        };
        tokens.push(Spanned { token, column });
    }
    Ok(tokens)
}

/// The text of a quoted token starting at `start` and the index after it. A doubled quote
/// inside stands for itself (`'it''s'`), as in SQL.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), SyntaxError> {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(SyntaxError::at(
                    start + 1,
                    format!("this {quote} is never closed"),
                ))
            }
            Some(&c) if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    text.push(quote);
                    i += 2;
                } else {
                    return Ok((text, i + 1));
                }
            }
            Some(&c) => {
                text.push(c);
                i += 1;
            }
        }
    }
}

struct Parser {
    tokens: Vec<Spanned>,
    next: usize,
    /// The column just past the input, for "expected … at the end" errors.
    end: usize,
}

impl Parser {
    fn new(input: &str) -> Result<Self, SyntaxError> {
        Ok(Parser {
            tokens: tokenize(input)?,
            next: 0,
            end: input.chars().count() + 1,
        })
    }

    fn peek(&self) -> Option<&Spanned> {
        self.tokens.get(self.next)
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end, |s| s.column)
    }

    fn bump(&mut self) -> Option<Spanned> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn unexpected(&self, expected: &str) -> SyntaxError {
        match self.peek() {
            Some(s) => SyntaxError::at(
                s.column,
                format!("expected {expected}, found {}", s.token.describe()),
            ),
            None => SyntaxError::at(self.end, format!("expected {expected} at the end")),
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Spanned { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case(word))
    }

    /// `entity.name`, `entity.`quoted name``, or a bare attribute name (`status`).
    fn key(&mut self) -> Result<Key, SyntaxError> {
        let column = self.column();
        let Some(Spanned {
            token: Token::Word(first),
            ..
        }) = self.peek().cloned()
        else {
            return Err(self.unexpected(
                "a key such as `metrics.auc`, `params.depth`, `tags.team` or `attributes.status`",
            ));
        };
        self.bump();
        if self.peek().map(|s| &s.token) != Some(&Token::Dot) {
            // A bare word: MLflow's attribute names may be written without their prefix.
            return Ok(Key {
                entity: Entity::Attribute,
                name: first,
                column,
            });
        }
        let Some(entity) = Entity::from_prefix(&first) else {
            return Err(SyntaxError::at(
                column,
                format!(
                    "unknown entity `{first}`: keys start with metrics., params., tags. or attributes."
                ),
            ));
        };
        self.bump(); // the dot
        let name_column = self.column();
        let mut name = match self.bump().map(|s| s.token) {
            Some(Token::Word(word)) => word,
            Some(Token::QuotedKey(text)) => text,
            _ => {
                return Err(SyntaxError::at(
                    name_column,
                    format!("expected a {entity} key after `{first}.`"),
                ))
            }
        };
        // Keys may hold dots (`metrics.val.loss`): the rest of a dotted word is the key.
        while self.peek().map(|s| &s.token) == Some(&Token::Dot) {
            self.bump();
            match self.bump().map(|s| s.token) {
                Some(Token::Word(word)) => {
                    name.push('.');
                    name.push_str(&word);
                }
                _ => {
                    return Err(SyntaxError::at(
                        name_column,
                        format!("the {entity} key `{name}.` is cut short"),
                    ))
                }
            }
        }
        if name.is_empty() {
            return Err(SyntaxError::at(name_column, "a key must not be empty"));
        }
        Ok(Key {
            entity,
            name,
            column,
        })
    }

    fn operator(&mut self) -> Result<Op, SyntaxError> {
        let found = self.peek().cloned();
        let op = match found.map(|s| s.token) {
            Some(Token::Operator(op)) => op,
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "like" => Op::Like,
                "ilike" => Op::ILike,
                "in" => Op::In,
                "not" => {
                    self.bump();
                    if !self.keyword("in") {
                        return Err(self.unexpected("`IN` after `NOT`"));
                    }
                    Op::NotIn
                }
                "is" => {
                    self.bump();
                    let negated = self.keyword("not");
                    if negated {
                        self.bump();
                    }
                    if !self.keyword("null") {
                        return Err(self.unexpected("`NULL` after `IS`"));
                    }
                    if negated {
                        Op::IsNotNull
                    } else {
                        Op::IsNull
                    }
                }
                _ => {
                    return Err(self.unexpected(
                        "a comparison (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL)",
                    ))
                }
            },
            _ => {
                return Err(self.unexpected(
                    "a comparison (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL)",
                ))
            }
        };
        self.bump();
        Ok(op)
    }

    fn scalar(&mut self) -> Result<Literal, SyntaxError> {
        match self.peek().map(|s| s.token.clone()) {
            Some(Token::Number(n)) => {
                self.bump();
                Ok(Literal::Number(n))
            }
            Some(Token::Text(t)) => {
                self.bump();
                Ok(Literal::Text(t))
            }
            _ => Err(self.unexpected("a number or a quoted string")),
        }
    }

    fn value(&mut self, op: Op) -> Result<Literal, SyntaxError> {
        match op {
            Op::IsNull | Op::IsNotNull => Ok(Literal::None),
            Op::In | Op::NotIn => {
                if self.peek().map(|s| &s.token) != Some(&Token::Open) {
                    return Err(self.unexpected("`(` opening the list of values"));
                }
                let open = self.column();
                self.bump();
                let mut items = vec![self.scalar()?];
                while self.peek().map(|s| &s.token) == Some(&Token::Comma) {
                    self.bump();
                    items.push(self.scalar()?);
                }
                if self.peek().map(|s| &s.token) != Some(&Token::Close) {
                    return Err(self.unexpected("`,` or `)`"));
                }
                self.bump();
                if items.len() > MAX_LIST_ITEMS {
                    return Err(SyntaxError::at(
                        open,
                        format!("a list holds at most {MAX_LIST_ITEMS} values"),
                    ));
                }
                Ok(Literal::List(items))
            }
            _ => self.scalar(),
        }
    }

    fn comparison(&mut self) -> Result<Comparison, SyntaxError> {
        let key = self.key()?;
        let op = self.operator()?;
        let value_column = self.column();
        let value = self.value(op)?;
        check_value(&key, op, &value, value_column)?;
        Ok(Comparison {
            key,
            op,
            value,
            value_column,
        })
    }
}

/// The value types each entity compares with: metrics with numbers, params and tags with
/// strings (MLflow stores both as text). Attributes depend on what is searched: each search
/// checks them with [`check_operand`] against its own attribute list.
fn check_value(key: &Key, op: Op, value: &Literal, column: usize) -> Result<(), SyntaxError> {
    match key.entity {
        Entity::Metric => check_operand(key, op, value, column, ValueType::Number),
        Entity::Param | Entity::Tag => check_operand(key, op, value, column, ValueType::Text),
        Entity::Attribute => Ok(()),
    }
}

/// Checks that `op` applies to a key holding `wanted` values and that the value (each item of
/// a list) is of that type. `IS [NOT] NULL` applies to every key.
pub fn check_operand(
    key: &Key,
    op: Op,
    value: &Literal,
    column: usize,
    wanted: ValueType,
) -> Result<(), SyntaxError> {
    let items: Vec<&Literal> = match value {
        Literal::List(items) => items.iter().collect(),
        Literal::None => return Ok(()),
        single => vec![single],
    };
    let allowed: &[Op] = match wanted {
        ValueType::Number | ValueType::Time => &[Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le],
        ValueType::Text => &[Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::In, Op::NotIn],
        ValueType::Id => &[Op::Eq, Op::Ne, Op::In, Op::NotIn],
    };
    if !allowed.contains(&op) {
        let list: Vec<String> = allowed.iter().map(Op::to_string).collect();
        return Err(SyntaxError::at(
            key.column,
            format!("`{key}` compares with {}, not {op}", list.join(", ")),
        ));
    }
    for item in items {
        let fits = match (wanted, item) {
            (ValueType::Number, Literal::Number(_)) => true,
            (ValueType::Text | ValueType::Id, Literal::Text(_)) => true,
            // Times: milliseconds since the epoch (as MLflow) or an RFC 3339 string.
            (ValueType::Time, Literal::Number(_) | Literal::Text(_)) => true,
            _ => false,
        };
        if !fits {
            let hint = match wanted {
                ValueType::Number => format!("`{key}` compares with a number, e.g. {key} > 0.9"),
                ValueType::Text | ValueType::Id => {
                    format!("`{key}` holds text: quote the value, e.g. {key} = '6'")
                }
                ValueType::Time => format!(
                    "`{key}` compares with milliseconds since the epoch or an RFC 3339 time"
                ),
            };
            return Err(SyntaxError::at(
                column,
                format!("{hint} (found {})", item.describe()),
            ));
        }
    }
    Ok(())
}

/// What a key holds, for operator and value checks, binds and cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Number,
    Text,
    Time,
    Id,
}

/// Parses a filter: clauses joined by AND. An empty or blank filter matches everything.
pub fn parse_filter(input: &str) -> Result<Filter, SyntaxError> {
    let mut parser = Parser::new(input)?;
    let mut clauses = Vec::new();
    if parser.peek().is_none() {
        return Ok(Filter { clauses });
    }
    loop {
        clauses.push(parser.comparison()?);
        if clauses.len() > MAX_CLAUSES {
            return Err(SyntaxError::at(
                clauses.last().map_or(1, |c| c.key.column),
                format!("a filter has at most {MAX_CLAUSES} clauses"),
            ));
        }
        match parser.peek() {
            None => break,
            Some(_) if parser.keyword("and") => {
                parser.bump();
            }
            Some(_) if parser.keyword("or") => {
                return Err(SyntaxError::at(
                    parser.column(),
                    "OR is not supported: clauses combine with AND (search twice for either)",
                ))
            }
            Some(_) => return Err(parser.unexpected("`AND` or the end of the filter")),
        }
    }
    Ok(Filter { clauses })
}

/// Parses one order key: `metrics.auc`, `params.depth DESC`, `attributes.start_time ASC`.
pub fn parse_order_key(input: &str) -> Result<OrderKey, SyntaxError> {
    let mut parser = Parser::new(input)?;
    let key = parser.key()?;
    let descending = if parser.keyword("desc") {
        parser.bump();
        true
    } else if parser.keyword("asc") {
        parser.bump();
        false
    } else {
        false
    };
    if parser.peek().is_some() {
        return Err(parser.unexpected("`ASC`, `DESC` or the end of the order key"));
    }
    Ok(OrderKey { key, descending })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(input: &str) -> Comparison {
        let filter = parse_filter(input).unwrap();
        assert_eq!(filter.clauses.len(), 1, "{input}");
        filter.clauses.into_iter().next().unwrap()
    }

    fn error(input: &str) -> SyntaxError {
        parse_filter(input).expect_err(input)
    }

    #[test]
    fn parses_mlflow_filters() {
        let filter = parse_filter(
            "metrics.auc > 0.9 and params.depth = '6' AND tags.team = 'risk' and attributes.status = 'FINISHED'",
        )
        .unwrap();
        let summary: Vec<(Entity, &str, Op)> = filter
            .clauses
            .iter()
            .map(|c| (c.key.entity, c.key.name.as_str(), c.op))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Entity::Metric, "auc", Op::Gt),
                (Entity::Param, "depth", Op::Eq),
                (Entity::Tag, "team", Op::Eq),
                (Entity::Attribute, "status", Op::Eq),
            ]
        );
        assert_eq!(filter.clauses[0].value, Literal::Number(0.9));
        assert_eq!(filter.clauses[1].value, Literal::Text("6".into()));
    }

    #[test]
    fn quoted_keys_dotted_keys_and_escapes() {
        let c = clause("metrics.`val loss` <= -1.5e-3");
        assert_eq!(c.key.name, "val loss");
        assert_eq!(c.value, Literal::Number(-1.5e-3));
        let c = clause("params.\"learning rate\" = \"0.1\"");
        assert_eq!(c.key.name, "learning rate");
        assert_eq!(c.value, Literal::Text("0.1".into()));
        assert_eq!(clause("metrics.val.loss > 1").key.name, "val.loss");
        assert_eq!(
            clause("tags.note = 'it''s'").value,
            Literal::Text("it's".into())
        );
    }

    #[test]
    fn like_in_and_null() {
        assert_eq!(clause("tags.team ILIKE '%Risk%'").op, Op::ILike);
        let c = clause("attributes.status IN ('FINISHED', 'FAILED')");
        assert_eq!(c.op, Op::In);
        assert_eq!(
            c.value,
            Literal::List(vec![
                Literal::Text("FINISHED".into()),
                Literal::Text("FAILED".into())
            ])
        );
        assert_eq!(clause("params.x not in ('a')").op, Op::NotIn);
        assert_eq!(clause("tags.owner IS NULL").op, Op::IsNull);
        assert_eq!(clause("tags.owner is not null").op, Op::IsNotNull);
        assert_eq!(clause("status != 'RUNNING'").key.entity, Entity::Attribute);
        assert_eq!(
            clause("attributes.start_time > 1700000000000").value,
            Literal::Number(1.7e12)
        );
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = error("metrics.auc >> 0.9");
        assert_eq!(e.column, 14, "{e}");
        let e = error("metrics.auc > 'high'");
        assert_eq!(e.column, 15, "{e}");
        assert!(e.message.contains("number"), "{e}");
        let e = error("params.depth = 6");
        assert_eq!(e.column, 16, "{e}");
        assert!(e.message.contains("quote"), "{e}");
        let e = error("metrics.auc > 0.9 or params.a = 'b'");
        assert_eq!(e.column, 19, "{e}");
        let e = error("metric.auc > 0.9 and bogus.x = 'y'");
        assert_eq!(e.column, 22, "{e}");
        let e = error("tags.team = 'open");
        assert_eq!(e.column, 13, "{e}");
        let e = error("metrics.auc >");
        assert_eq!(e.column, 14, "{e}");
        assert!(e.message.contains("at the end"), "{e}");
        let e = error("metrics.auc LIKE '%1'");
        assert_eq!(e.column, 1, "{e}");
        let e = error("metrics.auc > 0.9; drop table runs");
        assert_eq!(e.column, 18, "{e}");
    }

    #[test]
    fn bounds() {
        assert!(parse_filter("").unwrap().clauses.is_empty());
        assert!(parse_filter("   ").unwrap().clauses.is_empty());
        let many = vec!["metrics.a > 1"; MAX_CLAUSES + 1].join(" and ");
        assert!(error(&many).message.contains("at most"));
        let long = format!("tags.a = '{}'", "x".repeat(MAX_FILTER_CHARS));
        assert!(error(&long).message.contains("characters"));
    }

    #[test]
    fn order_keys() {
        let key = parse_order_key("metrics.auc DESC").unwrap();
        assert_eq!(key.key.name, "auc");
        assert!(key.descending);
        assert!(!parse_order_key("params.depth").unwrap().descending);
        assert!(
            !parse_order_key("attributes.start_time asc")
                .unwrap()
                .descending
        );
        assert_eq!(
            parse_order_key("metrics.auc sideways").unwrap_err().column,
            13
        );
        assert_eq!(
            parse_order_key("attributes.created").unwrap().key.name,
            "created"
        );
    }
}
