//! MyOperator: Webhooks v2 JSON (an envelope with `event_id`, `event_type`,
//! `event_sequence`, `session_id`, `direction`, `system_identifier` (the DID),
//! `customer_identifier`, around a `payload` with the call and its `legs`), and the legacy
//! v1 After Call log, a form field `myoperator` holding `_ai`, `_cl`, `_su`, `_st`… as JSON.

use serde_json::{Map, Value};

use super::event::{CallEvent, Direction};
use super::status::{Status, word};
use super::{Context, Payload, dedupe_key, parties, time, time_at, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    if let Some(Value::String(log)) = p.get("myoperator") {
        let Ok(Value::Object(log)) = serde_json::from_str::<Value>(log) else { return None };
        return after_call(&Payload(log), ctx, e);
    }
    let payload = |key: &str| p.text_at(&["payload", key]);
    let event_type = p.string("event_type");
    e.id = payload("id").or_else(|| p.string("session_id"));
    e.session_id = p.string("session_id");
    e.direction = match p.text("direction").or_else(|| payload("direction").map(Into::into)).as_deref() {
        Some("incoming" | "inbound") => Some(Direction::Inbound),
        Some("outgoing" | "outbound") => Some(Direction::Outbound),
        _ => None,
    };
    let customer = p.string("customer_identifier").or_else(|| payload("customer_number"));
    let did = payload("did").or_else(|| p.string("system_identifier"));
    parties(e, customer, did);
    let legs: Vec<&Map<String, Value>> = p
        .lookup(&["payload", "legs"])
        .and_then(Value::as_array)
        .map(|legs| legs.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let agents = || legs.iter().filter(|l| l.get("type").and_then(Value::as_str) == Some("agent"));
    // The agent who answered, else the last one rung.
    let agent = agents().find(|l| l.get("result").and_then(Value::as_str) == Some("answered")).or(agents().next_back());
    e.agent = agent.and_then(|l| l.get("phone_number")).and_then(Value::as_str).map(str::to_owned);
    e.talk_duration = agent
        .filter(|l| l.get("result").and_then(Value::as_str) == Some("answered"))
        .and_then(|l| l.get("talk_duration"))
        .and_then(Value::as_i64);
    e.provider_status = payload("status");
    let kind = event_type.as_deref().unwrap_or("");
    e.event = event_type.as_ref().map(|_| {
        match kind {
            "call.initiated" => "received",
            "call.summary" | "disposition" | "call.disposition" => "report",
            _ => "status",
        }
        .to_string()
    });
    e.status = match (kind, e.provider_status.as_deref().map(word).as_deref()) {
        (_, Some("bridged")) => Status::Completed,
        (_, Some("missed" | "voicemail")) => Status::NoAnswer,
        ("call.initiated" | "call.ivr_started" | "call.dial_begin", _) => Status::Ringing,
        ("call.answered", _) => Status::InProgress,
        _ => Status::Unknown,
    };
    e.duration = p.lookup(&["payload", "duration"]).and_then(Value::as_i64);
    e.occurred_at = time_of(p, "timestamp", ctx);
    e.started_at = time_at(p, &["payload", "started_at"], ctx);
    e.ended_at = time_at(p, &["payload", "ended_at"], ctx);
    e.sequence = p.int("event_sequence");
    p.string("event_id")
        .or_else(|| dedupe_key(&[e.session_id.as_deref(), event_type.as_deref(), p.text("event_sequence").as_deref()]))
}

/// The v1 After Call log: `_ai` the call, `_ev` 1 inbound / 2 outbound, `_cl` the caller,
/// `_su` 1 answered / 2 missed, `_st`/`_et` epoch seconds, `_dr` `HH:MM:SS`, `_fu` the
/// recording, `_ld` the legs (the answering one's `_rr[0]._nr` is the agent).
fn after_call(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("_ai");
    e.event = Some("report".into());
    e.direction = match p.text("_ev").as_deref() {
        Some("1") => Some(Direction::Inbound),
        Some("2") => Some(Direction::Outbound),
        _ => None,
    };
    e.from = p.string("_cl");
    e.provider_status = p.string("_su");
    e.status = match e.provider_status.as_deref() {
        Some("1") => Status::Completed,
        Some("2") => Status::NoAnswer,
        _ => Status::Unknown,
    };
    let legs = p.get("_ld").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let answered = legs.iter().find(|l| l.get("_ds").and_then(Value::as_str).is_some_and(|s| word(s) == "answer"));
    e.agent = answered.and_then(|l| l.pointer("/_rr/0/_nr")).and_then(Value::as_str).map(str::to_owned);
    e.duration = p.text("_dr").and_then(|t| time::clock(&t));
    e.talk_duration = answered.and_then(|l| l.get("_dr")).and_then(Value::as_str).and_then(time::clock);
    e.started_at = time_of(p, "_st", ctx);
    e.ended_at = time_of(p, "_et", ctx);
    e.recording_url = p.string("_fu");
    dedupe_key(&[e.id.as_deref(), Some("report")])
}
