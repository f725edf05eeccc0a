//! Table tests of the template language, and properties that hold for any payload.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::normalize::{CallEvent, Payload, Status};

fn secrets(name: &str) -> Option<Arc<str>> {
    (name == "token").then(|| Arc::from("tok\"en"))
}

fn event() -> CallEvent {
    CallEvent {
        event_id: "evt-1".into(),
        id: Some("call/1 &x".into()),
        from: Some("+91 98765-43210".into()),
        status: Status::NoAnswer,
        provider_status: Some("NO ANSWER".into()),
        duration: Some(23),
        started_at: Some("2021-04-09T16:27:39+05:30".into()),
        dtmf: Some("007#".into()),
        ..CallEvent::default()
    }
}

fn payload() -> Payload {
    let mut p = Payload::default();
    p.merge_json(br#"{"Name":"Ravi \"R\" K","n":9100000000,"obj":{"a":[1,{"b":"deep"}]},"empty":"","flag":true}"#)
        .unwrap();
    p
}

fn render(text: &str, kind: Kind) -> String {
    let template = Template::compile(text, kind, &secrets).unwrap_or_else(|e| panic!("{text}: {e} at {}", e.offset));
    let (event, payload) = (event(), payload());
    template.render_to_string(&Data { event: &event, payload: &payload })
}

fn compile_error(text: &str, kind: Kind) -> (usize, String) {
    let e = Template::compile(text, kind, &secrets).unwrap_err();
    (e.offset, e.message)
}

#[test]
fn filters() {
    let cases = [
        ("<<status | upper>>", "NO_ANSWER"),
        ("<<provider_status | lower>>", "no answer"),
        ("<<from | digits>>", "919876543210"),
        ("<<from | json>>", r#""+91 98765-43210""#),
        ("<<duration | json>>", "23"),
        ("<<agent | json>>", "null"),
        ("<<payload.obj | json>>", r#"{"a":[1,{"b":"deep"}]}"#),
        ("<<id | urlencode>>", "call%2F1%20%26x"),
        (r#"<<started_at | date: "%Y-%m-%d %H:%M:%S">>"#, "2021-04-09 16:27:39"),
        (r#"<<started_at | date: "%d/%m/%Y">>"#, "09/04/2021"),
        ("<<started_at | unix>>", "1617965859"),
        ("<<ended_at | unix>>", ""),
        (r#"<<agent | default: "nobody">>"#, "nobody"),
        (r#"<<payload.empty | default: "was empty">>"#, "was empty"),
        (r#"<<status | default: "x">>"#, "no_answer"),
        ("<<sip_status | default: 0>>", "0"),
        (r#"<<agent | default: "x" | upper>>"#, "X"),
        ("<<dtmf>>", "007#"),
        ("<<payload.obj.a.1.b>>", "deep"),
        ("<<payload.n>>", "9100000000"),
        ("<<payload.missing.deeper>>", ""),
        (r"\<<status>> is <<status>>", "<<status>> is no_answer"),
    ];
    for (template, expected) in cases {
        assert_eq!(render(template, Kind::FormValue), expected, "{template}");
    }
}

#[test]
fn url_values_are_percent_encoded_in_path_and_query() {
    assert_eq!(
        render("https://crm.example/calls/<<id>>/x?from=<<from>>&s=<<status>>&t=<<secret.token>>", Kind::Url),
        "https://crm.example/calls/call%2F1%20%26x/x?from=%2B91%2098765-43210&s=no_answer&t=tok%22en"
    );
    // urlencode already encoded: not encoded twice.
    assert_eq!(render("https://x.example/?id=<<id | urlencode>>", Kind::Url), "https://x.example/?id=call%2F1%20%26x");
}

#[test]
fn json_values_are_typed_and_strings_escaped() {
    let body = r#"{"id": "<<id>>", "duration": <<duration>>, "agent": <<agent>>, "from": <<from>>,
        "name": "<<payload.Name>>", "n": <<payload.n>>, "obj": <<payload.obj>>, "flag": <<payload.flag>>,
        "greeting": "hello <<payload.Name>>!", "raw": <<payload.Name | json>>, "auth": "<<secret.token>>"}"#;
    let rendered = render(body, Kind::JsonBody);
    let v: serde_json::Value = serde_json::from_str(&rendered).unwrap_or_else(|e| panic!("{e}: {rendered}"));
    assert_eq!(v["id"], "call/1 &x");
    assert_eq!(v["duration"], 23);
    assert_eq!(v["agent"], serde_json::Value::Null);
    assert_eq!(v["from"], "+91 98765-43210");
    assert_eq!(v["name"], "Ravi \"R\" K");
    assert_eq!(v["n"].to_string(), "9100000000");
    assert_eq!(v["obj"]["a"][1]["b"], "deep");
    assert_eq!(v["flag"], true);
    assert_eq!(v["greeting"], "hello Ravi \"R\" K!");
    assert_eq!(v["raw"], "Ravi \"R\" K");
    assert_eq!(v["auth"], "tok\"en");
}

#[test]
fn dot_segments_from_values_are_detected() {
    let template = Template::compile("https://x.example/calls/<<id>>/ack?v=<<id>>", Kind::Url, &secrets).unwrap();
    for (value, dot) in [(".", true), ("..", true), ("...", false), ("a.b", false), ("%2e", false)] {
        let mut event = event();
        event.id = Some(value.into());
        let url = template.render_to_string(&Data { event: &event, payload: &payload() });
        assert_eq!(has_dot_segment(&url), dot, "{value} → {url}");
    }
    assert!(has_dot_segment("https://x.example/a/%2E%2e/b"));
    assert!(!has_dot_segment("https://x.example/a/b?x=.."));
}

#[test]
fn headers_never_carry_line_breaks() {
    let mut event = event();
    event.from = Some("a\r\nX-Injected: yes\n".into());
    let template = Template::compile("Bearer <<from>>", Kind::Header, &secrets).unwrap();
    let out = template.render_to_string(&Data { event: &event, payload: &payload() });
    assert_eq!(out, "Bearer a  X-Injected: yes ");
}

#[test]
fn load_time_errors_with_positions() {
    assert_eq!(compile_error("https://x.example/<<id", Kind::Url).0, 18);
    assert_eq!(compile_error("https://x.example/<<id | shout>>", Kind::Url).0, 25);
    assert!(compile_error("https://x.example/<<idd>>", Kind::Url).1.starts_with("unknown field `idd`"));
    assert_eq!(compile_error("Bearer <<secret.other>>", Kind::Header).0, 9);
    assert_eq!(
        compile_error("https://<<payload.host>>/x", Kind::Url),
        (8, "placeholders may only stand in the path or query, after scheme://host/".into())
    );
    assert!(compile_error("ftp://x.example/", Kind::Url).1.contains("http"));
    // `"a": <<id>> <<status>>` is two values in a row: not JSON, whatever they hold.
    let (at, message) = compile_error("{\n  \"a\": <<id>> <<status>>\n}", Kind::JsonBody);
    assert!(message.starts_with("body is not valid JSON"), "{message}");
    assert_eq!(at, 16);
    let (at, _) = compile_error(r#"{"a": 1,}"#, Kind::JsonBody);
    assert_eq!(at, 8);
    assert!(Template::compile(r#"{"a": "<<id>>", "b": [<<duration>>, "x"]}"#, Kind::JsonBody, &secrets).is_ok());
}

proptest! {
    #[test]
    fn any_payload_renders_valid_json_that_round_trips(name in any::<String>(), note in any::<String>(), n in any::<i64>()) {
        let mut payload = Payload::default();
        payload.0.insert("name".into(), serde_json::Value::String(name.clone()));
        payload.0.insert("note".into(), serde_json::Value::String(note.clone()));
        payload.0.insert("n".into(), serde_json::Value::from(n));
        let mut event = event();
        event.id = Some(note.clone());
        let template = Template::compile(
            r#"{"name": <<payload.name>>, "inside": "<<payload.note>>", "id": "x<<id>>y", "n": <<payload.n>>, "raw": <<payload.name | json>>}"#,
            Kind::JsonBody,
            &secrets,
        ).unwrap();
        let out = template.render_to_string(&Data { event: &event, payload: &payload });
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(v["name"].as_str().unwrap(), name.as_str());
        prop_assert_eq!(v["inside"].as_str().unwrap(), note.as_str());
        prop_assert_eq!(v["id"].as_str().unwrap(), format!("x{note}y"));
        prop_assert_eq!(v["n"].to_string(), n.to_string());
        prop_assert_eq!(v["raw"].as_str().unwrap(), name.as_str());
    }

    #[test]
    fn any_payload_renders_a_valid_url_that_round_trips(value in any::<String>()) {
        // A value that is a dot segment is refused when the request is built (see below).
        prop_assume!(!matches!(value.as_str(), "." | ".."));
        let mut event = event();
        event.id = Some(value.clone());
        let template = Template::compile("https://crm.example/calls/<<id>>?v=<<id>>&w=1", Kind::Url, &secrets).unwrap();
        let out = template.render_to_string(&Data { event: &event, payload: &Payload::default() });
        let url = url::Url::parse(&out).unwrap();
        prop_assert_eq!(url.host_str(), Some("crm.example"));
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        prop_assert_eq!(pairs, vec![("v".to_string(), value.clone()), ("w".to_string(), "1".to_string())]);
        let segment = url.path_segments().unwrap().nth(1).unwrap().to_string();
        prop_assert_eq!(percent_encoding::percent_decode_str(&segment).decode_utf8().unwrap(), value);
    }

    #[test]
    fn any_payload_renders_a_header_without_line_breaks(value in any::<String>()) {
        let mut event = event();
        event.from = Some(value);
        let template = Template::compile("x <<from>> y", Kind::Header, &secrets).unwrap();
        let out = template.render_to_string(&Data { event: &event, payload: &Payload::default() });
        prop_assert!(!out.contains('\r') && !out.contains('\n'));
        prop_assert!(http::HeaderValue::from_str(&out).is_ok());
    }
}
