//! Wavecell (8x8) "Call Handle Callback": CALL_RECEIVED / DTMF_RECEIVED per call hop.
//! `direction` is a number (0 inbound, 1 outbound); `dtmf` is a JSON number.

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("callId");
    e.session_id = p.string("sessionId");
    let event_type = p.string("eventType");
    e.event = event_type.as_deref().map(|t| match word(t).as_str() {
        "callreceived" => "received".to_string(),
        "dtmfreceived" => "dtmf".to_string(),
        _ => t.to_ascii_lowercase(),
    });
    e.direction = match p.text("direction").as_deref() {
        Some("0") | Some("inbound") => Some(Direction::Inbound),
        Some("1") | Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.string("sourceMsisdn");
    e.to = p.string("targetMsisdn");
    e.provider_status = p.string("status");
    e.status = e.provider_status.as_deref().map_or(Status::Unknown, |s| match word(s).as_str() {
        "connected" => Status::InProgress,
        // The call has reached the handleURL and waits for its commands.
        "notconnected" => Status::Ringing,
        "completed" | "disconnected" | "hangup" => Status::Completed,
        "busy" => Status::Busy,
        "noanswer" => Status::NoAnswer,
        "failed" => Status::Failed,
        _ => Status::Unknown,
    });
    e.duration = p.int("duration");
    e.dtmf = p.string("dtmf");
    e.sip_status = p.int("sipStatus");
    e.occurred_at = time_of(p, "timestamp", ctx);
    // Two DTMF events of one call differ only by their digits.
    dedupe_key(&[e.id.as_deref(), event_type.as_deref(), Some(e.dtmf.as_deref().unwrap_or(""))])
}
