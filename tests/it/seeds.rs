//! Every seed provider's callback reaches every destination byte for byte.

use std::time::Duration;

use crate::support::{Gateway, Receiver, seed};

fn tenant(crm: &Receiver, analytics: &Receiver) -> String {
    format!(
        r#"
id = "acme"
[[source]]
id = "wavecell"
provider = "wavecell"
auth = [{{ scheme = "none" }}]
response = {{ status = 200, content_type = "application/json", body = '{{"commands":[]}}' }}
[[source]]
id = "telecmi"
provider = "telecmi"
auth = [{{ scheme = "none" }}]
[[source]]
id = "mobtexting"
provider = "mobtexting"
auth = [{{ scheme = "none" }}]
[[source]]
id = "callerdesk"
provider = "callerdesk"
auth = [{{ scheme = "none" }}]
[[destination]]
id = "crm"
url = "{}"
[[destination]]
id = "analytics"
url = "{}"
"#,
        crm.url("/ack/receive"),
        analytics.url("/analytics"),
    )
}

#[tokio::test]
async fn each_seed_payload_reaches_both_destinations_byte_for_byte() {
    let (crm, analytics) = (Receiver::start().await, Receiver::start().await);
    let gateway = Gateway::start("", &[&tenant(&crm, &analytics)]).await;
    let cases = [
        ("wavecell", "application/json", "wavecell.json"),
        ("telecmi", "application/json", "telecmi.json"),
        ("mobtexting", "application/json", "mobtexting.json"),
        ("callerdesk", "application/json", "callerdesk.json"),
        ("callerdesk", "application/x-www-form-urlencoded", "callerdesk.form"),
    ];
    for (source, content_type, file) in cases {
        let body = seed(file);
        let id = gateway.accept("acme", source, content_type, body.clone()).await;
        for receiver in [&crm, &analytics] {
            let got = receiver
                .wait_until(Duration::from_secs(10), file, |r| {
                    r.iter().any(|c| c.header("webhook-id") == Some(&id.to_string()))
                })
                .await;
            let delivered = got.iter().find(|c| c.header("webhook-id") == Some(&id.to_string())).unwrap();
            assert_eq!(delivered.body, body, "{file} body changed on the way to {}", delivered.path());
            assert_eq!(delivered.header("content-type"), Some(content_type));
            assert_eq!(delivered.method, "POST");
            assert_eq!(delivered.header("x-switchboard-attempt"), Some("1"));
            let ts: i64 = delivered.header("webhook-timestamp").unwrap().parse().unwrap();
            assert!((ts - switchboard::store::now_ms() / 1000).abs() < 60);
        }
    }
    assert_eq!(crm.requests().len(), cases.len());
    assert_eq!(analytics.requests().len(), cases.len());
    gateway.stop().await;
}

#[tokio::test]
async fn the_acknowledgement_is_the_sources_configured_response_or_the_event_id() {
    let (crm, analytics) = (Receiver::start().await, Receiver::start().await);
    let gateway = Gateway::start("", &[&tenant(&crm, &analytics)]).await;

    let wavecell = gateway.post("acme", "wavecell", "application/json", seed("wavecell.json")).await;
    assert_eq!(wavecell.status(), 200);
    assert_eq!(wavecell.headers()["content-type"], "application/json");
    assert!(wavecell.headers().contains_key("x-switchboard-event-id"));
    assert_eq!(wavecell.text().await.unwrap(), r#"{"commands":[]}"#);

    let telecmi = gateway.post("acme", "telecmi", "application/json", seed("telecmi.json")).await;
    let id = telecmi.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = telecmi.json().await.unwrap();
    assert_eq!(body["event_id"], id.as_str());
    gateway.stop().await;
}

#[tokio::test]
async fn mobtexting_as_printed_is_refused_with_the_position_of_the_error() {
    let (crm, analytics) = (Receiver::start().await, Receiver::start().await);
    let gateway = Gateway::start("", &[&tenant(&crm, &analytics)]).await;
    let response = gateway.post("acme", "mobtexting", "application/json", seed("mobtexting.as-printed.txt")).await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_body");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("line 2 column 19"), "{message}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_get_callback_is_forwarded_with_its_query_fields_as_a_form_body() {
    let (crm, analytics) = (Receiver::start().await, Receiver::start().await);
    let gateway = Gateway::start("", &[&tenant(&crm, &analytics)]).await;
    let query = "CallSid=1672649960.960&Status=ANSWER&SourceNumber=%2B9199";
    let response = gateway.client.get(format!("{}?{query}", gateway.hook("acme", "callerdesk"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
    let got = crm.wait_until(Duration::from_secs(10), "the GET callback", |r| !r.is_empty()).await;
    assert_eq!(got[0].header("webhook-id"), Some(id.as_str()));
    assert_eq!(got[0].header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(&got[0].body[..], query.as_bytes());
    gateway.stop().await;
}

#[tokio::test]
async fn callbacks_over_h2c_are_accepted() {
    let (crm, analytics) = (Receiver::start().await, Receiver::start().await);
    let gateway = Gateway::start("", &[&tenant(&crm, &analytics)]).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = h2
        .post(gateway.hook("acme", "telecmi"))
        .header("content-type", "application/json")
        .body(seed("telecmi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
    crm.wait_until(Duration::from_secs(10), "the h2c event", |r| {
        r.iter().any(|c| c.header("webhook-id") == Some(id.as_str()))
    })
    .await;
    gateway.stop().await;
}
