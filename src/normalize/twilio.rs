//! Twilio voice: the voice URL request, status callbacks (with `SequenceNumber` and
//! `CallbackSource`), `<Gather>` digits and recording status callbacks, all form POSTs.
//! `Timestamp` is RFC 2822.

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("CallSid");
    e.parent_id = p.string("ParentCallSid");
    // A recording status callback carries no CallStatus; a call's own status callback may
    // carry its recording's URL and is still a status.
    let recording =
        p.get("RecordingStatus").is_some() || (p.get("RecordingSid").is_some() && p.get("CallStatus").is_none());
    e.event = Some(
        if recording {
            "recording"
        } else if p.text("Digits").is_some() {
            "dtmf"
        } else if p.get("CallbackSource").is_some() || p.get("SequenceNumber").is_some() {
            "status"
        } else {
            "received"
        }
        .to_string(),
    );
    // Elastic SIP Trunking: origination brings PSTN calls in, termination takes them out.
    e.direction = match p.text("Direction").as_deref() {
        Some("inbound" | "trunking-originating") => Some(Direction::Inbound),
        Some(d) if d.starts_with("outbound") || d == "trunking-terminating" => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.string("From");
    e.to = p.string("To");
    e.provider_status = p.string("CallStatus");
    e.status = e.provider_status.as_deref().map_or(Status::Unknown, status);
    e.duration = p.int("CallDuration");
    e.occurred_at = time_of(p, "Timestamp", ctx);
    e.recording_url = p.string("RecordingUrl");
    e.dtmf = p.string("Digits");
    e.sip_status = p.int("SipResponseCode");
    e.error_code = p.string("ErrorCode");
    e.sequence = p.int("SequenceNumber");
    // A retry repeats the sequence number; the voice URL and Gather requests have none.
    dedupe_key(&[
        e.id.as_deref(),
        e.event.as_deref(),
        Some(e.provider_status.as_deref().unwrap_or("")),
        Some(p.text("SequenceNumber").as_deref().unwrap_or("")),
        Some(p.text("RecordingSid").as_deref().unwrap_or("")),
        Some(p.text("RecordingStatus").as_deref().unwrap_or("")),
        Some(e.dtmf.as_deref().unwrap_or("")),
    ])
}

/// Twilio's words are the normalized vocabulary, written with `-`.
pub fn status(s: &str) -> Status {
    match word(s).as_str() {
        "queued" => Status::Queued,
        "initiated" => Status::Initiated,
        "ringing" => Status::Ringing,
        "inprogress" | "answered" => Status::InProgress,
        "completed" => Status::Completed,
        "busy" => Status::Busy,
        "noanswer" => Status::NoAnswer,
        "canceled" => Status::Canceled,
        "failed" => Status::Failed,
        _ => Status::Unknown,
    }
}
