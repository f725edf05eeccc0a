//! Plivo voice: answer, ring and hangup URL requests (`Event` = StartApp, Ring, Hangup),
//! call status callbacks, GetInput/GetDigits digits and recording callbacks, all form
//! POSTs. Times are "YYYY-MM-DD hh:mm:ss" in the source's zone (UTC by default, as Plivo
//! sends them).

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.first(&["CallUUID", "RequestUUID"]);
    e.parent_id = p.string("ALegUUID").filter(|a| Some(a) != e.id.as_ref());
    let plivo_event = p.string("Event");
    e.event = Some(
        if p.get("RecordUrl").is_some() || p.get("RecordingID").is_some() {
            "recording"
        } else if p.text("Digits").is_some() {
            "dtmf"
        } else {
            match plivo_event.as_deref().map(word).as_deref() {
                Some("startapp") => "received",
                Some("hangup") => "hangup",
                _ => "status",
            }
        }
        .to_string(),
    );
    e.direction = match p.text("Direction").as_deref().map(word).as_deref() {
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.string("From");
    e.to = p.string("To");
    e.provider_status = p.string("CallStatus");
    e.status = e.provider_status.as_deref().map_or(Status::Unknown, |s| match word(s).as_str() {
        "queued" => Status::Queued,
        "ringing" | "earlymedia" => Status::Ringing,
        "inprogress" | "answered" => Status::InProgress,
        "completed" => Status::Completed,
        "busy" => Status::Busy,
        "noanswer" => Status::NoAnswer,
        "cancel" | "canceled" | "cancelled" => Status::Canceled,
        "rejected" => Status::Rejected,
        // Plivo's `timeout` is a carrier or network failure, not a ring timeout.
        "failed" | "timeout" => Status::Failed,
        _ => Status::Unknown,
    });
    e.duration = p.int("Duration");
    e.talk_duration = p.int("BillDuration");
    e.started_at = time_of(p, "StartTime", ctx);
    e.ended_at = time_of(p, "EndTime", ctx);
    e.recording_url = p.string("RecordUrl");
    e.dtmf = p.string("Digits");
    e.error_code = p.string("HangupCauseCode");
    dedupe_key(&[
        e.id.as_deref(),
        e.event.as_deref(),
        Some(e.provider_status.as_deref().unwrap_or("")),
        Some(p.text("RecordingID").as_deref().unwrap_or("")),
        Some(e.dtmf.as_deref().unwrap_or("")),
    ])
}
