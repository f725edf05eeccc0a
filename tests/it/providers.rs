//! Every provider profile against the binary: each documented callback (the fixtures under
//! tests/fixtures/providers/, in their wire form) normalizes to its checked event; one
//! compose template renders the same fields from all twelve providers; each provider's own
//! signature passes with `scheme = "provider"` and a tampered one fails; `public_url` and a
//! trusted proxy's forwarded headers make a proxied Twilio signature verify; responders
//! answer in each provider's format; `switchboard providers` and `render --fixture`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::config::Provider;
use switchboard::normalize::fixture::{self, Fixture};

use crate::support::gateway::{client, write_config};
use crate::support::oracle;
use crate::support::process::{BIN, Serve};
use crate::support::{Receiver, Reply, seed};

const TOKEN: &str = "providers-admin-token";

/// The eight profiles built from public documentation, with the zone their times are in.
const DOCUMENTED: [(Provider, &str); 8] = [
    (Provider::Twilio, "UTC"),
    (Provider::Plivo, "UTC"),
    (Provider::Exotel, "Asia/Kolkata"),
    (Provider::Vonage, "UTC"),
    (Provider::Telnyx, "UTC"),
    (Provider::Knowlarity, "Asia/Kolkata"),
    (Provider::Ozonetel, "Asia/Kolkata"),
    (Provider::Myoperator, "Asia/Kolkata"),
];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers")
}

