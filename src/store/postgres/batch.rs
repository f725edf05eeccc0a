//! The batching loop both PostgreSQL writers share: callers queue work; the loop takes
//! whatever is queued (up to a maximum) and hands it to `write` as one batch. The next
//! batch fills while one is in flight, and takes everything queued when it ends.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Batches in flight at once, each on its own pooled connection. One: a batch grows with
/// what queued behind the one in flight, so a second one in flight adds no throughput. It
/// only splits the same events into more transactions, each with its own WAL flush, and
/// spends database CPU that another node sharing the database needs (BENCHMARKS.md,
/// "PostgreSQL: fewer, larger transactions").
const CONCURRENT_BATCHES: usize = 1;

/// Runs until `stop`, then hands over what was queued before it and waits for the batches
/// in flight: `write` answers everyone in its batch, so nobody queued is left waiting.
pub async fn run<T, F, Fut>(mut rx: mpsc::Receiver<T>, max: usize, stop: CancellationToken, write: F)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(CONCURRENT_BATCHES));
    let batches = TaskTracker::new();
    while let Ok(slot) = slots.clone().acquire_owned().await {
        let first = tokio::select! {
            first = rx.recv() => first,
            () = stop.cancelled(), if !rx.is_closed() => {
                // New work is refused from here on; what is queued still gets written.
                rx.close();
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < max {
            match rx.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        let written = write(batch);
        batches.spawn(async move {
            written.await;
            drop(slot);
        });
    }
    batches.close();
    batches.wait().await;
}
