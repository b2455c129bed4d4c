//! A consumer group's subscription to the flow's topic, and whether it
//! selects a message: a tag expression (`*`, `TagA || TagB`) or an SQL92
//! filter on the message's properties, evaluated as the broker does
//! (RocketMQ's `SqlFilter`, derived from ActiveMQ's selector): three-valued
//! logic where a missing property is NULL and a comparison with NULL is
//! unknown, and unknown selects nothing.
//!
//! A message the subscription does not select is not the group's to consume:
//! the audit counts it `not_subscribed`, never missing.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Subscription {
    /// Every message (`*` or empty).
    All,
    /// Messages whose tag is one of these (`TagA || TagB`).
    Tags(Vec<String>),
    /// Messages whose properties satisfy the expression.
    Sql {
        /// The text, as configured or learned.
        text: String,
        /// Parsed.
        expr: Expr,
    },
}

/// A subscription that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subscription {text:?}: {reason}")]
pub struct SubscriptionError {
    /// The expression.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl Subscription {
    /// A tag expression as Java clients write it (`||`-separated; `*` or
    /// empty means every tag).
    pub fn tags(text: &str) -> Subscription {
        let tags: Vec<String> = text
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if tags.is_empty() || tags.iter().any(|t| t == "*") {
            Subscription::All
        } else {
            Subscription::Tags(tags)
        }
    }

    /// An SQL92 filter.
    ///
    /// # Errors
    /// When the text is not an expression of RocketMQ's filter grammar.
    pub fn sql(text: &str) -> Result<Subscription, SubscriptionError> {
        let expr = Parser::new(text)
            .and_then(|mut p| p.parse())
            .map_err(|reason| SubscriptionError {
                text: text.to_string(),
                reason,
            })?;
        Ok(Subscription::Sql {
            text: text.to_string(),
            expr,
        })
    }

    /// The subscription a broker reports (`expressionType` TAG or SQL92).
    ///
    /// # Errors
    /// An SQL92 expression that does not parse.
    pub fn from_broker(
        expression_type: Option<&str>,
        text: &str,
    ) -> Result<Subscription, SubscriptionError> {
        match expression_type {
            Some(t) if t.eq_ignore_ascii_case("SQL92") => Subscription::sql(text),
            _ => Ok(Subscription::tags(text)),
        }
    }

    /// Whether it selects a message with `tag` and `properties`; `None`
    /// when it cannot tell (an SQL filter without the properties, a tag
    /// filter without the tag).
    pub fn selects(
        &self,
        tag: Option<&str>,
        properties: Option<&BTreeMap<String, String>>,
    ) -> Option<bool> {
        match self {
            Subscription::All => Some(true),
            Subscription::Tags(tags) => tag.map(|t| tags.iter().any(|s| s == t)).or(
                // A message without a tag has none to match.
                Some(false),
            ),
            Subscription::Sql { expr, .. } => {
                let properties = properties?;
                let lookup = |name: &str| -> Option<Value> {
                    if name == "TAGS" {
                        return tag.map(|t| Value::Str(t.to_string()));
                    }
                    properties.get(name).map(|v| Value::Str(v.clone()))
                };
                Some(expr.eval(&lookup).truthy() == Some(true))
            }
        }
    }

    /// True for an SQL filter (it needs the message's properties).
    pub fn needs_properties(&self) -> bool {
        matches!(self, Subscription::Sql { .. })
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subscription::All => write!(f, "*"),
            Subscription::Tags(tags) => write!(f, "{}", tags.join(" || ")),
            Subscription::Sql { text, .. } => write!(f, "SQL92: {text}"),
        }
    }
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL (a missing property).
    Null,
    /// TRUE / FALSE.
    Bool(bool),
    /// A number.
    Num(f64),
    /// A string (property values are strings).
    Str(String),
}

