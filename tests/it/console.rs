//! The web console: its page and assets as served (a strict Content-Security-Policy, no
//! inline script), and the console in real browsers (tests/browser/console.py: Debian's
//! Chromium and Firefox ESR driven by Playwright) against the binary with real deliveries — sign in, find a
//! call and every attempt, replay a dead delivery and watch it arrive, pause and resume, a
//! tenant key that sees its tenant only, and no secret value anywhere in the page.
//! Screenshots of each page are saved under `target/console-screenshots/<browser>/`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::gateway::{client, write_config};
use crate::support::oracle::python;
use crate::support::process::Serve;
use crate::support::skip::unavailable;
use crate::support::{Receiver, Reply, seed};

const TOKEN: &str = "console-admin-token";
const SECRETS_KEY: &str = "8f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
const SECRET: &str = "helpdesk-api-key-5150";
const CHROMIUM: &str = "/usr/bin/chromium";
const FIREFOX: &str = "/usr/bin/firefox-esr";

async fn admin(node: &Serve, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = client().request(method, format!("{}{path}", node.admin_url())).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let value = response.json::<Value>().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn start() -> (tempfile::TempDir, Serve) {
    let dir = tempfile::tempdir().unwrap();
    let admin = "\n[admin]\ntoken = { env = \"SB_ADMIN_TOKEN\" }\nsecrets_key = { env = \"SB_SECRETS_KEY\" }\n";
    let config = write_config(dir.path(), "", admin, &[]);
    let node = Serve::start_env(&config, &[("SB_ADMIN_TOKEN", TOKEN), ("SB_SECRETS_KEY", SECRETS_KEY)]).await;
    (dir, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy_and_no_inline_script() {
    let (_dir, node) = start().await;
    let http = client();
    let page = http.get(format!("{}/", node.admin_url())).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("http"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    // Every script has a src on this origin; no inline handler or style.
    for tag in html.split("<script").skip(1) {
        assert!(tag.trim_start().starts_with("type=\"module\" src=\"/assets/"), "{tag}");
    }
    assert!(!html.contains(" on") && !html.contains("style="), "{html}");
    let mut total = html.len();
    for asset in ["/assets/app.js", "/assets/app.css"] {
        let response = http.get(format!("{}{asset}", node.admin_url())).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        total += response.text().await.unwrap().len();
    }
    // The whole first page, uncompressed, well under the 300 KB budget for it compressed.
    assert!(total < 100 * 1024, "the console weighs {total} bytes");
    // The API stays where it was, and unknown paths are still JSON 404s.
    assert_eq!(http.get(format!("{}/nope", node.admin_url())).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_finds_a_call_replays_it_and_keeps_tenants_apart() {
    in_a_browser("chromium", CHROMIUM, "chromium").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_firefox_finds_a_call_replays_it_and_keeps_tenants_apart() {
    in_a_browser("firefox", FIREFOX, "firefox-esr").await;
}

/// The whole console walk-through (tests/browser/console.py) in one browser, against a
/// gateway of its own.
async fn in_a_browser(name: &str, binary: &str, package: &str) {
    if !std::path::Path::new(binary).exists()
        && unavailable(
            "browser",
            &format!("no {binary} for the console tests"),
            &format!("Install Debian's {package} package"),
        )
    {
        return;
    }
    let receiver = Receiver::start().await;
    let helpdesk_up = Arc::new(AtomicBool::new(false));
    let up = helpdesk_up.clone();
    receiver.reply_with(move |r, _| {
        if r.path().starts_with("/helpdesk") && !up.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    });
    let (_dir, node) = start().await;
    let tenant = |tenant: &str| {
        json!({
            "source": [{ "id": "telecmi", "provider": "telecmi", "auth": [{ "scheme": "none" }] }],
            "destination": [
                { "id": "crm", "url": receiver.url(&format!("/crm/{tenant}")) },
                {
                    "id": "helpdesk",
                    "url": receiver.url("/helpdesk"),
                    "headers": { "X-Api-Key": "<<secret.helpdesk>>" },
                    "retry": { "max_attempts": 2, "initial_backoff": "50ms" },
                },
            ],
            "secrets": { "helpdesk": { "value": SECRET } },
        })
    };
    admin(&node, reqwest::Method::PUT, "/v1/tenants/acme", Some(tenant("acme"))).await;
    admin(&node, reqwest::Method::PUT, "/v1/tenants/globex", Some(tenant("globex"))).await;
    let send = |tenant: &'static str, call: &'static str| {
        let url = node.hook(tenant, "telecmi");
        async move {
            let body =
                String::from_utf8(seed("telecmi.json")).unwrap().replace("703ee423-e5f8-4120-9c17-5216c679afdd", call);
            let response =
                client().post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string()
        }
    };
    let event_id = send("acme", "console-call-1").await;
    let other_event = send("globex", "globex-call-1").await;
    // Both helpdesk deliveries go dead after two attempts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let dead = admin(&node, reqwest::Method::GET, "/v1/deliveries?state=dead", None).await;
        if dead["deliveries"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the helpdesk deliveries did not go dead: {dead}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    helpdesk_up.store(true, Ordering::SeqCst);
    let key = admin(&node, reqwest::Method::POST, "/v1/tenants/acme/keys", None).await;
    let portal =
        admin(&node, reqwest::Method::POST, "/v1/tenants/acme/portal-tokens", Some(json!({ "expires_in": "10m" })))
            .await;
    let expired =
        admin(&node, reqwest::Method::POST, "/v1/tenants/acme/portal-tokens", Some(json!({ "expires_in": "1s" })))
            .await;
    let expired_at = expired["expires_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_second() + 1;
    // Signed with another key: the same shape, a signature that does not hold.
    let forged =
        switchboard::control::portal::mint(&switchboard::config::SecretsKey([9; 32]), "acme", expired_at + 3600);

    let screenshots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/console-screenshots");
    let facts = json!({
        "console": format!("{}/", node.admin_url()),
        "browser": name,
        "admin_token": TOKEN,
        "tenant_key": key["token"],
        "tenant": "acme",
        "call_id": "console-call-1",
        "other_event": other_event,
        "event_id": event_id,
        "portal_token": portal["token"],
        "expired_portal_token": expired["token"],
        "expired_at": expired_at,
        "forged_portal_token": forged,
        "receiver": receiver.url(""),
        // The TeleCMI sample's caller, as the provider sent it (globex's call has it too).
        "phone": "9100000000",
        "hook": node.hook("acme", "telecmi"),
        "follow_body": String::from_utf8(seed("telecmi.json")).unwrap().replace("703ee423-e5f8-4120-9c17-5216c679afdd", "follow-call-1"),
        "dead_destination": "helpdesk",
        "expected_attempts": [["crm", 1, "HTTP 200"], ["helpdesk", 2, "HTTP 500"]],
        "secret": SECRET,
        "screenshots": screenshots,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.py");
    let python = python();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        child.stdin.take().unwrap().write_all(facts.to_string().as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    assert!(
        outcome.status.success(),
        "the browser run failed: {stdout}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&outcome.stderr),
        node.log()
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["seen"]["tenant_key_tenants"], json!(["acme"]));
    // The replay from the page reached the receiver, with the secret it carries.
    let helpdesk: Vec<_> = receiver.requests().into_iter().filter(|r| r.path() == "/helpdesk").collect();
    assert_eq!(helpdesk.len(), 7, "two failed attempts per tenant, the replayed one, the followed and live calls'");
    assert_eq!(helpdesk.last().unwrap().header("x-api-key"), Some(SECRET));
    for shot in [
        "sign-in",
        "call",
        "deliveries",
        "destinations",
        "tenant-edit",
        "tenants",
        "playground",
        "tenant-view",
        "portal",
    ] {
        assert!(std::path::Path::new(&format!("{screenshots}/{name}/{shot}.png")).exists(), "{name}/{shot}.png");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_is_framed_only_where_configured_and_its_tokens_live_an_hour_at_most() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("logo.svg"), "<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap();
    let admin = "\n[admin]\ntoken = { env = \"SB_ADMIN_TOKEN\" }\nsecrets_key = { env = \"SB_SECRETS_KEY\" }\n\
                 [admin.portal]\nframe_ancestors = [\"https://app.example.com\"]\naccent = \"#0a7\"\nlogo = \"logo.svg\"\n";
    let tenant = "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"telecmi\"\nauth = [{ scheme = \"none\" }]\n";
    let config = write_config(dir.path(), "", admin, &[tenant]);
    let node = Serve::start_env(&config, &[("SB_ADMIN_TOKEN", TOKEN), ("SB_SECRETS_KEY", SECRETS_KEY)]).await;
    let http = client();
    let get = |path: &str| http.get(format!("{}{path}", node.admin_url())).send();
    let portal = get("/portal").await.unwrap();
    let csp = portal.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.ends_with("frame-ancestors https://app.example.com"), "{csp}");
    assert!(portal.headers().get("x-frame-options").is_none());
    let console = get("/").await.unwrap();
    assert!(console.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(console.headers()["x-frame-options"], "DENY", "the operators' console is never framed");
    assert!(get("/assets/theme.css").await.unwrap().text().await.unwrap().contains("--accent: #0a7;"));
    assert_eq!(get("/assets/logo").await.unwrap().headers()["content-type"], "image/svg+xml");

    // Tokens: for a tenant that exists, for an hour at most, the admin token's to give.
    let mint = |tenant: &str, body: Value, token: &str| {
        http.post(format!("{}/v1/tenants/{tenant}/portal-tokens", node.admin_url()))
            .bearer_auth(token.to_string())
            .body(body.to_string())
            .send()
    };
    assert_eq!(mint("acme", json!({ "expires_in": "2h" }), TOKEN).await.unwrap().status(), 400);
    assert_eq!(mint("nobody", json!({}), TOKEN).await.unwrap().status(), 404);
    let minted: Value = mint("acme", json!({ "expires_in": "30m" }), TOKEN).await.unwrap().json().await.unwrap();
    let token = minted["token"].as_str().unwrap();
    let expires = minted["expires_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    let lifetime = expires.as_second() - jiff::Timestamp::now().as_second();
    assert!((1790..=1800).contains(&lifetime), "{lifetime}");
    // A portal token is a tenant's view: it cannot mint more, nor see the platform's parts,
    // nor change the tenant (it sits in a page's address).
    assert_eq!(mint("acme", json!({}), token).await.unwrap().status(), 403);
    let write = http
        .put(format!("{}/v1/tenants/acme/secrets/x", node.admin_url()))
        .bearer_auth(token)
        .body(json!({ "value": "v" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);
    let events =
        http.get(format!("{}/v1/events?tenant=globex", node.admin_url())).bearer_auth(token).send().await.unwrap();
    assert_eq!(events.status(), 404);

    // Origins and colours are checked at load, with their place in the file.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("https://app.example.com", "app.example.com/path")
            .replace("#0a7", "teal"),
    )
    .unwrap();
    let check = std::process::Command::new(crate::support::process::BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&check.stderr);
    assert!(
        errors.contains("\"app.example.com/path\" is not an origin") && errors.contains("\"teal\" is not a colour"),
        "{errors}"
    );
    assert!(errors.lines().all(|l| l.contains("switchboard.toml:")), "{errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_tail_streams_a_tenants_events_and_attempts_and_nothing_of_others() {
    let receiver = Receiver::start().await;
    let (_dir, node) = start().await;
    for tenant in ["acme", "globex"] {
        let doc = json!({
            "source": [{ "id": "telecmi", "provider": "telecmi", "auth": [{ "scheme": "none" }] }],
            "destination": [{ "id": "crm", "url": receiver.url(&format!("/crm/{tenant}")) }],
        });
        admin(&node, reqwest::Method::PUT, &format!("/v1/tenants/{tenant}"), Some(doc)).await;
    }
    let key = admin(&node, reqwest::Method::POST, "/v1/tenants/acme/keys", None).await;
    let key = key["token"].as_str().unwrap().to_string();
    let http = client();
    let tail = |token: &str, query: &str| {
        http.get(format!("{}/v1/tail{query}", node.admin_url())).bearer_auth(token.to_string()).send()
    };
    assert_eq!(tail(&key, "?tenant=globex").await.unwrap().status(), 404, "another tenant's tail is not found");
    let mut stream = tail(&key, "").await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let send = |tenant: &str, call: &str| {
        let body =
            String::from_utf8(seed("telecmi.json")).unwrap().replace("703ee423-e5f8-4120-9c17-5216c679afdd", call);
        http.post(node.hook(tenant, "telecmi")).header("content-type", "application/json").body(body).send()
    };
    assert_eq!(send("globex", "globex-live").await.unwrap().status(), 200);
    assert_eq!(send("acme", "acme-live").await.unwrap().status(), 200);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains("\"call_id\":\"acme-live\"") && text.contains("event: attempt")) {
        let chunk =
            tokio::time::timeout_at(deadline, stream.chunk()).await.expect("the tail went quiet").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("globex"), "a tenant key's tail showed another tenant: {text}");
    let attempt = text.lines().find(|l| l.starts_with("data:") && l.contains("\"kind\":\"attempt\"")).unwrap();
    let attempt: Value = serde_json::from_str(attempt.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(
        (attempt["destination"].clone(), attempt["result"].clone(), attempt["next"].clone()),
        (json!("crm"), json!("HTTP 200"), json!("delivered"))
    );
}
