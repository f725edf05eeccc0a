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

proptest::proptest! {
    /// The stable-toolchain companion of the `payload_normalize` fuzz target.
    #[test]
    fn any_body_normalizes_without_panicking(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), json in proptest::prelude::any::<bool>()) {
        use crate::ingest::payload::{self, Kind};
        let kind = if json { Kind::Json } else { Kind::Form };
        if let Ok(fields) = payload::fields(Some(kind), &body, None) {
            for provider in [Provider::Wavecell, Provider::Telecmi, Provider::Mobtexting, Provider::Callerdesk, Provider::Generic] {
                let (event, _) = run(provider, fields.clone(), "Asia/Kolkata");
                proptest::prop_assert!(serde_json::to_string(&event).is_ok());
            }
        }
    }

    #[test]
    fn json_objects_of_any_strings_normalize(values in proptest::collection::vec(".*", 12)) {
        let keys = ["callId", "eventType", "timestamp", "status", "dtmf", "sipStatus", "time", "start_at", "duration", "Status", "StartTime", "CallDuration"];
        let object: serde_json::Map<String, serde_json::Value> =
            keys.iter().zip(&values).map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect();
        let payload = Payload(object);
        for provider in [Provider::Wavecell, Provider::Telecmi, Provider::Mobtexting, Provider::Callerdesk] {
            let (event, _) = run(provider, payload.clone(), "UTC");
            proptest::prop_assert!(serde_json::to_string(&event).is_ok());
        }
    }
}
