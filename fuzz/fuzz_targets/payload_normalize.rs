//! Any Content-Type, body and query string through ingest's payload parsing (JSON, form,
//! query-only GET callbacks, and whatever the header claims) and then every provider
//! profile: never panics, and every normalized event serializes.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use switchboard::config::Provider;
use switchboard::ingest::payload;
use switchboard::normalize::{self, Context};

fuzz_target!(|input: (Option<&str>, &[u8], Option<&str>)| {
    let (content_type, body, query) = input;
    let header = content_type.and_then(|ct| HeaderValue::from_str(ct).ok());
    let Ok(kind) = payload::kind(header.as_ref()) else { return };
    let Ok(fields) = payload::fields(kind, body, query) else { return };
    let tz = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
    for provider in Provider::ALL {
        let context = Context { event_id: "e", tenant: "t", source: "s", provider, received_at: 0, timezone: &tz };
        let (event, _) = normalize::normalize(&fields, &context);
        serde_json::to_string(&event).unwrap();
    }
});
