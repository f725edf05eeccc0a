//! Rendering: resolve a placeholder's value, apply its filters, and write it escaped for
//! where it stands. Values borrow from the event and payload; for placeholders without
//! filters nothing is allocated besides the output buffer.

use std::borrow::Cow;
use std::fmt::Write;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value as Json;

use super::parse::{Filter, Literal, Placeholder, Source};
use crate::normalize::{CallEvent, Payload, event::FieldValue, time};

/// Everything but RFC 3986 unreserved characters is percent-encoded in URLs.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where a placeholder stands, which decides how its value is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// In a URL (path or query): percent-encoded.
    Url,
    /// In a header value: CR, LF and other control characters become spaces.
    Header,
    /// Inside a JSON string literal: JSON-escaped, no quotes added.
    JsonString,
    /// Where a JSON value goes: a typed JSON value (string quoted, number bare, missing null).
    JsonValue,
    /// A form field value: as is (the form encoder escapes it).
    Plain,
}

/// What templates read from: the normalized event and the provider's raw fields.
pub struct Data<'a> {
    pub event: &'a CallEvent,
    pub payload: &'a Payload,
}

#[derive(Debug)]
enum Value<'a> {
    Missing,
    Text(Cow<'a, str>),
    Int(i64),
    /// A raw payload value that is not a string (number, boolean, object, array).
    Json(&'a Json),
    /// Already JSON text (the `json` filter).
    RawJson(String),
    /// Already percent-encoded (the `urlencode` filter).
    Encoded(String),
}

impl<'a> Value<'a> {
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Missing => None,
            Value::Text(t) => Some(Cow::Borrowed(t)),
            Value::Int(n) => Some(Cow::Owned(n.to_string())),
            Value::Json(v) => Some(Cow::Owned(v.to_string())),
            Value::RawJson(s) | Value::Encoded(s) => Some(Cow::Borrowed(s)),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::Missing => true,
            Value::Text(t) => t.is_empty(),
            _ => false,
        }
    }

    fn map_text(self, f: impl FnOnce(&str) -> String) -> Value<'a> {
        match &self {
            Value::Missing | Value::Int(_) => self,
            _ => {
                let mapped = f(&self.text().unwrap_or_default());
                Value::Text(Cow::Owned(mapped))
            }
        }
    }
}

fn resolve<'a>(source: &'a Source, data: &Data<'a>) -> Value<'a> {
    match source {
        Source::Field(field) => match data.event.get(*field) {
            FieldValue::Missing => Value::Missing,
            FieldValue::Text(t) => Value::Text(Cow::Borrowed(t)),
            FieldValue::Int(n) => Value::Int(n),
        },
        Source::Payload(path) => match data.payload.lookup(path) {
            None | Some(Json::Null) => Value::Missing,
            Some(Json::String(s)) => Value::Text(Cow::Borrowed(s)),
            Some(v) => Value::Json(v),
        },
        Source::Secret(s) => Value::Text(Cow::Borrowed(s)),
    }
}

fn apply<'a>(value: Value<'a>, filter: &'a Filter) -> Value<'a> {
    match filter {
        Filter::Default(literal) if value.is_empty() => match literal {
            Literal::Text(t) => Value::Text(Cow::Borrowed(t)),
            Literal::Int(n) => Value::Int(*n),
        },
        Filter::Default(_) => value,
        Filter::Upper => value.map_text(str::to_uppercase),
        Filter::Lower => value.map_text(str::to_lowercase),
        Filter::Digits => match value {
            Value::Int(n) => Value::Text(Cow::Owned(n.unsigned_abs().to_string())),
            v => v.map_text(|t| t.chars().filter(char::is_ascii_digit).collect()),
        },
        Filter::Json => Value::RawJson(match &value {
            Value::Missing => "null".to_string(),
            Value::Int(n) => n.to_string(),
            Value::Json(v) => v.to_string(),
            Value::RawJson(s) => s.clone(),
            Value::Text(_) | Value::Encoded(_) => {
                Json::String(value.text().unwrap_or_default().into_owned()).to_string()
            }
        }),
        Filter::UrlEncode => match value.text() {
            None => Value::Missing,
            Some(t) => Value::Encoded(utf8_percent_encode(&t, URL_VALUE).to_string()),
        },
        Filter::Date(format) => match value.text().as_deref().and_then(time::read_back) {
            Some(zoned) => Value::Text(Cow::Owned(zoned.strftime(format).to_string())),
            None => Value::Missing,
        },
        Filter::Unix => match value.text().as_deref().and_then(time::read_back) {
            Some(zoned) => Value::Int(zoned.timestamp().as_second()),
            None => Value::Missing,
        },
    }
}

pub fn render_placeholder(p: &Placeholder, escape: Escape, data: &Data, out: &mut String) {
    let mut value = resolve(&p.source, data);
    for filter in &p.filters {
        value = apply(value, filter);
    }
    emit(&value, escape, out);
}

fn emit(value: &Value, escape: Escape, out: &mut String) {
    match (escape, value) {
        (Escape::JsonValue, Value::Missing) => out.push_str("null"),
        (_, Value::Missing) => {}
        (Escape::JsonValue, Value::Int(n)) => {
            let _ = write!(out, "{n}");
        }
        (Escape::JsonValue, Value::Json(v)) => {
            let _ = write!(out, "{v}");
        }
        (Escape::JsonValue, Value::RawJson(s)) => out.push_str(s),
        (Escape::JsonValue, v) => {
            out.push('"');
            json_escape(&v.text().unwrap_or_default(), out);
            out.push('"');
        }
        (Escape::JsonString, v) => json_escape(&v.text().unwrap_or_default(), out),
        (Escape::Url, Value::Encoded(s)) => out.push_str(s),
        (Escape::Url, Value::Text(t)) => {
            let _ = write!(out, "{}", utf8_percent_encode(t, URL_VALUE));
        }
        (Escape::Url, v) => {
            let _ = write!(out, "{}", utf8_percent_encode(&v.text().unwrap_or_default(), URL_VALUE));
        }
        (Escape::Header, v) => {
            out.extend(v.text().unwrap_or_default().chars().map(|c| if c.is_control() { ' ' } else { c }))
        }
        (Escape::Plain, Value::Text(t)) => out.push_str(t),
        (Escape::Plain, v) => out.push_str(&v.text().unwrap_or_default()),
    }
}

/// JSON string-literal escaping, without the surrounding quotes.
fn json_escape(s: &str, out: &mut String) {
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}
