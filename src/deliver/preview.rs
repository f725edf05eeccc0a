//! `switchboard render` and the console's template playground: the exact request a payload
//! would produce for one destination, built by the same code that sends deliveries, shown
//! instead of sent.

use bytes::Bytes;
use http::HeaderValue;

use std::sync::Arc;

use super::attempt;
use super::ssrf::Guard;
use crate::config::{Config, Provider, Server, Tenant};
use crate::ingest::payload;
use crate::normalize;
use crate::normalize::fixture::Fixture;
use crate::store::{ClaimedDelivery, now_ms};

/// The callback to render from.
pub enum Callback<'a> {
    /// A body (and query string) sent to one of the tenant's sources.
    Payload { source: &'a str, body: &'a [u8], content_type: &'a str, query: Option<&'a str> },
    /// A provider's fixture (`switchboard providers`), as sent to the tenant's source of that
    /// provider, or to none.
    Fixture(&'a Fixture),
}

/// A request as it would be sent, and what is worth knowing about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Preview {
    /// E.g. the event would not match the destination's `when`.
    pub notes: Vec<String>,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl std::fmt::Display for Preview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for note in &self.notes {
            writeln!(f, "# note: {note}")?;
        }
        writeln!(f, "{} {}", self.method, self.url)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        if let Some(body) = &self.body {
            write!(f, "\n{body}\n")?;
        }
        Ok(())
    }
}

pub fn preview(config: &Config, tenant: &str, destination: &str, callback: Callback) -> Result<String, String> {
    let tenant = config.tenants.get(tenant).ok_or_else(|| format!("no tenant {tenant:?}"))?;
    render(&config.server, tenant, destination, callback).map(|p| p.to_string())
}

pub fn render(server: &Server, tenant: &Tenant, destination: &str, callback: Callback) -> Result<Preview, String> {
    let destination = tenant
        .destinations
        .iter()
        .find(|d| d.id == destination)
        .ok_or_else(|| format!("no destination {destination:?} in tenant {:?}", tenant.id))?;
    let (source, provider, body, content_type, query) = match callback {
        Callback::Payload { source, body, content_type, query } => {
            let source =
                tenant.source(source).ok_or_else(|| format!("no source {source:?} in tenant {:?}", tenant.id))?;
            (Some(source), source.provider, body, Some(content_type), query)
        }
        Callback::Fixture(f) => {
            let provider = Provider::parse(f.provider).ok_or_else(|| format!("no provider {:?}", f.provider))?;
            let source = tenant.sources.iter().find(|s| s.provider == provider);
            (source, provider, f.body, f.content_type(), f.query)
        }
    };

    let content_type_header =
        content_type.map(HeaderValue::from_str).transpose().map_err(|_| "invalid content type".to_string())?;
    let kind = payload::kind(content_type_header.as_ref()).map_err(|e| e.to_string())?;
    let fields = payload::fields(kind, body, query).map_err(|e| e.to_string())?;
    let received_at = now_ms();
    let event_id = uuid::Uuid::now_v7();
    let event_text = event_id.to_string();
    let utc = jiff::tz::TimeZone::UTC;
    let context = normalize::Context {
        event_id: &event_text,
        tenant: &tenant.id,
        source: source.map_or("", |s| s.id.as_str()),
        provider,
        received_at,
        timezone: source.map_or(&utc, |s| &s.timezone),
    };
    let (event, _) = normalize::normalize(&fields, &context);

    let mut notes = Vec::new();
    match source {
        Some(source) if !source.destinations.iter().any(|&i| tenant.destinations[i].id == destination.id) => {
            notes.push(format!("source {:?} does not fan out to {:?}", source.id, destination.id));
        }
        Some(_) => {}
        None => notes.push(format!("tenant {:?} has no {} source; times are read in UTC", tenant.id, provider.name())),
    }
    if !destination.when.matches(&event) {
        notes.push("this event does not match the destination's `when`; it would not be delivered".to_string());
    }
    let delivery = ClaimedDelivery {
        id: 0,
        lease: 0,
        event_id,
        attempt: 1,
        created_at: received_at,
        content_type: content_type.map(Arc::from),
        query: query.map(Arc::from),
        body: Bytes::copy_from_slice(body),
        normalized: Some(serde_json::to_string(&event).unwrap_or_default().into()),
    };
    let guard = Guard::from_config(server);
    let request = attempt::build(&guard, destination, &delivery, received_at).map_err(|e| e.to_string())?;
    Ok(Preview {
        notes,
        method: request.method().to_string(),
        url: request.uri().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect(),
        body: (request.method() != http::Method::GET).then(|| String::from_utf8_lossy(request.body()).into_owned()),
    })
}