/// The checked event beside a fixture.
fn expected(f: &Fixture) -> Value {
    let path = fixtures_dir().join(f.provider).join(format!("{}.expected.json", f.kind));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One open source per documented provider (id = the provider's name), each fanning out to
/// `destinations`.
fn tenant(destinations: &str) -> String {
    let mut toml = String::from("id = \"acme\"\n");
    for (provider, zone) in DOCUMENTED {
        let name = provider.name();
        toml += &format!(
            "[[source]]\nid = \"{name}\"\nprovider = \"{name}\"\ntimezone = \"{zone}\"\ndedupe_window = \"0s\"\n\
             auth = [{{ scheme = \"none\" }}]\n"
        );
    }
    toml + destinations
}

async fn start(dir: &std::path::Path, server_extra: &str, tenants: &[&str], env: &[(&str, &str)]) -> Serve {
    let config = write_config(dir, server_extra, "\n[admin]\ntoken = { env = \"SB_ADMIN_TOKEN\" }\n", tenants);
    let mut env = env.to_vec();
    env.push(("SB_ADMIN_TOKEN", TOKEN));
    Serve::start_env(&config, &env).await
}

/// Sends a fixture exactly as the provider would; returns the answer.
async fn send(url: &str, f: &Fixture) -> reqwest::Response {
    let url = match f.query {
        Some(q) => format!("{url}?{q}"),
        None => url.to_string(),
    };
    let mut request = client().request(f.method.clone(), url);
    for (name, value) in &f.headers {
        request = request.header(*name, *value);
    }
    request.body(f.body.to_vec()).send().await.unwrap()
}

async fn normalized(gateway: &Serve, event: &str) -> Value {
    let url = format!("{}/v1/events/{event}", gateway.admin_url());
    let answer: Value = client().get(url).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    answer["normalized"].clone()
}

#[tokio::test]
async fn every_documented_callback_normalizes_to_its_checked_event() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), "", &[&tenant("")], &[]).await;
    let mut checked = 0;
    let mut failures = Vec::new();
    for (provider, _) in DOCUMENTED {
        let all = fixture::of(provider);
        // Knowlarity documents no field list: two callbacks are all its public traces support.
        assert!(all.len() >= 2, "{}: only {} callbacks documented", provider.name(), all.len());
        assert!(all.iter().any(|f| f.kind == "status-completed"), "{}: no status-completed", provider.name());
        for f in all {
            let answer = send(&gateway.hook("acme", provider.name()), &f).await;
            let status = answer.status();
            let event = answer.headers().get("x-switchboard-event-id").map(|v| v.to_str().unwrap().to_string());
            assert!(status.is_success(), "{}/{}: {status} {}", f.provider, f.kind, answer.text().await.unwrap());
            let diff = fixture::differences(&normalized(&gateway, &event.unwrap()).await, &expected(&f));
            if !diff.is_empty() {
                failures.push(format!("{}/{}:\n{}", f.provider, f.kind, diff.join("\n")));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {checked} callbacks differ:\n{}", failures.len(), failures.join("\n"));
}

/// The compose example of the MOBtexting document (seed 002), fed the end of one call by
/// each of the twelve providers: the same template yields the same fields from each.
#[tokio::test]
async fn one_compose_template_renders_the_same_fields_from_all_twelve_providers() {
    let receiver = Receiver::start().await;
    let compose = format!(
        "[[destination]]\nid = \"compose\"\nurl = \"{}?id=<<id>>&to=<<to>>&status=<<status>>\"\n\
         body = '''{{\"id\": \"<<id>>\", \"to\": \"<<to>>\", \"status\": \"<<status>>\", \"duration\": <<duration>>}}'''\n",
        receiver.url("/ack/receive")
    );
    let mut toml = tenant(&compose);
    for (name, zone) in
        [("wavecell", "UTC"), ("telecmi", "UTC"), ("mobtexting", "Asia/Kolkata"), ("callerdesk", "Asia/Kolkata")]
    {
        let sources = format!(
            "[[source]]\nid = \"{name}\"\nprovider = \"{name}\"\ntimezone = \"{zone}\"\nauth = [{{ scheme = \"none\" }}]\n"
        );
        toml = toml.replacen("[[destination]]", &format!("{sources}[[destination]]"), 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), "", &[&toml], &[]).await;

    // (source, event id) → the fields the template must have rendered.
    let mut cases: Vec<(String, String, [String; 4])> = Vec::new();
    let seeds = [
        ("wavecell", "wavecell.json", ["a1d6a5e3-efec-11e9-b999-7d370b5f90d1", "6587654321", "ringing", "0"]),
        ("telecmi", "telecmi.json", ["703ee423-e5f8-4120-9c17-5216c679afdd", "4461000000", "queued", "null"]),
        ("mobtexting", "mobtexting.json", ["1234-1333-XXXXX", "91886713XXXX", "completed", "23"]),
        ("callerdesk", "callerdesk.json", ["1672649960.960xxxx", "0120xxxx", "completed", "18"]),
    ];
    for (source, file, want) in seeds {
        let answer = client()
            .post(gateway.hook("acme", source))
            .header("content-type", "application/json")
            .body(seed(file))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{file}");
        let event = answer.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
        cases.push((source.to_string(), event, want.map(String::from)));
    }
    for (provider, _) in DOCUMENTED {
        let f = fixture::find(provider, "status-completed").unwrap();
        let want = expected(&f);
        assert_eq!(want["status"], "completed", "{}: the status-completed fixture is a completed call", f.provider);
        let answer = send(&gateway.hook("acme", provider.name()), &f).await;
        assert!(answer.status().is_success(), "{}", f.provider);
        let event = answer.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
        let text = |v: &Value| v.as_str().map_or(v.to_string(), str::to_string);
        let fields = [text(&want["id"]), text(&want["to"]), "completed".to_string(), want["duration"].to_string()];
        assert!(
            fields.iter().take(2).all(|v| v != "null"),
            "{}: the fixture names the call and the callee",
            f.provider
        );
        cases.push((provider.name().to_string(), event, fields));
    }

    let requests =
        receiver.wait_until(Duration::from_secs(30), "one delivery per provider", |r| r.len() >= cases.len()).await;
    assert_eq!(cases.len(), 12);
    for (source, event, [id, to, status, duration]) in &cases {
        let request = requests
            .iter()
            .find(|c| c.header("webhook-id") == Some(event.as_str()))
            .unwrap_or_else(|| panic!("{source}: not delivered"));
        let query: Vec<(String, String)> =
            form_urlencoded::parse(request.target.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        let want: Vec<(String, String)> =
            vec![("id".into(), id.clone()), ("to".into(), to.clone()), ("status".into(), status.clone())];
        assert_eq!(query, want, "{source}");
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!((&body["id"], &body["to"], &body["status"]), (&json!(id), &json!(to), &json!(status)), "{source}");
        assert_eq!(body["duration"].to_string(), *duration, "{source}");
    }
}

const TWILIO_TOKEN: &str = "twilio-auth-token-0123456789abcdef";
const PLIVO_TOKEN: &str = "plivo-auth-token-MAXXXXXXXXXXXXXXXXXX";
const VONAGE_SECRET: &str = "vonage-signature-secret-0123456789";
const PUBLIC: &str = "https://hooks.example.com";

/// Sources that check each provider's own signature with `scheme = "provider"`.
fn signed_tenant(telnyx_key: &str) -> String {
    format!(
        r#"id = "acme"
[secrets]
twilio = {{ env = "TWILIO" }}
plivo = {{ env = "PLIVO" }}
vonage = {{ env = "VONAGE" }}
[[source]]
id = "twilio"
provider = "twilio"
public_url = "{PUBLIC}/v1/hooks/acme/twilio"
auth = [{{ scheme = "provider", secret = "twilio" }}]
[[source]]
id = "twilio-proxied"
provider = "twilio"
auth = [{{ scheme = "provider", secret = "twilio" }}]
[[source]]
id = "plivo"
provider = "plivo"
public_url = "{PUBLIC}/v1/hooks/acme/plivo"
auth = [{{ scheme = "provider", secret = "plivo" }}]
[[source]]
id = "vonage"
provider = "vonage"
auth = [{{ scheme = "provider", secret = "vonage" }}]
[[source]]
id = "telnyx"
provider = "telnyx"
auth = [{{ scheme = "provider", public_key = "{telnyx_key}" }}]
"#
    )
}

fn signed_env() -> Vec<(&'static str, &'static str)> {
    vec![("TWILIO", TWILIO_TOKEN), ("PLIVO", PLIVO_TOKEN), ("VONAGE", VONAGE_SECRET)]
}

fn form_params(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Sends `f` with extra headers and an optionally altered body; returns the status.
async fn send_signed(url: &str, f: &Fixture, headers: &[(&str, String)], body: Option<Vec<u8>>) -> u16 {
    let url = match f.query {
        Some(q) => format!("{url}?{q}"),
        None => url.to_string(),
    };
    // The test's headers replace the fixture's (Vonage's fixtures carry their own tokens).
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in &f.headers {
        map.insert(reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    for (name, value) in headers {
        map.insert(reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    let request = client().request(f.method.clone(), url).headers(map);
    request.body(body.unwrap_or_else(|| f.body.to_vec())).send().await.unwrap().status().as_u16()
}

/// One more field appended to a form body: what an attacker adds around signed bytes.
fn tampered_form(body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    body.extend_from_slice(b"&RecordingUrl=https%3A%2F%2Fevil.example%2Fr.mp3");
    body
}

#[tokio::test]
async fn each_providers_own_signature_passes_and_a_tampered_one_fails() {
    let keys = oracle::call(json!({"op": "telnyx-keygen"}));
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), "", &[&signed_tenant(keys["public_key"].as_str().unwrap())], &signed_env()).await;

    // Twilio, signed by the twilio library over the public URL.
    let f = fixture::find(Provider::Twilio, "status-completed").unwrap();
    let url = format!("{PUBLIC}/v1/hooks/acme/twilio");
    let signature = oracle::signature(
        json!({"op": "twilio-sign", "token": TWILIO_TOKEN, "url": url, "params": form_params(f.body)}),
    );
    let hook = gateway.hook("acme", "twilio");
    assert_eq!(send_signed(&hook, &f, &[("x-twilio-signature", signature.clone())], None).await, 200);
    assert_eq!(send_signed(&hook, &f, &[("x-twilio-signature", signature)], Some(tampered_form(f.body))).await, 401);

    // Plivo V3, signed by the plivo library with its nonce.
    let f = fixture::find(Provider::Plivo, "status-completed").unwrap();
    let url = format!("{PUBLIC}/v1/hooks/acme/plivo");
    let nonce = "12345678901234567890";
    let signature = oracle::signature(json!({
        "op": "plivo-sign", "token": PLIVO_TOKEN, "url": url, "params": form_params(f.body), "method": "POST", "nonce": nonce,
    }));
    let hook = gateway.hook("acme", "plivo");
    let headers = [("x-plivo-signature-v3", signature), ("x-plivo-signature-v3-nonce", nonce.to_string())];
    assert_eq!(send_signed(&hook, &f, &headers, None).await, 200);
    assert_eq!(send_signed(&hook, &f, &headers, Some(tampered_form(f.body))).await, 401);

    // Vonage, a signed JWT made by PyJWT with the body's hash.
    let f = fixture::find(Provider::Vonage, "status-completed").unwrap();
    let body = String::from_utf8(f.body.to_vec()).unwrap();
    let now = switchboard::store::now_ms() / 1000;
    let token = oracle::call(json!({"op": "vonage-sign", "secret": VONAGE_SECRET, "body": body, "iat": now}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let hook = gateway.hook("acme", "vonage");
    let bearer = [("authorization", format!("Bearer {token}"))];
    assert_eq!(send_signed(&hook, &f, &bearer, None).await, 200);
    let swapped = body.replace("completed", "answered").into_bytes();
    assert_eq!(send_signed(&hook, &f, &bearer, Some(swapped)).await, 401, "a body swapped under a valid token");
    let stale = oracle::call(json!({"op": "vonage-sign", "secret": VONAGE_SECRET, "body": body, "iat": now - 3600}));
    let stale = [("authorization", format!("Bearer {}", stale["token"].as_str().unwrap()))];
    assert_eq!(send_signed(&hook, &f, &stale, None).await, 401, "a token issued an hour ago");
    let other = oracle::call(json!({"op": "vonage-sign", "secret": "another-secret", "body": body, "iat": now}));
    let other = [("authorization", format!("Bearer {}", other["token"].as_str().unwrap()))];
    assert_eq!(send_signed(&hook, &f, &other, None).await, 401, "another account's secret");

    // Telnyx, Ed25519 by pynacl.
    let f = fixture::find(Provider::Telnyx, "status-completed").unwrap();
    let body = String::from_utf8(f.body.to_vec()).unwrap();
    let signature =
        oracle::signature(json!({"op": "telnyx-sign", "seed": keys["seed"], "timestamp": now, "body": body}));
    let hook = gateway.hook("acme", "telnyx");
    let headers = [("telnyx-signature-ed25519", signature), ("telnyx-timestamp", now.to_string())];
    assert_eq!(send_signed(&hook, &f, &headers, None).await, 200);
    let swapped = body.replacen("\"to\"", "\"to \"", 1).into_bytes();
    assert_eq!(send_signed(&hook, &f, &headers, Some(swapped)).await, 401);
}

#[tokio::test]
async fn a_proxied_twilio_signature_verifies_with_public_url_or_trusted_forwarded_headers() {
    let keys = oracle::call(json!({"op": "telnyx-keygen"}));
    let dir = tempfile::tempdir().unwrap();
    let tenant = signed_tenant(keys["public_key"].as_str().unwrap());
    let gateway = start(dir.path(), "trusted_proxies = [\"127.0.0.1/32\"]", &[&tenant], &signed_env()).await;
    let f = fixture::find(Provider::Twilio, "status-completed").unwrap();
    // The load balancer's public URL, as Twilio called it and signed it.
    let public = format!("{PUBLIC}/v1/hooks/acme/twilio-proxied");
    let signature = oracle::signature(
        json!({"op": "twilio-sign", "token": TWILIO_TOKEN, "url": public, "params": form_params(f.body)}),
    );
    let hook = gateway.hook("acme", "twilio-proxied");
    let signed = ("x-twilio-signature", signature);
    // Without the proxy's headers the gateway sees its own address: the signature fails,
    // and the log says over which URL and what to set.
    assert_eq!(send_signed(&hook, &f, std::slice::from_ref(&signed), None).await, 401);
    let log = gateway.log();
    let reason = format!("signature computed over http://{}/v1/hooks/acme/twilio-proxied", gateway.ingest);
    assert!(log.contains(&reason) && log.contains("is public_url set"), "no clear reason in the log:\n{log}");
    // The trusted proxy's forwarded scheme and host give the URL Twilio signed.
    let forwarded = [
        signed.clone(),
        ("x-forwarded-proto", "https".to_string()),
        ("x-forwarded-host", "hooks.example.com".to_string()),
    ];
    assert_eq!(send_signed(&hook, &f, &forwarded, None).await, 200);
    // `public_url` on the source needs no proxy headers (the "twilio" source has it).
    let url = format!("{PUBLIC}/v1/hooks/acme/twilio");
    let signature = oracle::signature(
        json!({"op": "twilio-sign", "token": TWILIO_TOKEN, "url": url, "params": form_params(f.body)}),
    );
    assert_eq!(send_signed(&gateway.hook("acme", "twilio"), &f, &[("x-twilio-signature", signature)], None).await, 200);
}

/// Forwarded headers from an address that is not a trusted proxy are not believed.
#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_do_not_make_a_signature_pass() {
    let keys = oracle::call(json!({"op": "telnyx-keygen"}));
    let dir = tempfile::tempdir().unwrap();
    let tenant = signed_tenant(keys["public_key"].as_str().unwrap());
    let gateway = start(dir.path(), "trusted_proxies = [\"10.0.0.0/8\"]", &[&tenant], &signed_env()).await;
    let f = fixture::find(Provider::Twilio, "status-completed").unwrap();
    let public = format!("{PUBLIC}/v1/hooks/acme/twilio-proxied");
    let signature = oracle::signature(
        json!({"op": "twilio-sign", "token": TWILIO_TOKEN, "url": public, "params": form_params(f.body)}),
    );
    let forwarded = [
        ("x-twilio-signature", signature),
        ("x-forwarded-proto", "https".to_string()),
        ("x-forwarded-host", "hooks.example.com".to_string()),
    ];
    assert_eq!(send_signed(&gateway.hook("acme", "twilio-proxied"), &f, &forwarded, None).await, 401);
}

/// Responders answer in the provider's format: Twilio's TwiML is relayed; Exotel Passthru's
/// 302 (the other branch) is relayed with no `pass_through_codes` set; a late Twilio
/// responder gets the profile's empty TwiML as the fallback, within the profile's timeout.
#[tokio::test]
async fn responders_answer_in_each_providers_format() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|request, _| match request.path() {
        "/twiml" => Reply::status(200)
            .header("content-type", "application/xml")
            .body("<?xml version=\"1.0\"?><Response><Say>Hello</Say></Response>"),
        "/passthru" => Reply::status(302),
        _ => Reply::status(200).after(Duration::from_secs(5)),
    });
    let toml = format!(
        r#"id = "acme"
[[source]]
id = "twilio"
provider = "twilio"
auth = [{{ scheme = "none" }}]
respond_with = "twiml"
[[source]]
id = "exotel"
provider = "exotel"
timezone = "Asia/Kolkata"
auth = [{{ scheme = "none" }}]
respond_with = "passthru"
[[source]]
id = "twilio-late"
provider = "twilio"
auth = [{{ scheme = "none" }}]
respond_with = "late"
respond_timeout = "300ms"
[[destination]]
id = "twiml"
url = "{}"
sources = ["twilio"]
[[destination]]
id = "passthru"
url = "{}"
method = "GET"
sources = ["exotel"]
[[destination]]
id = "late"
url = "{}"
sources = ["twilio-late"]
"#,
        receiver.url("/twiml"),
        receiver.url("/passthru"),
        receiver.url("/late")
    );
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), "", &[&toml], &[]).await;

    let incoming = fixture::find(Provider::Twilio, "incoming").unwrap();
    let answer = send(&gateway.hook("acme", "twilio"), &incoming).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/xml");
    assert!(answer.text().await.unwrap().contains("<Say>Hello</Say>"));

    let passthru = fixture::of(Provider::Exotel).into_iter().find(|f| f.method == http::Method::GET).unwrap();
    let answer = send(&gateway.hook("acme", "exotel"), &passthru).await;
    assert_eq!(answer.status(), 302, "Exotel Passthru's other branch is relayed");

    let answer = send(&gateway.hook("acme", "twilio-late"), &incoming).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/xml");
    assert_eq!(
        answer.text().await.unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
        "the profile's fallback: empty TwiML"
    );
}

/// Without a responder, a Twilio voice URL is acknowledged with empty TwiML, not JSON
/// (Twilio reports JSON there as an error).
#[tokio::test]
async fn a_twilio_callback_is_acknowledged_with_twiml() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), "", &[&tenant("")], &[]).await;
    let answer = send(&gateway.hook("acme", "twilio"), &fixture::find(Provider::Twilio, "incoming").unwrap()).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/xml");
    assert!(answer.text().await.unwrap().contains("<Response></Response>"));
}

