//! Operating a running binary: the admin API (auth, events, deliveries, replay, pause,
//! reload), the command line over it, retention, and the Prometheus scrape — checked with
//! Python's prometheus_client parser.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::gateway::{client, write_config};
use crate::support::oracle::call;
use crate::support::process::{BIN, Serve};
use crate::support::{Receiver, Reply, seed};

const TOKEN: &str = "admin-token-42";

/// A tenant whose `crm` destination always answers and whose `down` destination answers
/// 500 until `healthy` is set, with one attempt before a delivery is dead.
fn tenant(receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"id = "acme"
[[source]]
id = "telecmi"
provider = "telecmi"
auth = [{{ scheme = "none" }}]
[[destination]]
id = "crm"
url = "{crm}"
[[destination]]
id = "down"
url = "{down}"
retry = {{ max_attempts = 1 }}
{extra}
"#,
        crm = receiver.url("/crm"),
        down = receiver.url("/down"),
    )
}

fn flaky(receiver: &Receiver) -> Arc<AtomicBool> {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    receiver.reply_with(move |request, _| {
        if request.path() == "/down" && !flag.load(Ordering::SeqCst) { Reply::status(500) } else { Reply::status(200) }
    });
    healthy
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    gateway: Serve,
    http: reqwest::Client,
}

async fn start(receiver: &Receiver, store_extra: &str, tenant_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store_extra = format!("{store_extra}\n\n[admin]\ntoken = {{ env = \"SB_ADMIN_TOKEN\" }}\n");
    let config = write_config(dir.path(), "", &store_extra, &[&tenant(receiver, tenant_extra)]);
    let gateway = Serve::start_env(&config, &[("SB_ADMIN_TOKEN", TOKEN)]).await;
    Setup { _dir: dir, config, gateway, http: client() }
}

