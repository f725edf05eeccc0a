//! Provider callbacks in their wire form, as the profiles were built from: a request line,
//! headers and the body exactly as sent, with the documentation page cited in `#` lines.
//! They are embedded in the binary for `switchboard render --fixture` and the tests.
//!
//! ```text
//! # Twilio status callback: the call ended. Source: https://…
//! POST /?bodySHA256=…
//! Content-Type: application/x-www-form-urlencoded
//!
//! CallSid=CA…&CallStatus=completed
//! ```

use http::Method;

use crate::config::Provider;

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// One parsed fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    pub provider: &'static str,
    pub kind: &'static str,
    /// The `#` lines: what the callback is and where it is documented.
    pub notes: Vec<&'static str>,
    pub method: Method,
    pub query: Option<&'static str>,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static [u8],
}

impl Fixture {
    pub fn content_type(&self) -> Option<&'static str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")).map(|(_, v)| *v)
    }
}

/// Every embedded fixture of `provider`, by kind.
pub fn of(provider: Provider) -> Vec<Fixture> {
    FIXTURES.iter().filter(|(p, ..)| *p == provider.name()).filter_map(|(p, k, text)| parse(p, k, text).ok()).collect()
}

/// One fixture; the error lists the kinds there are.
pub fn find(provider: Provider, kind: &str) -> Result<Fixture, String> {
    let all = of(provider);
    all.iter().find(|f| f.kind == kind).cloned().ok_or_else(|| {
        let kinds: Vec<&str> = all.iter().map(|f| f.kind).collect();
        if kinds.is_empty() {
            format!("provider {} has no fixtures", provider.name())
        } else {
            format!("provider {} has no fixture {kind:?}; it has {}", provider.name(), kinds.join(", "))
        }
    })
}

/// Reads the format above; the error names the line.
pub fn parse(provider: &'static str, kind: &'static str, text: &'static str) -> Result<Fixture, String> {
    let mut rest = text;
    let mut notes = Vec::new();
    let next_line = |rest: &mut &'static str| -> Option<&'static str> {
        if rest.is_empty() {
            return None;
        }
        let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        *rest = tail;
        Some(line.strip_suffix('\r').unwrap_or(line))
    };
    let request = loop {
        match next_line(&mut rest) {
            Some(line) if line.starts_with('#') => notes.push(line.trim_start_matches('#').trim()),
            Some(line) if line.trim().is_empty() => {}
            Some(line) => break line,
            None => return Err(format!("{provider}/{kind}: no request line")),
        }
    };
    let (method, target) =
        request.split_once(' ').ok_or_else(|| format!("{provider}/{kind}: the request line is `METHOD /target`"))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| format!("{provider}/{kind}: bad method"))?;
    let query = target.split_once('?').map(|(_, q)| q).filter(|q| !q.is_empty());
    let mut headers = Vec::new();
    loop {
        match next_line(&mut rest) {
            None => break,
            Some("") => break,
            Some(line) => {
                let (name, value) =
                    line.split_once(':').ok_or_else(|| format!("{provider}/{kind}: bad header line {line:?}"))?;
                headers.push((name.trim(), value.trim()));
            }
        }
    }
    let body = rest.strip_suffix('\n').unwrap_or(rest);
    let body = body.strip_suffix('\r').unwrap_or(body);
    Ok(Fixture { provider, kind, notes, method, query, headers, body: body.as_bytes() })
}

/// The fields where a normalized event (as JSON, less what the context gives) differs from
/// the one checked beside its fixture, one line each; empty when they agree.
pub fn differences(got: &serde_json::Value, want: &serde_json::Value) -> Vec<String> {
    let context = ["event_id", "tenant", "source", "provider", "received_at"];
    let empty = serde_json::Map::new();
    let (got, want) = (got.as_object().unwrap_or(&empty), want.as_object().unwrap_or(&empty));
    let keys: std::collections::BTreeSet<&String> =
        got.keys().chain(want.keys()).filter(|k| !context.contains(&k.as_str())).collect();
    keys.into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("  {k}: got {:?}, expected {:?}", got.get(k), want.get(k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_fixture_parses_and_names_its_source() {
        assert!(!FIXTURES.is_empty());
        for (provider, kind, text) in FIXTURES {
            let fixture = parse(provider, kind, text).unwrap();
            assert!(
                fixture.notes.iter().any(|n| n.contains("Source: http")),
                "{provider}/{kind} cites no documentation page"
            );
            assert!(Provider::parse(provider).is_some(), "{provider} is not a provider");
            if fixture.method == Method::POST {
                assert!(fixture.content_type().is_some(), "{provider}/{kind}: a POST needs a Content-Type");
            }
        }
    }

    #[test]
    fn the_format_reads_as_documented() {
        let text = "# what\n# Source: https://example.com\nGET /x?a=1&b=%2B2\nX-Test: y\n\n";
        let f = parse("twilio", "k", text).unwrap();
        assert_eq!(f.notes, ["what", "Source: https://example.com"]);
        assert_eq!(
            (f.method, f.query, f.headers, f.body),
            (Method::GET, Some("a=1&b=%2B2"), vec![("X-Test", "y")], &b""[..])
        );
        let f = parse("twilio", "k", "POST /\nContent-Type: application/json\n\n{\"a\":1}\n").unwrap();
        assert_eq!(f.body, b"{\"a\":1}");
        assert!(parse("twilio", "k", "# only notes\n").is_err());
    }
}
