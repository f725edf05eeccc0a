//! Callerdesk: the Call Report webhook (after the call) and the Live Call webhook (while it
//! is connected). Times are local "YYYY-MM-DD hh:mm:ss"; `Direction` is IVR (inbound) or
//! WEBOBD (outbound).

use super::event::{CallEvent, Direction};
use super::status::{Status, dialer, word};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    let is_report = p.get("EndTime").is_some() || p.get("CallDuration").is_some();
    e.id = p.string("CallSid");
    e.event = Some(if is_report { "report" } else { "live" }.to_string());
    e.direction = match p.text("Direction").as_deref().map(word).as_deref() {
        Some("ivr") | Some("inbound") | Some("incoming") => Some(Direction::Inbound),
        Some("webobd") | Some("obd") | Some("outbound") | Some("outgoing") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.string("SourceNumber");
    e.to = p.string("DestinationNumber");
    e.agent = p.string("DialWhomNumber");
    e.provider_status = p.string("Status");
    e.status = match e.provider_status.as_deref().map(dialer) {
        // A live callback for an answered call: the call is still going on.
        Some(Status::Completed) if !is_report => Status::InProgress,
        Some(status) => status,
        None => Status::Unknown,
    };
    e.duration = p.int("CallDuration");
    e.talk_duration = p.int("TalkDuration");
    e.started_at = time_of(p, "StartTime", ctx);
    e.ended_at = time_of(p, "EndTime", ctx);
    e.recording_url = p.string("CallRecordingUrl");
    e.error_code = p.string("error_code");
    dedupe_key(&[e.id.as_deref(), e.event.as_deref(), e.provider_status.as_deref()])
}
