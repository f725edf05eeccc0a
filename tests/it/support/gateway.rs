//! The real gateway, in process: config files written to a temp dir and loaded by the
//! real loader, a real SQLite file, listeners on 127.0.0.1:0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchboard::store::{DeliveryRecord, DeliveryState, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use uuid::Uuid;

pub struct Gateway {
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    pub store: Arc<dyn Store>,
    _dir: TempDir,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Writes `switchboard.toml` (the `[server]` table gets `server_extra` lines) and one file
/// per tenant into `dir`; returns the main file's path.
pub fn write_config(dir: &Path, server_extra: &str, store_extra: &str, tenants: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir.join("tenants")).unwrap();
    let main = dir.join("switchboard.toml");
    // Every receiver in the tests is on loopback; the SSRF tests set this themselves.
    let allow =
        if server_extra.contains("allow_private_destinations") { "" } else { "allow_private_destinations = true" };
    // A store_extra naming its own url (a PostgreSQL database) replaces the SQLite file.
    let url = if store_extra.contains("url =") { "" } else { "url = \"sqlite://data/switchboard.db\"" };
    std::fs::write(
        &main,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{allow}\n{server_extra}\n\n[store]\n{url}\n{store_extra}\n"
        ),
    )
    .unwrap();
    for (i, tenant) in tenants.iter().enumerate() {
        std::fs::write(dir.join(format!("tenants/t{i}.toml")), tenant).unwrap();
    }
    main
}

/// An HTTP client for tests: loopback is where every test server lives, and a redirect is
/// an answer to look at, not to follow.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

impl Gateway {
    pub async fn start(server_extra: &str, tenants: &[&str]) -> Self {
        Self::start_with(server_extra, "", tenants).await
    }

    pub async fn start_with(server_extra: &str, store_extra: &str, tenants: &[&str]) -> Self {
        Self::start_env(server_extra, store_extra, tenants, &[]).await
    }

    /// As `start_with`, with `env` as the whole environment `{ env = "…" }` secrets read.
    pub async fn start_env(server_extra: &str, store_extra: &str, tenants: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let main = write_config(dir.path(), server_extra, store_extra, tenants);
        let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let config = Arc::new(switchboard::config::load_with_env(&main, &lookup).unwrap_or_else(|e| panic!("{e}")));
        let store = switchboard::open_store(&config, "test-node").await.unwrap();
        let ingest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (ingest_addr, admin_addr) = (ingest.local_addr().unwrap(), admin.local_addr().unwrap());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let listeners = switchboard::Listeners { ingest, admin };
        let task = tokio::spawn({
            let store = store.clone();
            async move {
                switchboard::run(config, store, listeners, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        Self {
            ingest: ingest_addr,
            admin: admin_addr,
            store,
            _dir: dir,
            client: client(),
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    pub fn hook(&self, tenant: &str, source: &str) -> String {
        format!("http://{}/v1/hooks/{tenant}/{source}", self.ingest)
    }

    /// POSTs `body` with `content_type` to the hook and returns the response.
    pub async fn post(
        &self,
        tenant: &str,
        source: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.hook(tenant, source))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs and expects the event to be accepted; returns its id.
    pub async fn accept(&self, tenant: &str, source: &str, content_type: &str, body: impl Into<reqwest::Body>) -> Uuid {
        let response = self.post(tenant, source, content_type, body).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        response.headers()["x-switchboard-event-id"].to_str().unwrap().parse().unwrap()
    }

    /// Waits until every delivery of `event` is in a final state (delivered or dead).
    pub async fn settled(&self, event: Uuid, within: Duration) -> Vec<DeliveryRecord> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let deliveries = self.store.deliveries_of(event).await.unwrap();
            if !deliveries.is_empty() && deliveries.iter().all(|d| d.state != DeliveryState::Pending) {
                return deliveries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "event {event} not settled within {within:?}: {deliveries:#?}"
            );
            // Polls the store: there is no notification for "this delivery reached a final state".
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("gateway stopped in time").unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
