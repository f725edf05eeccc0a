//! Trust at both ends, checked against the providers' own libraries: inbound signatures
//! made by twilio, plivo, standardwebhooks, pynacl and Python's hmac; outbound signatures
//! verified by standardwebhooks; rate limits; the SSRF guard.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use switchboard::store::{DeliveryState, now_ms};

use crate::support::oracle::{call, signature};
use crate::support::{Gateway, Receiver, Reply};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_WHSEC: &str = "whsec_c29tZSBvdGhlciBzZWNyZXQga2V5IGhlcmU=";
const TWILIO_URL: &str = "https://hooks.example.com/v1/hooks/acme/twilio";
const PLIVO_URL: &str = "https://hooks.example.com/v1/hooks/acme/plivo";

fn inbound_tenant(telnyx_key: &str) -> String {
    format!(
        r#"
id = "acme"
[secrets]
token = {{ env = "T_TOKEN" }}
token_new = {{ env = "T_TOKEN_NEW" }}
basic_pw = {{ env = "BASIC_PW" }}
hmac_key = {{ env = "HMAC_KEY" }}
whsec = {{ env = "WHSEC" }}
twilio = {{ env = "TWILIO" }}
plivo = {{ env = "PLIVO" }}

[[source]]
id = "token-header"
provider = "generic"
auth = [{{ scheme = "token", header = "authorization", prefix = "Bearer ", secret = ["token", "token_new"] }}]
[[source]]
id = "token-query"
provider = "generic"
auth = [{{ scheme = "token", query = "token", secret = "token" }}]
[[source]]
id = "basic"
provider = "generic"
auth = [{{ scheme = "basic", username = "acme", secret = "basic_pw" }}]
[[source]]
id = "hmac"
provider = "generic"
auth = [{{ scheme = "hmac", algorithm = "sha256", header = "x-signature", prefix = "sha256=", encoding = "hex", secret = "hmac_key" }}]
[[source]]
id = "hmac-ts"
provider = "generic"
auth = [{{ scheme = "hmac", algorithm = "sha512", header = "x-signature", encoding = "base64", timestamp_header = "x-timestamp", tolerance = "5m", secret = "hmac_key" }}]
[[source]]
id = "standard"
provider = "generic"
auth = [{{ scheme = "standard-webhooks", secret = "whsec" }}]
[[source]]
id = "twilio"
provider = "generic"
auth = [{{ scheme = "twilio", secret = "twilio", public_url = "{TWILIO_URL}" }}]
[[source]]
id = "plivo"
provider = "generic"
auth = [{{ scheme = "plivo-v3", secret = "plivo", public_url = "{PLIVO_URL}" }}]
[[source]]
id = "telnyx"
provider = "generic"
auth = [{{ scheme = "telnyx", public_key = "{telnyx_key}" }}]
[[source]]
id = "ip-elsewhere"
provider = "generic"
auth = [{{ scheme = "ip_allow", cidrs = ["203.0.113.0/24"] }}]
[[source]]
id = "ip-local"
provider = "generic"
auth = [{{ scheme = "ip_allow", cidrs = ["127.0.0.0/8"] }}, {{ scheme = "token", header = "x-api-key", secret = "token" }}]
"#
    )
}

const ENV: [(&str, &str); 7] = [
    ("T_TOKEN", "tok-1"),
    ("T_TOKEN_NEW", "tok-2"),
    ("BASIC_PW", "s3cret pw"),
    ("HMAC_KEY", "hmac-key-9"),
    ("WHSEC", WHSEC),
    ("TWILIO", "twilio-auth-token"),
    ("PLIVO", "plivo-auth-token"),
];

