//! The LogQL subset logarithmd answers: a stream selector, then line filters.
//!
//! ```text
//! query    = selector { filter }
//! selector = "{" [ matcher { "," matcher } [ "," ] ] "}"
//! matcher  = label ( "=" | "!=" | "=~" | "!~" ) string
//! filter   = ( "|=" | "!=" | "|~" | "!~" ) string
//! string   = "…" (Go escapes) | `…` (raw)
//! ```
//!
//! Label regexes are anchored at both ends, line-filter regexes are not (as in Loki).
//! Anything else (metric queries, parsers such as `| json`, label filters, `line_format`,
//! `or` in filters) is refused with an error that says what is supported, so a query is
//! answered exactly or not at all. The only other expressions accepted are constant
//! vectors (`vector(1)+vector(1)`), which Grafana's data source health check sends.

use regex::bytes::{Regex as BytesRegex, RegexBuilder as BytesRegexBuilder};
use regex::{Regex, RegexBuilder};

/// What the error message says is supported.
pub const SUPPORTED: &str = "logarithmd supports a LogQL subset: a stream selector \
     {label=\"value\", …} with =, !=, =~ and !~, followed by any number of line filters \
     |= \"text\", != \"text\", |~ \"regex\", !~ \"regex\"";

/// Compiled regexes are capped so a hostile query cannot use unbounded memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest query accepted.
pub const MAX_QUERY_BYTES: usize = 16 << 10;

/// A parse failure, with a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn unsupported(what: &str) -> ParseError {
    ParseError(format!("{what} is not supported; {SUPPORTED}"))
}

/// How a label matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// One `label op "value"` of a stream selector.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// The anchored regex, for `=~` and `!~`.
    regex: Option<Regex>,
}

impl Matcher {
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Matcher, ParseError> {
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                RegexBuilder::new(&format!("^(?:{value})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| ParseError(format!("invalid regex for label {label}: {e}")))?,
            ),
            MatchOp::Eq | MatchOp::Ne => None,
        };
        Ok(Matcher {
            label: label.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Whether a label value matches; a missing label has the value `""` (as in Loki).
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => self.regex.as_ref().is_some_and(|r| !r.is_match(v)),
        }
    }

    /// `label="value"` with a value that is not empty: narrows to one value.
    pub fn equality(&self) -> Option<&str> {
        (self.op == MatchOp::Eq && !self.value.is_empty()).then_some(self.value.as_str())
    }
}

/// How a line filter tests a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Contains,
    NotContains,
    Matches,
    NotMatches,
}

/// One line filter.
#[derive(Debug, Clone)]
pub struct LineFilter {
    pub op: FilterOp,
    pub pattern: String,
    regex: Option<BytesRegex>,
}

impl LineFilter {
    pub fn new(op: FilterOp, pattern: &str) -> Result<LineFilter, ParseError> {
        let regex = match op {
            FilterOp::Matches | FilterOp::NotMatches => Some(
                BytesRegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| ParseError(format!("invalid line filter regex: {e}")))?,
            ),
            FilterOp::Contains | FilterOp::NotContains => None,
        };
        Ok(LineFilter {
            op,
            pattern: pattern.to_owned(),
            regex,
        })
    }

    pub fn matches(&self, line: &[u8]) -> bool {
        let needle = self.pattern.as_bytes();
        let contains = || needle.is_empty() || line.windows(needle.len()).any(|w| w == needle);
        match self.op {
            FilterOp::Contains => contains(),
            FilterOp::NotContains => !contains(),
            FilterOp::Matches => self.regex.as_ref().is_some_and(|r| r.is_match(line)),
            FilterOp::NotMatches => self.regex.as_ref().is_some_and(|r| !r.is_match(line)),
        }
    }
}

/// A log query: which streams, and which of their lines.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub matchers: Vec<Matcher>,
    pub filters: Vec<LineFilter>,
}

