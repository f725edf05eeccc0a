//! Each seed payload, normalized: every field asserted.

use jiff::tz::TimeZone;

use super::*;

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn run(provider: Provider, payload: Payload, tz: &str) -> (CallEvent, Option<String>) {
    let tz = TimeZone::get(tz).unwrap();
    let ctx = Context {
        event_id: "evt",
        tenant: "acme",
        source: "src",
        provider,
        received_at: 1_617_965_900_000,
        timezone: &tz,
    };
    normalize(&payload, &ctx)
}

fn json(name: &str) -> Payload {
    let mut p = Payload::default();
    p.merge_json(&seed(name)).unwrap();
    p
}

fn base(provider: &str, received_at: &str) -> CallEvent {
    CallEvent {
        event_id: "evt".into(),
        tenant: "acme".into(),
        source: "src".into(),
        provider: provider.into(),
        received_at: received_at.into(),
        ..CallEvent::default()
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn wavecell_call_received() {
    let (event, key) = run(Provider::Wavecell, json("wavecell.json"), "UTC");
    assert_eq!(
        event,
        CallEvent {
            id: s("a1d6a5e3-efec-11e9-b999-7d370b5f90d1"),
            session_id: s("a1d6a5e2-efec-11e9-b999-efc71013a78f"),
            event: s("received"),
            direction: Some(Direction::Inbound),
            from: s("6512345678"),
            to: s("6587654321"),
            status: Status::Ringing,
            provider_status: s("NOT_CONNECTED"),
            duration: Some(0),
            occurred_at: s("2019-10-16T08:12:01+00:00"),
            dtmf: s("787"),
            ..base("wavecell", "2021-04-09T10:58:20+00:00")
        }
    );
    assert!(key.is_some());
}

#[test]
fn telecmi_incoming_waiting() {
    let (event, key) = run(Provider::Telecmi, json("telecmi.json"), "Asia/Kolkata");
    assert_eq!(
        event,
        CallEvent {
            id: s("703ee423-e5f8-4120-9c17-5216c679afdd"),
            session_id: s("703ee423-e5f8-4120-9c17-5216c679afdd"),
            event: s("waiting"),
            direction: Some(Direction::Inbound),
            // JSON numbers, kept digit for digit.
            from: s("9100000000"),
            to: s("4461000000"),
            status: Status::Queued,
            provider_status: s("waiting"),
            occurred_at: s("2019-10-15T11:42:01+05:30"),
            ..base("telecmi", "2021-04-09T16:28:20+05:30")
        }
    );
    assert!(key.is_some());
}

#[test]
fn mobtexting_call_report() {
    let (event, key) = run(Provider::Mobtexting, json("mobtexting.json"), "Asia/Kolkata");
    assert_eq!(
        event,
        CallEvent {
            id: s("1234-1333-XXXXX"),
            event: s("report"),
            direction: Some(Direction::Outbound),
            from: s("91891952XXXX"),
            to: s("91886713XXXX"),
            status: Status::Completed,
            provider_status: s("ANSWER"),
            duration: Some(23),
            started_at: s("2021-04-09T16:27:39+05:30"),
            ended_at: s("2021-04-09T16:27:55+05:30"),
            recording_url: s("https://youraudiofilelocation/"),
            ..base("mobtexting", "2021-04-09T16:28:20+05:30")
        }
    );
    assert!(key.is_some());
}

#[test]
fn callerdesk_call_report() {
    let (event, key) = run(Provider::Callerdesk, json("callerdesk.json"), "Asia/Kolkata");
    assert_eq!(
        event,
        CallEvent {
            id: s("1672649960.960xxxx"),
            event: s("report"),
            direction: Some(Direction::Inbound),
            from: s("99xxxxx"),
            to: s("0120xxxx"),
            agent: s("928xxxxx"),
            status: Status::Completed,
            provider_status: s("ANSWER"),
            duration: Some(18),
            talk_duration: Some(40),
            started_at: s("2023-01-02T14:32:40+05:30"),
            ended_at: s("2023-01-02T14:33:20+05:30"),
            recording_url: s("https://recordings.example/1672649960.mp3"),
            error_code: s("19"),
            ..base("callerdesk", "2021-04-09T16:28:20+05:30")
        }
    );
    assert!(key.is_some());
}

#[test]
fn callerdesk_live_call_as_a_form() {
    let mut payload = Payload::default();
    payload.merge_form(&seed("callerdesk.form"));
    let (event, _) = run(Provider::Callerdesk, payload, "Asia/Kolkata");
    assert_eq!(event.event.as_deref(), Some("live"));
    assert_eq!(event.status, Status::InProgress);
    assert_eq!(event.started_at.as_deref(), Some("2023-01-02T14:32:40+05:30"));
    assert_eq!(event.agent.as_deref(), Some("928xxxxx"));
}

#[test]
fn numbers_and_strings_normalize_alike() {
    let mut a = Payload::default();
    a.merge_json(br#"{"CallSid":"1.5","CallDuration":18,"SourceNumber":919876543210,"dtmf":"007#"}"#).unwrap();
    let mut b = Payload::default();
    b.merge_json(br#"{"CallSid":"1.5","CallDuration":"18","SourceNumber":"919876543210"}"#).unwrap();
    let (ea, _) = run(Provider::Callerdesk, a.clone(), "UTC");
    let (eb, _) = run(Provider::Callerdesk, b, "UTC");
    assert_eq!(ea, eb);
    assert_eq!(ea.from.as_deref(), Some("919876543210"));
    let mut w = Payload::default();
    w.merge_json(br#"{"callId":"c","dtmf":"007#"}"#).unwrap();
    assert_eq!(run(Provider::Wavecell, w, "UTC").0.dtmf.as_deref(), Some("007#"));
}

#[test]
fn status_words_and_sip_refinement() {
    let cases = [
        (Provider::Telecmi, r#"{"type":"event","status":"answered"}"#, Status::InProgress),
        (Provider::Telecmi, r#"{"type":"cdr","status":"answered"}"#, Status::Completed),
        (Provider::Telecmi, r#"{"type":"cdr","status":"missed"}"#, Status::NoAnswer),
        (Provider::Wavecell, r#"{"status":"CONNECTED"}"#, Status::InProgress),
        (Provider::Wavecell, r#"{"status":"NOT_CONNECTED","sipStatus":486}"#, Status::Busy),
        (Provider::Wavecell, r#"{"status":"NOT_CONNECTED","sipStatus":"480"}"#, Status::NoAnswer),
        (Provider::Wavecell, r#"{"status":"NOT_CONNECTED","sipStatus":487}"#, Status::Canceled),
        (Provider::Wavecell, r#"{"status":"NOT_CONNECTED","sipStatus":603}"#, Status::Rejected),
        (Provider::Mobtexting, r#"{"status":"BUSY"}"#, Status::Busy),
        (Provider::Mobtexting, r#"{"status":"NOANSWER"}"#, Status::NoAnswer),
        (Provider::Mobtexting, r#"{"status":"CANCEL"}"#, Status::Canceled),
        (Provider::Callerdesk, r#"{"Status":"NO ANSWER","EndTime":"x"}"#, Status::NoAnswer),
        (Provider::Callerdesk, r#"{"Status":"exploded","EndTime":"x"}"#, Status::Unknown),
    ];
    for (provider, body, expected) in cases {
        let mut p = Payload::default();
        p.merge_json(body.as_bytes()).unwrap();
        let (event, _) = run(provider, p, "UTC");
        assert_eq!(event.status, expected, "{provider:?} {body}");
    }
    let mut p = Payload::default();
    p.merge_json(br#"{"Status":"exploded","EndTime":"x"}"#).unwrap();
    assert_eq!(run(Provider::Callerdesk, p, "UTC").0.provider_status.as_deref(), Some("exploded"));
}

#[test]
fn repeats_share_a_dedupe_key_and_distinct_events_do_not() {
    let key = |provider, body: &str| {
        let mut p = Payload::default();
        p.merge_json(body.as_bytes()).unwrap();
        run(provider, p, "UTC").1
    };
    let waiting = key(Provider::Telecmi, r#"{"cmiuuid":"u","type":"event","status":"waiting"}"#);
    assert_eq!(waiting, key(Provider::Telecmi, r#"{"cmiuuid":"u","type":"event","status":"waiting","time":2}"#));
    assert_ne!(waiting, key(Provider::Telecmi, r#"{"cmiuuid":"u","type":"event","status":"answered"}"#));
    assert_ne!(
        key(Provider::Wavecell, r#"{"callId":"c","eventType":"DTMF_RECEIVED","dtmf":1}"#),
        key(Provider::Wavecell, r#"{"callId":"c","eventType":"DTMF_RECEIVED","dtmf":2}"#)
    );
    assert_eq!(key(Provider::Callerdesk, r#"{"Status":"ANSWER"}"#), None, "no call id, no key");
    assert_eq!(key(Provider::Generic, r#"{"id":"x"}"#), None);
}

const PROVIDERS: [Provider; 13] = Provider::ALL;

/// The keys each provider's profile reads the caller and callee numbers from.
fn phone_keys(provider: Provider) -> Option<(&'static str, &'static str)> {
    match provider {
        Provider::Wavecell => Some(("sourceMsisdn", "targetMsisdn")),
        Provider::Telecmi | Provider::Mobtexting | Provider::Vonage => Some(("from", "to")),
        Provider::Callerdesk => Some(("SourceNumber", "DestinationNumber")),
        Provider::Twilio | Provider::Plivo => Some(("From", "To")),
        // Telnyx nests its numbers in an envelope; the others are checked by their fixtures.
        Provider::Telnyx
        | Provider::Exotel
        | Provider::Knowlarity
        | Provider::Ozonetel
        | Provider::Myoperator
        | Provider::Generic => None,
    }
}

/// Whatever the payload, the event carries the context's identity, not the payload's; the
/// generic provider maps nothing else.
fn check_context(event: &CallEvent, provider: Provider) -> Result<(), proptest::test_runner::TestCaseError> {
    use proptest::prop_assert_eq;
    prop_assert_eq!(&event.event_id, "evt");
    prop_assert_eq!(&event.tenant, "acme");
    prop_assert_eq!(&event.source, "src");
    prop_assert_eq!(&event.provider, provider.name());
    // 1_617_965_900_000 ms in Asia/Kolkata, whatever time the payload claims.
    prop_assert_eq!(&event.received_at, "2021-04-09T16:28:20+05:30");
    if provider == Provider::Generic {
        prop_assert_eq!(event, &base("generic", "2021-04-09T16:28:20+05:30"));
    }
    Ok(())
}

/// Keys the profiles read (so their parsers run on odd values), and others.
fn json_key() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    const READ: [&str; 30] = [
        "callId",
        "sessionId",
        "eventType",
        "direction",
        "status",
        "duration",
        "dtmf",
        "sipStatus",
        "timestamp",
        "cmiuuid",
        "type",
        "conversation_uuid",
        "agent",
        "user",
        "answeredsec",
        "recording_url",
        "time",
        "mid",
        "start_at",
        "end_at",
        "CallSid",
        "Direction",
        "DialWhomNumber",
        "Status",
        "CallDuration",
        "TalkDuration",
        "StartTime",
        "EndTime",
        "CallRecordingUrl",
        "error_code",
    ];
    prop_oneof![proptest::sample::select(&READ[..]).prop_map(str::to_string), "[A-Za-z_]{1,10}"]
}

/// Values as providers send them: text, whole and decimal numbers, booleans, null.
fn json_scalar() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    prop_oneof![
        ".{0,24}".prop_map(Value::String),
        "[0-9: +-]{0,24}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

/// A phone number as a string or a JSON number, with the text it must come out as.
fn phone() -> impl proptest::strategy::Strategy<Value = (serde_json::Value, String)> {
    use proptest::prelude::*;
    prop_oneof![
        "\\+?[0-9]{6,14}".prop_map(|s| (serde_json::Value::String(s.clone()), s)),
        (100_000u64..u64::MAX).prop_map(|n| (serde_json::Value::from(n), n.to_string())),
    ]
}

proptest::proptest! {
    /// The stable-toolchain companion of the `payload_normalize` fuzz target: whatever
    /// parses, however odd, normalizes without panicking.
    #[test]
    fn any_body_normalizes_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), json in proptest::prelude::any::<bool>()) {
        use crate::ingest::payload::{self, Kind};
        let kind = if json { Kind::Json } else { Kind::Form };
        if let Ok(fields) = payload::fields(Some(kind), &body, None) {
            for provider in PROVIDERS {
                let (event, _) = run(provider, fields.clone(), "Asia/Kolkata");
                check_context(&event, provider)?;
            }
        }
    }

    /// Form-shaped text (most of it parses; a stray `%` does not): it never panics, and
    /// what parses keeps the context's identity.
    #[test]
    fn form_like_text_normalizes_without_panicking(body in "[A-Za-z0-9=&%+]{0,64}", query in "[A-Za-z0-9=&%+]{0,32}") {
        use crate::ingest::payload::{self, Kind};
        if let Ok(fields) = payload::fields(Some(Kind::Form), body.as_bytes(), Some(&query)) {
            for provider in PROVIDERS {
                let (event, _) = run(provider, fields.clone(), "Asia/Kolkata");
                check_context(&event, provider)?;
            }
        }
    }

    /// Well-formed JSON objects of odd values always parse and normalize: the event keeps
    /// the context's identity and the phone numbers are the exact text sent (a JSON number
    /// digit for digit).
    #[test]
    fn json_objects_normalize_with_exact_phone_numbers(
        fields in proptest::collection::btree_map(json_key(), json_scalar(), 0..12),
        from in phone(),
        to in phone(),
    ) {
        use crate::ingest::payload::{self, Kind};
        for provider in PROVIDERS {
            let mut object: serde_json::Map<String, serde_json::Value> = fields.clone().into_iter().collect();
            if let Some((from_key, to_key)) = phone_keys(provider) {
                object.insert(from_key.to_string(), from.0.clone());
                object.insert(to_key.to_string(), to.0.clone());
            }
            let body = serde_json::to_vec(&serde_json::Value::Object(object)).unwrap();
            let parsed = payload::fields(Some(Kind::Json), &body, None);
            proptest::prop_assert!(parsed.is_ok(), "{parsed:?} for {}", String::from_utf8_lossy(&body));
            let (event, _) = run(provider, parsed.unwrap(), "Asia/Kolkata");
            check_context(&event, provider)?;
            if phone_keys(provider).is_some() {
                proptest::prop_assert_eq!(event.from.as_deref(), Some(from.1.as_str()));
                proptest::prop_assert_eq!(event.to.as_deref(), Some(to.1.as_str()));
            }
        }
    }

    /// Form bodies of any text, encoded as a client would: they always parse, and the phone
    /// numbers are the exact text sent (`+` included, not read as a space).
    #[test]
    fn form_bodies_normalize_with_exact_phone_numbers(
        pairs in proptest::collection::vec(("[A-Za-z0-9_]{1,10}", ".{0,16}"), 0..8),
        from in "\\+?[0-9]{6,14}",
        to in "\\+?[0-9]{6,14}",
    ) {
        use crate::ingest::payload::{self, Kind};
        for provider in PROVIDERS {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.extend_pairs(&pairs);
            if let Some((from_key, to_key)) = phone_keys(provider) {
                form.append_pair(from_key, &from).append_pair(to_key, &to);
            }
            let body = form.finish();
            let parsed = payload::fields(Some(Kind::Form), body.as_bytes(), None);
            proptest::prop_assert!(parsed.is_ok(), "{parsed:?} for {body}");
            let (event, _) = run(provider, parsed.unwrap(), "Asia/Kolkata");
            check_context(&event, provider)?;
            if phone_keys(provider).is_some() {
                proptest::prop_assert_eq!(event.from.as_deref(), Some(from.as_str()));
                proptest::prop_assert_eq!(event.to.as_deref(), Some(to.as_str()));
            }
        }
    }

    #[test]
    fn json_objects_of_any_strings_normalize(values in proptest::collection::vec(".*", 12)) {
        let keys = ["callId", "eventType", "timestamp", "status", "dtmf", "sipStatus", "time", "start_at", "duration", "Status", "StartTime", "CallDuration"];
        let object: serde_json::Map<String, serde_json::Value> =
            keys.iter().zip(&values).map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect();
        let payload = Payload(object);
        for provider in PROVIDERS {
            let (event, _) = run(provider, payload.clone(), "UTC");
            proptest::prop_assert_eq!(&event.provider, provider.name());
            proptest::prop_assert_eq!(&event.received_at, "2021-04-09T10:58:20+00:00");
        }
    }
}

/// The zone the fixtures' local times are in: India's providers write IST.
fn fixture_zone(provider: Provider) -> &'static str {
    match provider {
        Provider::Exotel | Provider::Knowlarity | Provider::Ozonetel | Provider::Myoperator => "Asia/Kolkata",
        _ => "UTC",
    }
}

/// Every documented callback (tests/fixtures/providers) normalizes to the event checked
/// beside it. (The same files go through the binary in tests/it/providers.rs.)
#[test]
fn every_fixture_normalizes_to_its_checked_event() {
    use crate::ingest::payload;
    let mut failures = Vec::new();
    let mut checked = 0;
    for provider in Provider::ALL {
        for f in super::fixture::of(provider) {
            let header = f.content_type().map(|ct| http::HeaderValue::from_str(ct).unwrap());
            let kind = payload::kind(header.as_ref()).unwrap();
            let fields = payload::fields(kind, f.body, f.query).unwrap();
            let (event, _) = run(provider, fields, fixture_zone(provider));
            let path = format!(
                "{}/tests/fixtures/providers/{}/{}.expected.json",
                env!("CARGO_MANIFEST_DIR"),
                f.provider,
                f.kind
            );
            let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let diff = super::fixture::differences(&serde_json::to_value(&event).unwrap(), &want);
            if !diff.is_empty() {
                failures.push(format!("{}/{}:\n{}", f.provider, f.kind, diff.join("\n")));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {checked} fixtures differ:\n{}", failures.len(), failures.join("\n"));
}
