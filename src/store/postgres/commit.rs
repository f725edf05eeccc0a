//! Group commit on PostgreSQL: callers queue their events; a batcher takes whatever is
//! queued (up to `MAX_BATCH`) and writes it in one transaction of two multi-row
//! statements (`unnest` over arrays) and two round trips, whatever its size (see `write`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::pg_error;
use crate::store::{Committed, Leased, NewEvent, StoreError, now_ms};

const MAX_BATCH: usize = 1024;

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

/// What became of each event of the batch, as far as the batch itself can tell.
#[derive(Clone, Copy)]
enum Plan {
    Insert,
    /// Repeats an earlier event of the same batch (by index).
    RepeatOf(usize),
}

/// Takes the batch's dedupe keys: rows written are new keys, or keys whose window had closed.
/// A key held by another event is left as it is, for `STORE` to read. Gives back the keys
/// written.
const TAKE_KEYS: &str = "INSERT INTO dedupe (tenant, source, key, event_id, expires_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::int8[])
    ON CONFLICT (tenant, source, key) DO UPDATE
      SET event_id = excluded.event_id, expires_at = excluded.expires_at
      WHERE dedupe.expires_at <= $6
    RETURNING event_id, key";

/// Stores the events whose every key now names them, and their deliveries, and gives back
/// the keys those events did not get. It runs after `TAKE_KEYS` in the same transaction, so
/// it reads the keys as that statement left them. Rows: (event, destination, delivery,
/// lease token, owner, kind) with kind 0 an event stored, 1 a delivery, 2 a held key.
///
/// Its plan is made once per connection (planning it costs more than running it), so every
/// read of a table is a key lookup by construction: `held` reads each key by its primary
/// key in a subquery per key. A join there would be planned for the table as it was when
/// the plan was made, and a plan made on a fresh database scans the whole table.
const STORE: &str = "WITH k AS (
        SELECT * FROM unnest($12::text[], $13::text[], $14::text[], $15::uuid[]) AS k(tenant, source, key, id)
    ), held AS (
        SELECT id, owner FROM (
            SELECT k.id, (SELECT d.event_id FROM dedupe d
                          WHERE d.tenant = k.tenant AND d.source = k.source AND d.key = k.key) AS owner
            FROM k) o
        WHERE owner IS DISTINCT FROM id
    ), ev AS (
        INSERT INTO events (id, tenant, source, received_at, content_type, query, body, normalized, call_id,
            from_number, to_number)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                             $7::bytea[], $8::text[], $9::text[], $10::text[], $11::text[])
            AS x(id, tenant, source, received_at, content_type, query, body, normalized, call_id, f, t)
        WHERE x.id NOT IN (SELECT id FROM held)
        -- An id already stored fails that event alone, not the batch.
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    ), token AS (
        SELECT CASE WHEN $25 THEN nextval('lease_tokens') END AS v
    ), dl AS (
        INSERT INTO deliveries (event_id, tenant, destination, created_at, due_at, call_key, status_rank,
            seq, hold_until, claimed_by, lease_token)
        SELECT e, t, d, c, c + coalesce(l, 0), k, r, s, h,
               CASE WHEN l IS NOT NULL THEN $26 END, CASE WHEN l IS NOT NULL THEN token.v END
        FROM unnest($16::uuid[], $17::text[], $18::text[], $19::int8[], $20::text[], $21::int2[], $22::int8[],
                    $23::int8[], $24::int8[]) AS x(e, t, d, c, k, r, s, h, l), token
        WHERE x.e IN (SELECT id FROM ev)
        RETURNING event_id, destination, id, lease_token
    )
    SELECT id, NULL::text, NULL::int8, NULL::int8, NULL::uuid, 0::int2 FROM ev
    UNION ALL SELECT event_id, destination, id, lease_token, NULL, 1::int2 FROM dl
    UNION ALL SELECT id, NULL, NULL, NULL, owner, 2::int2 FROM held";

/// Drops the keys an event took but was not stored with (a repeat by another of its keys, an
/// id already stored): left behind, they would make a later callback a repeat of nothing.
/// Rare, so planned for the arrays it gets, by primary key.
const FORGET: &str = "DELETE FROM dedupe d
    USING unnest($1::text[], $2::text[], $3::text[], $4::uuid[]) AS k(tenant, source, key, id)
    WHERE d.tenant = k.tenant AND d.source = k.source AND d.key = k.key AND d.event_id = k.id";

