//! A tenant document moves between JSON (the API) and TOML (the validator, tenant files).
//! JSON is written out as TOML with a map from every byte range to the JSON pointer it
//! came from, so a validation error found in the TOML is reported at its pointer (and, in
//! a template, at its line and column) — one validator for files and API alike.
//!
//! Strings are written as TOML literal strings whenever they can be (no escapes), so an
//! offset inside one is an offset inside the JSON string too.

use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{Map, Value};

/// One value of the document, where it was written.
#[derive(Debug, Clone)]
struct Node {
    range: Range<usize>,
    pointer: String,
    /// Where the string's text starts, for a string written without escapes.
    text_start: Option<usize>,
}

/// A JSON document written as TOML.
#[derive(Debug)]
pub struct Written {
    pub toml: String,
    nodes: Vec<Node>,
}

/// Where a validation error is, in the JSON document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Place {
    pub pointer: String,
    /// Inside a string value (a template): 1-based line and column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// A value TOML cannot hold, by pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritable {
    pub pointer: String,
    pub message: String,
}

impl Written {
    /// The innermost value written at `offset`.
    pub fn place(&self, offset: usize) -> Place {
        let node = self
            .nodes
            .iter()
            .filter(|n| n.range.start <= offset && offset <= n.range.end)
            .min_by_key(|n| n.range.end - n.range.start);
        let Some(node) = node else { return Place { pointer: String::new(), line: None, column: None } };
        let (line, column) = match node.text_start {
            Some(start) if offset >= start && offset <= node.range.end => {
                let mut end = offset.min(self.toml.len());
                while !self.toml.is_char_boundary(end) {
                    end -= 1;
                }
                let before = &self.toml[start..end];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                (Some(line), Some(before[line_start..].chars().count() + 1))
            }
            _ => (None, None),
        };
        Place { pointer: node.pointer.clone(), line, column }
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn bare(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn key(out: &mut String, key: &str) {
    if bare(key) {
        out.push_str(key);
    } else {
        basic_string(out, key);
    }
}

fn basic_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_table(v: &Value) -> bool {
    v.is_object()
}

fn is_table_array(v: &Value) -> bool {
    matches!(v, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object))
}

struct Writer {
    out: String,
    nodes: Vec<Node>,
    unwritable: Vec<Unwritable>,
}

impl Writer {
    /// A string, as a literal when it needs no escape; returns where its text starts then.
    fn string(&mut self, s: &str, inline: bool) -> Option<usize> {
        let plain = |c: char| c == '\t' || !c.is_control();
        if !s.contains('\'') && s.chars().all(plain) {
            self.out.push('\'');
            let start = self.out.len();
            self.out.push_str(s);
            self.out.push('\'');
            return Some(start);
        }
        // Multi-line literals cannot sit inside an inline table.
        if !inline && !s.contains("'''") && !s.ends_with('\'') && s.chars().all(|c| c == '\n' || plain(c)) {
            self.out.push_str("'''\n");
            let start = self.out.len();
            self.out.push_str(s);
            self.out.push_str("'''");
            return Some(start);
        }
        basic_string(&mut self.out, s);
        None
    }

    fn value(&mut self, v: &Value, pointer: &str, inline: bool) {
        let start = self.out.len();
        let mut text_start = None;
        match v {
            Value::Null => self
                .unwritable
                .push(Unwritable { pointer: pointer.to_string(), message: "null is not a value here".into() }),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.out.push_str(&n.to_string()),
            Value::String(s) => text_start = self.string(s, inline),
            Value::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.value(item, &format!("{pointer}/{i}"), true);
                }
                self.out.push(']');
            }
            Value::Object(map) => {
                self.out.push('{');
                let mut first = true;
                for (k, item) in map.iter().filter(|(_, v)| !v.is_null()) {
                    self.out.push_str(if first { " " } else { ", " });
                    first = false;
                    self.pair(k, item, pointer, true);
                }
                self.out.push_str(" }");
            }
        }
        self.nodes.push(Node { range: start..self.out.len(), pointer: pointer.to_string(), text_start });
    }

    fn pair(&mut self, k: &str, v: &Value, parent: &str, inline: bool) {
        let pointer = format!("{parent}/{}", pointer_token(k));
        let start = self.out.len();
        key(&mut self.out, k);
        self.out.push_str(" = ");
        self.value(v, &pointer, inline);
        self.nodes.push(Node { range: start..self.out.len(), pointer, text_start: None });
    }

