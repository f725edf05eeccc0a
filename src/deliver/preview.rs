//! `switchboard render`: the exact request a payload would produce for one destination,
//! built by the same code that sends deliveries, printed instead of sent.

use std::fmt::Write;

use bytes::Bytes;
use http::HeaderValue;

use std::sync::Arc;

use super::attempt;
use super::ssrf::Guard;
use crate::config::Config;
use crate::ingest::payload;
use crate::normalize;
use crate::store::{ClaimedDelivery, now_ms};

pub fn preview(
    config: &Config,
    tenant: &str,
    source: &str,
    destination: &str,
    body: &[u8],
    content_type: &str,
) -> Result<String, String> {
    let tenant = config.tenants.get(tenant).ok_or_else(|| format!("no tenant {tenant:?}"))?;
    let source = tenant.source(source).ok_or_else(|| format!("no source {source:?} in tenant {:?}", tenant.id))?;
    let destination = tenant
        .destinations
        .iter()
        .find(|d| d.id == destination)
        .ok_or_else(|| format!("no destination {destination:?} in tenant {:?}", tenant.id))?;

    let content_type_header = HeaderValue::from_str(content_type).map_err(|_| "invalid content type".to_string())?;
    let kind = payload::kind(Some(&content_type_header)).map_err(|e| e.to_string())?;
    let fields = payload::fields(kind, body, None).map_err(|e| e.to_string())?;
    let received_at = now_ms();
    let event_id = uuid::Uuid::now_v7();
    let event_text = event_id.to_string();
    let context = normalize::Context {
        event_id: &event_text,
        tenant: &tenant.id,
        source: &source.id,
        provider: source.provider,
        received_at,
        timezone: &source.timezone,
    };
    let (event, _) = normalize::normalize(&fields, &context);

    let mut out = String::new();
    if !source.destinations.iter().any(|&i| tenant.destinations[i].id == destination.id) {
        let _ = writeln!(out, "# note: source {:?} does not fan out to {:?}", source.id, destination.id);
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
        content_type: Some(content_type.to_string()),
        query: None,
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