#[test]
fn switchboard_providers_lists_every_profile_and_render_takes_a_fixture() {
    let out = Command::new(BIN).arg("providers").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for provider in Provider::ALL {
        assert!(text.lines().any(|l| l.starts_with(provider.name())), "{} missing:\n{text}", provider.name());
    }
    let twilio = text.lines().find(|l| l.starts_with("twilio")).unwrap();
    assert!(twilio.contains("twilio") && twilio.contains("TwiML") && twilio.contains("15s"), "{twilio}");

    let out = Command::new(BIN).args(["providers", "exotel"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("status-completed"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let tenant = "id = \"acme\"\n[[source]]\nid = \"voice\"\nprovider = \"twilio\"\nauth = [{ scheme = \"none\" }]\n\
                  [[destination]]\nid = \"crm\"\nurl = \"https://crm.example.com/calls/<<id>>?status=<<status>>\"\n\
                  body = '{\"to\": \"<<to>>\", \"seconds\": <<duration>>}'\n";
    let config = write_config(dir.path(), "", "", &[tenant]);
    let render = |fixture: &str| {
        Command::new(BIN)
            .args(["render", "--config"])
            .arg(&config)
            .args(["--tenant", "acme", "--destination", "crm", "--provider", "twilio", "--fixture", fixture])
            .output()
            .unwrap()
    };
    let out = render("status-completed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let want = expected(&fixture::find(Provider::Twilio, "status-completed").unwrap());
    let line = format!("POST https://crm.example.com/calls/{}?status=completed", want["id"].as_str().unwrap());
    assert!(text.starts_with(&line), "{text}");
    assert!(text.contains(&format!("\"seconds\": {}", want["duration"])), "{text}");
    let out = render("no-such-callback");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("it has "), "lists the fixtures there are");
}
