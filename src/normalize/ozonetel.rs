//! Ozonetel: three systems reach one source, told apart by their form.
//! - CloudAgent's call summary after each call: a form POST whose one field `data` holds the
//!   summary as JSON (`monitorUCID`, `CallerID`, `Did`, `Status`, `CustomerStatus`…), with
//!   durations as `HH:MM:SS` and local times.
//! - CloudAgent's real-time call events: JSON `{"eventType":"Call","data":{"action",…}}`
//!   (a flat body is read alike).
//! - KooKoo IVR requests: GETs with `event` (NewCall, GotDTMF, Record, Hangup…) and `sid`.

use serde_json::Value;

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, parties, time, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    match p.get("data") {
        Some(Value::String(text)) if text.trim_start().starts_with('{') => {
            let Ok(Value::Object(summary)) = serde_json::from_str::<Value>(text) else { return None };
            summary_of(&Payload(summary), ctx, e)
        }
        Some(Value::Object(event)) if p.get("event").is_none() => live(&Payload(event.clone()), ctx, e),
        _ if p.get("action").is_some() => live(p, ctx, e),
        _ => kookoo(p, e),
    }
}

/// `Type`: inbound, or one of the dialers' words (all outbound).
fn direction(kind: Option<&str>) -> Option<Direction> {
    match word(kind?).as_str() {
        "inbound" => Some(Direction::Inbound),
        "" => None,
        _ => Some(Direction::Outbound),
    }
}

fn summary_of(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("monitorUCID");
    e.session_id = e.id.clone();
    e.event = Some("report".into());
    e.direction = direction(p.text("Type").as_deref());
    // `CallerID` is always the customer; the `Did` is the business number.
    parties(e, p.string("CallerID"), p.string("Did"));
    e.agent = p.first(&["AgentPhoneNumber", "DialedNumber"]);
    e.provider_status = p.string("Status");
    let customer = p.text("CustomerStatus").map(|s| word(&s));
    e.status = match (e.provider_status.as_deref().map(word).as_deref(), customer.as_deref()) {
        (_, Some("busy")) => Status::Busy,
        (
            _,
            Some(
                "invalidnumber"
                | "invalidnumberformat"
                | "noroutedestination"
                | "subcriberabsent"
                | "subscriberabsent"
                | "isddisabled"
                | "congestion"
                | "exception",
            ),
        ) => Status::Failed,
        (Some("answered"), _) => Status::Completed,
        (Some("notanswered"), _) => Status::NoAnswer,
        _ => match p.text("DialStatus").map(|s| word(&s)).as_deref() {
            Some("answered") => Status::Completed,
            Some("notanswered" | "ring") => Status::NoAnswer,
            Some("invalidnumber" | "exception") => Status::Failed,
            _ => Status::Unknown,
        },
    };
    e.duration = p.text("CallDuration").and_then(|t| time::clock(&t));
    e.talk_duration = p.text("Duration").and_then(|t| time::clock(&t));
    e.started_at = time_of(p, "StartTime", ctx);
    e.ended_at = time_of(p, "EndTime", ctx);
    e.recording_url = p.string("AudioFile");
    dedupe_key(&[e.id.as_deref(), Some("report")])
}

fn live(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("ucid");
    e.session_id = p.string("monitor_ucid");
    e.event = Some("status".into());
    e.direction = direction(p.text("call_type").as_deref());
    parties(e, p.string("caller_id"), p.string("did"));
    e.agent = p.string("agent_number");
    e.provider_status = p.string("action");
    e.status = match e.provider_status.as_deref().map(word).as_deref() {
        Some("calling") => Status::Ringing,
        Some("answered") => Status::InProgress,
        // A disconnect does not say whether anyone answered: the summary settles it.
        _ => Status::Unknown,
    };
    e.occurred_at = time_of(p, "event_time", ctx);
    dedupe_key(&[e.id.as_deref(), e.provider_status.as_deref(), Some(p.text("agent_id").as_deref().unwrap_or(""))])
}

fn kookoo(p: &Payload, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("sid");
    let event = p.string("event");
    let data = p.string("data");
    let (kind, status) = match event.as_deref().map(word).as_deref() {
        Some("newcall") => ("received", Status::Ringing),
        Some("gotdtmf") => ("dtmf", Status::InProgress),
        Some("record") => ("recording", Status::InProgress),
        Some("dial") => ("status", Status::InProgress),
        Some("hangup" | "disconnect") => ("hangup", Status::Completed),
        _ => ("status", Status::Unknown),
    };
    e.event = Some(kind.into());
    e.status = status;
    e.provider_status = p.string("status");
    if kind == "received" {
        e.direction = Some(if p.get("outbound_sid").is_some() { Direction::Outbound } else { Direction::Inbound });
    }
    e.from = p.string("cid");
    e.to = p.string("called_number");
    match kind {
        "dtmf" => e.dtmf = data,
        "recording" => e.recording_url = data,
        _ => {}
    }
    e.duration = p.int("total_call_duration");
    // Two menus answered with the same digits are identical requests, and each must reach
    // the IVR: only the call's start and end are recognised as repeats.
    match kind {
        "received" | "hangup" => dedupe_key(&[e.id.as_deref(), event.as_deref()]),
        _ => None,
    }
}
