//! Attacks from outside, against the binary: each reproduces what an attacker holding one
//! captured, properly signed callback (or a leaked URL) could do, and checks it now fails.
//! Signatures are made by the providers' own libraries (tests/oracles).

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::store::now_ms;

use crate::support::gateway::{client, write_config};
use crate::support::oracle::{call, signature};
use crate::support::process::Serve;
use crate::support::{Receiver, seed};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PLIVO_URL: &str = "https://hooks.example.com/v1/hooks/acme/plivo";
const ADMIN: &str = "admin-token-for-attacks";
const QUERY_SECRET: &str = "q-SECRET-7f3a9";

fn tenant(receiver: &Receiver, telnyx_key: &str) -> String {
    format!(
        r#"
id = "acme"
[secrets]
hmac_key = {{ env = "HMAC_KEY" }}
whsec = {{ env = "WHSEC" }}
plivo = {{ env = "PLIVO" }}
token = {{ env = "QUERY_TOKEN" }}

[[source]]
id = "telecmi"
provider = "telecmi"
auth = [{{ scheme = "hmac", algorithm = "sha256", header = "x-signature", encoding = "hex", secret = "hmac_key" }}]
[[source]]
id = "hmac-ts"
provider = "generic"
auth = [{{ scheme = "hmac", algorithm = "sha256", header = "x-signature", encoding = "hex", timestamp_header = "x-timestamp", tolerance = "5m", secret = "hmac_key" }}]
[[source]]
id = "standard"
provider = "generic"
auth = [{{ scheme = "standard-webhooks", secret = "whsec" }}]
[[source]]
id = "telnyx"
provider = "generic"
auth = [{{ scheme = "telnyx", public_key = "{telnyx_key}" }}]
[[source]]
id = "plivo"
provider = "generic"
auth = [{{ scheme = "plivo-v3", secret = "plivo", public_url = "{PLIVO_URL}" }}]
[[source]]
id = "token-query"
provider = "generic"
auth = [{{ scheme = "token", query = "token", secret = "token" }}]

[[destination]]
id = "raw"
url = "{raw}"
[[destination]]
id = "composed"
url = "{composed}"
body = '{{"status": "<<status>>", "recording": "<<recording_url | default: "">>", "token": "<<payload.token | default: "">>", "from": "<<payload.from | default: "">>"}}'
"#,
        raw = receiver.url("/raw"),
        composed = receiver.url("/composed"),
    )
}

struct Attacked {
    gateway: Serve,
    receiver: Receiver,
    telnyx_seed: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Attacked {
    let receiver = Receiver::start().await;
    let keys = call(json!({"op": "telnyx-keygen"}));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "",
        "[admin]\ntoken = { env = \"SB_ADMIN\" }\n",
        &[&tenant(&receiver, keys["public_key"].as_str().unwrap())],
    );
    let env = [
        ("HMAC_KEY", "hmac-key-9"),
        ("WHSEC", WHSEC),
        ("PLIVO", "plivo-auth-token"),
        ("QUERY_TOKEN", QUERY_SECRET),
        ("SB_ADMIN", ADMIN),
    ];
    let gateway = Serve::start_env(&config, &env).await;
    Attacked { gateway, receiver, telnyx_seed: keys["seed"].as_str().unwrap().to_string(), http: client(), _dir: dir }
}

impl Attacked {
    async fn post(&self, source: &str, query: &str, headers: &[(&str, String)], body: &str) -> reqwest::Response {
        let mut url = self.gateway.hook("acme", source);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut request = self.http.post(url).header("content-type", "application/json").body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap()
    }

    /// Sends an unsigned-source marker and waits for both its deliveries (`/raw` forwards
    /// its query as a form body; `/composed` renders its `from`): every delivery of anything
    /// accepted before it has had the same chance to arrive at either.
    async fn marker(&self, tag: &str) {
        let url = format!("{}?token={QUERY_SECRET}&from=marker-{tag}", self.gateway.hook("acme", "token-query"));
        let response = self.http.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let raw = format!("from=marker-{tag}");
        let composed = format!("\"from\": \"marker-{tag}\"");
        self.receiver
            .wait_until(Duration::from_secs(20), "the marker at both destinations", |r| {
                let has = |path: &str, needle: &str| {
                    r.iter().any(|c| c.path() == path && String::from_utf8_lossy(&c.body).contains(needle))
                };
                has("/raw", &raw) && has("/composed", &composed)
            })
            .await;
    }

    fn delivered_with(&self, path: &str, needle: &str) -> usize {
        self.receiver
            .requests()
            .iter()
            .filter(|c| c.path() == path && String::from_utf8_lossy(&c.body).contains(needle))
            .count()
    }

