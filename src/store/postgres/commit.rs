//! Group commit on PostgreSQL: callers queue their events; a batcher takes whatever is
//! queued (up to `MAX_BATCH`) and writes it in one transaction of a few multi-row
//! statements (`unnest` over arrays), so the round trips per batch do not grow with its
//! size.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::pg_error;
use crate::store::{Committed, Leased, NewEvent, StoreError, now_ms};

const MAX_BATCH: usize = 1024;
/// Drops the dedupe keys a batch wrote for events it did not store.
const FORGET_KEYS: &str = "DELETE FROM dedupe WHERE event_id = ANY($1)";

pub struct Queued {
    pub event: NewEvent,
    pub reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// Runs until `stop`, then writes what was queued before it (see `batch::run`).
pub async fn run(
    pool: Pool,
    node: String,
    rx: mpsc::Receiver<Queued>,
    (pending, last_failure): (Arc<AtomicU64>, Arc<AtomicI64>),
    stop: CancellationToken,
) {
    let node: Arc<str> = node.into();
    super::batch::run(rx, MAX_BATCH, stop, move |batch| {
        answer(pool.clone(), node.clone(), pending.clone(), last_failure.clone(), batch)
    })
    .await;
}

async fn answer(pool: Pool, node: Arc<str>, pending: Arc<AtomicU64>, last_failure: Arc<AtomicI64>, batch: Vec<Queued>) {
    let started = std::time::Instant::now();
    let size = batch.len();
    let results = match write(&pool, &node, &batch).await {
        Ok(results) => results,
        Err(e) => {
            last_failure.store(now_ms(), Ordering::Relaxed);
            tracing::error!(error = %e, batch = size, "store commit failed");
            batch.iter().map(|_| Err(e.clone())).collect()
        }
    };
    crate::metrics::group_commit(size, started.elapsed());
    let added: usize = batch
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Ok(Committed::New(_))))
        .map(|(q, _)| q.event.destinations.len())
        .sum();
    pending.fetch_add(added as u64, Ordering::Relaxed);
    for (queued, result) in batch.into_iter().zip(results) {
        // A caller that gave up waiting dropped its receiver; the work stands.
        let _ = queued.reply.send(result);
    }
}

/// What became of each event of the batch, before the database has said anything.
#[derive(Clone, Copy)]
enum Plan {
    Insert,
    /// Repeats an earlier event of the same batch (by index).
    RepeatOf(usize),
    Duplicate(Uuid),
    Refused,
}

