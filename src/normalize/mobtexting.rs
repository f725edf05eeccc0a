//! MOBtexting WEBHOOK Push API: the report of a Click2Call or OBD (outbound dialer) call.
//! Times are local "YYYY-MM-DD hh:mm:ss" with no zone; `duration` is a string.

use super::event::{CallEvent, Direction};
use super::status::{Status, dialer};
use super::{Context, Payload, dedupe_key, time_of};

pub fn map(p: &Payload, ctx: &Context, e: &mut CallEvent) -> Option<String> {
    e.id = p.string("mid");
    e.event = Some("report".to_string());
    // Both Click2Call and OBD calls are placed by the platform.
    e.direction = Some(Direction::Outbound);
    e.from = p.string("from");
    e.to = p.string("to");
    e.provider_status = p.string("status");
    e.status = e.provider_status.as_deref().map_or(Status::Unknown, dialer);
    e.duration = p.int("duration");
    e.started_at = time_of(p, "start_at", ctx);
    e.ended_at = time_of(p, "end_at", ctx);
    e.recording_url = p.string("recording_url");
    // `mid` names the campaign message and may be shared by the calls of one campaign, so
    // the callee and start time are part of what makes a report a repeat.
    let start = p.string("start_at");
    dedupe_key(&[e.id.as_deref(), e.to.as_deref(), e.provider_status.as_deref(), Some(start.as_deref().unwrap_or(""))])
}
