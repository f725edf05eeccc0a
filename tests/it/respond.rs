//! Call control: a source's responder answers the provider, synchronously; anything that
//! goes wrong gets the source's fallback within its timeout; the exchange is recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchboard::store::{DeliveryRecord, DeliveryState};
use uuid::Uuid;

use crate::support::{Gateway, Receiver, Reply, seed};

const COMMANDS: &str = r#"{"commands":[{"play":{"url":"https://ivr.example/welcome.wav"}},{"collect":{"digits":1}}]}"#;
const FALLBACK: &str = r#"{"commands":[{"say":{"text":"Please call again later"}},{"hangup":{}}]}"#;

/// How the responder behaves: 0 answers, 1 is slow, 2 fails, 3 answers too much.
fn responder(receiver: &Receiver) -> Arc<AtomicUsize> {
    let mode = Arc::new(AtomicUsize::new(0));
    let current = mode.clone();
    receiver.reply_with(move |request, _| match (request.path(), current.load(Ordering::SeqCst)) {
        ("/ivr", 0) => {
            Reply::status(200).header("content-type", "application/json").header("x-ivr", "1").body(COMMANDS)
        }
        ("/ivr", 1) => Reply::status(200).body(COMMANDS).after(Duration::from_secs(3)),
        ("/ivr", 2) => Reply::status(500).body("boom"),
        ("/ivr", _) => Reply::status(200).body(vec![b'x'; 1 << 20]),
        ("/passthru", _) => Reply::status(302).header("location", "https://exotel.example/next-applet"),
        _ => Reply::status(200),
    });
    mode
}

fn tenant(receiver: &Receiver) -> String {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!(
        r#"id = "acme"
[[source]]
id = "wavecell"
provider = "wavecell"
auth = [{{ scheme = "none" }}]
respond_with = "ivr"
respond_timeout = "500ms"
fallback_response = {{ status = 200, content_type = "application/json", body = '{FALLBACK}' }}
[[source]]
id = "wavecell-down"
provider = "wavecell"
auth = [{{ scheme = "none" }}]
respond_with = "ivr-down"
fallback_response = {{ status = 200, content_type = "application/json", body = '{FALLBACK}' }}
[[source]]
id = "exotel"
provider = "generic"
auth = [{{ scheme = "none" }}]
respond_with = "passthru"
fallback_response = {{ status = 200, content_type = "text/plain", body = "fallback" }}

[[destination]]
id = "ivr"
url = "{ivr}"
sources = ["wavecell"]
max_response_bytes = 4096
[[destination]]
id = "crm"
url = "{crm}"
sources = ["wavecell"]
[[destination]]
id = "ivr-down"
url = "http://{refused}/ivr"
sources = ["wavecell-down"]
[[destination]]
id = "passthru"
method = "GET"
url = "{passthru}?CallSid=<<payload.CallSid>>&digits=<<payload.digits>>"
sources = ["exotel"]
pass_through_codes = [302]
"#,
        ivr = receiver.url("/ivr"),
        crm = receiver.url("/crm"),
        passthru = receiver.url("/passthru"),
    )
}

