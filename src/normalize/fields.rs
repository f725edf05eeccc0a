//! The callback's fields as one JSON object: query-string fields first, the body's fields
//! over them. Readers here accept a value as a JSON number or as a string alike, and never
//! pass a number through a float (9100000000 stays "9100000000").

use std::borrow::Cow;

use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload(pub Map<String, Value>);

/// Where a body could not be read as fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("the JSON body must be an object")]
    NotAnObject,
}

impl Payload {
    /// Fields of an `a=b&c=d` text (already checked to be well-formed).
    pub fn merge_form(&mut self, text: &[u8]) {
        for (k, v) in form_urlencoded::parse(text) {
            self.0.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }

    /// Fields of a JSON object body, over what is already there.
    pub fn merge_json(&mut self, body: &[u8]) -> Result<(), PayloadError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(PayloadError::NotAnObject);
        };
        if self.0.is_empty() {
            self.0 = fields;
        } else {
            self.0.extend(fields);
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// The field as text: strings as sent, numbers as their exact digits, booleans as words.
    /// Empty strings count as absent.
    pub fn text(&self, key: &str) -> Option<Cow<'_, str>> {
        match self.get(key)? {
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(Cow::Borrowed(s.trim())),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        }
    }

    pub fn string(&self, key: &str) -> Option<String> {
        self.text(key).map(Cow::into_owned)
    }

    /// The field as whole units: `23`, `"23"`, `23.0` and `"23.4"` all read as 23.
    pub fn int(&self, key: &str) -> Option<i64> {
        let text = self.text(key)?;
        text.parse::<i64>()
            .ok()
            .or_else(|| text.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f.round() as i64))
    }

    /// The first of `keys` present, as text.
    pub fn first(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.string(k))
    }

    /// A nested value by path: object keys, and array indexes as numbers.
    pub fn lookup<'a>(&'a self, path: &[String]) -> Option<&'a Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.0.get(first)?;
        for segment in rest {
            value = match value {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(value)
    }
}
