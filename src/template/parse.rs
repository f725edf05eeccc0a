//! The placeholder grammar: `<<path>>` or `<<path | filter | filter: "arg">>`, where path is
//! a normalized field, `payload.Name.0.Sub`, or `secret.NAME`. `\<<` is a literal `<<`.
//! Errors carry the byte offset in the template where they were found.

use std::sync::Arc;

use crate::normalize::Field;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Byte offset in the template text.
    pub offset: usize,
    pub message: String,
}

fn error(offset: usize, message: impl Into<String>) -> TemplateError {
    TemplateError { offset, message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Field(Field),
    Payload(Vec<String>),
    /// A tenant secret, resolved when the config loaded.
    Secret(Arc<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Text(String),
    Int(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Default(Literal),
    Upper,
    Lower,
    Digits,
    Json,
    UrlEncode,
    Date(String),
    Unix,
}

pub const FILTERS: &str = "default, upper, lower, digits, json, urlencode, date, unix";

#[derive(Debug, Clone, PartialEq)]
pub struct Placeholder {
    pub source: Source,
    pub filters: Vec<Filter>,
}

/// A piece of a template, with the byte offset in the template where it starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Text(String, usize),
    Hole(Placeholder, usize),
}

/// Splits a template into literal text and placeholders.
pub fn segments(text: &str, secrets: &dyn Fn(&str) -> Option<Arc<str>>) -> Result<Vec<Segment>, TemplateError> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut literal_start = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if literal.is_empty() {
            literal_start = i;
        }
        if bytes[i..].starts_with(b"\\<<") {
            literal.push_str("<<");
            i += 3;
        } else if bytes[i..].starts_with(b"<<") {
            let end = closing(text, i + 2).ok_or_else(|| error(i, "unclosed placeholder: `<<` without `>>`"))?;
            let placeholder = placeholder(&text[i + 2..end], i + 2, secrets)?;
            if !literal.is_empty() {
                out.push(Segment::Text(std::mem::take(&mut literal), literal_start));
            }
            out.push(Segment::Hole(placeholder, i));
            i = end + 2;
        } else {
            let c = text[i..].chars().next().unwrap_or('\0');
            literal.push(c);
            i += c.len_utf8();
        }
    }
    if !literal.is_empty() {
        out.push(Segment::Text(literal, literal_start));
    }
    Ok(out)
}

/// The offset of the `>>` closing a placeholder that starts at `from`, skipping quoted args.
fn closing(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut in_quote = false;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote && bytes.get(i + 1) == Some(&b'>') => return Some(i),
            b'\n' if !in_quote => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
}

impl Cursor<'_> {
    fn here(&self) -> usize {
        self.base + self.pos
    }

    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with([' ', '\t']) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.text[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn word(&mut self, allowed: impl Fn(char) -> bool) -> &str {
        let start = self.pos;
        while let Some(c) = self.text[self.pos..].chars().next().filter(|&c| allowed(c)) {
            self.pos += c.len_utf8();
        }
        &self.text[start..self.pos]
    }

    fn literal(&mut self) -> Result<Literal, TemplateError> {
        let at = self.here();
        if self.eat('"') {
            let mut value = String::new();
            loop {
                let c = self.text[self.pos..].chars().next().ok_or_else(|| error(at, "unclosed string"))?;
                self.pos += c.len_utf8();
                match c {
                    '"' => return Ok(Literal::Text(value)),
                    '\\' => {
                        let next = self.text[self.pos..].chars().next().ok_or_else(|| error(at, "unclosed string"))?;
                        self.pos += next.len_utf8();
                        value.push(next);
                    }
                    c => value.push(c),
                }
            }
        }
        let number = self.word(|c| c.is_ascii_digit() || c == '-');
        number.parse().map(Literal::Int).map_err(|_| error(at, "expected a quoted string or an integer"))
    }
}

