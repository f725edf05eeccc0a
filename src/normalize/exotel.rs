//! exotel: to be mapped from its documented callbacks.

use super::event::CallEvent;
use super::{Context, Payload};

pub fn map(_p: &Payload, _ctx: &Context, _e: &mut CallEvent) -> Option<String> {
    None
}
