//! Compose templates end to end: one template, every provider, checked at the receiver;
//! provider repeats deduplicated; `when` filters; form and GET destinations; `render`.

use std::time::Duration;

use crate::support::process::BIN;
use crate::support::{Gateway, Receiver, seed};

const TOKEN: &str = "crm-token-123";

fn tenant(receiver: &Receiver, dedupe_window: &str) -> String {
    format!(
        r#"
id = "acme"
[secrets]
crm_token = {{ env = "ACME_CRM_TOKEN" }}
[[source]]
id = "wavecell"
provider = "wavecell"
auth = [{{ scheme = "none" }}]
dedupe_window = "{dedupe_window}"
[[source]]
id = "telecmi"
provider = "telecmi"
auth = [{{ scheme = "none" }}]
dedupe_window = "{dedupe_window}"
[[source]]
id = "mobtexting"
provider = "mobtexting"
auth = [{{ scheme = "none" }}]
timezone = "Asia/Kolkata"
[[source]]
id = "callerdesk"
provider = "callerdesk"
auth = [{{ scheme = "none" }}]
timezone = "Asia/Kolkata"

# The compose example of the MOBtexting document (seed 002), in Switchboard's syntax.
[[destination]]
id = "compose"
url = "{compose}?id=<<id>>&to=<<to>>&status=<<status>>"
headers = {{ Authorization = "Bearer <<secret.crm_token>>" }}
body = '''{{
  "id": "<<id>>",
  "to": "<<to>>",
  "status": "<<status>>",
  "duration": <<duration>>
}}'''

[[destination]]
id = "finished"
url = "{finished}"
form = {{ call = "<<id>>", result = "<<status | upper>>", started = "<<started_at | date: \"%d/%m/%Y %H:%M\">>" }}
when = {{ status = ["completed", "busy"] }}

[[destination]]
id = "pinged"
method = "GET"
url = "{pinged}/<<provider>>?call=<<id>>&from=<<from>>"
"#,
        compose = receiver.url("/ack/receive"),
        finished = receiver.url("/finished"),
        pinged = receiver.url("/ping"),
    )
}

async fn gateway(receiver: &Receiver, dedupe_window: &str) -> Gateway {
    Gateway::start_env("", "", &[&tenant(receiver, dedupe_window)], &[("ACME_CRM_TOKEN", TOKEN)]).await
}