fn placeholder(
    inner: &str,
    base: usize,
    secrets: &dyn Fn(&str) -> Option<Arc<str>>,
) -> Result<Placeholder, TemplateError> {
    let mut c = Cursor { text: inner, pos: 0, base };
    c.skip_ws();
    let at = c.here();
    let path = c.word(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'));
    let source = source(path, at, secrets)?;
    let mut filters = Vec::new();
    c.skip_ws();
    while c.eat('|') {
        c.skip_ws();
        let at = c.here();
        let name = c.word(|ch| ch.is_ascii_alphanumeric() || ch == '_').to_string();
        c.skip_ws();
        let arg = if c.eat(':') {
            c.skip_ws();
            Some(c.literal()?)
        } else {
            None
        };
        filters.push(filter(&name, arg, at)?);
        c.skip_ws();
    }
    if c.pos < inner.len() {
        return Err(error(c.here(), format!("unexpected `{}` in placeholder", &inner[c.pos..].trim_end())));
    }
    Ok(Placeholder { source, filters })
}

fn source(path: &str, at: usize, secrets: &dyn Fn(&str) -> Option<Arc<str>>) -> Result<Source, TemplateError> {
    if path.is_empty() {
        return Err(error(at, "expected a field name"));
    }
    if let Some(rest) = path.strip_prefix("payload") {
        let segments: Vec<String> = rest.split('.').skip(1).map(str::to_string).collect();
        if !rest.starts_with('.') || segments.iter().any(String::is_empty) {
            return Err(error(at, "write payload fields as payload.Name or payload.Name.0.Sub"));
        }
        return Ok(Source::Payload(segments));
    }
    if let Some(name) = path.strip_prefix("secret.") {
        return secrets(name)
            .map(Source::Secret)
            .ok_or_else(|| error(at, format!("secret `{name}` is not declared in the tenant's [secrets]")));
    }
    Field::parse(path).map(Source::Field).ok_or_else(|| {
        let names: Vec<&str> = Field::NAMES.iter().map(|(n, _)| *n).collect();
        error(at, format!("unknown field `{path}`; use one of {}, payload.<name> or secret.<name>", names.join(", ")))
    })
}

fn filter(name: &str, arg: Option<Literal>, at: usize) -> Result<Filter, TemplateError> {
    let no_arg = |f: Filter| match &arg {
        None => Ok(f),
        Some(_) => Err(error(at, format!("filter `{name}` takes no argument"))),
    };
    match name {
        "default" => arg.map(Filter::Default).ok_or_else(|| error(at, "`default` needs a value: default: \"…\"")),
        "upper" => no_arg(Filter::Upper),
        "lower" => no_arg(Filter::Lower),
        "digits" => no_arg(Filter::Digits),
        "json" => no_arg(Filter::Json),
        "urlencode" => no_arg(Filter::UrlEncode),
        "unix" => no_arg(Filter::Unix),
        "date" => match arg {
            Some(Literal::Text(format)) => {
                let sample = jiff::Timestamp::UNIX_EPOCH.to_zoned_datetime(jiff::tz::TimeZone::UTC);
                jiff::fmt::strtime::format(&format, &sample)
                    .map_err(|e| error(at, format!("invalid date format {format:?}: {e}")))?;
                Ok(Filter::Date(format))
            }
            _ => Err(error(at, "`date` needs a format: date: \"%Y-%m-%d %H:%M:%S\"")),
        },
        "" => Err(error(at, "expected a filter name after `|`")),
        other => Err(error(at, format!("unknown filter `{other}`; filters are {FILTERS}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(name: &str) -> Option<Arc<str>> {
        (name == "token").then(|| Arc::from("s3cret"))
    }

    fn err(text: &str) -> (usize, String) {
        let e = segments(text, &secrets).unwrap_err();
        (e.offset, e.message)
    }

    #[test]
    fn parses_paths_filters_and_escapes() {
        let s =
            segments(r#"a\<<b <<status | default: "x" | upper>> <<payload.a.0>> <<secret.token>>"#, &secrets).unwrap();
        assert_eq!(s[0], Segment::Text("a<<b ".into(), 0));
        assert_eq!(
            s[1],
            Segment::Hole(
                Placeholder {
                    source: Source::Field(Field::Status),
                    filters: vec![Filter::Default(Literal::Text("x".into())), Filter::Upper]
                },
                6
            )
        );
        assert!(matches!(&s[3], Segment::Hole(Placeholder { source: Source::Payload(p), .. }, _) if p == &["a", "0"]));
        assert!(matches!(&s[5], Segment::Hole(Placeholder { source: Source::Secret(v), .. }, _) if &**v == "s3cret"));
        let s = segments(r#"<<started_at | date: "%H>>%M">>"#, &secrets).unwrap();
        assert!(
            matches!(&s[0], Segment::Hole(Placeholder { filters, .. }, 0) if filters == &[Filter::Date("%H>>%M".into())])
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        assert_eq!(err("abc <<status"), (4, "unclosed placeholder: `<<` without `>>`".into()));
        assert_eq!(err("<<stat>>").0, 2);
        assert!(err("<<stat>>").1.starts_with("unknown field `stat`"));
        assert_eq!(err("x<<status | shout>>"), (12, format!("unknown filter `shout`; filters are {FILTERS}")));
        assert_eq!(err("<<secret.nope>>"), (2, "secret `nope` is not declared in the tenant's [secrets]".into()));
        assert_eq!(err("<<status | default>>").0, 11);
        assert_eq!(err("<<status | upper: 1>>").1, "filter `upper` takes no argument");
        assert_eq!(err("<<>>").1, "expected a field name");
        assert_eq!(err("<<payload>>").1, "write payload fields as payload.Name or payload.Name.0.Sub");
        assert_eq!(err("<<status status>>"), (9, "unexpected `status` in placeholder".into()));
        assert!(err(r#"<<started_at | date: "%Y %">>"#).1.starts_with("invalid date format"));
    }
}
