//! Switchboard: a webhook relay and fan-out gateway for telephony callbacks.
//!
//! The modules follow the data flow: `ingest` (receive, authenticate, rate-limit, commit,
//! answer) → `normalize` (one call-event shape) → `fanout` (one delivery per matching
//! destination) → `store` (the durable queue) → `deliver` (claim, render the `template`,
//! send, decide, retry or dead-letter). `config` is parsed once per load; `admin` serves
//! health, metrics and the operator API; `server` is the accept loop they share.

// One module may use `unsafe`: `store::sqlite::alloc`, which hands SQLite the process's
// allocator through its C configuration call.
#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod control;
pub mod deliver;
pub mod fanout;
pub mod ingest;
pub mod metrics;
pub mod normalize;
pub mod server;
pub mod sink;
pub mod store;
pub mod tail;
pub mod telemetry;
pub mod template;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::{Backend, Config};
use deliver::Dispatcher;
use store::{PgStore, SqliteStore, Store, StoreError};

/// Once the drain time is over, in-flight deliveries get this long to hand their leases back.
const RELEASE_GRACE: Duration = Duration::from_secs(5);
/// Retention deletes at most this many deliveries per store transaction.
const PURGE_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] deliver::client::SetupError),
    #[error("cannot read paused destinations: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Catalog(String),
}

pub struct Listeners {
    pub ingest: TcpListener,
    pub admin: TcpListener,
}

/// Opens the store the config names. `node` identifies this process in leases.
pub async fn open_store(config: &Config, node: &str) -> Result<Arc<dyn Store>, StoreError> {
    match &config.store.backend {
        Backend::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path, &config.store, node)?)),
        Backend::Postgres { config, pool_size } => Ok(Arc::new(PgStore::open(config, *pool_size, node).await?)),
    }
}

/// The running gateway, as the admin API and reloads see it.
pub struct Gateway {
    config: ArcSwap<Config>,
    pub store: Arc<dyn Store>,
    ingest: Arc<ingest::Ingest>,
    dispatcher: Arc<Dispatcher>,
    /// What this node serves of the tenant catalog; held while tenants are swapped, so
    /// reloads and catalog changes take turns.
    catalog: tokio::sync::Mutex<control::Applied>,
    sealer: Option<Arc<control::seal::Sealer>>,
    /// The queue gauges of `/metrics`, read from the store at most every few seconds.
    pub queue_figures: metrics::QueueFigures,
    pub tail: Arc<tail::Tail>,
}

/// What a reload did.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    pub tenants: usize,
    pub destinations: deliver::Applied,
    /// Removed destinations that still have pending deliveries: kept, not deleted.
    pub orphaned: Vec<Orphaned>,
}

#[derive(Debug, serde::Serialize)]
pub struct Orphaned {
    pub destination: String,
    pub pending: u64,
}

impl Gateway {
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Loads and validates the config file again; if valid, it replaces the running one for
    /// the next callbacks and deliveries. If not, the running config stays.
    pub async fn reload(&self) -> Result<Reloaded, config::ConfigErrors> {
        let _one_at_a_time = self.catalog.lock().await;
        let current = self.config.load_full();
        let path = current.path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .unwrap_or_else(|e| Err(config::ConfigErrors(vec![config::ConfigError::task_failed(e.to_string())])))?;
        // Tenants of the API stay as they are; a file may not take one's id.
        let mut tenants = loaded.tenants.clone();
        let mut clashes = Vec::new();
        for (id, tenant) in current.tenants.iter().filter(|(_, t)| matches!(t.origin, config::Origin::Api { .. })) {
            match loaded.tenants.get(id).map(|t| &t.origin) {
                Some(config::Origin::File(file)) => clashes.push(config::ConfigError {
                    file: file.clone(),
                    position: None,
                    offset: None,
                    message: format!(
                        "tenant {id:?} is managed through the API; delete it there first, or use another id"
                    ),
                }),
                _ => {
                    tenants.insert(id.clone(), tenant.clone());
                }
            }
        }
        if !clashes.is_empty() {
            return Err(config::ConfigErrors(clashes));
        }
        if loaded.metrics_detail != current.metrics_detail {
            tracing::warn!("[metrics] detail changes at the next start; the series keep their labels until then");
        }
        let config = Arc::new(loaded.with_tenants(tenants));
        self.ingest.swap(config.clone());
        let applied = self.dispatcher.apply(&config);
        self.config.store(config.clone());
        let stats = self.store.queue_stats().await.unwrap_or_default();
        let waiting = stats.waiting();
        let orphaned = applied
            .removed
            .iter()
            .filter_map(|name| {
                let (tenant, destination) = name.split_once('/')?;
                let pending = waiting.get(&(tenant, destination))?.0;
                Some(Orphaned { destination: name.clone(), pending })
            })
            .collect();
        let reloaded = Reloaded { tenants: config.tenants.len(), destinations: applied, orphaned };
        tracing::info!(tenants = reloaded.tenants, removed = ?reloaded.destinations.removed, "configuration reloaded");
        Ok(reloaded)
    }
}

