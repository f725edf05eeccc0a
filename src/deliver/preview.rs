//! `switchboard render`: the exact request a payload would produce for one destination,
//! built by the same code that sends deliveries, printed instead of sent.

use std::fmt::Write;

use bytes::Bytes;
use http::HeaderValue;

use std::sync::Arc;

use super::attempt;
use super::ssrf::Guard;
use crate::config::{Config, Provider};
use crate::ingest::payload;
use crate::normalize;
use crate::normalize::fixture::Fixture;
use crate::store::{ClaimedDelivery, now_ms};

/// The callback to render from.
pub enum Callback<'a> {
    /// A body sent to one of the tenant's sources.
    Payload { source: &'a str, body: &'a [u8], content_type: &'a str },
    /// A provider's fixture (`switchboard providers`), as sent to the tenant's source of that
    /// provider, or to none.
    Fixture(&'a Fixture),
}

pub fn preview(config: &Config, tenant: &str, destination: &str, callback: Callback) -> Result<String, String> {
    let tenant = config.tenants.get(tenant).ok_or_else(|| format!("no tenant {tenant:?}"))?;
    let destination = tenant
        .destinations
        .iter()
        .find(|d| d.id == destination)
        .ok_or_else(|| format!("no destination {destination:?} in tenant {:?}", tenant.id))?;
    let (source, provider, body, content_type, query) = match callback {
        Callback::Payload { source, body, content_type } => {
            let source =
                tenant.source(source).ok_or_else(|| format!("no source {source:?} in tenant {:?}", tenant.id))?;
            (Some(source), source.provider, body, Some(content_type), None)
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

    let mut out = String::new();
    match source {
        Some(source) if !source.destinations.iter().any(|&i| tenant.destinations[i].id == destination.id) => {
            let _ = writeln!(out, "# note: source {:?} does not fan out to {:?}", source.id, destination.id);
        }
        Some(_) => {}
        None => {
            let _ = writeln!(
                out,
                "# note: tenant {:?} has no {} source; times are read in UTC",
                tenant.id,
                provider.name()
            );
        }
    }
    if !destination.when.matches(&event) {
        let _ = writeln!(out, "# note: this event does not match the destination's `when`; it would not be delivered");
    }
    let delivery = ClaimedDelivery {
        id: 0,
        lease: 0,
        event_id,
        attempt: 1,
        created_at: received_at,
        content_type: content_type.map(str::to_string),
        query: query.map(str::to_string),
        body: Bytes::copy_from_slice(body),
        normalized: Some(serde_json::to_string(&event).unwrap_or_default()),
    };
    let guard = Arc::new(Guard::from_config(&config.server));
    let client = attempt::client(guard.clone()).map_err(|e| e.to_string())?;
    let request = attempt::build(&client, &guard, destination, &delivery, received_at)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let _ = writeln!(out, "{} {}", request.method(), request.url());
    for (name, value) in request.headers() {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
        let _ = writeln!(out, "\n{}", String::from_utf8_lossy(body));
    }
    Ok(out)
}
