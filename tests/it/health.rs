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
