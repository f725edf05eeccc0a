//! Vonage Voice: the answer URL request (GET query: `uuid`, `conversation_uuid`, `from`,
//! `to`), event URL statuses (JSON), input (`dtmf.digits`) and recording webhooks.

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    // Machine detection events name the call `call_uuid`.
    e.id = p.first(&["uuid", "call_uuid"]);
    e.session_id = p.string("conversation_uuid");
    let digits = p.text_at(&["dtmf", "digits"]);
    e.provider_status = p.string("status");
    e.event = Some(
        if p.get("recording_url").is_some() {
            "recording"
        } else if p.get("dtmf").is_some() || p.get("speech").is_some() {
            "dtmf"
        } else if e.provider_status.is_some() {
            "status"
        } else {
            "received"
        }
        .to_string(),
    );
    e.direction = match p.text("direction").as_deref() {
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.string("from");
    e.to = p.string("to");
    e.status = match e.provider_status.as_deref().map(word).as_deref() {
        Some("started") => Status::Initiated,
        Some("ringing") => Status::Ringing,
        Some("answered" | "human" | "machine") => Status::InProgress,
        Some("completed") => Status::Completed,
        Some("busy") => Status::Busy,
        Some("timeout" | "unanswered") => Status::NoAnswer,
        Some("cancelled" | "canceled") => Status::Canceled,
        Some("rejected") => Status::Rejected,
        Some("failed") => Status::Failed,
        // The answer URL is asked while the caller waits; input comes from a call going on.
        None if e.event.as_deref() == Some("received") => Status::Ringing,
        None if e.event.as_deref() == Some("dtmf") => Status::InProgress,
        _ => Status::Unknown,
    };
    e.duration = p.int("duration");
    e.occurred_at = time_of(p, "timestamp", ctx);
    e.started_at = time_of(p, "start_time", ctx);
    e.ended_at = time_of(p, "end_time", ctx);
    e.recording_url = p.string("recording_url");
    e.dtmf = digits;
    // Why a call did not connect: `unavailable`, `declined`, `invalid_number`…
    e.error_code = p.string("detail");
    dedupe_key(&[
        e.id.as_deref().or(e.session_id.as_deref()),
        e.event.as_deref(),
        Some(e.provider_status.as_deref().unwrap_or("")),
        Some(p.text("timestamp").as_deref().unwrap_or("")),
        Some(p.text("recording_uuid").as_deref().unwrap_or("")),
    ])
}
