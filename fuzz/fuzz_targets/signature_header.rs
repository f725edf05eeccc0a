//! Any signature headers and body through every verifier: never panics, never accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::auth::signatures::{parse_signature_header, verify_standard};

fuzz_target!(|input: (&str, &str, &str, &[u8])| {
    let (id, timestamp, signature, body) = input;
    let _ = parse_signature_header(signature);
    let mut headers = http::HeaderMap::new();
    for (name, value) in [("webhook-id", id), ("webhook-timestamp", timestamp), ("webhook-signature", signature)] {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    let key = vec![7u8; 24];
    // Without the key, no input can carry a valid signature.
    assert!(verify_standard(&headers, body, 1_700_000_000, &[key]).is_err());
});
