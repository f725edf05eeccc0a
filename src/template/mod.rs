//! Compose templates: `<<name>>` placeholders in a destination's URL, header values and
//! body, filled from the normalized event, the raw payload or a tenant secret.
//!
//! Templates are parsed and checked once, when the config loads; rendering never fails.
//! Escaping follows where a placeholder stands, so a rendered URL is always a valid URL, a
//! rendered JSON body always valid JSON, and a header value never carries CR or LF,
//! whatever the payload holds.

mod parse;
mod render;
pub mod request;

use std::sync::Arc;

pub use parse::{FILTERS, TemplateError};
pub use render::{Data, Escape};

use parse::{Placeholder, Segment, Source};

/// What a template is for; decides escaping and what the load-time checks require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Url,
    Header,
    JsonBody,
    FormValue,
}

#[derive(Debug, Clone)]
enum Part {
    Text(Box<str>),
    Hole(Placeholder, Escape),
}

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// Bytes of literal text, to size the output buffer.
    literal_len: usize,
}

impl Template {
    /// Parses and checks a template. `secrets` resolves `secret.NAME`.
    pub fn compile(
        text: &str,
        kind: Kind,
        secrets: &dyn Fn(&str) -> Option<Arc<str>>,
    ) -> Result<Template, TemplateError> {
        let segments = parse::segments(text, secrets)?;
        match kind {
            Kind::Url => check_url(&segments)?,
            Kind::Header => check_header(&segments)?,
            Kind::JsonBody => check_json(&segments, text.len())?,
            Kind::FormValue => {}
        }
        let mut in_string = false;
        let parts: Vec<Part> = segments
            .into_iter()
            .map(|segment| match segment {
                Segment::Text(t, _) => {
                    if kind == Kind::JsonBody {
                        in_string = json_string_state(&t, in_string);
                    }
                    Part::Text(t.into())
                }
                Segment::Hole(p, _) => {
                    let escape = match kind {
                        Kind::Url => Escape::Url,
                        Kind::Header => Escape::Header,
                        Kind::FormValue => Escape::Plain,
                        // Inside a JSON string literal a placeholder is string content;
                        // elsewhere it stands for a whole JSON value.
                        Kind::JsonBody if in_string => Escape::JsonString,
                        Kind::JsonBody => Escape::JsonValue,
                    };
                    Part::Hole(p, escape)
                }
            })
            .collect();
        let literal_len = parts.iter().map(|p| if let Part::Text(t) = p { t.len() } else { 0 }).sum();
        Ok(Template { parts, literal_len })
    }

    pub fn render(&self, data: &Data, out: &mut String) {
        out.reserve(self.literal_len + 16 * self.parts.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Hole(p, escape) => render::render_placeholder(p, *escape, data, out),
            }
        }
    }

    pub fn render_to_string(&self, data: &Data) -> String {
        let mut out = String::new();
        self.render(data, &mut out);
        out
    }

    /// The template's text when it has no placeholder: it renders the same every time.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Whether rendering reads the raw payload (which then must be parsed at send time).
    /// Whether the template reads a normalized event field (`<<status>>`, `<<id>>`, …).
    pub fn uses_event(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Hole(Placeholder { source: Source::Field(_), .. }, _)))
    }

    pub fn uses_payload(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Hole(Placeholder { source: Source::Payload(_), .. }, _)))
    }
}

/// Whether a rendered URL's path holds a `.` or `..` segment (also percent-encoded): URL
/// parsing would resolve it and send the request to another path, so a placeholder value
/// of `.` or `..` can never be delivered as written.
pub fn has_dot_segment(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.split(['?', '#']).next().unwrap_or("");
    path.split('/')
        .skip(1)
        .any(|segment| matches!(segment.to_ascii_lowercase().as_str(), "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."))
}

/// Whether a JSON text that starts inside (or outside) a string literal ends inside one.
fn json_string_state(text: &str, mut in_string: bool) -> bool {
    let mut escaped = false;
    for b in text.bytes() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            _ => {}
        }
    }
    in_string
}

/// The text with each placeholder replaced by `fill(in a JSON string?)`, and where each
/// segment starts in it and in the template.
fn probe(segments: &[Segment], json: bool, fill: impl Fn(bool) -> &'static str) -> (String, Vec<(usize, usize)>) {
    let mut out = String::new();
    let mut starts = Vec::with_capacity(segments.len());
    let mut in_string = false;
    for segment in segments {
        match segment {
            Segment::Text(t, at) => {
                starts.push((out.len(), *at));
                out.push_str(t);
                if json {
                    in_string = json_string_state(t, in_string);
                }
            }
            Segment::Hole(_, at) => {
                starts.push((out.len(), *at));
                out.push_str(fill(in_string));
            }
        }
    }
    (out, starts)
}

fn check_url(segments: &[Segment]) -> Result<(), TemplateError> {
    // Placeholders may fill the path and query, never the scheme or host: a payload must
    // not choose where a delivery goes.
    let first_hole = segments.iter().position(|s| matches!(s, Segment::Hole(..)));
    if let Some(index) = first_hole {
        let prefix: String =
            segments[..index].iter().map(|s| if let Segment::Text(t, _) = s { t.as_str() } else { "" }).collect();
        let after_scheme = prefix.find("://").map(|i| &prefix[i + 3..]);
        if !after_scheme.is_some_and(|rest| rest.contains(['/', '?'])) {
            let Segment::Hole(_, at) = &segments[index] else { unreachable!() };
            return Err(TemplateError {
                offset: *at,
                message: "placeholders may only stand in the path or query, after scheme://host/".into(),
            });
        }
    }
    let (probe, _) = probe(segments, false, |_| "x");
    match url::Url::parse(&probe) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err(TemplateError {
            offset: 0,
            message: "destination url must be an absolute http:// or https:// URL".into(),
        }),
        Err(e) => Err(TemplateError { offset: 0, message: format!("invalid destination url: {e}") }),
    }
}

fn check_header(segments: &[Segment]) -> Result<(), TemplateError> {
    let (probe, _) = probe(segments, false, |_| "x");
    http::HeaderValue::from_str(&probe).map(|_| ()).map_err(|_| TemplateError {
        offset: 0,
        message: "header value holds characters not allowed in a header".into(),
    })
}

/// The literal text must be valid JSON with every value placeholder read as `null` and
/// every string placeholder as empty: then any rendering is valid JSON too.
fn check_json(segments: &[Segment], len: usize) -> Result<(), TemplateError> {
    let (probe, starts) = probe(segments, true, |in_string| if in_string { "" } else { "null" });
    let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&probe) else {
        return Ok(());
    };
    let line_start: usize = probe.split_inclusive('\n').take(e.line().saturating_sub(1)).map(str::len).sum();
    let at = (line_start + e.column().saturating_sub(1)).min(probe.len());
    let offset = starts
        .iter()
        .rev()
        .find(|(probe_at, _)| *probe_at <= at)
        .map_or(0, |(probe_at, template_at)| template_at + (at - probe_at));
    Err(TemplateError { offset: offset.min(len), message: format!("body is not valid JSON: {e}") })
}

#[cfg(test)]
mod tests;
