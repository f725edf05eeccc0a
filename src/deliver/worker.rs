//! One destination's worker: take a free slot, pace, claim due deliveries up to the free
//! slots, send each on its own task, and sleep until the next due time or a wake.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::breaker::{Circuit, Permit, Signal, Transition};
use super::outcome::{self, Outcome};
use super::{Handle, Shared, attempt};
use crate::config::Destination;
use crate::metrics;
use crate::store::{AttemptRecord, ClaimRequest, ClaimedDelivery, Completion, Next, now_ms};

const CLAIM_BATCH: usize = 128;

pub async fn run(shared: Arc<Shared>, handle: Arc<Handle>) {
    let built_with = handle.destination.load_full();
    // A slot is held from the claim until the result is recorded; a sending permit only for
    // the request itself. Recording is batched with other completions and takes a while, so
    // the next requests go out meanwhile: up to `max_in_flight` requests at once, and as many
    // more deliveries claimed while their results are being recorded.
    let capacity = built_with.max_in_flight * 2;
    let slots = Arc::new(Semaphore::new(capacity));
    let sending = Arc::new(Semaphore::new(built_with.max_in_flight));
    // A paced destination claims at most its burst at once and each send waits for its
    // token: a paced drain costs one claim per burst rather than one per delivery, no token
    // is spent on a claim that found nothing, and few deliveries wait leased in memory.
    let pacer = &handle.pacer;
    let burst = built_with.rate_limit.map_or(CLAIM_BATCH, |r| r.burst.get() as usize);
    let mut failures = 0u32;
    // Whether to claim on this turn: the store may hold due deliveries. Until a claim comes
    // back empty, the worker claims again; then only once woken with store work, at the
    // next due time the claim reported, or at an idle poll. Handed-over deliveries need no
    // claim at all.
    // A worker's first claim comes from `store_work`, set when its destination's handle is
    // made: a worker started again by a hand-over does not claim.
    let mut look = false;
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        if handle.paused.load(Ordering::Relaxed) {
            handle.release_handed(&*shared.store).await;
            // Deliveries keep accumulating in the store; nothing is claimed until resumed
            // (which wakes, or starts, a worker).
            tokio::select! {
                _ = handle.stop.cancelled() => break,
                _ = handle.wake.notified() => continue,
                all = slots.clone().acquire_many_owned(capacity as u32) => {
                    drop(all);
                    if handle.end_if_idle() {
                        break;
                    }
                    continue;
                }
            }
        }
        let destination = handle.destination.load_full();
        let lease = super::lease_for(&destination);
        let first = tokio::select! {
            biased;
            _ = handle.stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        // Handed over by ingest: already leased and in memory. The circuit and any slowdown
        // are checked again before the request goes (`deliver`).
        if let Some(delivery) = handle.take_handed() {
            let permits = Permits { _slot: first, sending: sending.clone() };
            shared.tracker.spawn(deliver(shared.clone(), destination, delivery, permits, handle.clone(), false));
            continue;
        }
        look |= handle.store_work.swap(false, Ordering::SeqCst);
        if !look {
            drop(first);
            let poll = shared.idle_poll().map(|p| tokio::time::Instant::now() + p);
            let until = due.into_iter().chain(poll).min();
            tokio::select! {
                _ = handle.stop.cancelled() => break,
                _ = handle.wake.notified() => {}
                _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => {
                    look = true;
                }
                // Nothing due and nothing to look for: once every delivery in flight is
                // recorded, the worker ends; the next wake starts another.
                all = slots.clone().acquire_many_owned(capacity as u32), if until.is_none() => {
                    drop(all);
                    if handle.end_if_idle() {
                        break;
                    }
                }
            }
            continue;
        }
        // Asked with a slot in hand: the circuit may have opened while every slot was busy.
        let mut probe = false;
        if destination.circuit_breaker.is_some() {
            match handle.breaker.permit(Instant::now()) {
                Permit::Send => {}
                Permit::Probe => probe = true,
                // A wake only re-checks (a pause or a reload may have come); nothing is claimed.
                Permit::WaitUntil(until) => {
                    drop(first);
                    tokio::select! {
                        _ = handle.stop.cancelled() => break,
                        _ = handle.wake.notified() => {}
                        _ = tokio::time::sleep_until(until.into()) => {}
                    }
                    continue;
                }
                Permit::AwaitProbe => {
                    drop(first);
                    tokio::select! {
                        _ = handle.stop.cancelled() => break,
                        _ = handle.wake.notified() => {}
                    }
                    continue;
                }
            }
        }
        // Slowed by its own answers: wait for the turns already reserved (or a Retry-After),
        // and claim no more than can go out well within their lease.
        if !probe && let Some(until) = handle.slowdown.held_until(tokio::time::Instant::now()) {
            drop(first);
            tokio::select! {
                _ = handle.stop.cancelled() => break,
                _ = handle.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            continue;
        }
        let allowance = if probe { 1 } else { (slots.available_permits() + 1).min(CLAIM_BATCH).min(burst) };
        let allowance = handle.slowdown.allowance(allowance, lease / 2);
        let request = ClaimRequest {
            tenant: destination.tenant.clone(),
            destination: destination.id.clone(),
            limit: allowance,
            lease,
            calls: destination.calls,
        };
        let claim = match shared.store.claim(request).await {
            Ok(claim) => {
                failures = 0;
                for _ in 0..claim.dead {
                    metrics::dead(&destination.tenant, &destination.id);
                }
                metrics::unsent(&destination.tenant, &destination.id, claim.superseded, claim.expired);
                claim
            }
            Err(e) => {
                drop(first);
                if probe {
                    handle.breaker.probe_unused(Instant::now());
                }
                failures += 1;
                tracing::warn!(tenant = %destination.tenant, destination = %destination.id, error = %e, "claim failed");
                let pause = Duration::from_millis(100 << failures.min(6));
                tokio::select! { _ = handle.stop.cancelled() => break, _ = tokio::time::sleep(pause) => continue }
            }
        };
        if claim.deliveries.is_empty() {
            drop(first);
            if probe {
                handle.breaker.probe_unused(Instant::now());
            }
            look = false;
            due = claim.next_due.map(|due| {
                tokio::time::Instant::now() + Duration::from_millis(due.saturating_sub(now_ms()).max(1) as u64)
            });
            continue;
        }
        due = None;
        let mut first = Some(first);
        let mut claimed = claim.deliveries.into_iter();
        while let Some(delivery) = claimed.next() {
            if let Some(pacer) = &pacer {
                let stopping = tokio::select! {
                    biased;
                    _ = handle.stop.cancelled() => true,
                    _ = pacer.until_ready() => false,
                };
                if stopping {
                    // Back to the queue at once, for a restart or another node.
                    for unsent in std::iter::once(delivery).chain(claimed) {
                        if let Err(e) = shared.store.release(unsent.id, unsent.lease).await {
                            tracing::warn!(error = %e, "could not release a paced delivery; it resumes when its lease expires");
                        }
                    }
                    return;
                }
            }
            let slot = match first.take() {
                Some(slot) => slot,
                // Only this loop takes slots, and it claimed no more than were free.
                None => slots.clone().acquire_owned().await.expect("the semaphore is never closed"),
            };
            let permits = Permits { _slot: slot, sending: sending.clone() };
            shared.tracker.spawn(deliver(
                shared.clone(),
                destination.clone(),
                delivery,
                permits,
                handle.clone(),
                probe,
            ));
        }
    }
    // Stopped (removed, reshaped, shutting down): what was handed over and not taken goes
    // back to the store for the next worker or node.
    handle.give_back(&shared).await;
}

/// What a delivery task holds: its slot until the result is recorded, and the semaphore
/// its request waits on.
struct Permits {
    _slot: OwnedSemaphorePermit,
    sending: Arc<Semaphore>,
}

async fn deliver(
    shared: Arc<Shared>,
    destination: Arc<Destination>,
    delivery: ClaimedDelivery,
    permits: Permits,
    handle: Arc<Handle>,
    probe: bool,
) {
    // The attempt's context for its log lines, made only when one is written (a span per
    // attempt formats its fields whether anything is logged or not).
    let span = || {
        tracing::info_span!(
            "attempt",
            tenant = %destination.tenant,
            destination = %destination.id,
            event_id = %delivery.event_id,
            attempt = delivery.attempt,
            probe,
        )
    };
    {
        if expired(&shared, &destination, &delivery, &span).await {
            circuit(&handle, &destination, Signal::Neutral, probe);
            if probe {
                handle.recheck();
            }
            return;
        }
        let sent = tokio::select! {
            sent = async {
                let sending = permits.sending.acquire().await.expect("the semaphore is never closed");
                // The circuit may have opened while this delivery waited for its turn.
                let opened = !probe && destination.circuit_breaker.is_some() && handle.breaker.circuit() != Circuit::Closed;
                if opened {
                    return None;
                }
                let turn = handle.slowdown.reserve(tokio::time::Instant::now());
                // A hold longer than half the lease (a long Retry-After) would outlive the
                // lease: back to the queue instead, so no one else can send it meanwhile.
                if turn > destination.timeout + Duration::from_secs(15) {
                    return None;
                }
                if !turn.is_zero() {
                    tokio::time::sleep(turn).await;
                }
                let sent = attempt::send(&shared.client, &shared.guard, &destination, &delivery).await;
                drop(sending);
                Some(sent)
            } => sent,
            _ = shared.abort.cancelled() => None,
        };
        let Some(sent) = sent else {
            // Back to the queue, unattempted: for the next claim, a restart or another node.
            if let Err(e) = shared.store.release(delivery.id, delivery.lease).await {
                span().in_scope(
                    || tracing::warn!(error = %e, "could not release the delivery; it resumes when its lease expires"),
                );
            }
            circuit(&handle, &destination, Signal::Neutral, probe);
            return;
        };
        let now = now_ms();
        let permanent = sent.permanent();
        let outcome = outcome::decide(
            &destination,
            &sent.record,
            sent.retry_after,
            permanent,
            delivery.attempt,
            now,
            delivery.created_at,
        );
        // The result in words, written only where it is read (a log line, the live tail).
        let summary = || sent.record.summary();
        let latency_ms = sent.record.latency.as_secs_f64() * 1000.0;
        let (tenant, id) = (destination.tenant.as_str(), destination.id.as_str());
        let delivered = outcome == Outcome::Delivered;
        let label = metrics::attempt_outcome(sent.record.status, delivered, sent.error.as_ref());
        let now_instant = tokio::time::Instant::now();
        let paced = handle.slowdown.record(sent.record.status, delivered, probe, sent.retry_after, now_instant);
        if let Some(spacing) = paced {
            metrics::spacing(&destination.tenant, &destination.id, spacing);
            let _span = span().entered();
            if spacing.is_zero() {
                tracing::info!("destination back to full speed");
            } else if !delivered {
                tracing::info!(
                    spacing_ms = spacing.as_millis() as u64,
                    "destination asked to slow down; its requests are spaced"
                );
            }
        }
        if !delivered {
            metrics::attempt(tenant, id, label, sent.record.latency);
        }
        handle.health.record(now, delivered, sent.record.latency);
        let signal = match outcome {
            Outcome::Delivered => Signal::Success,
            _ if permanent => Signal::Neutral,
            _ => Signal::Failure,
        };
        let next = match outcome {
            Outcome::Delivered => {
                let since = Duration::from_millis(now.saturating_sub(delivery.created_at).max(0) as u64);
                handle.delivered.record(sent.record.latency, since);
                if tracing::enabled!(tracing::Level::DEBUG) {
                    span().in_scope(|| tracing::debug!(result = %summary(), latency_ms, "delivered"));
                }
                Next::Delivered
            }
            Outcome::Retry { after } => {
                metrics::retry(tenant, id);
                span().in_scope(|| {
                    let retry_in_ms = after.as_millis() as u64;
                    tracing::info!(result = %summary(), latency_ms, retry_in_ms, "attempt failed; will retry")
                });
                Next::Retry { at: now + after.as_millis() as i64 }
            }
            Outcome::Dead { reason } => {
                metrics::dead(tenant, id);
                span().in_scope(|| tracing::warn!(result = %summary(), %reason, "delivery is dead"));
                Next::Dead { reason }
            }
            Outcome::PauseDestination { reason } => {
                // Durable first, as an operator's pause: a restart must not resume it.
                if let Err(e) = shared.store.set_paused(tenant, id, true).await {
                    span().in_scope(
                        || tracing::error!(error = %e, "could not store the pause; pausing on this node only"),
                    );
                }
                handle.paused.store(true, Ordering::Relaxed);
                metrics::paused_by_answer(tenant, id);
                span().in_scope(|| {
                    tracing::error!(result = %summary(), %reason, "destination paused by its answer; resume it by API once fixed")
                });
                // The delivery is kept for the resume, due at once then.
                Next::Retry { at: now }
            }
        };
        let retry = matches!(next, Next::Retry { .. });
        if shared.tail.watched() {
            shared.tail.publish(crate::tail::Item::Attempt {
                tenant: destination.tenant.clone(),
                destination: destination.id.clone(),
                event_id: delivery.event_id,
                attempt: delivery.attempt,
                result: summary(),
                latency_ms,
                next: match &next {
                    Next::Delivered => "delivered",
                    Next::Retry { .. } => "retry",
                    Next::Dead { .. } => "dead",
                },
                at: crate::store::rfc3339(sent.record.started_at),
            });
        }
        let completion = Completion { delivery: delivery.id, lease: delivery.lease, attempt: sent.record, next };
        match shared.store.complete(completion).await {
            Ok(true) => {}
            Ok(false) => span().in_scope(|| tracing::warn!("lease lost before the result was recorded; the new holder decides")),
            Err(e) => span().in_scope(|| {
                tracing::error!(error = %e, "could not record the attempt; the delivery resumes when its lease expires")
            }),
        }
        // Recorded after the completion, so a probe that closes the circuit lets the worker
        // claim a queue that already holds the probe's outcome.
        let reopened_or_closed = circuit(&handle, &destination, signal, probe);
        if retry || probe || reopened_or_closed || destination.calls.ordered {
            // The worker may be asleep until a later time or waiting for this probe (or, for
            // an ordered destination, for this call's turn to pass to its next event).
            handle.recheck();
        }
    }
}

/// A delivery that waited well past its retry deadline (its destination paused, its circuit
/// open, a long paced backlog) is dead without a request: the deadline promises no attempt
/// after it. The grace (a tenth of the deadline, at most a minute) spares a retry that was
/// scheduled just before the deadline and claimed just after. The record says it was not
/// sent; a replay starts a new deadline.
async fn expired(
    shared: &Shared,
    destination: &Destination,
    delivery: &ClaimedDelivery,
    span: &(dyn Fn() -> tracing::Span + Sync),
) -> bool {
    let now = now_ms();
    let allowed = destination.retry.deadline + (destination.retry.deadline / 10).min(Duration::from_secs(60));
    if now <= delivery.created_at.saturating_add(allowed.as_millis() as i64) {
        return false;
    }
    let reason = format!(
        "not sent: the deadline of {} passed while it waited",
        humantime::format_duration(destination.retry.deadline)
    );
    metrics::dead(&destination.tenant, &destination.id);
    span().in_scope(|| tracing::warn!(%reason, "delivery is dead"));
    let attempt = AttemptRecord {
        started_at: now,
        latency: Duration::ZERO,
        status: None,
        error: Some(reason.clone()),
        response_prefix: Vec::new(),
    };
    let completion = Completion { delivery: delivery.id, lease: delivery.lease, attempt, next: Next::Dead { reason } };
    if let Err(e) = shared.store.complete(completion).await {
        span().in_scope(
            || tracing::error!(error = %e, "could not record the expiry; the delivery resumes when its lease expires"),
        );
    }
    true
}

/// Feeds an attempt's result to the destination's breaker; logs and counts a transition.
fn circuit(handle: &Handle, destination: &Destination, signal: Signal, probe: bool) -> bool {
    let Some(settings) = &destination.circuit_breaker else { return false };
    let (tenant, id) = (destination.tenant.as_str(), destination.id.as_str());
    match handle.breaker.record(settings, signal, probe, Instant::now()) {
        Some(Transition::Opened { cooldown }) => {
            metrics::circuit(tenant, id, true);
            tracing::warn!(
                tenant,
                destination = id,
                cooldown_ms = cooldown.as_millis() as u64,
                "destination is failing; circuit open, pending deliveries wait for a probe"
            );
            true
        }
        Some(Transition::Closed) => {
            metrics::circuit(tenant, id, false);
            tracing::info!(tenant, destination = id, "destination answered; circuit closed, pending deliveries resume");
            true
        }
        None => false,
    }
}