#[tokio::test]
async fn the_seed_002_compose_example_renders_the_same_fields_for_every_provider() {
    let receiver = Receiver::start().await;
    let gateway = gateway(&receiver, "24h").await;
    let cases = [
        ("wavecell", "wavecell.json", "a1d6a5e3-efec-11e9-b999-7d370b5f90d1", "6587654321", "ringing", "0"),
        ("telecmi", "telecmi.json", "703ee423-e5f8-4120-9c17-5216c679afdd", "4461000000", "queued", "null"),
        ("mobtexting", "mobtexting.json", "1234-1333-XXXXX", "91886713XXXX", "completed", "23"),
        ("callerdesk", "callerdesk.json", "1672649960.960xxxx", "0120xxxx", "completed", "18"),
    ];
    for (source, file, id, to, status, duration) in cases {
        let event = gateway.accept("acme", source, "application/json", seed(file)).await.to_string();
        let got = receiver
            .wait_until(Duration::from_secs(10), file, |r| {
                r.iter().any(|c| c.path() == "/ack/receive" && c.header("webhook-id") == Some(event.as_str()))
            })
            .await;
        let request =
            got.iter().find(|c| c.path() == "/ack/receive" && c.header("webhook-id") == Some(event.as_str())).unwrap();
        let query: Vec<(String, String)> =
            form_urlencoded::parse(request.target.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        assert_eq!(
            query,
            [("id".into(), id.into()), ("to".into(), to.into()), ("status".into(), status.into())],
            "{file}"
        );
        assert_eq!(request.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["id"], id, "{file}");
        assert_eq!(body["to"], to, "{file}");
        assert_eq!(body["status"], status, "{file}");
        assert_eq!(body["duration"].to_string(), duration, "{file}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn form_and_get_destinations_and_when_filters() {
    let receiver = Receiver::start().await;
    let gateway = gateway(&receiver, "24h").await;
    let answered = gateway.accept("acme", "mobtexting", "application/json", seed("mobtexting.json")).await;
    let waiting = gateway.accept("acme", "telecmi", "application/json", seed("telecmi.json")).await;

    // Fan-out is decided at ingest: the queued TeleCMI call is not for "finished".
    let of = |deliveries: Vec<switchboard::store::DeliveryRecord>| {
        let mut names: Vec<String> = deliveries.into_iter().map(|d| d.destination).collect();
        names.sort();
        names
    };
    assert_eq!(of(gateway.store.deliveries_of(answered).await.unwrap()), ["compose", "finished", "pinged"]);
    assert_eq!(of(gateway.store.deliveries_of(waiting).await.unwrap()), ["compose", "pinged"]);

    let got = receiver
        .wait_until(Duration::from_secs(10), "form and GET deliveries", |r| {
            r.iter().any(|c| c.path() == "/finished") && r.iter().filter(|c| c.path().starts_with("/ping")).count() == 2
        })
        .await;
    let form = got.iter().find(|c| c.path() == "/finished").unwrap();
    assert_eq!(form.header("content-type"), Some("application/x-www-form-urlencoded"));
    let fields: Vec<(String, String)> = form_urlencoded::parse(&form.body).into_owned().collect();
    assert_eq!(
        fields,
        [
            ("call".to_string(), "1234-1333-XXXXX".to_string()),
            ("result".to_string(), "COMPLETED".to_string()),
            ("started".to_string(), "09/04/2021 16:27".to_string()),
        ]
    );
    let ping = got.iter().find(|c| c.path() == "/ping/telecmi").unwrap();
    assert_eq!(ping.method, "GET");
    assert!(ping.body.is_empty());
    assert_eq!(ping.target, "/ping/telecmi?call=703ee423-e5f8-4120-9c17-5216c679afdd&from=9100000000");
    gateway.stop().await;
}

#[tokio::test]
async fn a_repeated_callback_is_the_same_event_and_is_delivered_once() {
    let receiver = Receiver::start().await;
    let gateway = gateway(&receiver, "24h").await;
    let first = gateway.accept("acme", "telecmi", "application/json", seed("telecmi.json")).await;
    let again = gateway.accept("acme", "telecmi", "application/json", seed("telecmi.json")).await;
    assert_eq!(first, again);
    // A different status of the same call is a new event.
    let answered = String::from_utf8(seed("telecmi.json")).unwrap().replace("waiting", "answered");
    let next = gateway.accept("acme", "telecmi", "application/json", answered).await;
    assert_ne!(next, first);
    assert_eq!(gateway.store.deliveries_of(first).await.unwrap().len(), 2);
    let got = receiver
        .wait_until(Duration::from_secs(10), "both events at /ack/receive", |r| {
            r.iter().filter(|c| c.path() == "/ack/receive").count() >= 2
        })
        .await;
    let first = first.to_string();
    assert_eq!(got.iter().filter(|c| c.path() == "/ack/receive" && c.header("webhook-id") == Some(&first)).count(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn dedupe_can_be_turned_off() {
    let receiver = Receiver::start().await;
    let gateway = gateway(&receiver, "0s").await;
    let first = gateway.accept("acme", "telecmi", "application/json", seed("telecmi.json")).await;
    let again = gateway.accept("acme", "telecmi", "application/json", seed("telecmi.json")).await;
    assert_ne!(first, again);
    gateway.stop().await;
}

#[test]
fn render_prints_the_exact_request_without_sending_it() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9: a request that was sent would fail, not print.
    let tenant = r#"
id = "acme"
[secrets]
crm_token = { env = "ACME_CRM_TOKEN" }
[[source]]
id = "mobtexting"
provider = "mobtexting"
auth = [{ scheme = "none" }]
timezone = "Asia/Kolkata"
[[destination]]
id = "crm"
url = "http://127.0.0.1:9/ack/receive?id=<<id>>&status=<<status>>"
headers = { Authorization = "Bearer <<secret.crm_token>>" }
body = '{"to": "<<to>>", "duration": <<duration>>, "when": "<<started_at | unix>>"}'
"#;
    let config = crate::support::gateway::write_config(dir.path(), "", "", &[tenant]);
    let output = std::process::Command::new(BIN)
        .args(["render", "--config"])
        .arg(&config)
        .args(["--tenant", "acme", "--source", "mobtexting", "--destination", "crm", "--payload"])
        .arg(format!("{}/mobtexting.json", crate::support::SEEDS))
        .env("ACME_CRM_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("POST http://127.0.0.1:9/ack/receive?id=1234-1333-XXXXX&status=completed"));
    assert!(stdout.contains(&format!("authorization: Bearer {TOKEN}\n")), "{stdout}");
    assert!(stdout.contains("content-type: application/json\n"), "{stdout}");
    assert!(stdout.contains("x-switchboard-attempt: 1\n"), "{stdout}");
    assert!(stdout.ends_with("{\"to\": \"91886713XXXX\", \"duration\": 23, \"when\": \"1617965859\"}\n"), "{stdout}");
}