async fn write(pool: &Pool, node: &str, batch: &[Queued]) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let mut client = pool.get().await.map_err(super::pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let now = now_ms();
    let events: Vec<&NewEvent> = batch.iter().map(|q| &q.event).collect();
    let mut plan = vec![Plan::Insert; events.len()];

    // Dedupe keys first: the unique key decides between nodes; a repeat inside the batch
    // is settled here, as one statement may not touch the same key twice. An event may have
    // several keys (the provider's, the signed message's): a repeat of any is a repeat.
    let mut first_with_key: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut keyed: Vec<(usize, &str)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let earlier = e.dedupe.iter().find_map(|d| first_with_key.get(&(&*e.tenant, &*e.source, &*d.key)).copied());
        if let Some(j) = earlier {
            plan[i] = Plan::RepeatOf(j);
            continue;
        }
        for d in &e.dedupe {
            if first_with_key.insert((&e.tenant, &e.source, &d.key), i).is_none() {
                keyed.push((i, &d.key));
            }
        }
    }
    let mut repeats: Vec<Uuid> = Vec::new();
    if !keyed.is_empty() {
        // Concurrent batches take key locks in one order, so they cannot deadlock.
        keyed.sort_unstable_by_key(|&(i, key)| (&events[i].tenant, &events[i].source, key));
        let tenants: Vec<&str> = keyed.iter().map(|&(i, _)| &*events[i].tenant).collect();
        let sources: Vec<&str> = keyed.iter().map(|&(i, _)| &*events[i].source).collect();
        let keys: Vec<&str> = keyed.iter().map(|&(_, key)| key).collect();
        let ids: Vec<Uuid> = keyed.iter().map(|&(i, _)| events[i].id).collect();
        let until: Vec<i64> = keyed
            .iter()
            .map(|&(i, key)| events[i].dedupe.iter().find(|d| d.key == key).map_or(0, |d| d.until))
            .collect();
        // Rows written are new keys, or keys whose window had closed; the rest are repeats.
        let taken = tx
            .query(
                &prepared(
                    &tx,
                    "INSERT INTO dedupe (tenant, source, key, event_id, expires_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::int8[])
                 ON CONFLICT (tenant, source, key) DO UPDATE
                   SET event_id = excluded.event_id, expires_at = excluded.expires_at
                   WHERE dedupe.expires_at <= $6
                 RETURNING event_id, key",
                )
                .await?,
                &[&tenants, &sources, &keys, &ids, &until, &now],
            )
            .await
            .map_err(pg_error)?;
        let taken: std::collections::HashSet<(Uuid, String)> = taken.iter().map(|r| (r.get(0), r.get(1))).collect();
        let held: Vec<(usize, &str)> =
            keyed.iter().copied().filter(|&(i, key)| !taken.contains(&(events[i].id, key.to_string()))).collect();
        if !held.is_empty() {
            let rows = tx
                .query(
                    &prepared(
                        &tx,
                        "SELECT d.tenant, d.source, d.key, d.event_id FROM dedupe d
                     JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, source, key)
                       ON d.tenant = k.tenant AND d.source = k.source AND d.key = k.key",
                    )
                    .await?,
                    &[
                        &held.iter().map(|&(i, _)| &*events[i].tenant).collect::<Vec<_>>(),
                        &held.iter().map(|&(i, _)| &*events[i].source).collect::<Vec<_>>(),
                        &held.iter().map(|&(_, key)| key).collect::<Vec<_>>(),
                    ],
                )
                .await
                .map_err(pg_error)?;
            let stored: HashMap<(String, String, String), Uuid> =
                rows.iter().map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3))).collect();
            for &(i, key) in &held {
                if !matches!(plan[i], Plan::Insert) {
                    continue;
                }
                let e = events[i];
                let id = stored.get(&(e.tenant.clone(), e.source.clone(), key.to_string()));
                plan[i] = id.map_or(Plan::Refused, |&id| Plan::Duplicate(id));
                repeats.push(events[i].id);
            }
        }
    }
    if !repeats.is_empty() {
        // A repeat by one key may have taken its other keys above: they name no stored event.
        tx.execute(&prepared(&tx, FORGET_KEYS).await?, &[&repeats]).await.map_err(pg_error)?;
    }

    let new: Vec<usize> = (0..events.len()).filter(|&i| matches!(plan[i], Plan::Insert)).collect();
    let mut leases: HashMap<(Uuid, String), (i64, i64)> = HashMap::new();
    if !new.is_empty() {
        let ids: Vec<Uuid> = new.iter().map(|&i| events[i].id).collect();
        let text = |f: fn(&NewEvent) -> Option<&str>| new.iter().map(|&i| f(events[i])).collect::<Vec<_>>();
        let received: Vec<i64> = new.iter().map(|&i| events[i].received_at).collect();
        let bodies: Vec<&[u8]> = new.iter().map(|&i| &events[i].body[..]).collect();
        // An id already stored fails that event alone, not the batch.
        let inserted = tx.query(
                &prepared(&tx, "INSERT INTO events (id, tenant, source, received_at, content_type, query, body, normalized, call_id,
                   from_number, to_number)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                                      $7::bytea[], $8::text[], $9::text[], $10::text[], $11::text[])
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id").await?,
                &[
                    &ids,
                    &text(|e| Some(&e.tenant)),
                    &text(|e| Some(&e.source)),
                    &received,
                    &text(|e| e.content_type.as_deref()),
                    &text(|e| e.query.as_deref()),
                    &bodies,
                    &text(|e| Some(&*e.normalized)),
                    &text(|e| e.call_id.as_deref()),
                    &text(|e| e.from.as_deref()),
                    &text(|e| e.to.as_deref()),
                ],
            )
            .await
            .map_err(pg_error)?;
        let inserted: std::collections::HashSet<Uuid> = inserted.iter().map(|r| r.get(0)).collect();
        let mut refused = Vec::new();
        for &i in &new {
            if !inserted.contains(&events[i].id) {
                plan[i] = Plan::Refused;
                refused.push(events[i].id);
            }
        }
        if !refused.is_empty() {
            // Keys written above for events that were not stored would hide real repeats.
            tx.execute(&prepared(&tx, FORGET_KEYS).await?, &[&refused]).await.map_err(pg_error)?;
        }
        let mut rows = DeliveryRows::default();
        for &i in new.iter().filter(|&&i| matches!(plan[i], Plan::Insert)) {
            rows.add(events[i]);
        }
        if !rows.event_ids.is_empty() {
            let r = &rows;
            // Deliveries handed over are written leased to this node, under one lease token
            // for the batch; their ids come back for the hand-over.
            let handed = tx
                .query(
                    &prepared(
                        &tx,
                        "WITH token AS (SELECT CASE WHEN $9 THEN nextval('lease_tokens') END AS v)
                     INSERT INTO deliveries (event_id, tenant, destination, created_at, due_at, call_key, status_rank,
                         seq, hold_until, claimed_by, lease_token)
                     SELECT e, t, d, c, c + coalesce(l, 0), k, r, s, h,
                            CASE WHEN l IS NOT NULL THEN $10 END, CASE WHEN l IS NOT NULL THEN token.v END
                     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int2[], $7::int8[],
                                 $8::int8[], $11::int8[]) AS x(e, t, d, c, k, r, s, h, l), token
                     RETURNING event_id, destination, id, lease_token",
                    )
                    .await?,
                    &[
                        &r.event_ids,
                        &r.tenants,
                        &r.destinations,
                        &r.created,
                        &r.call_keys,
                        &r.ranks,
                        &r.seqs,
                        &r.holds,
                        &r.leases.iter().any(Option::is_some),
                        &node,
                        &r.leases,
                    ],
                )
                .await
                .map_err(pg_error)?;
            for row in handed {
                let Some(token) = row.get::<_, Option<i64>>(3) else { continue };
                let (event, destination): (Uuid, String) = (row.get(0), row.get(1));
                leases.insert((event, destination), (token, row.get::<_, i64>(2)));
            }
        }
    }
    tx.commit().await.map_err(pg_error)?;

    // Each event's leased ids, in the order of its targets.
    let leased = |e: &NewEvent| {
        let mut leased = Leased::default();
        for target in e.destinations.iter().filter(|t| t.lease.is_some()) {
            if let Some(&(token, id)) = leases.get(&(e.id, target.destination.clone())) {
                leased.lease = token;
                leased.ids.push(id);
            }
        }
        leased
    };
    let answer = |p: Plan, i: usize| match p {
        Plan::Insert => Some(Ok(Committed::New(leased(events[i])))),
        Plan::Duplicate(id) => Some(Ok(Committed::Duplicate(id))),
        Plan::Refused => Some(Err(StoreError::Conflict)),
        Plan::RepeatOf(_) => None,
    };
    Ok((0..events.len())
        .map(|i| match plan[i] {
            Plan::RepeatOf(j) => match plan[j] {
                Plan::Insert => Ok(Committed::Duplicate(events[j].id)),
                other => answer(other, j)
                    .unwrap_or_else(|| Err(StoreError::Setup("a repeat in the batch was not resolved".into()))),
            },
            p => {
                answer(p, i).unwrap_or_else(|| Err(StoreError::Setup("a repeat in the batch was not resolved".into())))
            }
        })
        .collect())
}

