//! Completions on PostgreSQL, batched: each worker's attempt result is queued, and a batch
//! of them is one statement — the fenced update of every delivery and the insert of every
//! recorded attempt, over `unnest` arrays — and one commit, instead of a round trip and a
//! WAL flush per attempt.
//!
//! That commit does not wait for its WAL flush (`synchronous_commit = off` for the
//! transaction alone). An outcome lost to a crash of the database (never of a gateway) is
//! at most the last few hundred milliseconds of WAL, and it costs a delivery sent again,
//! which at-least-once delivery already allows. Nothing that depends on an outcome can
//! outlive it: WAL is flushed in order, so any durable commit after it (an ingest, a claim
//! of a call's next event) flushes the outcome first. Ingest commits keep waiting for their
//! flush, and no longer queue behind the completions' own.
//!
//! Its plan is made once per connection, so it must not depend on the table's size when
//! it was made: a plan made while the queue was small (a fresh database, a quiet hour) found
//! the batch's rows by reading every pending delivery, at a cost that grew with the backlog
//! just when a burst built one. The rows are therefore found by primary key (`id =
//! ANY($1)`; sequential scans are off for the store's connections). There is no `state = 0`
//! test to offer the queue's partial index instead: the lease token fences alone, as every
//! way out of pending clears it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::pg_error;
use crate::store::{Completion, Next, StoreError};

const MAX_BATCH: usize = 512;

pub struct Queued {
    pub completion: Completion,
    pub reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// Runs until `stop`, then records what was queued before it (see `batch::run`).
pub async fn run(pool: Pool, rx: mpsc::Receiver<Queued>, pending: Arc<AtomicU64>, stop: CancellationToken) {
    super::batch::run(rx, MAX_BATCH, stop, move |batch| answer(pool.clone(), pending.clone(), batch)).await;
}

/// Concurrent batches touch disjoint rows — a delivery is completed once per lease, and
/// claims skip locked rows — so they never wait on each other.
async fn answer(pool: Pool, pending: Arc<AtomicU64>, batch: Vec<Queued>) {
    match write(&pool, &batch).await {
        Ok(recorded) => {
            let finished = batch
                .iter()
                .filter(|q| {
                    recorded.contains(&q.completion.delivery) && !matches!(q.completion.next, Next::Retry { .. })
                })
                .count() as u64;
            let _ = pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(finished)));
            for queued in batch {
                let _ = queued.reply.send(Ok(recorded.contains(&queued.completion.delivery)));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch = batch.len(), "recording attempts failed");
            for queued in batch {
                let _ = queued.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The ids whose completion was recorded (the lease still held); the others lost it.
async fn write(pool: &Pool, batch: &[Queued]) -> Result<HashSet<i64>, StoreError> {
    let n = batch.len();
    let (mut ids, mut leases, mut states, mut due) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut finished, mut last_errors, mut started) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut latencies, mut statuses, mut errors, mut prefixes) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for q in batch {
        let (c, a) = (&q.completion, &q.completion.attempt);
        let (state, due_at, last_error) = c.row();
        let state = state.code() as i16;
        ids.push(c.delivery);
        leases.push(c.lease);
        states.push(state);
        due.push(due_at);
        finished.push((state != 0).then_some(due_at));
        last_errors.push(last_error);
        started.push(a.started_at);
        latencies.push(a.latency.as_micros() as i64);
        statuses.push(a.status.map(i32::from));
        errors.push(a.error.as_deref());
        prefixes.push(a.response_prefix.as_slice());
    }
    let client = pool.get().await.map_err(super::pool_error)?;
    let statement = client
        .prepare_cached(
            "WITH c AS (
                SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::smallint[], $4::bigint[], $5::bigint[],
                    $6::text[], $7::bigint[], $8::bigint[], $9::int[], $10::text[], $11::bytea[])
                    AS c(id, lease, state, due_at, finished_at, last_error, started_at, latency_us, status, error, prefix)
             ), done AS (
                UPDATE deliveries d SET state = c.state, attempts = d.attempts + 1, due_at = c.due_at,
                    finished_at = c.finished_at, claimed_by = NULL, lease_token = NULL, last_error = c.last_error
                FROM c WHERE d.id = ANY($1) AND d.id = c.id AND d.lease_token = c.lease
                RETURNING d.id, d.attempts, c.started_at, c.latency_us, c.status, c.error, c.prefix
             )
             INSERT INTO attempts (delivery_id, n, started_at, latency_us, status, error, response_prefix)
             SELECT id, attempts, started_at, latency_us, status, error, prefix FROM done
             RETURNING delivery_id",
        )
        .await
        .map_err(pg_error)?;
    let recorded = async {
        client
            .query(
                &statement,
                &[
                    &ids,
                    &leases,
                    &states,
                    &due,
                    &finished,
                    &last_errors,
                    &started,
                    &latencies,
                    &statuses,
                    &errors,
                    &prefixes,
                ],
            )
            .await
    };
    // One pipeline: the transaction's requests go out together and wait for one round trip.
    let (begun, rows, committed) = tokio::join!(
        biased;
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit = off"),
        recorded,
        client.batch_execute("COMMIT")
    );
    begun.map_err(pg_error)?;
    let rows = rows.map_err(pg_error)?;
    committed.map_err(pg_error)?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
}
