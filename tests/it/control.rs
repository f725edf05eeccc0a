//! The control plane against the binary: tenants, sources, destinations and secrets managed
//! by API with no file and no restart; the validator's errors at JSON pointers; If-Match;
//! cancelled deliveries; tenant-scoped keys that see only their tenant; secrets that are
//! never shown; changes surviving a restart and reaching every node of a shared store.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::gateway::{client, write_config};
use crate::support::postgres::database;
use crate::support::process::{BIN, Serve};
use crate::support::{Receiver, Reply, seed};

const TOKEN: &str = "control-admin-token";
const SECRETS_KEY: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
const CRM_SECRET: &str = "crm-bearer-7f3a9c";

fn admin_section() -> String {
    "\n[admin]\ntoken = { env = \"SB_ADMIN_TOKEN\" }\nsecrets_key = { env = \"SB_SECRETS_KEY\" }\n".to_string()
}

const ENV: [(&str, &str); 2] = [("SB_ADMIN_TOKEN", TOKEN), ("SB_SECRETS_KEY", SECRETS_KEY)];

struct Plane {
    dir: tempfile::TempDir,
    config: PathBuf,
    node: Serve,
    http: reqwest::Client,
}

impl Plane {
    /// A gateway with no tenant at all but `files`, on SQLite unless `store` names a database.
    async fn start(store: &str, files: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "", &format!("{store}\n{}", admin_section()), files);
        let node = Serve::start_env(&config, &ENV).await;
        Plane { dir, config, node, http: client() }
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.http, &self.node, method, path, token, body, None).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, TOKEN, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, TOKEN, None).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, TOKEN, None).await
    }

    async fn callback(&self, tenant: &str, call: &str) -> reqwest::Response {
        callback(&self.http, &self.node, tenant, call).await
    }
}

