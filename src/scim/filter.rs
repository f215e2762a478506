//! The SCIM filter language (RFC 7644 §3.4.2.2): parsing, rendering and
//! evaluation against a `serde_json::Value` resource, plus the PATCH path
//! grammar (RFC 7644 §3.5.2) that shares its attribute paths and value
//! filters.
//!
//! Attribute names and operators are case-insensitive. `and` binds tighter
//! than `or`; `and`/`or` chains are kept flat (n-ary) so a long chain does
//! not deepen the tree. Input is bounded by [`MAX_FILTER_LEN`] bytes and
//! [`MAX_DEPTH`] levels of parentheses, `not` and brackets, so a hostile
//! filter can neither blow the stack nor burn CPU.

use std::fmt;

use serde_json::{Number, Value};

use super::ScimType;

/// The longest filter (or PATCH path) accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;

/// The deepest nesting of parentheses, `not` and `[…]` accepted.
pub const MAX_DEPTH: usize = 32;

/// A filter (or PATCH path) that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at byte {position}: {message}")]
pub struct FilterError {
    /// Byte offset in the input where the problem was found.
    pub position: usize,
    /// What was wrong, for the SCIM Error `detail`.
    pub message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError {
            position,
            message: message.into(),
        }
    }

    /// The SCIM error type: always `invalidFilter`.
    pub fn scim_type(&self) -> ScimType {
        ScimType::InvalidFilter
    }
}

/// An attribute path: `[schema URN ":"] attr ["." sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN prefix, e.g. `urn:ietf:params:scim:schemas:core:2.0:User`.
    pub schema: Option<String>,
    /// The attribute name as written (compared case-insensitively).
    pub attr: String,
    /// The sub-attribute name, e.g. `givenName` in `name.givenName`.
    pub sub: Option<String>,
}

impl AttrPath {
    /// A path to a top-level attribute with no schema and no sub-attribute.
    pub fn simple(attr: &str) -> Self {
        AttrPath {
            schema: None,
            attr: attr.to_string(),
            sub: None,
        }
    }

    /// Whether the path names `attr` (and `sub`, if given) case-insensitively,
    /// ignoring a core-schema prefix. An extension schema never matches.
    pub fn is(&self, attr: &str, sub: Option<&str>) -> bool {
        let core = self.schema.as_deref().is_none_or(is_core_schema);
        let sub_ok = match (&self.sub, sub) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        core && self.attr.eq_ignore_ascii_case(attr) && sub_ok
    }
}

/// Whether a schema URN is a core schema (`urn:ietf:params:scim:schemas:core:…`),
/// whose attributes sit at the top level of a resource rather than in an
/// extension object.
pub fn is_core_schema(schema: &str) -> bool {
    const CORE: &str = "urn:ietf:params:scim:schemas:core:";
    schema.len() >= CORE.len()
        && schema.is_char_boundary(CORE.len())
        && schema[..CORE.len()].eq_ignore_ascii_case(CORE)
}

/// A comparison operator (`pr` is [`Filter::Present`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`: equal.
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `co`: contains (strings).
    Co,
    /// `sw`: starts with (strings).
    Sw,
    /// `ew`: ends with (strings).
    Ew,
    /// `gt`: greater than.
    Gt,
    /// `ge`: greater than or equal.
    Ge,
    /// `lt`: less than.
    Lt,
    /// `le`: less than or equal.
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<Self> {
        let op = match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        };
        Some(op)
    }

    fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

/// A comparison value: a JSON string, number, boolean or `null`.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A JSON string (escapes decoded).
    String(String),
    /// A JSON number.
    Number(Number),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path op value`.
    Compare {
        /// The attribute compared.
        path: AttrPath,
        /// The operator.
        op: CompareOp,
        /// The value compared with.
        value: Literal,
    },
    /// `path pr`: present, non-null and non-empty.
    Present(AttrPath),
    /// `path[filter]`, optionally followed by `.sub op value` / `.sub pr`
    /// (`then`, whose path is the sub-attribute, evaluated on the same
    /// element as `filter`).
    ValuePath {
        /// The multi-valued (or complex) attribute.
        path: AttrPath,
        /// The filter its elements must match.
        filter: Box<Filter>,
        /// The test after the bracket, e.g. `.value eq "x"`.
        then: Option<Box<Filter>>,
    },
    /// All of the operands (two or more).
    And(Vec<Filter>),
    /// Any of the operands (two or more).
    Or(Vec<Filter>),
    /// `not (filter)`.
    Not(Box<Filter>),
}

/// A PATCH operation path: `attrPath` or `valuePath ["." subAttr]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The schema URN prefix, if any.
    pub schema: Option<String>,
    /// The attribute name as written.
    pub attr: String,
    /// The value filter in brackets, e.g. `type eq "work"`.
    pub filter: Option<Filter>,
    /// The sub-attribute: `name.givenName`, or after the bracket in
    /// `emails[type eq "work"].value`.
    pub sub: Option<String>,
}

