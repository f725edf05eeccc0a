//! /healthz answers while the process runs; /readyz only while the store answers.

use crate::support::Gateway;

#[tokio::test]
async fn health_and_readiness() {
    let gateway = Gateway::start("", &["id = \"acme\"\n"]).await;
    let get = |path: &str| gateway.client.get(format!("http://{}{path}", gateway.admin)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let missing = get("/nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<serde_json::Value>().await.unwrap()["error"]["code"], "not_found");

    gateway.store.close().await;
    let not_ready = get("/readyz").await.unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.headers().contains_key("retry-after"));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    gateway.stop().await;
}

/// Queue gauges come from figures read at most every `QUEUE_FIGURES_MAX_AGE`: scrapes in
/// between (a Prometheus every second, a dashboard refreshing) do not each count the whole
/// deliveries table. A new pending delivery shows up only once the figures are read again.
#[tokio::test]
async fn scrapes_do_not_each_count_the_queue() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n\
         [[destination]]\nid = \"crm\"\nurl = \"http://{closed}/\"\nretry = {{ initial_backoff = \"1h\", max_backoff = \"1h\" }}\n"
    );
    let gateway = Gateway::start("", &[&tenant]).await;
    let scrape = || async {
        let text = gateway.client.get(format!("http://{}/metrics", gateway.admin)).send().await.unwrap().text().await;
        let text = text.unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("switchboard_pending_deliveries{") && l.contains("destination=\"crm\""))
            .unwrap_or_else(|| panic!("no pending gauge for crm in:\n{text}"))
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    assert_eq!(scrape().await, 0.0);
    gateway.accept("acme", "s", "application/json", "{}").await;
    for _ in 0..20 {
        assert_eq!(scrape().await, 0.0, "the queue was counted again within the figures' age");
    }
    gateway.stop().await;
}