/// One transaction in two round trips: `BEGIN`, `TAKE_KEYS` and `STORE` go out as one
/// pipeline, then `COMMIT` (after `FORGET`, when some key must go). The gateway's ingest rate
/// on PostgreSQL is its batch size over this wait, so the decisions that depend on what the
/// database holds are made inside `STORE`, not between statements.
async fn write(pool: &Pool, node: &str, batch: &[Queued]) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let now = now_ms();
    let events: Vec<&NewEvent> = batch.iter().map(|q| &q.event).collect();
    let mut plan = vec![Plan::Insert; events.len()];

    // A repeat inside the batch is settled here, as one statement may not touch the same key
    // twice. An event may have several keys (the provider's, the signed message's): a
    // repeat of any is a repeat.
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
    // Concurrent batches (other nodes) take key locks in one order, so they cannot deadlock.
    keyed.sort_unstable_by_key(|&(i, key)| (&events[i].tenant, &events[i].source, key));
    let key_tenants: Vec<&str> = keyed.iter().map(|&(i, _)| &*events[i].tenant).collect();
    let key_sources: Vec<&str> = keyed.iter().map(|&(i, _)| &*events[i].source).collect();
    let keys: Vec<&str> = keyed.iter().map(|&(_, key)| key).collect();
    let key_events: Vec<Uuid> = keyed.iter().map(|&(i, _)| events[i].id).collect();
    let until: Vec<i64> =
        keyed.iter().map(|&(i, key)| events[i].dedupe.iter().find(|d| d.key == key).map_or(0, |d| d.until)).collect();

    let new: Vec<usize> = (0..events.len()).filter(|&i| matches!(plan[i], Plan::Insert)).collect();
    let ids: Vec<Uuid> = new.iter().map(|&i| events[i].id).collect();
    let text = |f: fn(&NewEvent) -> Option<&str>| new.iter().map(|&i| f(events[i])).collect::<Vec<_>>();
    let received: Vec<i64> = new.iter().map(|&i| events[i].received_at).collect();
    let bodies: Vec<&[u8]> = new.iter().map(|&i| &events[i].body[..]).collect();
    let mut rows = DeliveryRows::default();
    for &i in &new {
        rows.add(events[i]);
    }
    let r = &rows;

    let take = client.prepare_cached(TAKE_KEYS).await.map_err(pg_error)?;
    let store = client.prepare_cached(STORE).await.map_err(pg_error)?;
    let take_keys = async {
        if keyed.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&take, &[&key_tenants, &key_sources, &keys, &key_events, &until, &now]).await
    };
    let stored = async {
        client
            .query(
                &store,
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
                    &key_tenants,
                    &key_sources,
                    &keys,
                    &key_events,
                    &r.event_ids,
                    &r.tenants,
                    &r.destinations,
                    &r.created,
                    &r.call_keys,
                    &r.ranks,
                    &r.seqs,
                    &r.holds,
                    &r.leases,
                    &r.leases.iter().any(Option::is_some),
                    &node,
                ],
            )
            .await
    };
    // `biased`: each request is sent when first polled, so the order polled is the order
    // the server runs them in. A statement that fails aborts the transaction and the ones
    // after it fail too: the first error is the batch's.
    let (begun, taken, stored) = tokio::join!(biased; client.batch_execute("BEGIN"), take_keys, stored);
    let (taken, stored) = match (begun, taken, stored) {
        (Ok(()), Ok(taken), Ok(stored)) => (taken, stored),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            // The pooled connection must not go back inside a failed transaction.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(pg_error(e));
        }
    };
    let mut inserted: HashSet<Uuid> = HashSet::new();
    let mut leases: HashMap<(Uuid, &str), (i64, i64)> = HashMap::new();
    let mut owners: HashMap<Uuid, Uuid> = HashMap::new();
    for row in &stored {
        let event: Uuid = row.get(0);
        match row.get::<_, i16>(5) {
            0 => {
                inserted.insert(event);
            }
            1 => {
                let Some(token) = row.get::<_, Option<i64>>(3) else { continue };
                let destination: &str = row.get(1);
                leases.insert((event, destination), (token, row.get(2)));
            }
            _ => {
                if let Some(owner) = row.get::<_, Option<Uuid>>(4) {
                    owners.entry(event).or_insert(owner);
                }
            }
        }
    }

    // Only keys this transaction wrote: a key that already named the event (the same event
    // committed twice) stays.
    let taken: HashSet<(Uuid, &str)> = taken.iter().map(|r| (r.get(0), r.get(1))).collect();
    let forget: Vec<usize> = (0..keyed.len())
        .filter(|&n| !inserted.contains(&key_events[n]) && taken.contains(&(key_events[n], keys[n])))
        .collect();
    let committed = if forget.is_empty() {
        client.batch_execute("COMMIT").await
    } else {
        fn pick<'a>(column: &[&'a str], rows: &[usize]) -> Vec<&'a str> {
            rows.iter().map(|&n| column[n]).collect()
        }
        let (tenants, sources) = (pick(&key_tenants, &forget), pick(&key_sources, &forget));
        let (forgotten_keys, forgotten) =
            (pick(&keys, &forget), forget.iter().map(|&n| key_events[n]).collect::<Vec<_>>());
        let forget_sql = client.prepare_cached(FORGET).await;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&tenants, &sources, &forgotten_keys, &forgotten];
        match forget_sql {
            Err(e) => Err(e),
            Ok(forget_sql) => {
                let (planned, forgot, committed) = tokio::join!(
                    biased;
                    client.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan"),
                    client.execute(&forget_sql, &params),
                    client.batch_execute("COMMIT")
                );
                planned.and(forgot.map(drop)).and(committed)
            }
        }
    };
    if let Err(e) = committed {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(pg_error(e));
    }

    // Each event's leased ids, in the order of its targets.
    let leased = |e: &NewEvent| {
        let mut leased = Leased::default();
        for target in e.destinations.iter().filter(|t| t.lease.is_some()) {
            if let Some(&(token, id)) = leases.get(&(e.id, target.destination.as_str())) {
                leased.lease = token;
                leased.ids.push(id);
            }
        }
        leased
    };
    // Not stored: a repeat of the event its key names, or an id already stored.
    let answer = |e: &NewEvent| {
        if inserted.contains(&e.id) {
            Ok(Committed::New(leased(e)))
        } else {
            owners.get(&e.id).map_or(Err(StoreError::Conflict), |&owner| Ok(Committed::Duplicate(owner)))
        }
    };
    Ok((0..events.len())
        .map(|i| match plan[i] {
            Plan::RepeatOf(j) if inserted.contains(&events[j].id) => Ok(Committed::Duplicate(events[j].id)),
            Plan::RepeatOf(j) => answer(events[j]),
            Plan::Insert => answer(events[i]),
        })
        .collect())
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