struct Call<'a> {
    source: &'a str,
    query: &'a str,
    content_type: &'a str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    fn json(source: &'a str, body: &str) -> Self {
        Call { source, query: "", content_type: "application/json", body: body.to_string(), headers: Vec::new() }
    }

    fn form(source: &'a str, body: &str) -> Self {
        Call { content_type: "application/x-www-form-urlencoded", ..Call::json(source, body) }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn query(mut self, query: &'a str) -> Self {
        self.query = query;
        self
    }

    fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    async fn status(&self, gateway: &Gateway) -> u16 {
        let mut url = gateway.hook("acme", self.source);
        if !self.query.is_empty() {
            url = format!("{url}?{}", self.query);
        }
        let mut request = gateway.client.post(url).header("content-type", self.content_type).body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if status == 401 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(
                body,
                json!({"error": {"code": "unauthorized", "message": "unauthorized"}}),
                "401 must say nothing more"
            );
        }
        status
    }

    fn clone_with(&self) -> Call<'a> {
        Call {
            source: self.source,
            query: self.query,
            content_type: self.content_type,
            body: self.body.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// The good call passes; each spoiled variant is 401.
async fn accepts_only(gateway: &Gateway, good: Call<'_>, spoiled: Vec<(&str, Call<'_>)>) {
    assert_eq!(good.status(gateway).await, 200, "{}: the properly signed call", good.source);
    for (what, call) in spoiled {
        assert_eq!(call.status(gateway).await, 401, "{}: {what}", good.source);
    }
}