/// A filter shape a store can serve from an index instead of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Indexable<'a> {
    /// `userName eq "…"` (case-insensitive).
    UserName(&'a str),
    /// `externalId eq "…"`.
    ExternalId(&'a str),
    /// `emails[type eq "work"].value eq "…"`.
    WorkEmail(&'a str),
    /// `emails.value eq "…"` (any email).
    Email(&'a str),
    /// `active eq true|false`.
    Active(bool),
}

/// How a store can answer a filter: from index lookups, or by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexPlan<'a> {
    /// No index applies: scan and test every resource.
    Scan,
    /// The union of these lookups holds every match; re-check each candidate
    /// with [`Filter::matches`] (an `and` narrows, it does not decide).
    Lookups(Vec<Indexable<'a>>),
}

/// The default `caseExact` hook: `id` and `externalId` are case-exact
/// (RFC 7643 §3.1), every other attribute (`userName`, emails, …) is not.
pub fn default_case_exact(path: &AttrPath) -> bool {
    path.is("id", None) || path.is("externalId", None)
}

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    let mut p = Parser::new(input)?;
    let f = p.filter()?;
    p.end()?;
    Ok(f)
}

/// Parses a PATCH operation path such as `members[value eq "id"]`,
/// `emails[type eq "work"].value`, `name.givenName` or
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager`.
pub fn parse_path(input: &str) -> Result<PatchPath, FilterError> {
    let mut p = Parser::new(input)?;
    let (word, pos) = p.expect_word("an attribute path")?;
    let path = parse_attr_path(&word, pos)?;
    if !p.peek_is(&Tok::LBracket) {
        p.end()?;
        return Ok(PatchPath {
            schema: path.schema,
            attr: path.attr,
            filter: None,
            sub: path.sub,
        });
    }
    if path.sub.is_some() {
        return Err(FilterError::new(
            pos,
            "a value filter must follow an attribute, not a sub-attribute",
        ));
    }
    let filter = p.bracket()?;
    let sub = p.dot_sub()?.map(|(s, _)| s);
    p.end()?;
    Ok(PatchPath {
        schema: path.schema,
        attr: path.attr,
        filter: Some(filter),
        sub,
    })
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '$' | '+')
}

fn lex(input: &str) -> Result<Vec<(Tok, usize)>, FilterError> {
    let mut toks = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        let tok = match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
                continue;
            }
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '"' => {
                let end = string_end(input, pos)?;
                for _ in input[pos..end].chars() {
                    chars.next();
                }
                let s: String = serde_json::from_str(&input[pos..end])
                    .map_err(|e| FilterError::new(pos, format!("invalid string: {e}")))?;
                toks.push((Tok::Str(s), pos));
                continue;
            }
            c if is_word_char(c) => {
                let mut end = pos;
                while let Some(&(i, c)) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                toks.push((Tok::Word(input[pos..end].to_string()), pos));
                continue;
            }
            c => return Err(FilterError::new(pos, format!("unexpected character {c:?}"))),
        };
        chars.next();
        toks.push((tok, pos));
    }
    Ok(toks)
}

/// The byte just past the closing quote of the string starting at `start`.
fn string_end(input: &str, start: usize) -> Result<usize, FilterError> {
    let bytes = input.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(FilterError::new(start, "unterminated string"))
}

// ---------------------------------------------------------------- parser

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
    len: usize,
    depth: usize,
}

impl Parser {
    fn new(input: &str) -> Result<Self, FilterError> {
        if input.len() > MAX_FILTER_LEN {
            return Err(FilterError::new(
                MAX_FILTER_LEN,
                format!("longer than {MAX_FILTER_LEN} bytes"),
            ));
        }
        Ok(Parser {
            toks: lex(input)?,
            at: 0,
            len: input.len(),
            depth: 0,
        })
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.len, |t| t.1)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }

    fn peek_is(&self, tok: &Tok) -> bool {
        self.peek() == Some(tok)
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn bump(&mut self) -> Option<(Tok, usize)> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), FilterError> {
        if self.peek_is(&tok) {
            self.at += 1;
            Ok(())
        } else {
            Err(FilterError::new(self.pos(), format!("expected {what}")))
        }
    }

    fn expect_word(&mut self, what: &str) -> Result<(String, usize), FilterError> {
        match self.bump() {
            Some((Tok::Word(w), pos)) => Ok((w, pos)),
            Some((_, pos)) => Err(FilterError::new(pos, format!("expected {what}"))),
            None => Err(FilterError::new(self.len, format!("expected {what}"))),
        }
    }

    fn end(&self) -> Result<(), FilterError> {
        match self.toks.get(self.at) {
            None => Ok(()),
            Some((_, pos)) => Err(FilterError::new(*pos, "unexpected trailing input")),
        }
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::new(
                self.pos(),
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn filter(&mut self) -> Result<Filter, FilterError> {
        let mut terms = vec![self.and()?];
        while self.peek_keyword("or") {
            self.at += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut terms = vec![self.unary()?];
        while self.peek_keyword("and") {
            self.at += 1;
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Filter::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.peek_keyword("not")
            && self.toks.get(self.at + 1).map(|t| &t.0) == Some(&Tok::LParen)
        {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.group()?)));
        }
        if self.peek_is(&Tok::LParen) {
            return self.group();
        }
        self.attr_expr()
    }

    /// `( filter )`.
    fn group(&mut self) -> Result<Filter, FilterError> {
        self.enter()?;
        self.expect(Tok::LParen, "'('")?;
        let f = self.filter()?;
        self.expect(Tok::RParen, "')'")?;
        self.leave();
        Ok(f)
    }

    /// `[ filter ]`, with no value path inside (RFC 7644 forbids nesting).
    fn bracket(&mut self) -> Result<Filter, FilterError> {
        self.enter()?;
        self.expect(Tok::LBracket, "'['")?;
        let pos = self.pos();
        let f = self.filter()?;
        if f.has_value_path() {
            return Err(FilterError::new(pos, "value filters cannot be nested"));
        }
        self.expect(Tok::RBracket, "']'")?;
        self.leave();
        Ok(f)
    }

    /// `.sub` right after a `]`, if present.
    fn dot_sub(&mut self) -> Result<Option<(String, usize)>, FilterError> {
        match self.peek() {
            Some(Tok::Word(w)) if w.starts_with('.') => {
                let (w, pos) = self.expect_word("a sub-attribute")?;
                let name = &w[1..];
                check_name(name, pos + 1)?;
                Ok(Some((name.to_string(), pos)))
            }
            _ => Ok(None),
        }
    }

    fn attr_expr(&mut self) -> Result<Filter, FilterError> {
        let (word, pos) = self.expect_word("an attribute path")?;
        let path = parse_attr_path(&word, pos)?;
        if !self.peek_is(&Tok::LBracket) {
            return self.test(path);
        }
        if path.sub.is_some() {
            return Err(FilterError::new(
                pos,
                "a value filter must follow an attribute, not a sub-attribute",
            ));
        }
        let filter = Box::new(self.bracket()?);
        let then = match self.dot_sub()? {
            Some((sub, _)) => Some(Box::new(self.test(AttrPath::simple(&sub))?)),
            None => None,
        };
        Ok(Filter::ValuePath { path, filter, then })
    }

    /// `pr` or `op value` after an attribute path.
    fn test(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        let (op, pos) = self.expect_word("an operator")?;
        if op.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&op)
            .ok_or_else(|| FilterError::new(pos, format!("unknown operator {op:?}")))?;
        let value = self.literal()?;
        Ok(Filter::Compare { path, op, value })
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        match self.bump() {
            Some((Tok::Str(s), _)) => Ok(Literal::String(s)),
            Some((Tok::Word(w), pos)) => word_literal(&w, pos),
            Some((_, pos)) => Err(FilterError::new(pos, "expected a value")),
            None => Err(FilterError::new(self.len, "expected a value")),
        }
    }
}

fn word_literal(w: &str, pos: usize) -> Result<Literal, FilterError> {
    match w.to_ascii_lowercase().as_str() {
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        "null" => return Ok(Literal::Null),
        _ => {}
    }
    let numeric = w.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    if let Some(n) = numeric
        .then(|| serde_json::from_str::<Number>(w).ok())
        .flatten()
    {
        return Ok(Literal::Number(n));
    }
    Err(FilterError::new(
        pos,
        format!("expected a value (string, number, true, false or null), got {w:?}"),
    ))
}

fn check_name(name: &str, pos: usize) -> Result<(), FilterError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        Ok(())
    } else {
        Err(FilterError::new(
            pos,
            format!("invalid attribute name {name:?}"),
        ))
    }
}

/// Splits `[urn:…:]attr[.sub]` into an [`AttrPath`].
fn parse_attr_path(word: &str, pos: usize) -> Result<AttrPath, FilterError> {
    let is_urn =
        word.len() >= 4 && word.is_char_boundary(4) && word[..4].eq_ignore_ascii_case("urn:");
    let (schema, rest, rest_pos) = match word.rfind(':') {
        Some(i) if is_urn => (Some(word[..i].to_string()), &word[i + 1..], pos + i + 1),
        Some(i) => return Err(FilterError::new(pos + i, "':' outside a schema URN")),
        None => (None, word, pos),
    };
    let mut parts = rest.splitn(2, '.');
    let attr = parts.next().unwrap_or_default();
    check_name(attr, rest_pos)?;
    let sub = match parts.next() {
        Some(sub) => {
            check_name(sub, rest_pos + attr.len() + 1)?;
            Some(sub.to_string())
        }
        None => None,
    };
    Ok(AttrPath {
        schema,
        attr: attr.to_string(),
        sub,
    })
}

// ---------------------------------------------------------------- render

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write!(f, "{}", Value::String(s.clone())),
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("null"),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::ValuePath { path, filter, then } => {
                write!(f, "{path}[{filter}]")?;
                if let Some(then) = then {
                    write!(f, ".{then}")?;
                }
                Ok(())
            }
            Filter::And(terms) => write_terms(f, terms, "and"),
            Filter::Or(terms) => write_terms(f, terms, "or"),
            Filter::Not(inner) => write!(f, "not ({inner})"),
        }
    }
}

fn write_terms(f: &mut fmt::Formatter<'_>, terms: &[Filter], word: &str) -> fmt::Result {
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            write!(f, " {word} ")?;
        }
        if matches!(t, Filter::And(_) | Filter::Or(_)) {
            write!(f, "({t})")?;
        } else {
            write!(f, "{t}")?;
        }
    }
    Ok(())
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}:")?;
        }
        f.write_str(&self.attr)?;
        if let Some(filter) = &self.filter {
            write!(f, "[{filter}]")?;
        }
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- evaluate

impl Filter {
    /// Whether the resource matches, with [`default_case_exact`].
    pub fn matches(&self, resource: &Value) -> bool {
        self.matches_with(resource, &default_case_exact)
    }

    /// Whether the resource matches; `case_exact` says which attributes
    /// compare strings case-sensitively (sub-attributes inside a value
    /// filter are asked as `parent.sub`).
    pub fn matches_with(&self, resource: &Value, case_exact: &dyn Fn(&AttrPath) -> bool) -> bool {
        self.eval(resource, None, case_exact)
    }

    /// Whether one element of the multi-valued attribute `parent` matches
    /// this (value) filter, as in `parent[filter]`, with
    /// [`default_case_exact`] asked about `parent.attr`.
    pub fn matches_element(&self, element: &Value, parent: &AttrPath) -> bool {
        self.eval(element, Some(parent), &default_case_exact)
    }

    fn eval(&self, r: &Value, parent: Option<&AttrPath>, ce: &dyn Fn(&AttrPath) -> bool) -> bool {
        match self {
            Filter::Compare { path, op, value } => {
                let exact = ce(&qualified(parent, path));
                let found = lookup(r, path);
                let equal = || {
                    if found.is_empty() {
                        *value == Literal::Null
                    } else {
                        found
                            .iter()
                            .any(|v| compare(v, CompareOp::Eq, value, exact))
                    }
                };
                match op {
                    CompareOp::Eq => equal(),
                    CompareOp::Ne => !equal(),
                    _ => found.iter().any(|v| compare(v, *op, value, exact)),
                }
            }
            Filter::Present(path) => lookup(r, path).into_iter().any(is_present),
            Filter::ValuePath { path, filter, then } => {
                lookup_elements(r, path).into_iter().any(|e| {
                    filter.eval(e, Some(path), ce)
                        && then.as_ref().is_none_or(|t| t.eval(e, Some(path), ce))
                })
            }
            Filter::And(terms) => terms.iter().all(|t| t.eval(r, parent, ce)),
            Filter::Or(terms) => terms.iter().any(|t| t.eval(r, parent, ce)),
            Filter::Not(inner) => !inner.eval(r, parent, ce),
        }
    }

    fn has_value_path(&self) -> bool {
        match self {
            Filter::ValuePath { .. } => true,
            Filter::And(t) | Filter::Or(t) => t.iter().any(Filter::has_value_path),
            Filter::Not(inner) => inner.has_value_path(),
            Filter::Compare { .. } | Filter::Present(_) => false,
        }
    }

    /// The index plan for this filter: a leaf of an indexable shape; an
    /// `and` with any indexable operand (its first); an `or` whose operands
    /// all have lookups (their union). Anything else is a scan.
    pub fn index_plan(&self) -> IndexPlan<'_> {
        if let Some(i) = self.indexable() {
            return IndexPlan::Lookups(vec![i]);
        }
        match self {
            Filter::And(terms) => terms
                .iter()
                .map(Filter::index_plan)
                .find(|p| *p != IndexPlan::Scan)
                .unwrap_or(IndexPlan::Scan),
            Filter::Or(terms) => {
                let mut all = Vec::new();
                for t in terms {
                    match t.index_plan() {
                        IndexPlan::Lookups(l) => all.extend(l),
                        IndexPlan::Scan => return IndexPlan::Scan,
                    }
                }
                IndexPlan::Lookups(all)
            }
            _ => IndexPlan::Scan,
        }
    }

    /// The index this filter can be answered from, if it is one of the
    /// indexable shapes (a core-schema prefix is allowed). For `and`/`or`
    /// a handler can call this on the operands: an indexable operand of an
    /// `and` gives candidates to re-check with [`Filter::matches`].
    pub fn indexable(&self) -> Option<Indexable<'_>> {
        match self {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value,
            } => match value {
                Literal::String(s) if path.is("userName", None) => Some(Indexable::UserName(s)),
                Literal::String(s) if path.is("externalId", None) => Some(Indexable::ExternalId(s)),
                Literal::String(s) if path.is("emails", Some("value")) => Some(Indexable::Email(s)),
                Literal::Bool(b) if path.is("active", None) => Some(Indexable::Active(*b)),
                _ => None,
            },
            Filter::ValuePath {
                path,
                filter,
                then: Some(then),
            } if path.is("emails", None) && is_type_work(filter) => match then.as_ref() {
                Filter::Compare {
                    path,
                    op: CompareOp::Eq,
                    value: Literal::String(s),
                } if path.is("value", None) => Some(Indexable::WorkEmail(s)),
                _ => None,
            },
            _ => None,
        }
    }
}

fn is_type_work(f: &Filter) -> bool {
    matches!(f, Filter::Compare { path, op: CompareOp::Eq, value: Literal::String(s) }
        if path.is("type", None) && s.eq_ignore_ascii_case("work"))
}

/// The path a `caseExact` hook is asked about: `parent.attr` inside a value
/// filter, the path itself otherwise.
fn qualified(parent: Option<&AttrPath>, path: &AttrPath) -> AttrPath {
    match parent {
        Some(p) => AttrPath {
            schema: p.schema.clone(),
            attr: p.attr.clone(),
            sub: Some(path.attr.clone()),
        },
        None => path.clone(),
    }
}

/// The value of a key in an object, matched case-insensitively.
pub(crate) fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let map = v.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The object an attribute path starts from: the resource, or its
/// extension object for an extension-schema path.
fn root<'a>(r: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    match &path.schema {
        Some(s) if !is_core_schema(s) => get_ci(r, s),
        _ => Some(r),
    }
}

/// The attribute's value, as elements: each element of an array, or the
/// value itself.
fn lookup_elements<'a>(r: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(v) = root(r, path).and_then(|root| get_ci(root, &path.attr)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    flatten(v, &mut out);
    out
}

/// All values at a path, multi-valued attributes flattened.
fn lookup<'a>(r: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let elements = lookup_elements(r, path);
    let Some(sub) = &path.sub else {
        return elements;
    };
    let mut out = Vec::new();
    for e in elements {
        if let Some(v) = get_ci(e, sub) {
            flatten(v, &mut out);
        }
    }
    out
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => out.extend(items.iter()),
        v => out.push(v),
    }
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Compares one attribute value with a literal. A complex value is compared
/// through its `value` sub-attribute (RFC 7644 §3.4.2.2).
fn compare(v: &Value, op: CompareOp, lit: &Literal, exact: bool) -> bool {
    let v = match v {
        Value::Object(_) => match get_ci(v, "value") {
            Some(inner) => inner,
            None => return false,
        },
        v => v,
    };
    match (v, lit) {
        (Value::String(a), Literal::String(b)) => compare_str(a, op, b, exact),
        (Value::Number(a), Literal::Number(b)) => compare_num(a, op, b),
        (Value::Bool(a), Literal::Bool(b)) => op == CompareOp::Eq && a == b,
        (Value::Null, Literal::Null) => op == CompareOp::Eq,
        _ => false,
    }
}

fn compare_str(a: &str, op: CompareOp, b: &str, exact: bool) -> bool {
    // Two dateTimes (`meta.lastModified gt "2011-05-13T04:42:34Z"`) compare
    // as instants: as text, "…:34.5Z" would sort before "…:34Z".
    if !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
        && let (Ok(x), Ok(y)) = (
            chrono::DateTime::parse_from_rfc3339(a),
            chrono::DateTime::parse_from_rfc3339(b),
        )
    {
        use std::cmp::Ordering::*;
        let ord = x.cmp(&y);
        return match op {
            CompareOp::Eq => ord == Equal,
            CompareOp::Ne => ord != Equal,
            CompareOp::Gt => ord == Greater,
            CompareOp::Ge => ord != Less,
            CompareOp::Lt => ord == Less,
            _ => ord != Greater,
        };
    }
    let (a, b) = if exact {
        (a.to_string(), b.to_string())
    } else {
        (a.to_lowercase(), b.to_lowercase())
    };
    match op {
        CompareOp::Eq => a == b,
        CompareOp::Ne => a != b,
        CompareOp::Co => a.contains(&b),
        CompareOp::Sw => a.starts_with(&b),
        CompareOp::Ew => a.ends_with(&b),
        CompareOp::Gt => a > b,
        CompareOp::Ge => a >= b,
        CompareOp::Lt => a < b,
        CompareOp::Le => a <= b,
    }
}

fn compare_num(a: &Number, op: CompareOp, b: &Number) -> bool {
    let ord = match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        _ => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y)),
    };
    let Some(ord) = ord else { return false };
    use std::cmp::Ordering::*;
    match op {
        CompareOp::Eq => ord == Equal,
        CompareOp::Ne => ord != Equal,
        CompareOp::Gt => ord == Greater,
        CompareOp::Ge => ord != Less,
        CompareOp::Lt => ord == Less,
        CompareOp::Le => ord != Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "2819c223",
            "externalId": "Ext-1",
            "userName": "Bjensen@Example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "loginCount": 7,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984",
                "manager": {"value": "26118915"}
            },
            "meta": {"lastModified": "2011-05-13T04:42:34Z"}
        })
    }

    fn m(filter: &str) -> bool {
        match parse(filter) {
            Ok(f) => f.matches(&user()),
            Err(e) => panic!("{filter}: {e}"),
        }
    }

    #[test]
    fn parses_paths_with_schema_and_sub_attribute() {
        let f =
            parse("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName eq \"x\"").unwrap();
        let Filter::Compare { path, op, value } = f else {
            panic!("{f:?}")
        };
        assert_eq!(
            path.schema.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
        assert_eq!(path.attr, "name");
        assert_eq!(path.sub.as_deref(), Some("givenName"));
        assert_eq!(op, CompareOp::Eq);
        assert_eq!(value, Literal::String("x".into()));
    }

    #[test]
    fn operators_and_keywords_are_case_insensitive() {
        assert!(m("USERNAME EQ \"bjensen@example.com\""));
        assert!(m("userName Eq \"x\" OR Active eQ TRUE"));
        assert!(m("NOT (userName sw \"z\") AnD emails PR"));
    }

    #[test]
    fn every_operator() {
        assert!(m("userName eq \"bjensen@example.com\""));
        assert!(m("userName ne \"other\""));
        assert!(m("userName co \"jensen\""));
        assert!(m("userName sw \"bj\""));
        assert!(m("userName ew \".COM\""));
        assert!(m("loginCount gt 6") && !m("loginCount gt 7"));
        assert!(m("loginCount ge 7") && m("loginCount lt 7.5") && m("loginCount le 7"));
        assert!(!m("meta.lastModified gt \"2011-05-13T04:42:34Z\""));
        assert!(m("meta.lastModified ge \"2011-05-13T04:42:34Z\""));
        assert!(m("name.givenName pr") && !m("nickName pr"));
        assert!(m("nickName eq null") && !m("nickName ne null") && m("userName ne null"));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = parse("a pr or b pr and c pr").unwrap();
        assert!(matches!(&f, Filter::Or(t) if t.len() == 2 && matches!(t[1], Filter::And(_))));
        // false or (true and false) = false; (false or true) and false = false;
        // true or (false and x) = true.
        assert!(!m(
            "userName eq \"x\" or active eq true and loginCount eq 1"
        ));
        assert!(m("active eq true or userName eq \"x\" and loginCount eq 1"));
        assert!(!m(
            "(active eq true or userName eq \"x\") and loginCount eq 1"
        ));
    }

    #[test]
    fn multi_valued_and_value_paths() {
        assert!(m("emails.value eq \"babs@jensen.org\""));
        assert!(
            m("emails eq \"babs@jensen.org\""),
            "complex compared by value"
        );
        assert!(m("emails[type eq \"work\" and value co \"example\"]"));
        assert!(!m("emails[type eq \"home\" and value co \"example\"]"));
        assert!(m(
            "emails[type eq \"work\"].value eq \"BJENSEN@example.com\""
        ));
        assert!(!m(
            "emails[type eq \"home\"].value eq \"bjensen@example.com\""
        ));
        assert!(m("emails[primary eq true].type eq \"work\""));
        assert!(m("emails[not (type eq \"work\")]"));
    }

    #[test]
    fn extension_schema_paths() {
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq \"701984\""
        ));
        assert!(m(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"26118915\""
        ));
        assert!(!m("urn:example:other:employeeNumber pr"));
    }

    #[test]
    fn user_name_is_case_insensitive_external_id_is_not() {
        assert!(m("userName eq \"BJENSEN@EXAMPLE.COM\""));
        assert!(m("externalId eq \"Ext-1\"") && !m("externalId eq \"ext-1\""));
        let f = parse("userName eq \"BJENSEN@EXAMPLE.COM\"").unwrap();
        assert!(!f.matches_with(&user(), &|_| true));
    }

    #[test]
    fn string_escapes_and_literals() {
        let f = parse(r#"title eq "a \"q\" \u00e9\n""#).unwrap();
        assert!(
            matches!(f, Filter::Compare { value: Literal::String(s), .. } if s == "a \"q\" é\n")
        );
        assert!(matches!(
            parse("x eq -1.5e3").unwrap(),
            Filter::Compare {
                value: Literal::Number(_),
                ..
            }
        ));
        assert!(matches!(
            parse("x eq False").unwrap(),
            Filter::Compare {
                value: Literal::Bool(false),
                ..
            }
        ));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("userName eq").unwrap_err();
        assert_eq!(e.position, 11);
        assert_eq!(e.scim_type(), ScimType::InvalidFilter);
        assert_eq!(parse("userName xx \"a\"").unwrap_err().position, 9);
        assert_eq!(parse("userName eq \"a").unwrap_err().position, 12);
        assert_eq!(parse("(userName pr").unwrap_err().position, 12);
        assert_eq!(parse("userName pr )").unwrap_err().position, 12);
        assert!(parse("userName eq bare").is_err());
        assert!(parse("1abc pr").is_err());
        assert!(parse("a:b pr").is_err());
        assert!(parse("emails[type[x pr]]").is_err(), "nested value filters");
        assert!(parse("").is_err());
        assert!(parse("userName eq \"a\" @").is_err());
    }

    #[test]
    fn bounded_length_and_depth() {
        let long = format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN));
        assert!(parse(&long).unwrap_err().message.contains("longer"));
        let ok = format!("{}a pr{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "{}a pr{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(&deep).unwrap_err().message.contains("deeper"));
        let nots = format!("{}a pr{}", "not (".repeat(1000), ")".repeat(1000));
        assert!(parse(&nots).is_err());
        // A long flat chain stays flat: no deep tree to recurse through.
        let chain = vec!["a pr"; 400].join(" and ");
        assert!(matches!(parse(&chain).unwrap(), Filter::And(t) if t.len() == 400));
    }

    #[test]
    fn indexable_shapes() {
        let idx = |s: &str| parse(s).unwrap().indexable().map(|i| format!("{i:?}"));
        assert_eq!(
            idx("userName eq \"a@b\"").as_deref(),
            Some("UserName(\"a@b\")")
        );
        assert_eq!(
            idx("urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"a\"").as_deref(),
            Some("UserName(\"a\")")
        );
        assert_eq!(
            idx("externalId eq \"e\"").as_deref(),
            Some("ExternalId(\"e\")")
        );
        assert_eq!(
            idx("emails[type eq \"work\"].value eq \"w\"").as_deref(),
            Some("WorkEmail(\"w\")")
        );
        assert_eq!(
            idx("emails.value eq \"v\"").as_deref(),
            Some("Email(\"v\")")
        );
        assert_eq!(idx("active eq false").as_deref(), Some("Active(false)"));
        assert_eq!(idx("userName sw \"a\""), None);
        assert_eq!(idx("active eq \"true\""), None);
        assert_eq!(idx("emails[type eq \"home\"].value eq \"w\""), None);
        assert_eq!(idx("urn:x:ext:userName eq \"a\""), None);
        assert_eq!(idx("userName eq \"a\" and active eq true"), None);
    }

    #[test]
    fn index_plans() {
        let plan = |s: &str| format!("{:?}", parse(s).unwrap().index_plan());
        assert_eq!(plan("userName eq \"a\""), "Lookups([UserName(\"a\")])");
        assert_eq!(
            plan("title pr and (externalId eq \"e\" or emails.value eq \"v\")"),
            "Lookups([ExternalId(\"e\"), Email(\"v\")])"
        );
        assert_eq!(
            plan("title pr and active eq true"),
            "Lookups([Active(true)])"
        );
        assert_eq!(plan("userName eq \"a\" or title pr"), "Scan");
        assert_eq!(plan("not (userName eq \"a\")"), "Scan");
        assert_eq!(plan("userName ne \"a\""), "Scan");
    }

    #[test]
    fn patch_paths() {
        let p = parse_path("members[value eq \"id\"]").unwrap();
        assert_eq!(p.attr, "members");
        assert!(p.filter.is_some() && p.sub.is_none());
        let p = parse_path("emails[type eq \"work\"].value").unwrap();
        assert_eq!(p.sub.as_deref(), Some("value"));
        let p = parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager")
            .unwrap();
        assert_eq!(
            p.schema.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(p.attr, "manager");
        let p = parse_path("name.givenName").unwrap();
        assert_eq!(
            (p.attr.as_str(), p.sub.as_deref()),
            ("name", Some("givenName"))
        );
        assert!(parse_path("name.givenName[x pr]").is_err());
        assert!(parse_path("members[value eq \"a\"] x").is_err());
        assert!(parse_path("").is_err());
        assert_eq!(p.to_string(), "name.givenName");
    }

    // ------------------------------------------------------------ properties

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z][a-zA-Z0-9_-]{0,6}"
    }

    fn attr_path() -> impl Strategy<Value = AttrPath> {
        let schema = prop_oneof![
            Just(None),
            Just(Some(
                "urn:ietf:params:scim:schemas:core:2.0:User".to_string()
            )),
            Just(Some(
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_string()
            )),
        ];
        (schema, name(), proptest::option::of(name())).prop_map(|(schema, attr, sub)| AttrPath {
            schema,
            attr,
            sub,
        })
    }

    fn literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            any::<String>().prop_map(Literal::String),
            any::<i64>().prop_map(|n| Literal::Number(n.into())),
            (-1_000_000i64..1_000_000).prop_map(|n| {
                Literal::Number(Number::from_f64(n as f64 / 64.0 + 0.5).unwrap_or_else(|| 0.into()))
            }),
            any::<bool>().prop_map(Literal::Bool),
            Just(Literal::Null),
        ]
    }

    fn op() -> impl Strategy<Value = CompareOp> {
        prop_oneof![
            Just(CompareOp::Eq),
            Just(CompareOp::Ne),
            Just(CompareOp::Co),
            Just(CompareOp::Sw),
            Just(CompareOp::Ew),
            Just(CompareOp::Gt),
            Just(CompareOp::Ge),
            Just(CompareOp::Lt),
            Just(CompareOp::Le),
        ]
    }

    fn simple_path() -> impl Strategy<Value = AttrPath> {
        name().prop_map(|n| AttrPath::simple(&n))
    }

    /// Comparisons and presence tests on `path`.
    fn test_on(path: BoxedStrategy<AttrPath>) -> BoxedStrategy<Filter> {
        prop_oneof![
            (path.clone(), op(), literal()).prop_map(|(path, op, value)| Filter::Compare {
                path,
                op,
                value
            }),
            path.prop_map(Filter::Present),
        ]
        .boxed()
    }

    fn tree(leaf: BoxedStrategy<Filter>) -> BoxedStrategy<Filter> {
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::Or),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
        .boxed()
    }

    fn filter_ast() -> BoxedStrategy<Filter> {
        let inner = tree(test_on(simple_path().boxed()));
        let value_path = (
            name(),
            inner,
            proptest::option::of(test_on(
                simple_path()
                    .prop_filter("no sub", |p| p.sub.is_none())
                    .boxed(),
            )),
        )
            .prop_map(|(attr, filter, then)| Filter::ValuePath {
                path: AttrPath::simple(&attr),
                filter: Box::new(filter),
                then: then.map(Box::new),
            });
        tree(prop_oneof![test_on(attr_path().boxed()), value_path].boxed())
    }

    const TOKENS: &[&str] = &[
        "userName",
        "emails",
        "members",
        ".value",
        "name.givenName",
        "urn:ietf:params:scim:schemas:core:2.0:User:",
        "eq",
        "ne",
        "co",
        "sw",
        "ew",
        "gt",
        "ge",
        "lt",
        "le",
        "pr",
        "and",
        "or",
        "not",
        "(",
        ")",
        "[",
        "]",
        "\"x\"",
        "\"",
        "\\",
        "1",
        "-2.5e3",
        "true",
        "null",
        " ",
        ".",
        ":",
        "é",
        "\u{0}",
    ];

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn filter_parser_never_panics_on_chars(s in any::<String>()) {
            let _ = parse(&s);
            let _ = parse_path(&s);
        }

        #[test]
        fn filter_parser_never_panics_on_tokens(toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..40)) {
            let s = toks.concat();
            if let Ok(f) = parse(&s) {
                let _ = f.matches(&user());
                let _ = f.indexable();
            }
            let _ = parse_path(&s);
            let spaced = toks.join(" ");
            let _ = parse(&spaced);
            let _ = parse_path(&spaced);
        }

        #[test]
        fn parse_render_roundtrip(f in filter_ast()) {
            let text = f.to_string();
            prop_assert_eq!(parse(&text), Ok(f.clone()), "rendered: {}", text);
            let _ = f.matches(&user());
        }

        #[test]
        fn patch_path_roundtrip(attr in name(), f in proptest::option::of(tree(test_on(simple_path().boxed()))), sub in proptest::option::of(name())) {
            let p = PatchPath { schema: None, attr, filter: f, sub };
            let text = p.to_string();
            prop_assert_eq!(parse_path(&text), Ok(p), "rendered: {}", text);
        }
    }
}
