//! Delivery: one worker per destination claims due deliveries from the store (leased, so a
//! crash or another node can take them over) and sends them, at most `max_in_flight` at
//! once per destination. A slow or broken destination only ever fills its own slots.
//!
//! After the commit the queue owns retries: attempt counts and next-attempt times live in
//! the store, so a crash loses no schedule. Workers sleep until the next due time, a wake
//! from ingest, or `IDLE_POLL` (for work another node queued).

mod attempt;
pub mod outcome;
pub mod preview;
pub mod ssrf;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use attempt::{RESPONSE_PREFIX, client};
use outcome::Outcome;

use crate::config::{Config, Destination, Source, Tenant};
use crate::store::{ClaimRequest, ClaimedDelivery, Completion, Next, Store, now_ms};

const CLAIM_BATCH: usize = 128;
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Ingest's handle on the workers: wakes a destination's worker when work was queued for it.
#[derive(Clone, Default)]
pub struct Wakers {
    /// Per tenant, aligned with the tenant's `destinations`.
    by_tenant: Arc<HashMap<String, Vec<Arc<Notify>>>>,
}

impl Wakers {
    pub fn wake(&self, tenant: &Tenant, source: &Source) {
        if let Some(wakers) = self.by_tenant.get(&tenant.id) {
            for &i in &source.destinations {
                wakers[i].notify_one();
            }
        }
    }
}

struct Shared {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    guard: Arc<ssrf::Guard>,
    tracker: TaskTracker,
    /// Stop claiming new work.
    stop: CancellationToken,
    /// The drain time is over: give in-flight deliveries back to the queue.
    abort: CancellationToken,
}

/// Starts a worker per destination on `tracker`; returns the handle ingest wakes them with.
pub fn start(
    config: &Config,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    guard: Arc<ssrf::Guard>,
    tracker: &TaskTracker,
    stop: CancellationToken,
    abort: CancellationToken,
) -> Wakers {
    let shared = Arc::new(Shared {
        store,
        client,
        guard,
        tracker: tracker.clone(),
        stop,
        abort,
    });
    let mut by_tenant = HashMap::new();
    for tenant in config.tenants.values() {
        let wakers: Vec<Arc<Notify>> = tenant
            .destinations
            .iter()
            .map(|_| Arc::new(Notify::new()))
            .collect();
        for (destination, wake) in tenant.destinations.iter().zip(&wakers) {
            tracker.spawn(worker(shared.clone(), destination.clone(), wake.clone()));
        }
        by_tenant.insert(tenant.id.clone(), wakers);
    }
    Wakers {
        by_tenant: Arc::new(by_tenant),
    }
}

async fn worker(shared: Arc<Shared>, destination: Arc<Destination>, wake: Arc<Notify>) {
    let slots = Arc::new(Semaphore::new(destination.max_in_flight));
    // A lease outlives the attempt's own timeout by a wide margin, so only a dead process
    // ever lets one expire.
    let lease = destination.timeout * 2 + Duration::from_secs(30);
    // Pacing happens before the claim: a delivery waiting for its turn stays in the queue,
    // unleased, rather than in memory.
    let pacer = destination.rate_limit.map(|r| r.limiter());
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let mut allowance = (slots.available_permits() + 1).min(CLAIM_BATCH);
        if let Some(pacer) = &pacer {
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                _ = pacer.until_ready() => {}
            }
            let mut granted = 1;
            while granted < allowance && pacer.check().is_ok() {
                granted += 1;
            }
            allowance = granted;
        }
        let request = ClaimRequest {
            tenant: destination.tenant.clone(),
            destination: destination.id.clone(),
            limit: allowance,
            lease,
        };
        let claim = match shared.store.claim(request).await {
            Ok(claim) => {
                failures = 0;
                claim
            }
            Err(e) => {
                drop(first);
                failures += 1;
                tracing::warn!(tenant = %destination.tenant, destination = %destination.id, error = %e, "claim failed");
                let pause = Duration::from_millis(100 << failures.min(6));
                tokio::select! { _ = shared.stop.cancelled() => break, _ = tokio::time::sleep(pause) => continue }
            }
        };
        if claim.deliveries.is_empty() {
            drop(first);
            let until_due = claim.next_due.map_or(IDLE_POLL, |due| {
                Duration::from_millis(due.saturating_sub(now_ms()).max(1) as u64)
            });
            tokio::select! {
                _ = shared.stop.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(until_due.min(IDLE_POLL)) => {}
            }
            continue;
        }
        let mut first = Some(first);
        for delivery in claim.deliveries {
            let slot = match first.take() {
                Some(slot) => slot,
                // Only this loop takes slots, and it claimed no more than were free.
                None => slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            };
            shared.tracker.spawn(deliver(
                shared.clone(),
                destination.clone(),
                delivery,
                slot,
                wake.clone(),
            ));
        }
    }
}

async fn deliver(
    shared: Arc<Shared>,
    destination: Arc<Destination>,
    delivery: ClaimedDelivery,
    _slot: OwnedSemaphorePermit,
    wake: Arc<Notify>,
) {
    let span = tracing::info_span!(
        "attempt",
        tenant = %destination.tenant,
        destination = %destination.id,
        event_id = %delivery.event_id,
        attempt = delivery.attempt,
    );
    async move {
        let sent = tokio::select! {
            sent = attempt::send(&shared.client, &shared.guard, &destination, &delivery) => sent,
            _ = shared.abort.cancelled() => {
                if let Err(e) = shared.store.release(delivery.id, delivery.lease).await {
                    tracing::warn!(error = %e, "could not release the delivery; it resumes when its lease expires");
                }
                return;
            }
        };
        let now = now_ms();
        let outcome = outcome::decide(&destination, &sent.record, sent.retry_after, sent.permanent, delivery.attempt, now, delivery.created_at);
        let summary = sent.record.summary();
        let latency_ms = sent.record.latency.as_secs_f64() * 1000.0;
        let next = match outcome {
            Outcome::Delivered => {
                tracing::debug!(result = %summary, latency_ms, "delivered");
                Next::Delivered
            }
            Outcome::Retry { after } => {
                tracing::info!(result = %summary, latency_ms, retry_in_ms = after.as_millis() as u64, "attempt failed; will retry");
                Next::Retry { at: now + after.as_millis() as i64 }
            }
            Outcome::Dead { reason } => {
                tracing::warn!(result = %summary, %reason, "delivery is dead");
                Next::Dead { reason }
            }
        };
        let retry = matches!(next, Next::Retry { .. });
        let completion = Completion { delivery: delivery.id, lease: delivery.lease, attempt: sent.record, next };
        match shared.store.complete(completion).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("lease lost before the result was recorded; the new holder decides"),
            Err(e) => tracing::error!(error = %e, "could not record the attempt; the delivery resumes when its lease expires"),
        }
        if retry {
            // The worker may be asleep until a later time; let it see the new due time.
            wake.notify_one();
        }
    }
    .instrument(span)
    .await
}