impl LogQuery {
    /// Whether a stream with these labels is selected.
    pub fn selects<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.matchers.iter().all(|m| m.matches(label(&m.label)))
    }

    /// Whether a line passes every filter.
    pub fn keeps(&self, line: &[u8]) -> bool {
        self.filters.iter().all(|f| f.matches(line))
    }

    /// The value of the first `label="value"` matcher for `label`, if any.
    pub fn equality(&self, label: &str) -> Option<&str> {
        self.matchers
            .iter()
            .filter(|m| m.label == label)
            .find_map(Matcher::equality)
    }
}

/// What a query string is.
#[derive(Debug, Clone)]
pub enum Expr {
    Log(LogQuery),
    /// A constant: the sum of `vector(n)` terms.
    Constant(f64),
}

/// Parses a query in the supported subset.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    if input.len() > MAX_QUERY_BYTES {
        return Err(ParseError(format!(
            "the query is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    let mut p = Parser { s: input, pos: 0 };
    p.skip_ws();
    if p.peek() == Some('{') {
        let q = p.log_query()?;
        return Ok(Expr::Log(q));
    }
    if let Some(v) = p.constant()? {
        return Ok(Expr::Constant(v));
    }
    let word: String = p
        .rest()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if word.is_empty() {
        Err(ParseError(format!(
            "a query starts with a stream selector {{…}}; {SUPPORTED}"
        )))
    } else {
        Err(unsupported(&format!(
            "`{word}`: metric queries and functions"
        )))
    }
}

/// Parses a query that must be a log query (series `match[]`, tail).
pub fn parse_log(input: &str) -> Result<LogQuery, ParseError> {
    match parse(input)? {
        Expr::Log(q) => Ok(q),
        Expr::Constant(_) => Err(unsupported("a constant expression here")),
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    fn eat(&mut self, tok: &str) -> bool {
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn at(&self) -> String {
        let r = self.rest();
        if r.is_empty() {
            "at the end of the query".into()
        } else {
            let shown: String = r.chars().take(20).collect();
            format!("at `{shown}`")
        }
    }

    fn log_query(&mut self) -> Result<LogQuery, ParseError> {
        let matchers = self.selector()?;
        let mut filters = Vec::new();
        loop {
            self.skip_ws();
            if self.rest().is_empty() {
                break;
            }
            let op = if self.eat("|=") {
                FilterOp::Contains
            } else if self.eat("|~") {
                FilterOp::Matches
            } else if self.eat("!=") {
                FilterOp::NotContains
            } else if self.eat("!~") {
                FilterOp::NotMatches
            } else if self.eat("|") {
                self.skip_ws();
                let stage: String = self
                    .rest()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                return Err(if stage.is_empty() {
                    unsupported(&format!("the pipeline stage {}", self.at()))
                } else {
                    unsupported(&format!(
                        "the pipeline stage `| {stage}` (parsers, label filters and formatting)"
                    ))
                });
            } else {
                return Err(ParseError(format!(
                    "unexpected input {}; {SUPPORTED}",
                    self.at()
                )));
            };
            self.skip_ws();
            if !matches!(self.peek(), Some('"') | Some('`')) {
                return Err(unsupported(&format!(
                    "a line filter whose argument is not a string ({})",
                    self.at()
                )));
            }
            let pattern = self.string()?;
            filters.push(LineFilter::new(op, &pattern)?);
            self.skip_ws();
            if self.rest().starts_with("or ") || self.rest().starts_with("or\"") {
                return Err(unsupported("`or` in line filters"));
            }
        }
        Ok(LogQuery { matchers, filters })
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
        if !self.eat("{") {
            return Err(ParseError(format!("expected `{{` {}", self.at())));
        }
        let mut matchers = Vec::new();
        loop {
            self.skip_ws();
            if self.eat("}") {
                break;
            }
            let label = self.ident()?;
            self.skip_ws();
            let op = if self.eat("=~") {
                MatchOp::Re
            } else if self.eat("!~") {
                MatchOp::NotRe
            } else if self.eat("!=") {
                MatchOp::Ne
            } else if self.eat("=") {
                MatchOp::Eq
            } else {
                return Err(ParseError(format!(
                    "expected =, !=, =~ or !~ after label {label} {}",
                    self.at()
                )));
            };
            self.skip_ws();
            let value = self.string()?;
            matchers.push(Matcher::new(&label, op, &value)?);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                break;
            }
            return Err(ParseError(format!(
                "expected `,` or `}}` in the stream selector {}",
                self.at()
            )));
        }
        if !matchers.iter().any(|m| !m.matches(Some(""))) {
            return Err(ParseError(
                "the stream selector needs at least one matcher that does not match an empty \
                 value, such as {flow=\"name\"}"
                    .into(),
            ));
        }
        self.skip_ws();
        if self.peek() == Some('[') {
            return Err(unsupported("a range selector `[…]` (metric queries)"));
        }
        Ok(matchers)
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        let r = self.rest();
        let len = r
            .char_indices()
            .take_while(|(i, c)| {
                c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit())
            })
            .count();
        if len == 0 {
            return Err(ParseError(format!("expected a label name {}", self.at())));
        }
        let id = r[..len].to_owned();
        self.pos += len;
        Ok(id)
    }

    /// A double-quoted string with Go escapes, or a backtick raw string.
    fn string(&mut self) -> Result<String, ParseError> {
        let start_at = self.at();
        if self.eat("`") {
            let r = self.rest();
            let end = r
                .find('`')
                .ok_or_else(|| ParseError(format!("unterminated raw string {start_at}")))?;
            let v = r[..end].to_owned();
            self.pos += end + 1;
            return Ok(v);
        }
        if !self.eat("\"") {
            return Err(ParseError(format!("expected a quoted string {start_at}")));
        }
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let (_, e) = chars
                        .next()
                        .ok_or_else(|| ParseError(format!("unterminated string {start_at}")))?;
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '\'' => out.push('\''),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'a' => out.push('\u{7}'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'v' => out.push('\u{b}'),
                        'u' | 'U' | 'x' => {
                            let n = match e {
                                'u' => 4,
                                'U' => 8,
                                _ => 2,
                            };
                            let hex: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                            let cp = u32::from_str_radix(&hex, 16)
                                .ok()
                                .filter(|_| hex.len() == n)
                                .and_then(char::from_u32)
                                .ok_or_else(|| {
                                    ParseError(format!("invalid escape \\{e}{hex} {start_at}"))
                                })?;
                            out.push(cp);
                        }
                        other => {
                            return Err(ParseError(format!(
                                "invalid escape \\{other} in a string {start_at}"
                            )))
                        }
                    }
                }
                c => out.push(c),
            }
        }
        Err(ParseError(format!("unterminated string {start_at}")))
    }

    /// `vector(n) { + vector(n) }`, or `None` when the input does not start with `vector(`.
    fn constant(&mut self) -> Result<Option<f64>, ParseError> {
        let mut sum = 0.0;
        let mut first = true;
        loop {
            self.skip_ws();
            let save = self.pos;
            if !self.eat("vector") {
                self.pos = save;
                return if first {
                    Ok(None)
                } else {
                    Err(unsupported(&format!("the expression {}", self.at())))
                };
            }
            self.skip_ws();
            if !self.eat("(") {
                return Err(unsupported("`vector` without a number"));
            }
            let r = self.rest();
            let end = r
                .find(')')
                .ok_or_else(|| ParseError(format!("unclosed `vector(` {}", self.at())))?;
            let n: f64 = r[..end].trim().parse().map_err(|_| {
                unsupported(&format!("`vector({})`: only a number", r[..end].trim()))
            })?;
            self.pos += end + 1;
            sum += n;
            first = false;
            self.skip_ws();
            if self.rest().is_empty() {
                return Ok(Some(sum));
            }
            if !self.eat("+") {
                return Err(unsupported(&format!(
                    "the expression {} (only sums of vector(n) constants)",
                    self.at()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests;