    async fn events(&self) -> Vec<Value> {
        let url = format!("{}/v1/events?tenant=acme&limit=1000", self.gateway.admin_url());
        let response = self.http.get(url).bearer_auth(ADMIN).send().await.unwrap().error_for_status().unwrap();
        let body: Value = response.json().await.unwrap();
        body["events"].as_array().cloned().expect("an events array")
    }
}

fn hmac_hex(message: &str) -> String {
    signature(json!({"op": "hmac", "key": "hmac-key-9", "message": message, "algorithm": "sha256", "encoding": "hex"}))
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

fn event_id(response: &reqwest::Response) -> String {
    response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_fields_cannot_ride_along_with_a_signed_body() {
    let a = start().await;
    // A TeleCMI body whose status normalizes to nothing useful, signed over its bytes only.
    let body = String::from_utf8(seed("telecmi.json")).unwrap().replace("\"waiting\"", "\"on-hold-xyz\"");
    let signed = vec![("x-signature", hmac_hex(&body))];
    let first = a.post("telecmi", "", &signed, &body).await;
    assert_eq!(first.status(), 200);

    // The attack: the same signed request, with fields added in the query string.
    let evil = "status=completed&recording_url=https%3A%2F%2Fevil.example%2Fx.mp3";
    assert_eq!(error_code(a.post("telecmi", evil, &signed, &body).await).await, (400, "unsigned_query".into()));

    // The same rule for every scheme that signs only the body.
    let now = now_ms() / 1000;
    let generic = r#"{"callId":"c-q","status":"ringing"}"#;
    let ts_signed = vec![("x-timestamp", now.to_string()), ("x-signature", hmac_hex(&format!("{now}.{generic}")))];
    assert_eq!(error_code(a.post("hmac-ts", evil, &ts_signed, generic).await).await, (400, "unsigned_query".into()));
    let sw =
        signature(json!({"op": "standard-sign", "secret": WHSEC, "id": "msg_q", "timestamp": now, "body": generic}));
    let sw_signed =
        vec![("webhook-id", "msg_q".to_string()), ("webhook-timestamp", now.to_string()), ("webhook-signature", sw)];
    assert_eq!(error_code(a.post("standard", evil, &sw_signed, generic).await).await, (400, "unsigned_query".into()));
    let tx = signature(json!({"op": "telnyx-sign", "seed": a.telnyx_seed, "timestamp": now, "body": generic}));
    let tx_signed = vec![("telnyx-timestamp", now.to_string()), ("telnyx-signature-ed25519", tx)];
    assert_eq!(error_code(a.post("telnyx", evil, &tx_signed, generic).await).await, (400, "unsigned_query".into()));

    a.marker("after-query-injection").await;
    assert_eq!(a.delivered_with("/composed", "evil.example"), 0);
    assert_eq!(a.delivered_with("/composed", "\"status\": \"completed\""), 0);
    assert_eq!(a.delivered_with("/raw", "on-hold-xyz"), 1, "the genuine callback was delivered once");
    // Nothing refused was stored: the genuine event and the marker only.
    assert_eq!(a.events().await.len(), 2, "{:#?}", a.events().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_message_sent_again_is_the_same_event() {
    let a = start().await;
    let now = now_ms() / 1000;
    let mut checks = Vec::new();

    // Standard Webhooks: the same webhook-id within the tolerance.
    let body = r#"{"callId":"c-sw","status":"completed","n":"sw"}"#;
    let sw =
        signature(json!({"op": "standard-sign", "secret": WHSEC, "id": "msg_replay", "timestamp": now, "body": body}));
    let headers = vec![
        ("webhook-id", "msg_replay".to_string()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", sw),
    ];
    checks.push(("standard", headers, body.to_string()));

    // HMAC with a timestamp: the same (timestamp, body, signature).
    let body = r#"{"callId":"c-ts","status":"completed","n":"hmac-ts"}"#;
    let headers = vec![("x-timestamp", now.to_string()), ("x-signature", hmac_hex(&format!("{now}.{body}")))];
    checks.push(("hmac-ts", headers, body.to_string()));

    // Telnyx: the same signed (timestamp, body).
    let body = r#"{"data":{"id":"e-1","payload":{"call_control_id":"cc-1"}},"n":"telnyx"}"#;
    let tx = signature(json!({"op": "telnyx-sign", "seed": a.telnyx_seed, "timestamp": now, "body": body}));
    let headers = vec![("telnyx-timestamp", now.to_string()), ("telnyx-signature-ed25519", tx)];
    checks.push(("telnyx", headers, body.to_string()));

    for (source, headers, body) in &checks {
        let first = a.post(source, "", headers, body).await;
        assert_eq!(first.status(), 200, "{source}");
        let first_id = event_id(&first);
        for _ in 0..3 {
            let again = a.post(source, "", headers, body).await;
            assert_eq!(again.status(), 200, "{source}: a replay is answered as the first time");
            assert_eq!(event_id(&again), first_id, "{source}: and names the first event");
        }
    }

    // Plivo V3 (a form body, signed by plivo's SDK): the same nonce.
    let form = "CallUUID=pl-1&CallStatus=completed&n=plivo";
    let params = json!({"CallUUID": "pl-1", "CallStatus": "completed", "n": "plivo"});
    let sig = signature(json!({"op": "plivo-sign", "token": "plivo-auth-token", "url": PLIVO_URL, "method": "POST",
        "params": params, "nonce": "nonce-77"}));
    let send_plivo = || {
        a.http
            .post(a.gateway.hook("acme", "plivo"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-plivo-signature-v3", sig.clone())
            .header("x-plivo-signature-v3-nonce", "nonce-77")
            .body(form)
            .send()
    };
    let first = send_plivo().await.unwrap();
    assert_eq!(first.status(), 200);
    let again = send_plivo().await.unwrap();
    assert_eq!((again.status().as_u16(), event_id(&again)), (200, event_id(&first)));

    a.marker("after-replays").await;
    for needle in ["\"n\":\"sw\"", "\"n\":\"hmac-ts\"", "\"n\":\"telnyx\"", "n=plivo"] {
        assert_eq!(a.delivered_with("/raw", needle), 1, "{needle}: delivered once, not once per replay");
    }
    // Four messages and the marker: no event was stored for a replay.
    assert_eq!(a.events().await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_token_is_never_stored_forwarded_or_rendered() {
    let a = start().await;
    let url = format!("{}?from=9100000000&token={QUERY_SECRET}&to=4461000000", a.gateway.hook("acme", "token-query"));
    let response = a.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let id = event_id(&response);
    // A POST too: the credential in the query, the fields in a form body.
    let url = format!("{}?token={QUERY_SECRET}", a.gateway.hook("acme", "token-query"));
    let response = a
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("from=9100000001&status=completed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let got =
        a.receiver.wait_until(Duration::from_secs(20), "both callbacks at both destinations", |r| r.len() >= 4).await;
    assert!(
        got.iter().any(|c| c.path() == "/raw" && c.body == "from=9100000000&to=4461000000"),
        "the other fields are forwarded, byte for byte: {got:?}"
    );
    assert!(got.iter().any(|c| String::from_utf8_lossy(&c.body).contains("\"from\": \"9100000000\"")), "{got:?}");
    for c in &got {
        let seen = format!("{} {:?} {}", c.target, c.headers, String::from_utf8_lossy(&c.body));
        assert!(!seen.contains(QUERY_SECRET), "the credential reached a destination: {seen}");
    }
    let detail = a
        .http
        .get(format!("{}/v1/events/{id}", a.gateway.admin_url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(detail.contains("9100000000"), "{detail}");
    assert!(!detail.contains(QUERY_SECRET), "the credential was stored: {detail}");
    assert!(!a.gateway.log().contains(QUERY_SECRET), "the credential was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_json_keys_are_refused_not_resolved() {
    let a = start().await;
    let body = r#"{"callId":"c-dup","status":"ringing","status":"completed"}"#;
    let url = format!("{}?token={QUERY_SECRET}", a.gateway.hook("acme", "token-query"));
    let response = a.http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "malformed_body");
    assert_eq!(answer["error"]["message"], "invalid JSON: duplicate key \"status\" at line 1 column 45");
    assert!(a.events().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_does_not_route_deliveries_around_the_ssrf_guard() {
    // A "proxy" that would happily forward to internal hosts: if a delivery reaches it, the
    // guard was bypassed (the proxy, not the gateway, would resolve the name).
    let proxy = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tenant = "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{ scheme = \"none\" }]\n\
                  [[destination]]\nid = \"internal\"\nurl = \"http://localhost:9/latest/meta-data\"\n";
    let config = write_config(
        dir.path(),
        "allow_private_destinations = false",
        "[admin]\ntoken = { env = \"SB_ADMIN\" }\n",
        &[tenant],
    );
    let proxy_url = proxy.url("");
    let env = [
        ("SB_ADMIN", ADMIN),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
        ("NO_PROXY", ""),
    ];
    let gateway = Serve::start_env(&config, &env).await;
    let http = client();
    let response = http
        .post(gateway.hook("acme", "s"))
        .header("content-type", "application/json")
        .body(r#"{"callId":"c-proxy"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = event_id(&response);
    let dead = |detail: &Value| detail["deliveries"][0]["state"] == "dead";
    let detail = gateway.admin_until(ADMIN, &format!("/v1/events/{id}"), "the delivery to end", dead).await;
    let error = detail["deliveries"][0]["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("refused_private"), "{detail:#}");
    assert!(proxy.requests().is_empty(), "a delivery went through the proxy: {:?}", proxy.requests());
}