impl Value {
    fn truthy(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// As a number: numbers, and strings that parse as one (the broker
    /// converts a string property compared with a number).
    fn number(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A parsed SQL92 filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A property.
    Prop(String),
    /// NOT e.
    Not(Box<Expr>),
    /// a AND b.
    And(Box<Expr>, Box<Expr>),
    /// a OR b.
    Or(Box<Expr>, Box<Expr>),
    /// a OP b.
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    /// e \[NOT\] BETWEEN lo AND hi.
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    /// e \[NOT\] IN (...).
    In(Box<Expr>, Vec<Value>, bool),
    /// e IS \[NOT\] NULL.
    IsNull(Box<Expr>, bool),
    /// e \[NOT\] CONTAINS / STARTSWITH / ENDSWITH 's' (5.x).
    Text(Box<Expr>, TextOp, String, bool),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// String predicates added in 5.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    /// CONTAINS
    Contains,
    /// STARTSWITH
    StartsWith,
    /// ENDSWITH
    EndsWith,
}

fn three(b: Option<bool>) -> Value {
    b.map_or(Value::Null, Value::Bool)
}

fn compare(a: &Value, op: CmpOp, b: &Value) -> Option<bool> {
    use std::cmp::Ordering;
    let ordering = match (a, b) {
        (Value::Null, _) | (_, Value::Null) => return None,
        (Value::Str(x), Value::Str(y)) => {
            // Strings compare only for (in)equality.
            return match op {
                CmpOp::Eq => Some(x == y),
                CmpOp::Ne => Some(x != y),
                _ => None,
            };
        }
        (Value::Bool(x), Value::Bool(y)) => {
            return match op {
                CmpOp::Eq => Some(x == y),
                CmpOp::Ne => Some(x != y),
                _ => None,
            };
        }
        _ => {
            let (x, y) = (a.number()?, b.number()?);
            x.partial_cmp(&y)?
        }
    };
    Some(match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    })
}

impl Expr {
    /// Evaluate with `lookup` giving property values.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<Value>) -> Value {
        match self {
            Expr::Lit(v) => v.clone(),
            Expr::Prop(name) => lookup(name).unwrap_or(Value::Null),
            Expr::Not(e) => three(e.eval(lookup).truthy().map(|b| !b)),
            Expr::And(a, b) => {
                let (x, y) = (a.eval(lookup).truthy(), b.eval(lookup).truthy());
                three(match (x, y) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                })
            }
            Expr::Or(a, b) => {
                let (x, y) = (a.eval(lookup).truthy(), b.eval(lookup).truthy());
                three(match (x, y) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                })
            }
            Expr::Cmp(a, op, b) => three(compare(&a.eval(lookup), *op, &b.eval(lookup))),
            Expr::Between(e, lo, hi, negated) => {
                let v = e.eval(lookup);
                let inside = match (
                    compare(&v, CmpOp::Ge, &lo.eval(lookup)),
                    compare(&v, CmpOp::Le, &hi.eval(lookup)),
                ) {
                    (Some(a), Some(b)) => Some(a && b),
                    _ => None,
                };
                three(inside.map(|b| b != *negated))
            }
            Expr::In(e, list, negated) => {
                let v = e.eval(lookup);
                if v == Value::Null {
                    return Value::Null;
                }
                let found = list.iter().any(|x| compare(&v, CmpOp::Eq, x) == Some(true));
                Value::Bool(found != *negated)
            }
            Expr::IsNull(e, negated) => Value::Bool((e.eval(lookup) == Value::Null) != *negated),
            Expr::Text(e, op, needle, negated) => match e.eval(lookup) {
                Value::Str(s) => {
                    let hit = match op {
                        TextOp::Contains => s.contains(needle.as_str()),
                        TextOp::StartsWith => s.starts_with(needle.as_str()),
                        TextOp::EndsWith => s.ends_with(needle.as_str()),
                    };
                    Value::Bool(hit != *negated)
                }
                _ => Value::Null,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let (token, next) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Token::LParen, i + 1),
            ')' => (Token::RParen, i + 1),
            ',' => (Token::Comma, i + 1),
            '=' => (Token::Op("="), i + 1),
            '\'' => string_literal(&chars, i)?,
            '<' | '>' => {
                let op = match (c, chars.get(i + 1)) {
                    ('<', Some('>')) => "<>",
                    ('<', Some('=')) => "<=",
                    ('>', Some('=')) => ">=",
                    ('<', _) => "<",
                    _ => ">",
                };
                (Token::Op(op), i + op.len())
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                number(&chars, i)?
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let end = (i..chars.len())
                    .find(|&j| !(chars[j].is_alphanumeric() || matches!(chars[j], '_' | '$' | '.')))
                    .unwrap_or(chars.len());
                (Token::Ident(chars[i..end].iter().collect()), end)
            }
            other => return Err(format!("unexpected character {other:?}")),
        };
        out.push(token);
        i = next;
    }
    Ok(out)
}