/// A statement parsed and planned once per pooled connection, not once per batch: a
/// text query is a Parse round trip and a fresh plan on the server every time.
async fn prepared(tx: &deadpool_postgres::Transaction<'_>, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
    tx.prepare_cached(sql).await.map_err(pg_error)
}

/// The deliveries of a batch's new events, as columns for one `unnest` insert.
#[derive(Default)]
struct DeliveryRows<'a> {
    event_ids: Vec<Uuid>,
    tenants: Vec<&'a str>,
    destinations: Vec<&'a str>,
    created: Vec<i64>,
    call_keys: Vec<Option<&'a str>>,
    ranks: Vec<Option<i16>>,
    seqs: Vec<Option<i64>>,
    holds: Vec<Option<i64>>,
    /// Milliseconds a handed-over delivery is leased for.
    leases: Vec<Option<i64>>,
}

impl<'a> DeliveryRows<'a> {
    fn add(&mut self, event: &'a NewEvent) {
        for target in &event.destinations {
            let call = event.call.as_ref().filter(|_| target.by_call);
            self.event_ids.push(event.id);
            self.tenants.push(&event.tenant);
            self.destinations.push(&target.destination);
            self.created.push(event.received_at);
            self.call_keys.push(call.map(|c| c.key.as_str()));
            self.ranks.push(call.and_then(|c| c.rank));
            self.seqs.push(call.and_then(|c| c.sequence.map(|s| s.0)));
            self.holds.push(call.and_then(|c| c.sequence.map(|s| s.1)));
            self.leases.push(target.lease.filter(|_| call.is_none()).map(|l| l.as_millis() as i64));
        }
    }
}
