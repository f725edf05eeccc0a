//! Exotel: Passthru applet requests (GET query: `CallSid`, `CallFrom`, `CallTo`,
//! `Direction`, `CallType`, `DialCallStatus`, `digits`, `RecordingUrl`, `CurrentTime`…) and
//! the outbound-call (Connect) API's StatusCallback (form POST: `Status`, `EventType`,
//! `DateUpdated`, `ConversationDuration`, `Legs[n][…]`). Times are local (IST).

use super::event::{CallEvent, Direction};
use super::status::{Status, dialer, word};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("CallSid");
    e.direction = match p.text("Direction").as_deref().map(word).as_deref() {
        Some("incoming" | "inbound") => Some(Direction::Inbound),
        Some(d) if d.starts_with("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.first(&["CallFrom", "From"]);
    e.to = p.first(&["CallTo", "To"]);
    e.agent = p.string("DialWhomNumber");
    e.started_at = time_of(p, "StartTime", ctx);
    // Passthru sends the epoch (in IST) as the end of a call still going on.
    e.ended_at = time_of(p, "EndTime", ctx).filter(|t| !t.starts_with("1970-01-01"));
    e.recording_url = p.string("RecordingUrl");
    // Passthru quotes the digits: `"0451"`.
    e.dtmf = p.string("digits").map(|d| d.trim_matches('"').to_string()).filter(|d| !d.is_empty());
    let passthru = p.get("CallType").is_some() || p.get("CallFrom").is_some();
    if passthru {
        let dial = p.string("DialCallStatus");
        e.event = Some(
            if e.dtmf.is_some() {
                "dtmf"
            } else if dial.is_some() {
                "status"
            } else {
                "received"
            }
            .into(),
        );
        e.provider_status = dial.or_else(|| p.string("CallType"));
        e.status = match e.provider_status.as_deref().map(word).as_deref() {
            _ if e.dtmf.is_some() => Status::InProgress,
            Some("callattempt") => Status::Ringing,
            Some("incomplete") => Status::NoAnswer,
            Some("clienthangup") => Status::Canceled,
            Some(w) => dialer(w),
            None => Status::Unknown,
        };
        e.duration = p.int("DialCallDuration");
        e.occurred_at = time_of(p, "CurrentTime", ctx);
    } else {
        e.event = Some("status".into());
        e.provider_status = p.string("Status");
        e.status = match e.provider_status.as_deref().map(word).as_deref() {
            Some("queued") => Status::Queued,
            Some("ringing") => Status::Ringing,
            Some("inprogress") => Status::InProgress,
            Some(w) => dialer(w),
            None => Status::Unknown,
        };
        e.duration = p.int("Legs[0][OnCallDuration]");
        e.talk_duration = p.int("ConversationDuration");
        e.ended_at = time_of(p, "EndTime", ctx);
        e.occurred_at = time_of(p, "DateUpdated", ctx);
    }
    dedupe_key(&[
        e.id.as_deref(),
        e.event.as_deref(),
        Some(e.provider_status.as_deref().unwrap_or("")),
        Some(p.text("EventType").as_deref().unwrap_or("")),
        Some(e.dtmf.as_deref().unwrap_or("")),
    ])
}