async fn call(
    http: &reqwest::Client,
    node: &Serve,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (u16, Value) {
    let mut request = http.request(method, format!("{}{path}", node.admin_url())).bearer_auth(token);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    if let Some(v) = if_match {
        request = request.header("if-match", v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn callback(http: &reqwest::Client, node: &Serve, tenant: &str, call: &str) -> reqwest::Response {
    post_call(http, &node.hook(tenant, "telecmi"), call).await
}

/// A TeleCMI callback of the call `call` to the hook URL `hook`.
async fn post_call(http: &reqwest::Client, hook: &str, call: &str) -> reqwest::Response {
    let body = String::from_utf8(seed("telecmi.json")).unwrap().replace("703ee423-e5f8-4120-9c17-5216c679afdd", call);
    http.post(hook).header("content-type", "application/json").body(body).send().await.unwrap()
}

/// Sends `node` callbacks for `tenant`, one after another, each of a new call, until `stop`;
/// every one must be accepted. The task gives back how many went.
fn callbacks_until(
    http: &reqwest::Client,
    node: &Serve,
    tenant: &str,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<usize> {
    let (http, hook, tenant) = (http.clone(), node.hook(tenant, "telecmi"), tenant.to_string());
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.is_cancelled() {
            assert_eq!(post_call(&http, &hook, &format!("{tenant}-{n}")).await.status(), 200);
            n += 1;
        }
        n
    })
}

/// A tenant document: a TeleCMI source and a CRM destination that carries a secret.
fn tenant_doc(receiver: &Receiver) -> Value {
    json!({
        "source": [{ "id": "telecmi", "provider": "telecmi", "auth": [{ "scheme": "none" }] }],
        "destination": [{
            "id": "crm",
            "url": receiver.url("/crm/<<id>>"),
            "headers": { "Authorization": "Bearer <<secret.crm>>" },
            "body": "{\"call\": <<id>>, \"status\": <<status>>}",
            "retry": { "max_attempts": 2, "initial_backoff": "50ms" },
        }],
        "secrets": { "crm": { "value": CRM_SECRET } },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_created_by_api_serves_at_once_keeps_its_secret_sealed_and_survives_a_restart() {
    let receiver = Receiver::start().await;
    let mut plane = Plane::start("", &[]).await;
    assert_eq!(plane.callback("acme", "call-0").await.status(), 404, "no tenant yet");

    let (status, body) = plane.put("/v1/tenants/acme", tenant_doc(&receiver)).await;
    assert_eq!((status, &body), (201, &json!({ "id": "acme", "version": 1 })));
    // Serving before the PUT answered: no poll, no restart.
    assert_eq!(plane.callback("acme", "call-1").await.status(), 200);
    let got = receiver.wait_until(Duration::from_secs(10), "the delivery", |r| !r.is_empty()).await;
    assert_eq!(got[0].path(), "/crm/call-1");
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {CRM_SECRET}").as_str()));

    let (status, shown) = plane.get("/v1/tenants/acme").await;
    assert_eq!(status, 200);
    assert_eq!((shown["version"].clone(), shown["managed_by"].clone()), (json!(1), json!("api")));
    assert_eq!(shown["secrets"], json!(["crm"]), "secrets by name only");
    assert_eq!(shown["destination"][0]["headers"]["Authorization"], "Bearer <<secret.crm>>");
    let (_, listed) = plane.get("/v1/tenants").await;
    assert_eq!(
        listed["tenants"],
        json!([{ "id": "acme", "version": 1, "managed_by": "api", "sources": 1, "destinations": 1 }])
    );

    // A replacement keeps the secret it does not mention.
    let mut doc = tenant_doc(&receiver);
    doc.as_object_mut().unwrap().remove("secrets");
    doc["destination"][0]["url"] = json!(receiver.url("/crm2/<<id>>"));
    let (status, body) = plane.put("/v1/tenants/acme", doc).await;
    assert_eq!((status, body["version"].clone()), (200, json!(2)));

    plane.node.terminate(Duration::from_secs(20)).await;
    // The value is sealed at rest: the store file never holds it in the clear.
    for entry in std::fs::read_dir(plane.dir.path().join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(CRM_SECRET.len()).any(|w| w == CRM_SECRET.as_bytes()), "secret in the clear on disk");
    }
    plane.node = Serve::start_env(&plane.config, &ENV).await;
    assert_eq!(plane.callback("acme", "call-2").await.status(), 200, "the tenant outlives a restart");
    let got = receiver.wait_until(Duration::from_secs(10), "the delivery after restart", |r| r.len() >= 2).await;
    assert_eq!(got[1].path(), "/crm2/call-2");
    assert_eq!(got[1].header("authorization"), Some(format!("Bearer {CRM_SECRET}").as_str()));

    // Nowhere the API answers, and nowhere in the log, is the value.
    let event = plane.get("/v1/events?tenant=acme").await.1["events"][0]["event_id"].as_str().unwrap().to_string();
    for path in
        ["/v1/tenants/acme", "/v1/tenants/acme/secrets", "/v1/audit", &format!("/v1/events/{event}"), "/v1/deliveries"]
    {
        let (_, answer) = plane.get(path).await;
        assert!(!answer.to_string().contains(CRM_SECRET), "{path} shows the secret: {answer}");
    }
    assert!(!plane.node.log().contains(CRM_SECRET), "the log shows the secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_tenant_is_refused_whole_with_every_error_at_its_pointer() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    let mut doc = tenant_doc(&receiver);
    doc["destination"][0]["body"] = json!("{\n  \"call\": <<id>>,\n  \"oops\": <<no_such_field>>\n}");
    doc["destination"][0]["timeout"] = json!("soon");
    doc["source"][0]["provider"] = json!("nokia");
    let (status, body) = plane.put("/v1/tenants/acme", doc).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let errors = body["error"]["errors"].as_array().unwrap();
    let at =
        |pointer: &str| errors.iter().find(|e| e["pointer"] == pointer).unwrap_or_else(|| panic!("{pointer}: {body}"));
    assert_eq!(
        (at("/destination/0/body")["line"].clone(), at("/destination/0/body")["column"].clone()),
        (json!(3), json!(13))
    );
    assert!(at("/destination/0/timeout")["message"].as_str().unwrap().contains("soon"));
    assert!(at("/source/0/provider")["message"].as_str().unwrap().contains("nokia"));
    assert_eq!(plane.get("/v1/tenants/acme").await.0, 404, "nothing was half-applied");
    assert_eq!(plane.callback("acme", "c").await.status(), 404);

    let (status, _) = plane.put("/v1/tenants/acme", tenant_doc(&receiver)).await;
    assert_eq!(status, 201);
    // A destination PUT is checked as part of the whole tenant; its errors point into its body.
    let (status, body) =
        plane.put("/v1/tenants/acme/destinations/crm", json!({ "url": "ftp://crm.example/", "body": "<<id" })).await;
    assert_eq!(status, 422, "{body}");
    let pointers: Vec<&str> =
        body["error"]["errors"].as_array().unwrap().iter().filter_map(|e| e["pointer"].as_str()).collect();
    assert!(pointers.contains(&"/url") && pointers.contains(&"/body"), "{body}");
    assert_eq!(plane.get("/v1/tenants/acme").await.1["version"], 1, "the refused change wrote nothing");
    // A secret still in use cannot be deleted.
    let (status, body) = plane.delete("/v1/tenants/acme/secrets/crm").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("/destination/0/headers/Authorization"), "{body}");
    // Not JSON, or not an object: a plain 400.
    assert_eq!(plane.call(Method::PUT, "/v1/tenants/acme", TOKEN, Some(json!([1]))).await.0, 400);
    assert_eq!(plane.put("/v1/tenants/bad%20id", json!({})).await.0, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_refuses_a_change_made_on_a_stale_version() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    let put = |body: Value, version: &str| {
        let (http, node) = (&plane.http, &plane.node);
        let version = version.to_string();
        async move { call(http, node, Method::PUT, "/v1/tenants/acme", TOKEN, Some(body), Some(&version)).await }
    };
    assert_eq!(put(tenant_doc(&receiver), "1").await.0, 412, "If-Match on a tenant that does not exist");
    assert_eq!(plane.put("/v1/tenants/acme", tenant_doc(&receiver)).await.0, 201);
    assert_eq!(plane.put("/v1/tenants/acme", tenant_doc(&receiver)).await.0, 200);
    let (status, body) = put(tenant_doc(&receiver), "1").await;
    assert_eq!((status, body["error"]["code"].clone()), (412, json!("version_mismatch")));
    assert_eq!(put(tenant_doc(&receiver), "W/\"2\"").await.0, 412, "If-Match compares strongly");
    let (status, body) = put(tenant_doc(&receiver), "\"2\"").await;
    assert_eq!((status, body["version"].clone()), (200, json!(3)));
    let audit = plane.get("/v1/audit?tenant=acme").await.1;
    let versions: Vec<(Value, Value)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["before_version"].clone(), a["after_version"].clone()))
        .collect();
    assert_eq!(versions, vec![(json!(2), json!(3)), (json!(1), json!(2)), (Value::Null, json!(1))]);
    assert!(audit["audit"].as_array().unwrap().iter().all(|a| a["actor"] == "admin" && a["kind"] == "tenant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_destination_or_tenant_cancels_its_pending_deliveries() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    let mut doc = tenant_doc(&receiver);
    doc["destination"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "helpdesk", "url": receiver.url("/helpdesk"), "retry": { "initial_backoff": "1h", "max_backoff": "1h" } }));
    let (status, body) = plane.put("/v1/tenants/acme", doc).await;
    assert_eq!(status, 201, "{body}");
    // The helpdesk fails once, then waits an hour: its deliveries stay pending.
    receiver.reply_with(|r, _| if r.path() == "/helpdesk" { Reply::status(503) } else { Reply::status(200) });
    for n in 0..3 {
        assert_eq!(plane.callback("acme", &format!("call-{n}")).await.status(), 200);
    }
    receiver
        .wait_until(Duration::from_secs(10), "three failed helpdesk attempts", |r| {
            r.iter().filter(|c| c.path() == "/helpdesk").count() == 3
        })
        .await;
    let (status, _) = plane.delete("/v1/tenants/acme/destinations/helpdesk").await;
    assert_eq!(status, 204);
    let (_, cancelled) = plane.get("/v1/deliveries?tenant=acme&destination=helpdesk&state=cancelled").await;
    let cancelled = cancelled["deliveries"].as_array().unwrap().clone();
    assert_eq!(cancelled.len(), 3, "{cancelled:?}");
    assert!(cancelled.iter().all(|d| d["last_error"] == "cancelled: the destination was removed"));
    assert_eq!(plane.get("/v1/deliveries?tenant=acme&state=pending").await.1["deliveries"], json!([]));

    // The tenant's own deletion: ingest 404 from then on, events kept.
    let (status, _) = plane.delete("/v1/tenants/acme").await;
    assert_eq!(status, 204);
    assert_eq!(plane.callback("acme", "call-after").await.status(), 404);
    assert_eq!(plane.get("/v1/tenants/acme").await.0, 404);
    assert_eq!(plane.get("/v1/events?tenant=acme").await.1["events"].as_array().unwrap().len(), 3);
    assert_eq!(plane.delete("/v1/tenants/acme").await.0, 404);
    let helpdesk = receiver.requests().iter().filter(|c| c.path() == "/helpdesk").count();
    assert_eq!(helpdesk, 3, "a cancelled delivery is never sent again");
    // Re-created, it starts again above its last version.
    assert_eq!(plane.put("/v1/tenants/acme", tenant_doc(&receiver)).await.1["version"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tenants_stay_read_only_and_an_id_defined_both_ways_stops_the_start() {
    let receiver = Receiver::start().await;
    let file = format!(
        "id = \"filed\"\n[secrets]\nx = {{ env = \"SB_ADMIN_TOKEN\" }}\n[[source]]\nid = \"telecmi\"\nprovider = \"telecmi\"\nauth = [{{ scheme = \"none\" }}]\n[[destination]]\nid = \"crm\"\nurl = \"{}\"\n",
        receiver.url("/crm")
    );
    let plane = Plane::start("", &[&file]).await;
    let (status, body) = plane.put("/v1/tenants/filed", tenant_doc(&receiver)).await;
    assert_eq!((status, body["error"]["code"].clone()), (409, json!("managed_by_file")));
    assert_eq!(plane.put("/v1/tenants/filed/destinations/crm", json!({ "url": receiver.url("/x") })).await.0, 409);
    let (status, shown) = plane.get("/v1/tenants/filed").await;
    assert_eq!((status, shown["managed_by"].clone(), shown["secrets"].clone()), (200, json!("file"), json!(["x"])));
    assert!(!shown.to_string().contains(TOKEN), "a file's secret value is not shown either");

    // An API tenant whose id a file then takes: the next start refuses, saying why.
    assert_eq!(plane.put("/v1/tenants/acme", tenant_doc(&receiver)).await.0, 201);
    let clash = file.replace("\"filed\"", "\"acme\"");
    std::fs::write(plane.dir.path().join("tenants/clash.toml"), clash).unwrap();
    let (_, reload) = plane.call(Method::POST, "/v1/reload", TOKEN, None).await;
    assert!(reload.to_string().contains("managed through the API"), "{reload}");
    let mut node = plane.node;
    node.terminate(Duration::from_secs(20)).await;
    let out =
        std::process::Command::new(BIN).args(["serve", "--config"]).arg(&plane.config).envs(ENV).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tenant \"acme\" is defined in") && stderr.contains("clash.toml"), "{stderr}");
}

/// Every destination a token sees, paged `limit` at a time: (names, each page's size).
async fn destination_pages(plane: &Plane, token: &str, limit: usize) -> (Vec<String>, Vec<usize>) {
    let (mut names, mut sizes, mut cursor) = (Vec::new(), Vec::new(), String::new());
    loop {
        let path = format!("/v1/destinations?limit={limit}&health=true&cursor={cursor}");
        let (status, page) = plane.call(Method::GET, &path, token, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["destinations"].as_array().unwrap();
        assert!(items.iter().all(|d| d["last_hour"].is_array() && d["pending"].is_u64()), "{page}");
        names.extend(items.iter().map(|d| d["destination"].as_str().unwrap().to_string()));
        sizes.push(items.len());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return (names, sizes),
        }
        assert!(sizes.len() < 20, "the pages never end: {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_listed_a_page_at_a_time_and_a_key_pages_through_its_own_only() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    // "acme" and "acme-eu": ordered by tenant, then id ("acme-eu/…" sorts before "acme/…" as
    // text), so a cursor never skips or repeats a tenant whose id another's begins with.
    for tenant in ["globex", "acme-eu", "acme"] {
        let mut doc = tenant_doc(&receiver);
        let crm = doc["destination"][0].clone();
        doc["destination"] = json!(
            ["desk", "crm", "bi"]
                .iter()
                .map(|id| {
                    let mut d = crm.clone();
                    d["id"] = json!(id);
                    d
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(plane.put(&format!("/v1/tenants/{tenant}"), doc).await.0, 201);
    }
    let expected: Vec<String> =
        ["acme", "acme-eu", "globex"].iter().flat_map(|t| ["bi", "crm", "desk"].map(|d| format!("{t}/{d}"))).collect();
    let (names, sizes) = destination_pages(&plane, TOKEN, 4).await;
    assert_eq!((names, sizes), (expected.clone(), vec![4, 4, 1]));
    let (names, sizes) = destination_pages(&plane, TOKEN, 9).await;
    assert_eq!((names, sizes), (expected.clone(), vec![9]), "a last page that is full says so");

    let (status, key) = plane.call(Method::POST, "/v1/tenants/acme/keys", TOKEN, None).await;
    assert_eq!(status, 201, "{key}");
    let token = key["token"].as_str().unwrap();
    let (names, sizes) = destination_pages(&plane, token, 2).await;
    assert_eq!((names, sizes), (expected[..3].to_vec(), vec![2, 1]), "a key pages through its own tenant only");

    for (query, error) in
        [("limit=0", "limit must be 1 to"), ("limit=1001", "limit must be 1 to"), ("cursor=acme", "cursor")]
    {
        let (status, body) = plane.get(&format!("/v1/destinations?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(error), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_sees_and_changes_only_what_its_tenant_may() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    for tenant in ["acme", "globex"] {
        assert_eq!(plane.put(&format!("/v1/tenants/{tenant}"), tenant_doc(&receiver)).await.0, 201);
        assert_eq!(plane.callback(tenant, &format!("{tenant}-call")).await.status(), 200);
    }
    let (status, key) = plane.call(Method::POST, "/v1/tenants/acme/keys", TOKEN, None).await;
    assert_eq!(status, 201, "{key}");
    let token = key["token"].as_str().unwrap().to_string();
    let key_id = key["key_id"].as_str().unwrap().to_string();
    let as_key = |method: Method, path: &str, body: Option<Value>| {
        let (http, node, token) = (&plane.http, &plane.node, token.clone());
        let path = path.to_string();
        async move { call(http, node, method, &path, &token, body, None).await }
    };
    let globex_event =
        plane.get("/v1/events?tenant=globex").await.1["events"][0]["event_id"].as_str().unwrap().to_string();
    let acme_delivery = plane.get("/v1/deliveries?tenant=acme").await.1["deliveries"][0]["id"].as_i64().unwrap();
    let globex_delivery = plane.get("/v1/deliveries?tenant=globex").await.1["deliveries"][0]["id"].as_i64().unwrap();

    // Its own tenant's events, deliveries and destinations.
    let (status, events) = as_key(Method::GET, "/v1/events", None).await;
    assert_eq!(status, 200);
    let tenants: Vec<&str> =
        events["events"].as_array().unwrap().iter().map(|e| e["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["acme"]);
    let (_, deliveries) = as_key(Method::GET, "/v1/deliveries", None).await;
    assert!(deliveries["deliveries"].as_array().unwrap().iter().all(|d| d["tenant"] == "acme"));
    let (_, destinations) = as_key(Method::GET, "/v1/destinations", None).await;
    assert_eq!(destinations["destinations"].as_array().unwrap().len(), 1, "{destinations}");
    assert_eq!(as_key(Method::POST, "/v1/destinations/acme/crm/pause", None).await.0, 200);
    assert_eq!(as_key(Method::POST, "/v1/destinations/acme/crm/resume", None).await.0, 200);
    assert_eq!(as_key(Method::POST, &format!("/v1/deliveries/{acme_delivery}/replay"), None).await.0, 200);
    let (status, changed) = as_key(
        Method::PUT,
        "/v1/tenants/acme/destinations/ticketing",
        Some(json!({ "url": receiver.url("/ticketing"), "headers": { "X-Key": "<<secret.ticketing>>" } })),
    )
    .await;
    assert_eq!(status, 422, "its secret is not there yet: {changed}");
    assert_eq!(
        as_key(Method::PUT, "/v1/tenants/acme/secrets/ticketing", Some(json!({ "value": "tk-1" }))).await.0,
        201
    );
    let (status, _) = as_key(
        Method::PUT,
        "/v1/tenants/acme/destinations/ticketing",
        Some(json!({ "url": receiver.url("/ticketing"), "headers": { "X-Key": "<<secret.ticketing>>" } })),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(plane.callback("acme", "acme-2").await.status(), 200);
    receiver
        .wait_until(Duration::from_secs(10), "the key's new destination", |r| {
            r.iter().any(|c| c.path() == "/ticketing" && c.header("x-key") == Some("tk-1"))
        })
        .await;

    // Another tenant's anything is not found; the platform's parts are forbidden.
    for (method, path) in [
        (Method::GET, format!("/v1/events/{globex_event}")),
        (Method::GET, "/v1/events?tenant=globex".to_string()),
        (Method::GET, "/v1/deliveries?tenant=globex".to_string()),
        (Method::POST, format!("/v1/deliveries/{globex_delivery}/replay")),
        (Method::POST, "/v1/destinations/globex/crm/pause".to_string()),
        (Method::GET, "/v1/tenants/globex".to_string()),
        (Method::PUT, "/v1/tenants/globex/destinations/crm".to_string()),
        (Method::PUT, "/v1/tenants/globex/secrets/crm".to_string()),
        (Method::GET, "/v1/tenants/nonexistent".to_string()),
    ] {
        let (status, body) = as_key(method.clone(), &path, Some(json!({ "value": "x", "url": "http://x/" }))).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    for (method, path) in [
        (Method::PUT, "/v1/tenants/acme/sources/telecmi"),
        (Method::PUT, "/v1/tenants/acme"),
        (Method::DELETE, "/v1/tenants/acme"),
        (Method::GET, "/v1/tenants"),
        (Method::GET, "/v1/audit"),
        (Method::POST, "/v1/tenants/acme/keys"),
        (Method::POST, "/v1/reload"),
    ] {
        assert_eq!(as_key(method.clone(), path, Some(json!({}))).await.0, 403, "{method} {path}");
    }
    let (_, bulk) = as_key(Method::POST, "/v1/replay", Some(json!({ "state": "delivered" }))).await;
    let (_, pending) = plane.get("/v1/deliveries?tenant=globex&state=pending").await;
    assert_eq!(pending["deliveries"], json!([]), "a key's bulk replay stays in its tenant: {bulk}");

    // The audit trail names the key; a deleted key, or a forged one, opens nothing.
    let audit = plane.get("/v1/audit?tenant=acme").await.1;
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["actor"] == format!("key:{key_id}") && a["target"] == "ticketing")
    );
    // The same key id, the secret's last digit changed.
    let last = if token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    assert_eq!(call(&plane.http, &plane.node, Method::GET, "/v1/events", &forged, None, None).await.0, 401);
    assert_eq!(plane.get("/v1/tenants/acme/keys").await.1["keys"][0]["key_id"], key_id.as_str());
    assert_eq!(plane.delete(&format!("/v1/tenants/acme/keys/{key_id}")).await.0, 204);
    assert_eq!(as_key(Method::GET, "/v1/events", None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_destination_keeps_its_tripped_breaker_and_the_tenant_its_buckets() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, _| Reply::status(500));
    let plane = Plane::start("", &[]).await;
    let mut doc = tenant_doc(&receiver);
    doc["rate_limit"] = json!({ "per_second": 1, "burst": 2 });
    doc["destination"][0]["circuit_breaker"] = json!({ "failures": 1, "cooldown": "1h", "max_cooldown": "1h" });
    let (status, body) = plane.put("/v1/tenants/acme", doc.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(plane.callback("acme", "a").await.status(), 200);
    assert_eq!(plane.callback("acme", "b").await.status(), 200);
    assert_eq!(plane.callback("acme", "c").await.status(), 429, "the burst is spent");
    receiver.wait_until(Duration::from_secs(10), "a failed attempt", |r| !r.is_empty()).await;
    let circuit = || async { plane.get("/v1/destinations").await.1["destinations"][0]["circuit"].clone() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while circuit().await != "open" {
        assert!(tokio::time::Instant::now() < deadline, "the breaker did not open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Same ids, new header and a new delivery shape: same circuit, same buckets.
    doc["destination"][0]["headers"]["X-Extra"] = json!("1");
    doc["destination"][0]["max_in_flight"] = json!(3);
    assert_eq!(plane.put("/v1/tenants/acme", doc).await.0, 200);
    assert_eq!(circuit().await, "open");
    assert_eq!(plane.callback("acme", "d").await.status(), 429, "a change does not refill the bucket");
}

/// A destination reshaped (a new `max_in_flight`) while callbacks arrive: a delivery handed
/// to the worker being replaced, after that worker gave back what it held, goes to the new
/// worker at once, not after its lease (70 s here) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_handed_over_while_its_destination_is_reshaped_is_sent_at_once() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    let mut doc = tenant_doc(&receiver);
    doc["destination"][0]["timeout"] = json!("20s");
    assert_eq!(plane.put("/v1/tenants/acme", doc.clone()).await.0, 201);
    let stop = tokio_util::sync::CancellationToken::new();
    let sender = callbacks_until(&plane.http, &plane.node, "acme", stop.clone());
    for round in 0..20 {
        receiver
            .wait_until(Duration::from_secs(10), "deliveries between reshapes", |r| r.len() >= 3 * (round + 1))
            .await;
        doc["destination"][0]["max_in_flight"] = json!(4 + round % 2);
        assert_eq!(plane.put("/v1/tenants/acme", doc.clone()).await.0, 200);
    }
    stop.cancel();
    let sent = sender.await.unwrap();
    eprintln!("{sent} callbacks during 20 reshapes");
    receiver
        .wait_until(Duration::from_secs(15), "every callback delivered", |r| {
            r.iter().map(|c| c.path()).collect::<std::collections::HashSet<_>>().len() == sent
        })
        .await;
}

/// A delivery handed over and waiting for the destination's one slot when the destination
/// is reshaped goes back to the store, and the new worker claims it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waiting_for_a_slot_when_its_destination_is_reshaped_is_sent_by_the_new_worker() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, _| Reply::status(200).after(Duration::from_millis(300)));
    let plane = Plane::start("", &[]).await;
    let mut doc = tenant_doc(&receiver);
    doc["destination"][0]["timeout"] = json!("20s");
    doc["destination"][0]["max_in_flight"] = json!(1);
    assert_eq!(plane.put("/v1/tenants/acme", doc.clone()).await.0, 201);
    let got = |call: String| {
        move |r: &[crate::support::receiver::Captured]| r.iter().any(|c| c.path() == format!("/crm/{call}"))
    };
    for round in 0..4 {
        // The first is sent and holds the slot for 300 ms; the second waits in memory.
        assert_eq!(plane.callback("acme", &format!("{round}-first")).await.status(), 200);
        receiver.wait_until(Duration::from_secs(10), "the first delivery", got(format!("{round}-first"))).await;
        assert_eq!(plane.callback("acme", &format!("{round}-second")).await.status(), 200);
        doc["destination"][0]["max_in_flight"] = json!(2);
        assert_eq!(plane.put("/v1/tenants/acme", doc.clone()).await.0, 200);
        // Its lease is 70 s: only a claim by the new worker sends it within this bound.
        receiver.wait_until(Duration::from_secs(10), "the waiting delivery", got(format!("{round}-second"))).await;
        doc["destination"][0]["max_in_flight"] = json!(1);
        assert_eq!(plane.put("/v1/tenants/acme", doc.clone()).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_export_to_files_and_import_back() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    assert_eq!(plane.put("/v1/tenants/acme", tenant_doc(&receiver)).await.0, 201);
    let out = plane.dir.path().join("exported");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .args(["--admin", &plane.node.admin_url(), "--token", TOKEN])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let (ok, printed) = run(&["tenants", "export", "--dir", out.to_str().unwrap()], &[]);
    assert!(ok, "{printed}");
    let file = out.join("acme.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("SWITCHBOARD_SECRET_ACME_CRM") && !text.contains(CRM_SECRET), "{text}");

    // The exported file is a tenant file: `switchboard check` takes it as it is.
    let dir = tempfile::tempdir().unwrap();
    let main = write_config(dir.path(), "", "", &[&text.replace("id = 'acme'", "id = 'acme-file'")]);
    let check = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&main)
        .env("SWITCHBOARD_SECRET_ACME_CRM", "v")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // Imported as another tenant, with the secret read from the environment here.
    std::fs::write(&file, text.replace("id = 'acme'", "id = 'initech'")).unwrap();
    let (ok, printed) =
        run(&["tenants", "import", file.to_str().unwrap()], &[("SWITCHBOARD_SECRET_ACME_CRM", "imported-secret")]);
    assert!(ok, "{printed}");
    assert!(printed.contains("tenant initech: version 1"), "{printed}");
    assert_eq!(plane.callback("initech", "imported").await.status(), 200);
    receiver
        .wait_until(Duration::from_secs(10), "the imported tenant's delivery", |r| {
            r.iter().any(|c| c.header("authorization") == Some("Bearer imported-secret"))
        })
        .await;
    let (ok, printed) = run(&["tenants", "import", file.to_str().unwrap()], &[]);
    assert!(!ok && printed.contains("SWITCHBOARD_SECRET_ACME_CRM is not set"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_serves_on_every_node_of_the_shared_store() {
    let Some(url) = database().await else { return };
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", &format!("url = \"{url}\"\npool_size = 4\n{}", admin_section()), &[]);
    let (a, b) = (Serve::start_env(&config, &ENV).await, Serve::start_env(&config, &ENV).await);
    let http = client();
    let tenant = format!("t{}", uuid::Uuid::now_v7().simple());
    let path = format!("/v1/tenants/{tenant}");
    let (status, _) = call(&http, &a, Method::PUT, &path, TOKEN, Some(tenant_doc(&receiver)), None).await;
    assert_eq!(status, 201);
    let until = |what: &'static str, expected: u16, call: String| {
        let (http, b) = (&http, &b);
        let tenant = tenant.clone();
        async move {
            let started = std::time::Instant::now();
            loop {
                let status = callback(http, b, &tenant, &call).await.status();
                if status == expected {
                    return started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(5), "{what}: node b still answers {status}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let created = until("creation", 200, "c1".into()).await;
    receiver
        .wait_until(Duration::from_secs(10), "node b's delivery with the sealed secret", |r| {
            r.iter().any(|c| c.header("authorization") == Some(format!("Bearer {CRM_SECRET}").as_str()))
        })
        .await;
    let (status, _) = call(&http, &a, Method::DELETE, &path, TOKEN, None, None).await;
    assert_eq!(status, 204);
    let deleted = until("deletion", 404, "c2".into()).await;
    eprintln!("propagation to the other node: created in {created:?}, deleted in {deleted:?}");
}

/// A destination removed on one node: the other routes with its old tables until it follows
/// the catalog, and a callback it takes meanwhile commits a delivery after the removal has
/// cancelled the pending ones. Once that node has followed and its requests are done, that
/// delivery is cancelled too, not left pending with no worker to send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_committed_on_another_node_during_a_removal_is_cancelled_too() {
    let Some(url) = database().await else { return };
    let receiver = Receiver::start().await;
    // The helpdesk fails and waits an hour before trying again: its deliveries stay pending.
    receiver.reply_with(|r, _| if r.path() == "/helpdesk" { Reply::status(503) } else { Reply::status(200) });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", &format!("url = \"{url}\"\npool_size = 4\n{}", admin_section()), &[]);
    let (a, b) = (Serve::start_env(&config, &ENV).await, Serve::start_env(&config, &ENV).await);
    let http = client();
    let tenant = format!("t{}", uuid::Uuid::now_v7().simple());
    let path = format!("/v1/tenants/{tenant}");
    assert_eq!(call(&http, &a, Method::PUT, &path, TOKEN, Some(tenant_doc(&receiver)), None).await.0, 201);
    let helpdesk = format!("{path}/destinations/helpdesk");
    // Whether node b routes to the destination `id` of the tenant, once it says `expected`.
    let on_b = |id: &'static str, expected: bool| {
        let (http, b, path) = (&http, &b, format!("/v1/destinations?tenant={tenant}"));
        async move {
            let started = std::time::Instant::now();
            loop {
                let listed = call(http, b, Method::GET, &path, TOKEN, None, None).await.1;
                if listed.to_string().contains(&format!("/{id}\"")) == expected {
                    return started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(5), "node b never followed: {listed}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    on_b("crm", true).await;

    // Node b takes callbacks, one after another, for the whole test.
    let stop = tokio_util::sync::CancellationToken::new();
    let sender = callbacks_until(&http, &b, &tenant, stop.clone());
    // Add the helpdesk, let node b fail a few deliveries to it, remove it on node a. The
    // window between the removal and node b's following it is the catalog's poll interval
    // at most: a round where no callback fell in it is tried again.
    let mut windows = Vec::new();
    for _ in 0..3 {
        let added = jiff::Timestamp::now();
        let destination =
            json!({ "url": receiver.url("/helpdesk"), "retry": { "initial_backoff": "1h", "max_backoff": "1h" } });
        assert!(matches!(call(&http, &a, Method::PUT, &helpdesk, TOKEN, Some(destination), None).await.0, 200 | 201));
        on_b("helpdesk", true).await;
        let before = receiver.requests().iter().filter(|c| c.path() == "/helpdesk").count();
        receiver
            .wait_until(Duration::from_secs(10), "node b's helpdesk attempts", |r| {
                r.iter().filter(|c| c.path() == "/helpdesk").count() >= before + 3
            })
            .await;
        assert_eq!(call(&http, &a, Method::DELETE, &helpdesk, TOKEN, None, None).await.0, 204);
        let removed = jiff::Timestamp::now();
        let followed = on_b("helpdesk", false).await;
        eprintln!("node b followed the removal in {followed:?}");
        windows.push((added, removed, jiff::Timestamp::now()));
        if followed > Duration::from_millis(20) {
            break;
        }
    }
    stop.cancel();
    let sent = sender.await.unwrap();

    let listed = |state: &'static str| {
        let path = format!("/v1/deliveries?tenant={tenant}&destination=helpdesk&state={state}&limit=1000");
        let (http, a) = (&http, &a);
        async move { call(http, a, Method::GET, &path, TOKEN, None, None).await.1["deliveries"].as_array().unwrap().clone() }
    };
    let started = std::time::Instant::now();
    loop {
        let pending = listed("pending").await.len();
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{pending} helpdesk deliveries stay pending after the helpdesk was removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = listed("cancelled").await;
    assert_eq!(listed("delivered").await, Vec::<Value>::new(), "the helpdesk answers 503 only");
    assert!(cancelled.len() <= sent, "{} cancelled of {sent} callbacks", cancelled.len());
    // The case this test is about: deliveries committed after a removal had returned, while
    // node b still routed to the helpdesk, which that removal's own cancellation missed.
    let late = cancelled
        .iter()
        .filter(|d| {
            let at = d["created_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
            windows.iter().any(|&(_, removed, followed)| removed < at && at <= followed)
        })
        .count();
    assert!(late > 0, "no callback reached node b between a removal and its following it: {windows:?}");
    eprintln!("{} helpdesk deliveries cancelled ({sent} callbacks), {late} committed after a removal", cancelled.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_secret_rotates_with_two_values_valid_at_once() {
    let receiver = Receiver::start().await;
    let plane = Plane::start("", &[]).await;
    let mut doc = tenant_doc(&receiver);
    doc["source"][0]["auth"] = json!([{ "scheme": "token", "header": "X-Token", "secret": "inbound-1" }]);
    doc["secrets"]["inbound-1"] = json!({ "value": "first-token" });
    assert_eq!(plane.put("/v1/tenants/acme", doc.clone()).await.0, 201);
    let send = |token: &'static str| {
        let (http, node) = (&plane.http, &plane.node);
        async move {
            let body = String::from_utf8(seed("telecmi.json")).unwrap();
            let request = http.post(node.hook("acme", "telecmi")).header("content-type", "application/json");
            request.header("x-token", token).body(body).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!((send("first-token").await, send("second-token").await), (200, 401));
    // Rotation: the new value beside the old, both accepted while the provider switches.
    assert_eq!(plane.put("/v1/tenants/acme/secrets/inbound-2", json!({ "value": "second-token" })).await.0, 201);
    let mut source = doc["source"][0].clone();
    source["auth"][0]["secret"] = json!(["inbound-1", "inbound-2"]);
    assert_eq!(plane.put("/v1/tenants/acme/sources/telecmi", source.clone()).await.0, 200);
    assert_eq!((send("first-token").await, send("second-token").await), (200, 200));
    // Then the old one is dropped from the source, and can be deleted.
    source["auth"][0]["secret"] = json!("inbound-2");
    assert_eq!(plane.put("/v1/tenants/acme/sources/telecmi", source).await.0, 200);
    assert_eq!(plane.delete("/v1/tenants/acme/secrets/inbound-1").await.0, 204);
    assert_eq!((send("first-token").await, send("second-token").await), (401, 200));
    assert_eq!(plane.get("/v1/tenants/acme/secrets").await.1["secrets"], json!(["crm", "inbound-2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_opens_nothing_once_its_tenant_is_gone_and_the_playground_renders_signed_destinations() {
    let receiver = Receiver::start().await;
    let file = format!(
        "id = \"filed\"\n[[source]]\nid = \"telecmi\"\nprovider = \"telecmi\"\nauth = [{{ scheme = \"none\" }}]\n[[destination]]\nid = \"crm\"\nurl = \"{}\"\n",
        receiver.url("/crm")
    );
    let plane = Plane::start("", &[&file]).await;
    let (_, key) = plane.call(Method::POST, "/v1/tenants/filed/keys", TOKEN, None).await;
    let key = key["token"].as_str().unwrap().to_string();
    assert_eq!(plane.call(Method::GET, "/v1/events", &key, None).await.0, 200);
    // The file goes; a tenant of the same id made later must not inherit the key.
    for entry in std::fs::read_dir(plane.dir.path().join("tenants")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_eq!(plane.call(Method::POST, "/v1/reload", TOKEN, None).await.0, 200);
    assert_eq!(plane.call(Method::GET, "/v1/events", &key, None).await.0, 401);

    // A destination signed with a secret renders in the playground (the mask is a key too).
    let mut doc = tenant_doc(&receiver);
    doc["destination"][0]["signing_secret"] = json!("signing");
    doc["secrets"]["signing"] = json!({ "value": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" });
    assert_eq!(plane.put("/v1/tenants/acme", doc).await.0, 201);
    let render = json!({ "destination_id": "crm", "body": String::from_utf8(seed("telecmi.json")).unwrap() });
    let (status, preview) = plane.call(Method::POST, "/v1/tenants/acme/render", TOKEN, Some(render)).await;
    assert_eq!(status, 200, "{preview}");
    let headers = preview["headers"].to_string();
    assert!(headers.contains("webhook-signature") && headers.contains("‹masked›"), "{headers}");
    assert!(!preview.to_string().contains(CRM_SECRET) && !preview.to_string().contains("MfKQ9r8"), "{preview}");
}
