//! Telnyx Call Control: JSON envelopes `{"data": {"event_type", "id", "occurred_at",
//! "payload": {…}}, "meta": {…}}`. Every webhook has its own event id, the dedupe key.

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, time};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    let field = |key: &str| p.text_at(&["data", "payload", key]);
    let event_type = p.text_at(&["data", "event_type"]);
    e.id = field("call_control_id");
    e.session_id = field("call_session_id");
    e.direction = match field("direction").as_deref() {
        Some("incoming") | Some("inbound") => Some(Direction::Inbound),
        Some("outgoing") | Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = field("from");
    e.to = field("to");
    let kind = event_type.as_deref().unwrap_or("");
    let hangup_cause = field("hangup_cause");
    e.event = event_type.as_ref().map(|_| {
        match kind {
            "call.dtmf.received" | "call.gather.ended" => "dtmf",
            "call.recording.saved" => "recording",
            "call.initiated" if e.direction == Some(Direction::Inbound) => "received",
            _ => "status",
        }
        .to_string()
    });
    e.status = match kind {
        "call.initiated" if e.direction == Some(Direction::Inbound) => Status::Ringing,
        "call.initiated" => Status::Initiated,
        "call.answered" | "call.bridged" | "call.dtmf.received" | "call.gather.ended" => Status::InProgress,
        "call.hangup" => hangup(hangup_cause.as_deref().unwrap_or("")),
        _ => Status::Unknown,
    };
    e.provider_status = if kind == "call.hangup" { hangup_cause.or(event_type.clone()) } else { event_type.clone() };
    let instant = |path: &[&str]| p.lookup(path).and_then(|v| time::parse(v, ctx.timezone));
    let (start, end) = (instant(&["data", "payload", "start_time"]), instant(&["data", "payload", "end_time"]));
    if let (Some(start), Some(end)) = (start, end) {
        e.duration = Some((end.as_second() - start.as_second()).max(0));
    }
    e.started_at = start.map(|t| time::format(t, ctx.timezone));
    e.ended_at = end.map(|t| time::format(t, ctx.timezone));
    let occurred = instant(&["data", "occurred_at"]);
    e.occurred_at = occurred.map(|t| time::format(t, ctx.timezone));
    e.sequence = occurred.map(|t| t.as_microsecond());
    e.recording_url = p.text_at(&["data", "payload", "recording_urls", "mp3"]).or_else(|| {
        p.text_at(&["data", "payload", "recording_urls", "wav"])
            .or_else(|| p.text_at(&["data", "payload", "public_recording_urls", "mp3"]))
    });
    e.dtmf = field("digits").or_else(|| field("digit"));
    e.sip_status = field("sip_hangup_cause").and_then(|s| s.parse().ok());
    p.text_at(&["data", "id"])
}

/// `call.hangup`'s `hangup_cause`.
fn hangup(cause: &str) -> Status {
    match word(cause).as_str() {
        // `time_limit`: answered, then cut at the call's time limit.
        "normalclearing" | "timelimit" => Status::Completed,
        "userbusy" => Status::Busy,
        "timeout" | "noanswer" => Status::NoAnswer,
        "originatorcancel" => Status::Canceled,
        "callrejected" => Status::Rejected,
        // `sip_hangup_cause` may say more (a SIP status refines an unknown one).
        "unspecified" | "" => Status::Unknown,
        _ => Status::Failed,
    }
}
