//! The live tail: events as they are committed and attempts as they finish, for whoever
//! watches (`GET /v1/tail`, the console's Live page) — for watching a provider integration
//! go live. Nothing is built or sent while no one watches; a watcher that falls behind
//! is told how many items it missed rather than holding the others back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::server::Streamed;

/// Items buffered for watchers; one further behind skips ahead.
const BUFFER: usize = 1024;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    Event {
        tenant: String,
        source: String,
        event_id: Uuid,
        call_id: Option<String>,
        at: String,
    },
    Attempt {
        tenant: String,
        destination: String,
        event_id: Uuid,
        attempt: u32,
        /// `HTTP 200`, `timeout`, …
        result: String,
        latency_ms: f64,
        /// delivered, retry or dead.
        next: &'static str,
        at: String,
    },
}

impl Item {
    fn tenant(&self) -> &str {
        match self {
            Item::Event { tenant, .. } | Item::Attempt { tenant, .. } => tenant,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Item::Event { .. } => "event",
            Item::Attempt { .. } => "attempt",
        }
    }
}

pub struct Tail {
    sender: broadcast::Sender<Arc<Item>>,
    stop: CancellationToken,
}

impl Tail {
    /// Streams end when `stop` is cancelled (a shutdown does not wait on watchers).
    pub fn new(stop: CancellationToken) -> Self {
        Self { sender: broadcast::channel(BUFFER).0, stop }
    }

    /// Whether anyone watches: callers build an item only then.
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, item: Item) {
        let _ = self.sender.send(Arc::new(item));
    }

    /// Server-sent events of `tenant`'s items (every tenant's when `None`).
    pub fn stream(&self, tenant: Option<String>) -> Streamed {
        let mut items = self.sender.subscribe();
        let (out, body) = mpsc::channel::<Bytes>(64);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            loop {
                let chunk = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = out.closed() => break,
                    _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                    item = items.recv() => match item {
                        Ok(item) if tenant.as_deref().is_none_or(|t| t == item.tenant()) => {
                            let data = serde_json::to_string(&*item).unwrap_or_default();
                            Bytes::from(format!("event: {}\ndata: {data}\n\n", item.kind()))
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            Bytes::from(format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n"))
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                };
                if out.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        Streamed(body)
    }
}