fn altered(body: &str) -> String {
    // One byte changed.
    let mut bytes = body.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_schemes_accept_what_the_providers_libraries_sign_and_nothing_else() {
    let keys = call(json!({"op": "telnyx-keygen"}));
    let gateway = Gateway::start_env("", "", &[&inbound_tenant(keys["public_key"].as_str().unwrap())], &ENV).await;
    let now = now_ms() / 1000;
    let body = r#"{"callId":"c-1","status":"completed","duration":31}"#;

    // token in a header, with rotation: both secrets work.
    let token = |v: &str| Call::json("token-header", body).header("authorization", v.to_string());
    accepts_only(
        &gateway,
        token("Bearer tok-1"),
        vec![
            ("wrong token", token("Bearer tok-3")),
            ("no prefix", token("tok-1")),
            ("missing header", Call::json("token-header", body)),
        ],
    )
    .await;
    assert_eq!(token("Bearer tok-2").status(&gateway).await, 200, "the second secret during rotation");

    // token in the query string.
    accepts_only(
        &gateway,
        Call::json("token-query", body).query("token=tok-1"),
        vec![
            ("wrong token", Call::json("token-query", body).query("token=nope")),
            ("missing", Call::json("token-query", body)),
        ],
    )
    .await;

    // basic.
    let basic = |user_pw: &str| {
        Call::json("basic", body).header("authorization", format!("Basic {}", STANDARD.encode(user_pw)))
    };
    accepts_only(
        &gateway,
        basic("acme:s3cret pw"),
        vec![
            ("wrong password", basic("acme:s3cret")),
            ("wrong user", basic("root:s3cret pw")),
            ("missing", Call::json("basic", body)),
        ],
    )
    .await;

    // generic HMAC-SHA256, hex, with a prefix; signed by Python's hmac.
    let sig = |key: &str, message: &str, alg: &str, enc: &str| {
        signature(json!({"op": "hmac", "key": key, "message": message, "algorithm": alg, "encoding": enc}))
    };
    let good =
        Call::json("hmac", body).header("x-signature", format!("sha256={}", sig("hmac-key-9", body, "sha256", "hex")));
    accepts_only(
        &gateway,
        good.clone_with(),
        vec![
            ("altered byte", good.clone_with().body(altered(body))),
            (
                "wrong secret",
                Call::json("hmac", body)
                    .header("x-signature", format!("sha256={}", sig("other", body, "sha256", "hex"))),
            ),
            ("missing header", Call::json("hmac", body)),
        ],
    )
    .await;

    // HMAC-SHA512, base64, over "{timestamp}.{body}".
    let signed_at = |ts: i64| {
        Call::json("hmac-ts", body)
            .header("x-timestamp", ts.to_string())
            .header("x-signature", sig("hmac-key-9", &format!("{ts}.{body}"), "sha512", "base64"))
    };
    accepts_only(
        &gateway,
        signed_at(now),
        vec![
            ("stale timestamp", signed_at(now - 3600)),
            ("altered byte", signed_at(now).body(altered(body))),
            ("missing timestamp", signed_at(now).without("x-timestamp")),
        ],
    )
    .await;

    // Standard Webhooks, signed by the standardwebhooks package.
    let standard = |secret: &str, ts: i64| {
        let s =
            signature(json!({"op": "standard-sign", "secret": secret, "id": "msg_2Lx", "timestamp": ts, "body": body}));
        Call::json("standard", body)
            .header("webhook-id", "msg_2Lx")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", s)
    };
    accepts_only(
        &gateway,
        standard(WHSEC, now),
        vec![
            ("altered byte", standard(WHSEC, now).body(altered(body))),
            ("stale timestamp", standard(WHSEC, now - 600)),
            ("wrong secret", standard(OTHER_WHSEC, now)),
            ("missing signature", standard(WHSEC, now).without("webhook-signature")),
        ],
    )
    .await;

    // Twilio, signed by twilio's RequestValidator over the public URL (query included) and
    // the sorted form parameters.
    let form = "CallSid=CA1234&From=%2B15551234567&To=%2B15557654321&CallStatus=completed";
    let params = json!({"CallSid": "CA1234", "From": "+15551234567", "To": "+15557654321", "CallStatus": "completed"});
    let twilio = |token: &str| {
        let s = signature(
            json!({"op": "twilio-sign", "token": token, "url": format!("{TWILIO_URL}?attempt=1"), "params": params}),
        );
        Call::form("twilio", form).query("attempt=1").header("x-twilio-signature", s)
    };
    accepts_only(
        &gateway,
        twilio("twilio-auth-token"),
        vec![
            ("altered parameter", twilio("twilio-auth-token").body(form.replace("completed", "canceled"))),
            ("different query", twilio("twilio-auth-token").query("attempt=2")),
            ("wrong token", twilio("other-token")),
            ("missing header", Call::form("twilio", form).query("attempt=1")),
        ],
    )
    .await;

    // Plivo V3, signed with the plivo SDK's own URL construction.
    let plivo = |token: &str, nonce: &str| {
        let s = signature(json!({
            "op": "plivo-sign", "token": token, "method": "POST", "nonce": nonce,
            "url": format!("{PLIVO_URL}?b=2&a=1"), "params": params,
        }));
        Call::form("plivo", form)
            .query("b=2&a=1")
            .header("x-plivo-signature-v3", format!("bm90IGl0,{s}"))
            .header("x-plivo-signature-v3-nonce", nonce.to_string())
    };
    accepts_only(
        &gateway,
        plivo("plivo-auth-token", "12345678901234567890"),
        vec![
            ("altered parameter", plivo("plivo-auth-token", "1234").body(form.replace("CA1234", "CA1235"))),
            (
                "other nonce",
                plivo("plivo-auth-token", "1234")
                    .without("x-plivo-signature-v3-nonce")
                    .header("x-plivo-signature-v3-nonce", "9999"),
            ),
            ("wrong token", plivo("other-token", "1234")),
            ("missing header", Call::form("plivo", form).query("b=2&a=1")),
        ],
    )
    .await;

    // Telnyx, Ed25519 signed by pynacl.
    let telnyx = |ts: i64| {
        let s = signature(json!({"op": "telnyx-sign", "seed": keys["seed"], "timestamp": ts, "body": body}));
        Call::json("telnyx", body).header("telnyx-timestamp", ts.to_string()).header("telnyx-signature-ed25519", s)
    };
    accepts_only(
        &gateway,
        telnyx(now),
        vec![
            ("altered byte", telnyx(now).body(altered(body))),
            ("stale timestamp", telnyx(now - 1000)),
            ("missing signature", telnyx(now).without("telnyx-signature-ed25519")),
        ],
    )
    .await;

    // IP allowlists: the socket peer counts; X-Forwarded-For from an untrusted peer does not.
    assert_eq!(Call::json("ip-elsewhere", body).status(&gateway).await, 401);
    assert_eq!(Call::json("ip-elsewhere", body).header("x-forwarded-for", "203.0.113.5").status(&gateway).await, 401);
    // Every listed scheme must pass.
    assert_eq!(Call::json("ip-local", body).header("x-api-key", "tok-1").status(&gateway).await, 200);
    assert_eq!(Call::json("ip-local", body).status(&gateway).await, 401);
    gateway.stop().await;
}

#[tokio::test]
async fn outbound_signatures_verify_with_the_standardwebhooks_package_on_every_attempt() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, before| if before == 0 { Reply::status(500) } else { Reply::status(200) });
    let tenant = format!(
        r#"id = "acme"
[secrets]
crm_signing = {{ env = "CRM_WHSEC" }}
[[source]]
id = "s"
provider = "telecmi"
auth = [{{ scheme = "none" }}]
[[destination]]
id = "crm"
url = "{}"
signing_secret = "crm_signing"
# A header of the destination's own by that name: the signature replaces it.
headers = {{ "webhook-signature" = "v1,forged" }}
retry = {{ initial_backoff = "1100ms", max_backoff = "2s" }}
"#,
        receiver.url("/hook")
    );
    let gateway = Gateway::start_env("", "", &[&tenant], &[("CRM_WHSEC", WHSEC)]).await;
    let body = r#"{"type":"event","cmiuuid":"x-1","status":"waiting","note":"quotes \" and unicode é"}"#;
    let id = gateway.accept("acme", "s", "application/json", body).await;
    let got = receiver.wait_until(Duration::from_secs(15), "two attempts", |r| r.len() == 2).await;
    for request in &got {
        assert_eq!(request.headers.get_all("webhook-signature").iter().count(), 1, "{:?}", request.headers);
        let headers: serde_json::Map<String, serde_json::Value> =
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
                .iter()
                .map(|h| (h.to_string(), json!(request.header(h).unwrap())))
                .collect();
        let verdict = call(
            json!({"op": "standard-verify", "secret": WHSEC, "headers": headers, "body": std::str::from_utf8(&request.body).unwrap()}),
        );
        assert_eq!(verdict["ok"], true, "{verdict}");
        assert_eq!(request.header("webhook-id"), Some(id.to_string().as_str()));
        // A wrong secret must not verify: the check is real.
        let wrong = call(
            json!({"op": "standard-verify", "secret": OTHER_WHSEC, "headers": headers, "body": std::str::from_utf8(&request.body).unwrap()}),
        );
        assert_eq!(wrong["ok"], false);
    }
    // Re-signed on the retry: a later timestamp, a different signature, the same id.
    let (first, second) = (&got[0], &got[1]);
    assert!(second.header("webhook-timestamp").unwrap() > first.header("webhook-timestamp").unwrap());
    assert_ne!(first.header("webhook-signature"), second.header("webhook-signature"));
    gateway.stop().await;
}

