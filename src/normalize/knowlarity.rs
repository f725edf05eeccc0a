//! Knowlarity (SuperReceptionist): the post-call push set up in the SR panel's API section,
//! a GET query string or a form POST with the call-log API's field names (`uuid`,
//! `customer_number`, `knowlarity_number`, `agent_number`, `Call_Type`,
//! `business_call_type`, `call_duration`, `start_time`, `resource_url`). Knowlarity
//! publishes no field list for it: see docs/providers.md. Streams events forwarded by a
//! relay (`event_type` ORIGINATE, ANSWER, HANGUP…) are read too.

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, parties, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("uuid");
    e.direction = match p.first(&["Call_Type", "call_direction"]).as_deref().map(word).as_deref() {
        Some("incoming" | "inbound" | "0") => Some(Direction::Inbound),
        Some("outgoing" | "outbound" | "1") => Some(Direction::Outbound),
        _ => None,
    };
    let customer = p.first(&["customer_number", "caller_id", "caller"]);
    let number = p.first(&["knowlarity_number", "dispnumber"]);
    parties(e, customer, number);
    e.agent = p.string("agent_number");
    e.duration = p.int("call_duration");
    e.started_at = time_of(p, "start_time", ctx);
    e.recording_url = p.first(&["resource_url", "call_recording"]);
    let live = p.string("event_type");
    if let Some(live) = &live {
        e.event = Some("status".into());
        e.provider_status = Some(live.clone());
        e.status = match word(live).as_str() {
            "originate" | "customercall" => Status::Ringing,
            "agentcall" => Status::Initiated,
            "answer" | "agentanswer" | "bridge" => Status::InProgress,
            _ => Status::Unknown,
        };
    } else {
        e.event = Some("report".into());
        e.provider_status = p.string("business_call_type");
        let talked = e.duration.is_some_and(|d| d > 0);
        e.status = match e.provider_status.as_deref().map(word).as_deref() {
            Some("phone" | "answered") => Status::Completed,
            Some("missedcall" | "unanswered") => Status::NoAnswer,
            Some("outbound") if talked => Status::Completed,
            Some("outbound") => Status::NoAnswer,
            _ => Status::Unknown,
        };
    }
    dedupe_key(&[e.id.as_deref(), Some(e.provider_status.as_deref().unwrap_or(""))])
}
