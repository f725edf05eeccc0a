//! Switchboard: a webhook relay and fan-out gateway for telephony callbacks.
//!
//! The modules follow the data flow: `ingest` (receive, check, commit, answer) → `fanout`
//! (one delivery per destination) → `store` (the durable queue) → `deliver` (claim, send,
//! decide, retry or dead-letter). `config` is parsed once at start; `admin` serves health;
//! `server` is the accept loop they share.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod deliver;
pub mod fanout;
pub mod ingest;
pub mod normalize;
pub mod server;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod template;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::{Backend, Config};
use store::{SqliteStore, Store, StoreError};

/// Once the drain time is over, in-flight deliveries get this long to hand their leases back.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

pub struct Listeners {
    pub ingest: TcpListener,
    pub admin: TcpListener,
}

/// Opens the store the config names. `node` identifies this process in leases.
pub fn open_store(config: &Config, node: &str) -> Result<Arc<dyn Store>, StoreError> {
    match &config.store.backend {
        Backend::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path, &config.store, node)?)),
    }
}

/// Runs the gateway until `shutdown` completes, then: stops accepting, drains connections,
/// stops claiming deliveries, lets in-flight attempts finish within the drain time, gives
/// the rest back to the queue, and flushes the store.
pub async fn run(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let guard = Arc::new(deliver::ssrf::Guard::from_config(&config.server));
    let client = deliver::client(guard.clone())?;
    let wakers = deliver::start(
        &config,
        store.clone(),
        client,
        guard,
        &tracker,
        stop.clone(),
        abort.clone(),
    );

    let limits = server::Limits::from(&config.server);
    let ingest = Arc::new(ingest::Ingest::new(config.clone(), store.clone(), wakers));
    let servers = TaskTracker::new();
    servers.spawn(server::serve(
        listeners.ingest,
        limits,
        stop.clone(),
        move |request, peer| ingest.clone().handle(request, peer),
    ));
    let admin_store = store.clone();
    servers.spawn(server::serve(
        listeners.admin,
        limits,
        stop.clone(),
        move |request, _peer| admin::handle(admin_store.clone(), request),
    ));

    shutdown.await;
    tracing::info!("shutting down");
    stop.cancel();
    servers.close();
    tracker.close();
    let drain = config.server.drain_timeout;
    let drained = tokio::time::timeout(drain, async {
        servers.wait().await;
        tracker.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "deliveries still in flight after the drain timeout; returning them to the queue"
        );
        abort.cancel();
        let _ = tokio::time::timeout(RELEASE_GRACE, tracker.wait()).await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