fn limited_tenant(id: &str, limit: &str) -> String {
    format!(
        "id = \"{id}\"\n{limit}\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n"
    )
}

#[tokio::test]
async fn past_its_burst_a_tenant_gets_429_and_another_tenant_does_not() {
    let gateway = Gateway::start(
        "",
        &[&limited_tenant("noisy", "rate_limit = { per_second = 1, burst = 3 }"), &limited_tenant("quiet", "")],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(gateway.post("noisy", "s", "application/json", "{}").await.status(), 200);
    }
    let limited = gateway.post("noisy", "s", "application/json", "{}").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.json::<serde_json::Value>().await.unwrap()["error"]["code"], "rate_limited");
    for _ in 0..20 {
        assert_eq!(gateway.post("quiet", "s", "application/json", "{}").await.status(), 200);
    }
    // A source limit applies beneath the tenant's.
    gateway.stop().await;
    let gateway = Gateway::start(
        "",
        &["id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{ scheme = \"none\" }]\nrate_limit = { per_second = 1, burst = 2 }\n[[source]]\nid = \"t\"\nprovider = \"generic\"\nauth = [{ scheme = \"none\" }]\n"],
    )
    .await;
    assert_eq!(gateway.post("acme", "s", "application/json", "{}").await.status(), 200);
    assert_eq!(gateway.post("acme", "s", "application/json", "{}").await.status(), 200);
    assert_eq!(gateway.post("acme", "s", "application/json", "{}").await.status(), 429);
    assert_eq!(gateway.post("acme", "t", "application/json", "{}").await.status(), 200);
    gateway.stop().await;
}