/// The literal starting at the quote at `start`, and where it ends; `''`
/// is a quote inside it.
fn string_literal(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err("unterminated string literal".to_string()),
            Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                s.push('\'');
                i += 2;
            }
            Some('\'') => return Ok((Token::Str(s), i + 1)),
            Some(&c) => {
                s.push(c);
                i += 1;
            }
        }
    }
}

/// The number starting at `start` (a Java `L` suffix allowed), and where
/// it ends.
fn number(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let mut i = start + 1;
    while i < chars.len()
        && (chars[i].is_ascii_digit() || matches!(chars[i], '.' | 'e' | 'E' | 'L'))
    {
        i += 1;
    }
    let literal: String = chars[start..i].iter().filter(|c| **c != 'L').collect();
    let n = literal
        .parse()
        .map_err(|_| format!("bad number {literal:?}"))?;
    Ok((Token::Num(n), i))
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Parser, String> {
        Ok(Parser {
            tokens: tokenize(text)?,
            at: 0,
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let hit = self.keyword(word);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn expect(&mut self, token: &Token, what: &str) -> Result<(), String> {
        if self.peek() == Some(token) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {what} at token {}", self.at + 1))
        }
    }

    fn parse(&mut self) -> Result<Expr, String> {
        if self.tokens.is_empty() {
            return Err("empty expression".to_string());
        }
        let e = self.or()?;
        if self.at != self.tokens.len() {
            return Err(format!("unexpected {:?}", self.tokens[self.at]));
        }
        Ok(e)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_keyword("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.eat_keyword("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        if let Some(Token::Op(op)) = self.peek().cloned() {
            self.at += 1;
            let op = match op {
                "=" => CmpOp::Eq,
                "<>" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            return Ok(Expr::Cmp(Box::new(left), op, Box::new(self.operand()?)));
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if !self.eat_keyword("NULL") {
                return Err("expected NULL after IS".to_string());
            }
            return Ok(Expr::IsNull(Box::new(left), negated));
        }
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("BETWEEN") {
            let lo = self.operand()?;
            if !self.eat_keyword("AND") {
                return Err("expected AND in BETWEEN".to_string());
            }
            let hi = self.operand()?;
            return Ok(Expr::Between(
                Box::new(left),
                Box::new(lo),
                Box::new(hi),
                negated,
            ));
        }
        if self.eat_keyword("IN") {
            self.expect(&Token::LParen, "( after IN")?;
            let mut list = Vec::new();
            loop {
                match self.operand()? {
                    Expr::Lit(v) => list.push(v),
                    _ => return Err("IN lists hold literals only".to_string()),
                }
                if self.peek() == Some(&Token::Comma) {
                    self.at += 1;
                    continue;
                }
                self.expect(&Token::RParen, ") closing IN")?;
                break;
            }
            return Ok(Expr::In(Box::new(left), list, negated));
        }
        for (word, op) in [
            ("CONTAINS", TextOp::Contains),
            ("STARTSWITH", TextOp::StartsWith),
            ("ENDSWITH", TextOp::EndsWith),
        ] {
            if self.eat_keyword(word) {
                return match self.operand()? {
                    Expr::Lit(Value::Str(s)) => Ok(Expr::Text(Box::new(left), op, s, negated)),
                    _ => Err(format!("{word} takes a string literal")),
                };
            }
        }
        if negated {
            return Err("NOT must be followed by BETWEEN, IN or a string predicate".to_string());
        }
        Ok(left)
    }

    fn operand(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Token::LParen) => {
                self.at += 1;
                let e = self.or()?;
                self.expect(&Token::RParen, ")")?;
                Ok(e)
            }
            Some(Token::Str(s)) => {
                self.at += 1;
                Ok(Expr::Lit(Value::Str(s)))
            }
            Some(Token::Num(n)) => {
                self.at += 1;
                Ok(Expr::Lit(Value::Num(n)))
            }
            Some(Token::Ident(w)) => {
                self.at += 1;
                Ok(match w.to_ascii_uppercase().as_str() {
                    "TRUE" => Expr::Lit(Value::Bool(true)),
                    "FALSE" => Expr::Lit(Value::Bool(false)),
                    "NULL" => Expr::Lit(Value::Null),
                    _ => Expr::Prop(w),
                })
            }
            other => Err(format!("expected a value, found {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tag_expressions_select_their_tags_only() {
        let s = Subscription::tags("TagA || TagB");
        assert_eq!(s.selects(Some("TagA"), None), Some(true));
        assert_eq!(s.selects(Some("TagC"), None), Some(false));
        assert_eq!(s.selects(None, None), Some(false));
        assert_eq!(Subscription::tags("*"), Subscription::All);
        assert_eq!(Subscription::tags(""), Subscription::All);
        assert_eq!(s.to_string(), "TagA || TagB");
    }

    #[test]
    fn sql_filters_follow_the_brokers_three_valued_logic() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("a > 5", &[("a", "7")], true),
            ("a > 5", &[("a", "3")], false),
            ("a > 5", &[], false), // NULL: unknown selects nothing
            ("NOT (a > 5)", &[], false),
            ("a > 5 OR b = 'x'", &[("b", "x")], true),
            ("a > 5 AND b = 'x'", &[("a", "9"), ("b", "y")], false),
            ("a BETWEEN 1 AND 3", &[("a", "2")], true),
            ("a NOT BETWEEN 1 AND 3", &[("a", "2")], false),
            ("region IN ('eu', 'us')", &[("region", "us")], true),
            ("region NOT IN ('eu', 'us')", &[("region", "ap")], true),
            ("region IS NULL", &[], true),
            ("region IS NOT NULL", &[("region", "eu")], true),
            ("TAGS = 'TagA'", &[], true),
            ("name CONTAINS 'der'", &[("name", "order")], true),
            ("name STARTSWITH 'or'", &[("name", "order")], true),
            ("name NOT ENDSWITH 'er'", &[("name", "order")], false),
            ("a = 'it''s'", &[("a", "it's")], true),
            ("a = 1.5", &[("a", "1.5")], true),
            ("a > 'x'", &[("a", "y")], false), // strings do not order
            ("a > 1", &[("a", "abc")], false), // not a number: unknown
            ("flag = TRUE", &[("flag", "true")], false), // a property is a string, not a boolean
        ];
        for (text, properties, want) in cases {
            let s = Subscription::sql(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                s.selects(Some("TagA"), Some(&props(properties))),
                Some(*want),
                "{text} with {properties:?}"
            );
        }
    }

    #[test]
    fn sql_without_properties_cannot_tell() {
        let s = Subscription::sql("a > 5").expect("parses");
        assert_eq!(s.selects(Some("TagA"), None), None);
        assert!(s.needs_properties());
    }

    #[test]
    fn malformed_sql_names_the_problem() {
        for (text, fragment) in [
            ("a >", "expected a value"),
            ("a = 'open", "unterminated"),
            ("a BETWEEN 1 3", "expected AND"),
            ("(a = 1", "expected )"),
            ("a = 1 b", "unexpected"),
            ("", "empty"),
        ] {
            let err = Subscription::sql(text).expect_err(text);
            assert!(err.to_string().contains(fragment), "{text}: {err}");
        }
    }

    #[test]
    fn the_brokers_expression_type_chooses_the_grammar() {
        assert_eq!(
            Subscription::from_broker(Some("TAG"), "A||B").expect("tags"),
            Subscription::Tags(vec!["A".into(), "B".into()])
        );
        assert!(matches!(
            Subscription::from_broker(Some("SQL92"), "a > 1").expect("sql"),
            Subscription::Sql { .. }
        ));
    }
}