impl Setup {
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.gateway.admin_url())).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api(reqwest::Method::POST, path, body).await
    }

    /// Sends TeleCMI's callback for call `n`; returns the event id.
    async fn callback(&self, n: usize) -> String {
        let body = String::from_utf8(seed("telecmi.json"))
            .unwrap()
            .replace("703ee423-e5f8-4120-9c17-5216c679afdd", &format!("call-{n}"));
        let response = self
            .http
            .post(self.gateway.hook("acme", "telecmi"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string()
    }

    /// Polls the admin API until `done` holds for the answer to `path` (bounded).
    async fn until(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.get(path).await;
            if done(&value) {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {value}");
            // The admin API has no change notification; poll it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn count(page: &Value, key: &str) -> usize {
    page[key].as_array().unwrap_or_else(|| panic!("no {key} array in {page}")).len()
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_health_and_metrics_stay_open() {
    let receiver = Receiver::start().await;
    let setup = start(&receiver, "", "").await;
    let url = |p: &str| format!("{}{p}", setup.gateway.admin_url());
    for (token, expected) in [(None, 401), (Some("wrong"), 401), (Some(TOKEN), 200)] {
        let mut request = setup.http.get(url("/v1/events"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "token {token:?}");
        if expected == 401 {
            assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
        }
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(setup.http.get(url(open)).send().await.unwrap().status(), 200, "{open}");
    }
    let (status, body) = setup.api(reqwest::Method::GET, "/v1/events/0190a0a0-0000-7000-8000-000000000000", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(setup.api(reqwest::Method::GET, "/v1/nothing", None).await.0, 404);
    assert_eq!(setup.api(reqwest::Method::DELETE, "/v1/events", None).await.0, 405);
    let (status, body) = setup.api(reqwest::Method::GET, "/v1/deliveries?state=lost", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")));
}

#[tokio::test]
async fn events_and_deliveries_page_newest_first_with_their_history() {
    let receiver = Receiver::start().await;
    let _healthy = flaky(&receiver);
    let setup = start(&receiver, "", "").await;
    let mut sent = Vec::new();
    for n in 0..7 {
        sent.push(setup.callback(n).await);
    }
    setup.until("/v1/deliveries?state=dead", "7 dead deliveries", |v| count(v, "deliveries") == 7).await;

    // Events, newest first, three to a page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=3&cursor={c}"),
            None => "/v1/events?limit=3".to_string(),
        };
        let page = setup.get(&path).await;
        pages += 1;
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let by_call = setup.get("/v1/events?call_id=call-3").await;
    assert_eq!(by_call["events"].as_array().unwrap().len(), 1);
    assert_eq!(by_call["events"][0]["event_id"], sent[3].as_str());

    let event = setup.get(&format!("/v1/events/{}", sent[3])).await;
    assert!(event["payload"]["body"].as_str().unwrap().contains("call-3"));
    assert_eq!(event["normalized"]["status"], "queued");
    assert_eq!(event["normalized"]["id"], "call-3");
    let deliveries = event["deliveries"].as_array().unwrap();
    let crm = deliveries.iter().find(|d| d["destination"] == "crm").unwrap();
    let down = deliveries.iter().find(|d| d["destination"] == "down").unwrap();
    assert_eq!(crm["state"], "delivered");
    assert_eq!(crm["attempts"][0]["status"], 200);
    assert_eq!(down["state"], "dead");
    assert_eq!(down["attempts"][0]["status"], 500);
    assert!(down["last_error"].as_str().unwrap().contains("gave up after 1 attempts"));

    let first = setup.get("/v1/deliveries?state=dead&limit=5").await;
    assert_eq!(count(&first, "deliveries"), 5);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = setup.get(&format!("/v1/deliveries?state=dead&limit=5&cursor={cursor}")).await;
    assert_eq!(count(&rest, "deliveries"), 2);
    assert!(rest["next_cursor"].is_null());
    let ids: HashSet<i64> = [&first, &rest]
        .iter()
        .flat_map(|p| p["deliveries"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(ids.len(), 7);
}

async fn a_replayed_dead_delivery_succeeds_with_the_same_webhook_id(store: &str) {
    let receiver = Receiver::start().await;
    let healthy = flaky(&receiver);
    let setup = start(&receiver, store, "").await;
    let event = setup.callback(1).await;
    let dead = setup.until("/v1/deliveries?state=dead", "the dead delivery", |v| count(v, "deliveries") == 1).await;
    let id = dead["deliveries"][0]["id"].as_i64().unwrap();

    healthy.store(true, Ordering::SeqCst);
    let (status, body) = setup.post(&format!("/v1/deliveries/{id}/replay"), None).await;
    assert_eq!((status, body), (200, json!({"queued": 1})));
    let got = receiver
        .wait_until(Duration::from_secs(10), "the replay", |r| r.iter().filter(|c| c.path() == "/down").count() == 2)
        .await;
    let attempts: Vec<_> = got.iter().filter(|c| c.path() == "/down").collect();
    assert_eq!(attempts[1].header("webhook-id"), Some(event.as_str()));
    assert_eq!(attempts[1].header("x-switchboard-attempt"), Some("1"), "a replay is a new attempt series");
    let history = setup
        .until(&format!("/v1/events/{event}"), "the replay recorded", |e| {
            e["deliveries"].as_array().unwrap().iter().any(|d| d["destination"] == "down" && d["state"] == "delivered")
        })
        .await;
    let down = history["deliveries"].as_array().unwrap().iter().find(|d| d["destination"] == "down").unwrap().clone();
    let statuses: Vec<i64> =
        down["attempts"].as_array().unwrap().iter().map(|a| a["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [500, 200], "the history keeps both series");
    assert_eq!(setup.post("/v1/deliveries/999999/replay", None).await.0, 404);
}

async fn pause_holds_deliveries_and_bulk_replay_queues_each_once(store: &str) {
    let receiver = Receiver::start().await;
    let healthy = flaky(&receiver);
    let setup = start(&receiver, store, "").await;
    for n in 0..3 {
        setup.callback(n).await;
    }
    setup.until("/v1/deliveries?state=dead", "3 dead", |v| count(v, "deliveries") == 3).await;

    let (status, body) = setup.post("/v1/destinations/acme/down/pause", None).await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(true)));
    assert_eq!(setup.post("/v1/destinations/acme/nowhere/pause", None).await.0, 404);

    let filter = json!({"tenant": "acme", "destination": "down"});
    assert_eq!(setup.post("/v1/replay", Some(filter.clone())).await, (200, json!({"queued": 3})));
    // The first batch is still pending (the destination is paused): nothing is queued twice.
    assert_eq!(setup.post("/v1/replay", Some(filter.clone())).await, (200, json!({"queued": 0})));
    assert_eq!(count(&setup.get("/v1/deliveries?destination=down&state=pending").await, "deliveries"), 3);

    // While paused, new events accumulate for `down` and still reach `crm`.
    for n in 10..12 {
        setup.callback(n).await;
    }
    receiver
        .wait_until(Duration::from_secs(10), "5 deliveries at crm", |r| {
            r.iter().filter(|c| c.path() == "/crm").count() == 5
        })
        .await;
    assert_eq!(
        receiver.requests().iter().filter(|c| c.path() == "/down").count(),
        3,
        "a paused destination sends nothing"
    );
    assert_eq!(count(&setup.get("/v1/deliveries?destination=down&state=pending").await, "deliveries"), 5);

    healthy.store(true, Ordering::SeqCst);
    let (status, body) = setup.post("/v1/destinations/acme/down/resume", None).await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(false)));
    receiver
        .wait_until(Duration::from_secs(10), "the held deliveries", |r| {
            r.iter().filter(|c| c.path() == "/down").count() == 8
        })
        .await;
    setup
        .until("/v1/deliveries?destination=down&state=delivered", "5 delivered", |v| count(v, "deliveries") == 5)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_keeps_the_old_config_when_invalid() {
    let receiver = Receiver::start().await;
    let _healthy = flaky(&receiver);
    let setup = start(&receiver, "", "").await;
    let tenant_file = setup.config.parent().unwrap().join("tenants/t0.toml");

    let running = Arc::new(AtomicBool::new(true));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (running, sent, failed) = (running.clone(), sent.clone(), failed.clone());
        let url = setup.gateway.hook("acme", "telecmi");
        tokio::spawn(async move {
            let http = client();
            let mut n = 1000;
            while running.load(Ordering::SeqCst) {
                n += 1;
                let body = String::from_utf8(seed("telecmi.json"))
                    .unwrap()
                    .replace("703ee423-e5f8-4120-9c17-5216c679afdd", &format!("load-{n}"));
                let ok = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                sent.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    // Hold `crm` so it has pending deliveries, then reload without it and with a new one.
    assert_eq!(setup.post("/v1/destinations/acme/crm/pause", None).await.0, 200);
    setup
        .until("/v1/deliveries?destination=crm&state=pending", "deliveries held for crm", |v| {
            count(v, "deliveries") > 0
        })
        .await;
    let new_tenant =
        tenant(&receiver, &format!("[[destination]]\nid = \"fresh\"\nurl = \"{}\"\n", receiver.url("/fresh")))
            .replace(&format!("[[destination]]\nid = \"crm\"\nurl = \"{}\"\n", receiver.url("/crm")), "");
    std::fs::write(&tenant_file, &new_tenant).unwrap();
    let (status, reloaded) = setup.post("/v1/reload", None).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["destinations"]["started"], json!(["acme/fresh"]));
    assert_eq!(reloaded["destinations"]["removed"], json!(["acme/crm"]));
    let orphaned = &reloaded["orphaned"][0];
    assert_eq!(orphaned["destination"], "acme/crm");
    assert!(
        orphaned["pending"].as_u64().unwrap() > 0,
        "a removed destination's pending deliveries are kept: {reloaded}"
    );
    receiver
        .wait_until(Duration::from_secs(10), "deliveries to the new destination", |r| {
            r.iter().any(|c| c.path() == "/fresh")
        })
        .await;

    // An invalid config is refused, by the API and on SIGHUP; the running one stays.
    std::fs::write(&tenant_file, new_tenant.replace("provider = \"telecmi\"", "provider = \"telekom\"")).unwrap();
    let (status, refused) = setup.post("/v1/reload", None).await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("t0.toml:4:12: unknown provider \"telekom\""), "{message}");
    let pid = setup.gateway.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !setup.gateway.log().contains("configuration not reloaded") {
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP not handled: {}", setup.gateway.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = sent.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent.load(Ordering::SeqCst) < before + 20 {
        assert!(tokio::time::Instant::now() < deadline, "the load stopped after the refused reload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    running.store(false, Ordering::SeqCst);
    load.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("reload under load: {sent} callbacks, {failed} failed");
    assert!(sent >= 20, "too little load to show anything: {sent}");
    assert_eq!(failed, 0);
}

async fn retention_purges_finished_events(store: &str) {
    let receiver = Receiver::start().await;
    let _healthy = flaky(&receiver);
    let setup = start(&receiver, &format!("{store}\nretention = \"1s\"\ndead_retention = \"2s\""), "").await;
    let event = setup.callback(1).await;
    assert_eq!(setup.get(&format!("/v1/events/{event}")).await["event_id"], event.as_str());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = setup.api(reqwest::Method::GET, &format!("/v1/events/{event}"), None).await;
        if status == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "event never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&setup.get("/v1/deliveries").await, "deliveries"), 0, "both its deliveries went with it");
}

/// The operator's view is the same whichever store is behind it.
macro_rules! on_both_stores {
    ($($name:ident),*) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name("").await;
                }

                #[tokio::test]
                async fn postgres() {
                    let Some(url) = crate::support::postgres::database().await else { return };
                    super::$name(&format!("url = \"{url}\"")).await;
                }
            }
        )*
    };
}

on_both_stores!(
    a_replayed_dead_delivery_succeeds_with_the_same_webhook_id,
    pause_holds_deliveries_and_bulk_replay_queues_each_once,
    retention_purges_finished_events
);

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

/// Three callbacks to a tenant whose `crm` takes each and whose `down` kills each, and one
/// to no tenant; then `/metrics`, as Python's prometheus_client parses it.
async fn scrape_after_traffic(store_extra: &str) -> Vec<Value> {
    let receiver = Receiver::start().await;
    let _healthy = flaky(&receiver);
    let setup = start(&receiver, store_extra, "").await;
    for n in 0..3 {
        setup.callback(n).await;
    }
    let missing = setup
        .http
        .post(setup.gateway.hook("nobody", "telecmi"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    setup.until("/v1/deliveries?state=dead", "3 dead", |v| count(v, "deliveries") == 3).await;
    setup.until("/v1/deliveries?state=delivered", "3 delivered", |v| count(v, "deliveries") == 3).await;

    let text =
        setup.http.get(format!("{}/metrics", setup.gateway.admin_url())).send().await.unwrap().text().await.unwrap();
    let parsed = call(json!({"op": "prometheus-parse", "text": text}));
    let samples = parsed["samples"].as_array().unwrap().clone();
    assert!(
        samples.iter().all(|s| !s["labels"]
            .as_object()
            .unwrap()
            .values()
            .any(|v| v.as_str().is_some_and(|v| v.contains("://")))),
        "no URLs in labels"
    );
    samples
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move() {
    let samples = scrape_after_traffic("").await;
    let samples = &samples[..];
    let accepted = [("tenant", "acme"), ("source", "telecmi"), ("outcome", "accepted")];
    assert_eq!(sample(samples, "switchboard_ingest_requests_total", &accepted), 3.0);
    assert_eq!(sample(samples, "switchboard_ingest_requests_total", &[("tenant", ""), ("outcome", "not_found")]), 1.0);
    assert_eq!(sample(samples, "switchboard_ingest_ack_seconds_count", &[("tenant", "acme")]), 3.0);
    assert_eq!(
        sample(samples, "switchboard_delivery_attempts_total", &[("destination", "crm"), ("outcome", "success")]),
        3.0
    );
    assert_eq!(
        sample(samples, "switchboard_delivery_attempts_total", &[("destination", "down"), ("outcome", "http_5xx")]),
        3.0
    );
    assert_eq!(sample(samples, "switchboard_dead_letters_total", &[("destination", "down")]), 3.0);
    assert_eq!(sample(samples, "switchboard_deliveries", &[("state", "dead")]), 3.0);
    assert_eq!(sample(samples, "switchboard_deliveries", &[("state", "delivered")]), 3.0);
    assert_eq!(sample(samples, "switchboard_pending_deliveries", &[("destination", "crm")]), 0.0);
    assert!(sample(samples, "switchboard_store_commit_batch_size_count", &[]) >= 1.0);
}

/// With thousands of tenants, `[metrics] detail` keeps the exposition in proportion: each
/// level drops a label, and the series that are left count the same traffic.
#[tokio::test]
async fn metrics_at_tenant_or_gateway_detail_drop_their_labels_and_count_the_same() {
    for (detail, dropped, place) in [
        ("tenant", &["source", "destination"][..], &[("tenant", "acme")][..]),
        ("gateway", &["tenant", "source", "destination"][..], &[][..]),
    ] {
        let samples = scrape_after_traffic(&format!("[metrics]\ndetail = \"{detail}\"\n")).await;
        let samples = &samples[..];
        let labelled: Vec<&Value> =
            samples.iter().filter(|s| dropped.iter().any(|label| s["labels"].get(*label).is_some())).collect();
        assert!(labelled.is_empty(), "{detail}: series still labelled by {dropped:?}: {labelled:?}");
        let with = |extra: &[(&'static str, &'static str)]| [place, extra].concat();
        let total = |name: &str, extra: &[(&'static str, &'static str)]| sample(samples, name, &with(extra));
        assert_eq!(total("switchboard_ingest_requests_total", &[("outcome", "accepted")]), 3.0, "{detail}");
        assert_eq!(total("switchboard_ingest_ack_seconds_count", &[]), 3.0, "{detail}");
        assert_eq!(total("switchboard_delivery_attempts_total", &[("outcome", "success")]), 3.0, "{detail}");
        assert_eq!(total("switchboard_delivery_attempts_total", &[("outcome", "http_5xx")]), 3.0, "{detail}");
        // One histogram per place, holding both destinations' attempts.
        assert_eq!(total("switchboard_delivery_attempt_seconds_count", &[]), 6.0, "{detail}");
        assert_eq!(total("switchboard_dead_letters_total", &[]), 3.0, "{detail}");
        let pending: Vec<&Value> = samples.iter().filter(|s| s["name"] == "switchboard_pending_deliveries").collect();
        assert_eq!(pending.len(), 1, "{detail}: one pending gauge for the place: {pending:?}");
        assert_eq!(pending[0]["value"], 0.0, "{detail}");
    }
}

#[tokio::test]
async fn the_command_line_over_the_admin_api() {
    let receiver = Receiver::start().await;
    let healthy = flaky(&receiver);
    let setup = start(&receiver, "", "").await;
    let event = setup.callback(7).await;
    setup.until("/v1/deliveries?state=dead", "1 dead", |v| count(v, "deliveries") == 1).await;
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(BIN)
            .args(args)
            .args(["--admin", &setup.gateway.admin_url()])
            .env("SWITCHBOARD_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let listed: Value = serde_json::from_str(&cli(&["events", "--json"])).unwrap();
    assert_eq!(listed["events"][0]["event_id"], event.as_str());
    let table = cli(&["events", "--tenant", "acme"]);
    assert!(table.starts_with("EVENT") && table.contains(&event) && table.contains("call-7"), "{table}");
    let shown = cli(&["events", &event]);
    assert!(shown.contains("delivery") && shown.contains("dead") && shown.contains("500"), "{shown}");
    let dead = cli(&["deliveries", "--state", "dead"]);
    assert!(dead.contains("down") && dead.contains("dead"), "{dead}");

    healthy.store(true, Ordering::SeqCst);
    let replayed = cli(&["replay", "--destination", "down"]);
    assert_eq!(replayed.trim(), "1 deliveries queued again");
    receiver
        .wait_until(Duration::from_secs(10), "the replay", |r| r.iter().filter(|c| c.path() == "/down").count() == 2)
        .await;
    // One delivery by id, once it is delivered again.
    let delivered = setup
        .until("/v1/deliveries?destination=down&state=delivered", "the replay delivered", |v| {
            count(v, "deliveries") == 1
        })
        .await;
    let id = delivered["deliveries"][0]["id"].as_i64().unwrap().to_string();
    assert_eq!(cli(&["replay", &id]).trim(), format!("delivery {id} queued again"));
    receiver
        .wait_until(Duration::from_secs(10), "the second replay", |r| {
            r.iter().filter(|c| c.path() == "/down").count() == 3
        })
        .await;

    // Without the token the command says why and fails.
    let output = std::process::Command::new(BIN)
        .args(["events", "--admin", &setup.gateway.admin_url()])
        .env_remove("SWITCHBOARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"), "{}", String::from_utf8_lossy(&output.stderr));
}
