//! TeleCMI live events (`type = "event"`) and call detail records (`type = "cdr"`).
//! `from` and `to` are JSON numbers; `time` is epoch milliseconds.

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    let kind = p.string("type");
    let is_cdr = kind.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("cdr"));
    e.id = p.string("cmiuuid");
    e.session_id = p.string("conversation_uuid");
    e.direction = match p.text("direction").as_deref().map(word).as_deref() {
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.string("from");
    e.to = p.string("to");
    e.agent = p.first(&["agent", "user"]);
    e.provider_status = p.string("status");
    e.status = e.provider_status.as_deref().map_or(Status::Unknown, |s| match word(s).as_str() {
        "waiting" => Status::Queued,
        "started" | "ringing" => Status::Ringing,
        // A live "answered" is a call in progress; a record of an answered call is one that ended.
        "answered" if is_cdr => Status::Completed,
        "answered" => Status::InProgress,
        "hangup" | "completed" | "ended" => Status::Completed,
        "missed" | "noanswer" => Status::NoAnswer,
        "busy" => Status::Busy,
        "cancel" | "canceled" | "cancelled" => Status::Canceled,
        "rejected" => Status::Rejected,
        "failed" => Status::Failed,
        _ => Status::Unknown,
    });
    e.event =
        if is_cdr { Some("report".to_string()) } else { e.provider_status.as_deref().map(str::to_ascii_lowercase) };
    e.duration = p.int("duration");
    e.talk_duration = p.int("answeredsec");
    e.recording_url = p.first(&["recording_url", "record_url"]);
    e.occurred_at = time_of(p, "time", ctx);
    dedupe_key(&[e.id.as_deref(), kind.as_deref(), e.provider_status.as_deref()])
}