#[tokio::test]
async fn deliveries_are_paced_to_the_destination_rate_and_none_fail() {
    let receiver = Receiver::start().await;
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n[[destination]]\nid = \"slow-crm\"\nurl = \"{}\"\nrate_limit = {{ per_second = 10, burst = 1 }}\n",
        receiver.url("/")
    );
    let gateway = Gateway::start("", &[&tenant]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(gateway.accept("acme", "s", "application/json", format!("{{\"n\":{i}}}")).await);
    }
    let got = receiver.wait_until(Duration::from_secs(15), "20 paced deliveries", |r| r.len() == 20).await;
    let span = got.last().unwrap().at - got[0].at;
    eprintln!("20 deliveries at 10/s took {span:?}");
    // 19 intervals at 10/s: about 1.9 s.
    assert!(span >= Duration::from_millis(1700) && span < Duration::from_secs(4), "{span:?}");
    for id in ids {
        let deliveries = gateway.settled(id, Duration::from_secs(5)).await;
        assert_eq!(deliveries[0].state, DeliveryState::Delivered);
        assert_eq!(deliveries[0].attempts.len(), 1, "paced, never failed");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn private_destinations_are_refused_before_connecting() {
    let receiver = Receiver::start().await;
    let tenant = format!(
        r#"id = "acme"
[[source]]
id = "s"
provider = "generic"
auth = [{{ scheme = "none" }}]
[[destination]]
id = "private-net"
url = "http://10.0.0.1:9/hook"
[[destination]]
id = "metadata"
url = "http://169.254.169.254/latest/meta-data/"
[[destination]]
id = "by-name"
url = "http://localhost:{port}/hook"
"#,
        port = receiver.addr.port()
    );
    let gateway = Gateway::start("allow_private_destinations = false", &[&tenant]).await;
    let id = gateway.accept("acme", "s", "application/json", "{}").await;
    let deliveries = gateway.settled(id, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    for d in &deliveries {
        assert_eq!(d.state, DeliveryState::Dead, "{d:?}");
        assert_eq!(d.attempts.len(), 1, "a refusal is permanent: {d:?}");
        let error = d.attempts[0].error.as_deref().unwrap();
        assert!(error.starts_with("refused_private"), "{}: {error}", d.destination);
        // Refused before any connection: a connect to 10.0.0.1 would wait for its timeout.
        assert!(d.attempts[0].latency < Duration::from_secs(1), "{d:?}");
    }
    assert!(receiver.requests().is_empty(), "nothing may reach the loopback receiver");
    gateway.stop().await;

    // An explicit allowlist lets loopback through again.
    let gateway = Gateway::start(
        "allow_private_destinations = false\nprivate_destination_allowlist = [\"127.0.0.0/8\"]",
        &[&tenant],
    )
    .await;
    let id = gateway.accept("acme", "s", "application/json", "{}").await;
    receiver.wait_until(Duration::from_secs(10), "the allowed delivery", |r| r.len() == 1).await;
    let deliveries = gateway.settled(id, Duration::from_secs(10)).await;
    let by_name = deliveries.iter().find(|d| d.destination == "by-name").unwrap();
    assert_eq!(by_name.state, DeliveryState::Delivered);
    gateway.stop().await;
}
