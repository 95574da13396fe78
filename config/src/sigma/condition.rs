//! The detection `condition` expression: `selection and not 1 of filter_*`.

use std::fmt;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A search identifier.
    Search(String),
    /// Negation.
    Not(Box<Condition>),
    /// All must hold.
    And(Vec<Condition>),
    /// Any must hold.
    Or(Vec<Condition>),
    /// `1 of pattern`: any matching search holds.
    OneOf(Pattern),
    /// `all of pattern`: every matching search holds.
    AllOf(Pattern),
}

/// What `1 of` / `all of` range over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `them`: every search of the rule.
    Them,
    /// A name with `*` wildcards, such as `selection_*`.
    Names(String),
}

impl Pattern {
    /// Whether a search identifier falls under this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Them => true,
            Pattern::Names(p) => wildcard_match(p, name),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Them => f.write_str("them"),
            Pattern::Names(p) => f.write_str(p),
        }
    }
}

/// `*`-only glob match (search identifier patterns have no `?`).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut remaining) = name.strip_prefix(first) else {
        return false;
    };
    let last = rest[rest.len() - 1];
    for middle in &rest[..rest.len() - 1] {
        match remaining.find(middle) {
            Some(at) => remaining = &remaining[at + middle.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last) && remaining.len() >= last.len()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Of,
    All,
    One,
    Them,
    Pipe,
    Ident(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        match c {
            '(' => {
                out.push(Token::Open);
                chars.next();
            }
            ')' => {
                out.push(Token::Close);
                chars.next();
            }
            '|' => {
                out.push(Token::Pipe);
                chars.next();
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.') => {
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_alphanumeric() || matches!(d, '_' | '*' | '-' | '.') {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &text[i..end];
                out.push(match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "of" => Token::Of,
                    "all" => Token::All,
                    "1" => Token::One,
                    "them" => Token::Them,
                    _ => Token::Ident(word.to_owned()),
                });
            }
            other => return Err(format!("unexpected character {other:?} in condition")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Condition, String> {
        let mut terms = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Condition::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Condition, String> {
        let mut terms = vec![self.not()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Condition::And(terms)
        })
    }

    fn not(&mut self) -> Result<Condition, String> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(Condition::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn pattern(&mut self) -> Result<Pattern, String> {
        if self.next() != Some(Token::Of) {
            return Err("expected 'of' after '1' or 'all'".into());
        }
        match self.next() {
            Some(Token::Them) => Ok(Pattern::Them),
            Some(Token::Ident(name)) => Ok(Pattern::Names(name)),
            other => Err(format!(
                "expected a search name pattern or 'them' after 'of', found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn atom(&mut self) -> Result<Condition, String> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                if self.next() != Some(Token::Close) {
                    return Err("missing ')'".into());
                }
                Ok(inner)
            }
            Some(Token::One) => Ok(Condition::OneOf(self.pattern()?)),
            Some(Token::All) => Ok(Condition::AllOf(self.pattern()?)),
            Some(Token::Ident(name)) => {
                if name.bytes().all(|b| b.is_ascii_digit()) && self.peek() == Some(&Token::Of) {
                    return Err(format!(
                        "'{name} of' is not Sigma: only '1 of' and 'all of' exist"
                    ));
                }
                Ok(Condition::Search(name))
            }
            Some(Token::Pipe) => Err(
                "aggregation expressions after '|' (count(), near) are deprecated Sigma; \
                 use a correlation rule"
                    .into(),
            ),
            other => Err(format!(
                "expected a search name, '(', 'not', '1 of' or 'all of', found {}",
                describe(other.as_ref())
            )),
        }
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "the end of the condition".into(),
        Some(Token::Open) => "'('".into(),
        Some(Token::Close) => "')'".into(),
        Some(Token::And) => "'and'".into(),
        Some(Token::Or) => "'or'".into(),
        Some(Token::Not) => "'not'".into(),
        Some(Token::Of) => "'of'".into(),
        Some(Token::All) => "'all'".into(),
        Some(Token::One) => "'1'".into(),
        Some(Token::Them) => "'them'".into(),
        Some(Token::Pipe) => "'|'".into(),
        Some(Token::Ident(s)) => format!("{s:?}"),
    }
}

/// Parses a condition expression. `not` binds tighter than `and`, which binds tighter than `or`.
pub fn parse_condition(text: &str) -> Result<Condition, String> {
    if text.contains('|') {
        return Err(
            "aggregation expressions after '|' (count(), near) are deprecated Sigma; \
             use a correlation rule"
                .into(),
        );
    }
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err("the condition is empty".into());
    }
    let mut p = Parser { tokens, pos: 0 };
    let cond = p.or()?;
    if let Some(t) = p.peek() {
        return Err(format!(
            "unexpected {} after a complete condition",
            describe(Some(t))
        ));
    }
    Ok(cond)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> Condition {
        Condition::Search(name.into())
    }

    #[test]
    fn precedence_is_not_and_or() {
        assert_eq!(
            parse_condition("a or b and not c").unwrap(),
            Condition::Or(vec![
                s("a"),
                Condition::And(vec![s("b"), Condition::Not(Box::new(s("c")))])
            ])
        );
        assert_eq!(
            parse_condition("(a or b) and c").unwrap(),
            Condition::And(vec![Condition::Or(vec![s("a"), s("b")]), s("c")])
        );
    }

    #[test]
    fn quantifiers() {
        assert_eq!(
            parse_condition("selection and not 1 of filter_main_*").unwrap(),
            Condition::And(vec![
                s("selection"),
                Condition::Not(Box::new(Condition::OneOf(Pattern::Names(
                    "filter_main_*".into()
                ))))
            ])
        );
        assert_eq!(
            parse_condition("all of them").unwrap(),
            Condition::AllOf(Pattern::Them)
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(
            parse_condition("selection | count() > 5")
                .unwrap_err()
                .contains("correlation")
        );
        assert!(parse_condition("(a or b").unwrap_err().contains("')'"));
        assert!(parse_condition("a b").unwrap_err().contains("unexpected"));
        assert!(
            parse_condition("2 of sel*")
                .unwrap_err()
                .contains("only '1 of'")
        );
        assert!(parse_condition("").is_err());
    }

    #[test]
    fn patterns_glob() {
        let p = Pattern::Names("filter_*".into());
        assert!(p.matches("filter_main"));
        assert!(!p.matches("selection"));
        assert!(Pattern::Names("sel*_a".into()).matches("selection_a"));
        assert!(Pattern::Names("sel".into()).matches("sel"));
        assert!(!Pattern::Names("a*a".into()).matches("a"));
    }
}
