//! Normalization: one call-event shape whatever the provider. A profile per provider maps
//! its fields to `CallEvent`; unknown words never fail an ingest (they become `unknown` and
//! are kept in `provider_status`), phone numbers stay the exact text sent, and times become
//! RFC 3339 with an offset.

mod callerdesk;
pub mod event;
mod exotel;
pub mod fields;
pub mod fixture;
mod knowlarity;
mod mobtexting;
mod myoperator;
mod ozonetel;
mod plivo;
pub mod profile;
mod status;
mod telecmi;
mod telnyx;
pub mod time;
mod twilio;
mod vonage;
mod wavecell;

pub use event::{CallEvent, Direction, Field};
pub use fields::Payload;
pub use status::Status;

use crate::config::Provider;

/// What the profile needs to know besides the payload.
pub struct Context<'a> {
    pub event_id: &'a str,
    pub tenant: &'a str,
    pub source: &'a str,
    pub provider: Provider,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Zone for provider times written without one.
    pub timezone: &'a jiff::tz::TimeZone,
}

/// Maps a payload to the normalized event, and the provider's dedupe key for it (`None` when
/// the profile has none or the payload lacks the fields it is built from).
pub fn normalize(payload: &Payload, ctx: &Context) -> (CallEvent, Option<String>) {
    let mut event = CallEvent {
        event_id: ctx.event_id.to_string(),
        tenant: ctx.tenant.to_string(),
        source: ctx.source.to_string(),
        provider: ctx.provider.name().to_string(),
        received_at: time::from_millis(ctx.received_at, ctx.timezone),
        ..CallEvent::default()
    };
    let key = match ctx.provider {
        Provider::Wavecell => wavecell::map(payload, ctx, &mut event),
        Provider::Telecmi => telecmi::map(payload, ctx, &mut event),
        Provider::Mobtexting => mobtexting::map(payload, ctx, &mut event),
        Provider::Callerdesk => callerdesk::map(payload, ctx, &mut event),
        Provider::Twilio => twilio::map(payload, ctx, &mut event),
        Provider::Plivo => plivo::map(payload, ctx, &mut event),
        Provider::Exotel => exotel::map(payload, ctx, &mut event),
        Provider::Vonage => vonage::map(payload, ctx, &mut event),
        Provider::Telnyx => telnyx::map(payload, ctx, &mut event),
        Provider::Knowlarity => knowlarity::map(payload, ctx, &mut event),
        Provider::Ozonetel => ozonetel::map(payload, ctx, &mut event),
        Provider::Myoperator => myoperator::map(payload, ctx, &mut event),
        Provider::Generic => None,
    };
    // A SIP final response names a failure more precisely than a vague word, but not more
    // than a specific one: Twilio's no-answer comes with 487 (the dial was cancelled).
    if let Some(sip) = event.sip_status
        && !matches!(
            event.status,
            Status::Completed | Status::Busy | Status::NoAnswer | Status::Canceled | Status::Rejected
        )
    {
        event.status = event.status.refined_by_sip(sip);
    }
    (event, key)
}

/// A provider time field, as RFC 3339 in the source's zone.
fn time_of(p: &Payload, key: &str, ctx: &Context) -> Option<String> {
    time_at(p, &[key], ctx)
}

/// A nested provider time field (`data.payload.start_time`), as RFC 3339 in the source's zone.
fn time_at(p: &Payload, path: &[&str], ctx: &Context) -> Option<String> {
    p.lookup(path).and_then(|v| time::parse(v, ctx.timezone)).map(|t| time::format(t, ctx.timezone))
}

/// Caller and callee from the customer's number and the business number the call used:
/// the customer calls in, the business calls out.
fn parties(e: &mut CallEvent, customer: Option<String>, business: Option<String>) {
    (e.from, e.to) = if e.direction == Some(Direction::Outbound) { (business, customer) } else { (customer, business) };
}

/// Joins the parts of a dedupe key; `None` if any part is missing.
fn dedupe_key(parts: &[Option<&str>]) -> Option<String> {
    let mut key = String::new();
    for part in parts {
        key.push_str(part.as_ref()?);
        key.push('\u{1f}');
    }
    Some(key)
}

#[cfg(test)]
mod tests;