/// Runs the gateway until `shutdown` completes, then: stops accepting, drains connections,
/// stops claiming deliveries, lets in-flight attempts finish within the drain time, gives
/// the rest back to the queue, and flushes the store. SIGHUP reloads the config.
pub async fn run(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    metrics::install();
    metrics::set_detail(config.metrics_detail);
    let sealer = config.secrets_key.as_ref().map(|k| Arc::new(control::seal::Sealer::new(k)));
    let (config, applied) =
        control::load(store.as_ref(), &config, sealer.as_deref()).await.map_err(RunError::Catalog)?;
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let guard = Arc::new(deliver::ssrf::Guard::from_config(&config.server));
    let client = deliver::Client::new(guard.clone())?;
    let paused = store.paused().await?;
    // Only destinations with pending deliveries start a worker now; the others at their
    // first delivery (ten thousand idle destinations cost no task and no claim).
    let busy: std::collections::HashSet<(String, String)> =
        store.queue_stats().await?.per_destination.into_iter().map(|(t, d, ..)| (t, d)).collect();
    let busy = |t: &str, d: &str| busy.contains(&(t.to_string(), d.to_string()));
    let tail = Arc::new(tail::Tail::new(stop.clone()));
    let dispatcher =
        Dispatcher::new(store.clone(), client, guard, &tracker, (stop.clone(), abort.clone()), tail.clone());
    dispatcher.apply_starting(&config, &busy);
    for (tenant, destination) in &paused {
        dispatcher.set_paused(tenant, destination, true);
    }
    let ingest =
        Arc::new(ingest::Ingest::new(config.clone(), store.clone(), dispatcher.clone(), tracker.clone(), tail.clone()));
    let gateway = Arc::new(Gateway {
        config: ArcSwap::new(config.clone()),
        store: store.clone(),
        ingest: ingest.clone(),
        dispatcher,
        catalog: tokio::sync::Mutex::new(applied),
        sealer,
        queue_figures: metrics::QueueFigures::default(),
        tail,
    });

    let limits = server::Limits::from(&config.server);
    let servers = TaskTracker::new();
    servers.spawn(server::serve(listeners.ingest, limits, stop.clone(), move |request, peer| {
        ingest.clone().handle(request, peer)
    }));
    let admin = gateway.clone();
    servers.spawn(server::serve(listeners.admin, limits, stop.clone(), move |request, _peer| {
        admin::handle(admin.clone(), request)
    }));
    tracker.spawn(retention(gateway.clone(), stop.clone()));
    tracker.spawn(metrics::upkeep(stop.clone()));
    tracker.spawn(reload_on_hangup(gateway.clone(), stop.clone()));
    tracker.spawn(control::follow(gateway.clone(), stop.clone()));

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
        tracing::warn!("deliveries still in flight after the drain timeout; returning them to the queue");
        abort.cancel();
        let _ = tokio::time::timeout(RELEASE_GRACE, tracker.wait()).await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn reload_on_hangup(gateway: Arc<Gateway>, stop: CancellationToken) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hangups.recv() => {
                if let Err(errors) = gateway.reload().await {
                    tracing::error!(%errors, "configuration not reloaded; the running one stays");
                }
            }
        }
    }
}

/// Purges finished deliveries past their retention, in small batches so ingest never waits
/// behind a long delete.
async fn retention(gateway: Arc<Gateway>, stop: CancellationToken) {
    loop {
        let config = gateway.config();
        let every = config.store.retention.min(config.store.dead_retention).min(Duration::from_secs(60));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = store::now_ms();
        let delivered_before = now - config.store.retention.as_millis() as i64;
        let dead_before = now - config.store.dead_retention.as_millis() as i64;
        loop {
            match gateway.store.purge(delivered_before, dead_before, PURGE_BATCH).await {
                Ok(purged) if purged > 0 && !stop.is_cancelled() => {
                    tracing::debug!(purged, "retention");
                    tokio::task::yield_now().await;
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge failed; will try again");
                    break;
                }
            }
        }
    }
}
