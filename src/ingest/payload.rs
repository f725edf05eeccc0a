//! What ingest accepts as a callback body: JSON objects, form-encoded fields, or nothing
//! (GET, or an empty POST, with the fields in the query string). The body is checked here
//! and stored byte for byte; nothing is guessed. Errors say where the body went wrong.

use http::HeaderValue;

use super::error::IngestError;
use crate::normalize::Payload;
use crate::normalize::fields::PayloadError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
}

/// The body's kind from its Content-Type; `None` for no Content-Type (an empty body only).
pub fn kind(content_type: Option<&HeaderValue>) -> Result<Option<Kind>, IngestError> {
    let Some(value) = content_type else {
        return Ok(None);
    };
    let text =
        value.to_str().map_err(|_| IngestError::UnsupportedMediaType("Content-Type is not readable text".into()))?;
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Some(Kind::Json)),
        "application/x-www-form-urlencoded" => Ok(Some(Kind::Form)),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(Some(Kind::Json)),
        _ => Err(IngestError::UnsupportedMediaType(format!(
            "Content-Type {text:?} is not supported; send application/json or application/x-www-form-urlencoded"
        ))),
    }
}

/// Checks the query string and the body against its kind, and reads their fields: the
/// query's first, the body's over them.
pub fn fields(kind: Option<Kind>, body: &[u8], query: Option<&str>) -> Result<Payload, IngestError> {
    let mut payload = Payload::default();
    if let Some(query) = query {
        check_form(query.as_bytes()).map_err(|m| IngestError::Malformed(format!("invalid query string: {m}")))?;
        payload.merge_form(query.as_bytes());
    }
    match kind {
        None if body.is_empty() => {}
        None => {
            return Err(IngestError::UnsupportedMediaType(
                "a request with a body needs a Content-Type: application/json or application/x-www-form-urlencoded"
                    .into(),
            ));
        }
        Some(Kind::Json) => {
            check_utf8(body)?;
            payload.merge_json(body).map_err(|e| match e {
                PayloadError::Json(m) => IngestError::Malformed(format!("invalid JSON: {m}")),
                // A call event is a set of named fields; anything else has no field to route on.
                PayloadError::NotAnObject => IngestError::Malformed("the JSON body must be an object".into()),
            })?;
        }
        Some(Kind::Form) => {
            check_form(body).map_err(|m| IngestError::Malformed(format!("invalid form body: {m}")))?;
            payload.merge_form(body);
        }
    }
    Ok(payload)
}

/// Invalid UTF-8 is reported with its line and column, like any other JSON error.
fn check_utf8(body: &[u8]) -> Result<(), IngestError> {
    let Err(e) = std::str::from_utf8(body) else {
        return Ok(());
    };
    let valid = &body[..e.valid_up_to()];
    let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
    Err(IngestError::Malformed(format!("invalid JSON: invalid UTF-8 at line {line} column {column}")))
}

/// Checks `a=b&c=d` text: every `%` starts a two-digit hex escape and every name and value
/// decodes to UTF-8. Returns a message naming the byte offset of the first problem.
pub fn check_form(body: &[u8]) -> Result<(), String> {
    let mut offset = 0;
    for part in body.split(|&b| b == b'&') {
        let mut i = 0;
        while i < part.len() {
            if part[i] == b'%' {
                let hex = part.get(i + 1..i + 3).unwrap_or(&[]);
                if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(format!("bad percent-escape at byte {}", offset + i));
                }
                i += 3;
            } else {
                i += 1;
            }
        }
        for piece in part.splitn(2, |&b| b == b'=') {
            if percent_encoding::percent_decode(piece).decode_utf8().is_err() {
                return Err(format!("field at byte {offset} is not UTF-8 once decoded"));
            }
        }
        offset += part.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_say_where() {
        let err = fields(Some(Kind::Json), b"{\n  \"a\": 1,\n}", None).unwrap_err();
        assert_eq!(err.to_string(), "invalid JSON: trailing comma at line 3 column 1");
        assert!(fields(Some(Kind::Json), b"[1]", None).is_err());
        assert!(fields(Some(Kind::Json), b" {\"a\": [1, {\"b\": null}]}", None).is_ok());
        let err = fields(Some(Kind::Json), b"{\"a\":\n \"\xff\"}", None).unwrap_err();
        assert_eq!(err.to_string(), "invalid JSON: invalid UTF-8 at line 2 column 3");
        let err =
            fields(Some(Kind::Json), b"{\"status\": \"ringing\",\n \"status\": \"completed\"}", None).unwrap_err();
        assert_eq!(err.to_string(), "invalid JSON: duplicate key \"status\" at line 2 column 9");
        let nested = br#"{"a": [{"x": 1}, {"x": 2}], "b": {"c": {"d": 1, "d": 2}}}"#;
        assert!(fields(Some(Kind::Json), nested, None).unwrap_err().to_string().contains("duplicate key \"d\""));
        let escaped = br#"{"k\u0065y": 1, "key": 2}"#;
        assert!(fields(Some(Kind::Json), escaped, None).is_err(), "an escaped spelling is the same key");
        let many: String = (0..100).map(|i| format!("\"k{i}\": {i},")).collect();
        assert!(fields(Some(Kind::Json), format!("{{{many} \"k0\": 0}}").as_bytes(), None).is_err());
        assert!(fields(Some(Kind::Json), format!("{{{many} \"z\": 0}}").as_bytes(), None).is_ok());
        assert!(fields(Some(Kind::Json), br#"{"a": 1.5e300, "b": 123456789012345678901234567890}"#, None).is_ok());
        let deep = "[".repeat(100_000);
        assert!(fields(Some(Kind::Json), format!("{{\"a\":{deep}").as_bytes(), None).is_err());
    }

    #[test]
    fn form_needs_valid_escapes_and_utf8() {
        assert!(check_form(b"a=1&b=%20x+y&c").is_ok());
        assert_eq!(check_form(b"a=1&b=%2").unwrap_err(), "bad percent-escape at byte 6");
        assert_eq!(check_form(b"a=%zz").unwrap_err(), "bad percent-escape at byte 2");
        assert!(check_form(b"a=%ff%fe").is_err());
    }

    #[test]
    fn content_types() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(kind(Some(&v("application/json; charset=utf-8"))).unwrap(), Some(Kind::Json));
        assert_eq!(kind(Some(&v("Application/X-WWW-Form-Urlencoded"))).unwrap(), Some(Kind::Form));
        assert_eq!(kind(Some(&v("application/cloudevents+json"))).unwrap(), Some(Kind::Json));
        assert!(kind(Some(&v("text/plain"))).is_err());
        assert!(fields(None, b"x", None).is_err());
        assert!(fields(None, b"", Some("a=1")).is_ok());
    }
}