    /// The pairs of one table, then its sub-tables and arrays of tables.
    fn table(&mut self, map: &Map<String, Value>, path: &str, pointer: &str) {
        for (k, v) in map {
            if v.is_null() || is_table(v) || is_table_array(v) {
                continue;
            }
            self.pair(k, v, pointer, false);
            self.out.push('\n');
        }
        for (k, v) in map {
            let mut sub = String::from(path);
            if !sub.is_empty() {
                sub.push('.');
            }
            key(&mut sub, k);
            let child = format!("{pointer}/{}", pointer_token(k));
            match v {
                Value::Object(inner) => {
                    let start = self.out.len();
                    let _ = write!(self.out, "\n[{sub}]\n");
                    self.table(inner, &sub, &child);
                    self.nodes.push(Node { range: start..self.out.len(), pointer: child, text_start: None });
                }
                Value::Array(items) if is_table_array(v) => {
                    let whole = self.out.len();
                    for (i, item) in items.iter().enumerate() {
                        let start = self.out.len();
                        let _ = write!(self.out, "\n[[{sub}]]\n");
                        if let Value::Object(inner) = item {
                            self.table(inner, &sub, &format!("{child}/{i}"));
                        }
                        self.nodes.push(Node {
                            range: start..self.out.len(),
                            pointer: format!("{child}/{i}"),
                            text_start: None,
                        });
                    }
                    self.nodes.push(Node { range: whole..self.out.len(), pointer: child, text_start: None });
                }
                _ => {}
            }
        }
    }
}

/// Writes a JSON object as TOML, or says which values TOML cannot hold.
pub fn to_toml(document: &Map<String, Value>) -> Result<Written, Vec<Unwritable>> {
    let mut writer = Writer { out: String::new(), nodes: Vec::new(), unwritable: Vec::new() };
    writer.table(document, "", "");
    if writer.unwritable.is_empty() {
        Ok(Written { toml: writer.out, nodes: writer.nodes })
    } else {
        Err(writer.unwritable)
    }
}

/// A TOML tenant file as the JSON the API takes.
pub fn from_toml(text: &str) -> Result<Value, toml::de::Error> {
    let value: toml::Value = toml::from_str(text)?;
    Ok(serde_json::to_value(value).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn written(v: Value) -> Written {
        to_toml(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn round_trips_through_toml_with_every_string_shape() {
        let doc = json!({
            "id": "acme",
            "rate_limit": { "per_second": 10 },
            "source": [{ "id": "w", "provider": "wavecell", "auth": [{ "scheme": "none" }] }],
            "destination": [{
                "id": "crm",
                "url": "https://crm.example/<<id>>",
                "headers": { "X-Id": "<<id>>", "a.b c": "it's" },
                "body": "{\n  \"status\": \"<<status>>\"\n}",
                "quote_end": "ends in '",
                "control": "bell \u{7}",
                "when": { "status": ["completed", "failed"] },
                "success_codes": [200, 202],
                "retry": { "max_attempts": 3 },
                "skip": null,
            }],
        });
        let w = written(doc.clone());
        let back = from_toml(&w.toml).unwrap();
        let mut expected = doc;
        expected["destination"][0].as_object_mut().unwrap().remove("skip");
        assert_eq!(back, expected, "{}", w.toml);
    }

    #[test]
    fn an_offset_maps_to_the_innermost_pointer_and_the_place_in_the_string() {
        let w = written(json!({
            "destination": [{ "id": "a" }, { "id": "b", "body": "{\n  \"x\": <<nope>>\n}", "headers": { "X-A/b": "v" } }],
        }));
        let at = w.toml.find("<<nope>>").unwrap();
        assert_eq!(w.place(at), Place { pointer: "/destination/1/body".into(), line: Some(2), column: Some(8) });
        let header = w.toml.find("\"X-A/b\"").unwrap();
        assert_eq!(w.place(header).pointer, "/destination/1/headers/X-A~1b");
        let id = w.toml.find("'a'").unwrap();
        assert_eq!(w.place(id).pointer, "/destination/0/id");
    }

    #[test]
    fn null_inside_an_array_is_refused_at_its_pointer() {
        let e = to_toml(json!({ "destination": [{ "success_codes": [200, null] }] }).as_object().unwrap()).unwrap_err();
        assert_eq!(e[0].pointer, "/destination/0/success_codes/1");
    }
}
