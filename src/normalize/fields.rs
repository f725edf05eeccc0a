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

/// Checks that no object in the document repeats a key, without building anything.
fn unique_keys(body: &[u8]) -> Result<(), PayloadError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(body);
    UniqueKeys.deserialize(&mut de).map_err(|e| PayloadError::Json(e.to_string()))
}

struct UniqueKeys;

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(UniqueKeys)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Objects are small: a linear scan beats hashing until they are not.
        let mut seen: Vec<Key<'de>> = Vec::new();
        let mut index: Option<std::collections::HashSet<Key<'de>>> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let repeated = match &mut index {
                Some(set) => !set.insert(key.clone()),
                None if seen.len() >= 16 => {
                    let mut set: std::collections::HashSet<Key<'de>> = seen.drain(..).collect();
                    let repeated = !set.insert(key.clone());
                    index = Some(set);
                    repeated
                }
                None => {
                    let repeated = seen.contains(&key);
                    seen.push(key.clone());
                    repeated
                }
            };
            if repeated {
                return Err(serde::de::Error::custom(format_args!("duplicate key {:?}", &*key.0)));
            }
            map.next_value_seed(UniqueKeys)?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the body unless it had escapes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl Payload {
    /// Fields of an `a=b&c=d` text (already checked to be well-formed).
    pub fn merge_form(&mut self, text: &[u8]) {
        for (k, v) in form_urlencoded::parse(text) {
            self.0.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }

    /// Fields of a JSON object body, over what is already there. An object with the same key
    /// twice is refused: JSON parsers disagree on which one wins, and destinations receive
    /// the raw body, so a duplicate would let the gateway route on one value while a
    /// destination acts on the other.
    pub fn merge_json(&mut self, body: &[u8]) -> Result<(), PayloadError> {
        unique_keys(body)?;
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

    /// A nested field as text, by path (Telnyx's `data.payload.from`); empty strings count as
    /// absent.
    pub fn text_at<K: AsRef<str>>(&self, path: &[K]) -> Option<String> {
        match self.lookup(path)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A nested value by path: object keys, and array indexes as numbers.
    pub fn lookup<'a, K: AsRef<str>>(&'a self, path: &[K]) -> Option<&'a Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.0.get(first.as_ref())?;
        for segment in rest {
            let segment = segment.as_ref();
            value = match value {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(value)
    }
}
