//! Any body, as JSON or form, through every provider profile: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::config::Provider;
use switchboard::ingest::payload::{self, Kind};
use switchboard::normalize::{self, Context};

fuzz_target!(|input: (bool, &[u8])| {
    let (json, body) = input;
    let kind = if json { Kind::Json } else { Kind::Form };
    let Ok(fields) = payload::fields(Some(kind), body, None) else { return };
    let tz = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
    for provider in [Provider::Wavecell, Provider::Telecmi, Provider::Mobtexting, Provider::Callerdesk, Provider::Generic] {
        let context = Context { event_id: "e", tenant: "t", source: "s", provider, received_at: 0, timezone: &tz };
        let (event, _) = normalize::normalize(&fields, &context);
        serde_json::to_string(&event).unwrap();
    }
});