/// Waits (bounded) until the event's history holds the responder exchange.
async fn exchange_of(gateway: &Gateway, event: Uuid, destination: &str) -> DeliveryRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found =
            gateway.store.deliveries_of(event).await.unwrap().into_iter().find(|d| d.destination == destination);
        if let Some(found) = found {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "exchange with {destination} never recorded");
        // The record is written right after the answer; poll for it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn event_id(response: &reqwest::Response) -> Uuid {
    response.headers()["x-switchboard-event-id"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_responders_answer_is_the_providers_answer_and_the_event_still_fans_out() {
    let receiver = Receiver::start().await;
    let _mode = responder(&receiver);
    let gateway = Gateway::start("", &[&tenant(&receiver)]).await;
    let response = gateway.post("acme", "wavecell", "application/json", seed("wavecell.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-ivr"], "1", "end-to-end headers are relayed");
    assert!(!response.headers().contains_key("transfer-encoding"));
    let event = event_id(&response);
    assert_eq!(response.text().await.unwrap(), COMMANDS);

    // The responder got the callback once, signed like any delivery; the CRM got it queued.
    let got = receiver
        .wait_until(Duration::from_secs(10), "the crm delivery", |r| r.iter().any(|c| c.path() == "/crm"))
        .await;
    let ivr: Vec<_> = got.iter().filter(|c| c.path() == "/ivr").collect();
    assert_eq!(ivr.len(), 1, "the responder is not also queued");
    assert_eq!(ivr[0].header("webhook-id"), Some(event.to_string().as_str()));
    assert_eq!(ivr[0].body, seed("wavecell.json"));

    let exchange = exchange_of(&gateway, event, "ivr").await;
    assert_eq!(exchange.state, DeliveryState::Delivered);
    assert_eq!(exchange.attempts.len(), 1, "{exchange:?}");
    assert_eq!(exchange.attempts[0].status, Some(200));
    assert_eq!(exchange.attempts[0].response_prefix, COMMANDS.as_bytes());
    // The event's whole history: the exchange and the CRM's queued delivery, nothing more.
    // A queued delivery to the responder would be a second `ivr` record, whenever it ran.
    let deliveries = gateway.settled(event, Duration::from_secs(10)).await;
    let mut destinations: Vec<&str> = deliveries.iter().map(|d| d.destination.as_str()).collect();
    destinations.sort_unstable();
    assert_eq!(destinations, ["crm", "ivr"], "the responder is not also queued: {deliveries:#?}");
    assert!(deliveries.iter().all(|d| d.state == DeliveryState::Delivered), "{deliveries:#?}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_slow_failing_down_or_oversized_responder_gets_the_fallback_in_time() {
    let receiver = Receiver::start().await;
    let mode = responder(&receiver);
    let gateway = Gateway::start("", &[&tenant(&receiver)]).await;
    let cases = [
        (1, "wavecell", "timeout"),
        (2, "wavecell", "HTTP 500"),
        (3, "wavecell", "response_too_large"),
        (0, "wavecell-down", "connect"),
    ];
    for (behaviour, source, recorded) in cases {
        mode.store(behaviour, Ordering::SeqCst);
        let body =
            String::from_utf8(seed("wavecell.json")).unwrap().replace("a1d6a5e3", &format!("case{behaviour}{source}"));
        let started = Instant::now();
        let response = gateway.post("acme", source, "application/json", body).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 200, "{recorded}");
        let event = event_id(&response);
        assert_eq!(response.text().await.unwrap(), FALLBACK, "{recorded}");
        // Within the responder's timeout (500 ms here; 3 s by default) and a small margin.
        let budget = if source == "wavecell" { Duration::from_millis(500) } else { Duration::from_secs(3) };
        assert!(took < budget + Duration::from_millis(700), "{recorded}: answered after {took:?}");
        let destination = if source == "wavecell" { "ivr" } else { "ivr-down" };
        let exchange = exchange_of(&gateway, event, destination).await;
        assert_eq!(exchange.state, DeliveryState::Dead, "{recorded}");
        assert!(exchange.attempts[0].summary().contains(recorded), "{recorded}: {exchange:?}");
        assert_eq!(exchange.last_error.as_deref(), Some(exchange.attempts[0].summary().as_str()));
    }
    gateway.stop().await;
}

#[tokio::test]
async fn an_exotel_style_get_gets_its_302_passed_through() {
    let receiver = Receiver::start().await;
    let _mode = responder(&receiver);
    let gateway = Gateway::start("", &[&tenant(&receiver)]).await;
    let response =
        gateway.client.get(format!("{}?CallSid=CA9f2&digits=1", gateway.hook("acme", "exotel"))).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "https://exotel.example/next-applet");
    let got = receiver
        .wait_until(Duration::from_secs(5), "the passthru call", |r| r.iter().any(|c| c.path() == "/passthru"))
        .await;
    let call = got.iter().find(|c| c.path() == "/passthru").unwrap();
    assert_eq!(call.method, "GET");
    assert_eq!(call.target, "/passthru?CallSid=CA9f2&digits=1");
    let exchange = exchange_of(&gateway, event_id(&response), "passthru").await;
    assert_eq!(exchange.state, DeliveryState::Delivered, "a passed-through status is an answered exchange");
    gateway.stop().await;
}
