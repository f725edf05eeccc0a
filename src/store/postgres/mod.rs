//! The shared store: PostgreSQL, for several gateway nodes on one durable queue.
//!
//! Ingest group-commits through a batcher (see `commit`). Workers claim with
//! `FOR UPDATE SKIP LOCKED`, so nodes never wait on each other's rows, and stamp each
//! claim with a token from a global sequence: a result is recorded only while the token
//! still matches (fencing), so a node that lost its lease — it stalled, or was presumed
//! dead — cannot overwrite the new holder's outcome. Leases of a node that died simply
//! expire (their `due_at` is the lease end) and the rows become claimable again.
//!
//! Times are each node's clock in Unix milliseconds, as for SQLite: nodes need
//! synchronized clocks (NTP); leases are tens of seconds, far above usual skew.

mod batch;
mod catalog;
mod commit;
mod complete;
mod schema;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::admin::{
    DeliveryQuery, DeliverySummary, EventDetail, EventQuery, EventSummary, QueueStats, Replay, ReplayFilter,
};
use super::{
    AttemptRecord, Claim, ClaimRequest, ClaimedDelivery, Committed, Completion, DeliveryRecord, DeliveryState,
    NewEvent, Store, StoreError, now_ms,
};

/// How many events may wait for the batcher before ingest is told the store is busy.
const QUEUE_CAPACITY: usize = 8192;
/// How often the shared pending count is read back (other nodes change it too)...
const PENDING_REFRESH: Duration = Duration::from_secs(1);
/// ...unless counting takes longer than this share of the time between counts: a million
/// pending deliveries take a read of the whole queue index.
const PENDING_REFRESH_SHARE: u32 = 50;
/// The longest the count goes unread; between counts, this node's own commits and
/// completions keep it current.
const PENDING_REFRESH_MAX: Duration = Duration::from_secs(60);
/// How many times one by-call claim looks again for a call's next delivery after ending
/// stale ones (as the embedded store).
const STALE_PASSES: usize = 8;
/// Connection attempts at start, for a database that comes up with the gateway.
const CONNECT_ATTEMPTS: u32 = 6;

pub struct PgStore {
    pool: Pool,
    node: String,
    sender: mpsc::Sender<commit::Queued>,
    completions: mpsc::Sender<complete::Queued>,
    closed: AtomicBool,
    pending: Arc<AtomicU64>,
    /// When a commit batch last failed (Unix ms), for readiness.
    last_failure: Arc<AtomicI64>,
    stop: CancellationToken,
    /// The batchers and the pending-count refresher; all end on `stop`.
    tasks: TaskTracker,
}

pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::from(e)
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        // A timeout waiting for, or failing to make, a connection.
        e => StoreError::Unreachable(Arc::new(e)),
    }
}

fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::builder()
        .with_platform_verifier()
        .map_err(|e| StoreError::Setup(format!("cannot set up TLS for postgres: {e}")))?
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Connects (retrying for a while: the database may be starting too), applies
    /// migrations under an advisory lock, and starts the batcher.
    pub async fn open(config: &tokio_postgres::Config, pool_size: usize, node: &str) -> Result<Self, StoreError> {
        let mut config = config.clone();
        // Every statement keeps one plan per connection, made whatever the tables' size at
        // that moment. Made on a fresh or quiet database, a plan reads a small table whole,
        // and it keeps doing so once a burst has made the table large. No statement of the
        // store means to read a table whole: they are all written for an index, so the
        // planner is told not to choose a sequential scan where an index serves.
        let options = format!("{} -c enable_seqscan=off", config.get_options().unwrap_or_default());
        config.options(options.trim_start());
        let manager = Manager::from_config(config, tls()?, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Setup(format!("postgres connection pool: {e}")))?;
        let mut client = None;
        for attempt in 1..=CONNECT_ATTEMPTS {
            match pool.get().await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(e) if attempt == CONNECT_ATTEMPTS => {
                    let last = pool_error(e);
                    let message = format!("cannot connect to postgres after {CONNECT_ATTEMPTS} attempts: {last}");
                    return Err(StoreError::Unreachable(Arc::new(std::io::Error::other(message))));
                }
                Err(e) => {
                    let wait = Duration::from_millis(250 << attempt);
                    tracing::warn!(error = %pool_error(e), retry_in = ?wait, "cannot connect to postgres yet");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let mut client = client.ok_or(StoreError::Closed)?;
        let applied = schema::migrate(&mut client).await.map_err(pg_error)?;
        if applied > 0 {
            tracing::info!(applied, "store migrations applied");
        }
        drop(client);

        let pending = Arc::new(AtomicU64::new(0));
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let stop = CancellationToken::new();
        let last_failure = Arc::new(AtomicI64::new(0));
        let tasks = TaskTracker::new();
        tasks.spawn(commit::run(
            pool.clone(),
            node.to_string(),
            receiver,
            (pending.clone(), last_failure.clone()),
            stop.clone(),
        ));
        // Completions wait for nothing but the database: in-flight attempts are bounded by
        // the workers' slots, so the queue is too.
        let (completions, completed) = mpsc::channel(QUEUE_CAPACITY);
        tasks.spawn(complete::run(pool.clone(), completed, pending.clone(), stop.clone()));
        tasks.spawn(refresh_pending(pool.clone(), pending.clone(), stop.clone()));
        tasks.close();
        let store = Self {
            pool,
            node: node.to_string(),
            sender,
            completions,
            closed: AtomicBool::new(false),
            pending,
            last_failure,
            stop,
            tasks,
        };
        store.pending.store(store.count_pending().await?, Ordering::Relaxed);
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(pool_error)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        client.query(&statement, params).await.map_err(pg_error)
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(pg_error)?;
        client.execute(&statement, params).await.map_err(pg_error)
    }

    async fn count_pending(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT count(*) FROM deliveries WHERE state = 0", &[]).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }
}

/// Every node's ingest and workers change the pending count; read it back regularly.
async fn refresh_pending(pool: Pool, pending: Arc<AtomicU64>, stop: CancellationToken) {
    // The store has just counted at open: a first count now could finish after a commit's
    // increment and overwrite it with the older figure.
    let mut wait = PENDING_REFRESH;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Ok(client) = pool.get().await else { continue };
        let started = tokio::time::Instant::now();
        if let Ok(row) = client.query_one("SELECT count(*) FROM deliveries WHERE state = 0", &[]).await {
            pending.store(row.get::<_, i64>(0) as u64, Ordering::Relaxed);
        }
        wait = next_count_in(started.elapsed());
    }
}

/// The wait before the next count of pending deliveries, from how long this one took.
fn next_count_in(took: Duration) -> Duration {
    (took * PENDING_REFRESH_SHARE).clamp(PENDING_REFRESH, PENDING_REFRESH_MAX)
}

fn delivery_record(r: &Row) -> DeliveryRecord {
    DeliveryRecord {
        id: r.get(0),
        tenant: r.get(1),
        destination: r.get(2),
        state: DeliveryState::from_code(r.get::<_, i16>(3).into()),
        last_error: r.get(4),
        attempts: Vec::new(),
    }
}

fn attempt_record(r: &Row, from: usize) -> AttemptRecord {
    AttemptRecord {
        started_at: r.get(from),
        latency: Duration::from_micros(r.get::<_, i64>(from + 1).max(0) as u64),
        status: r.get::<_, Option<i32>>(from + 2).and_then(|s| u16::try_from(s).ok()),
        error: r.get(from + 3),
        response_prefix: r.get(from + 4),
    }
}

fn event_summary(r: &Row) -> EventSummary {
    EventSummary {
        event_id: r.get(0),
        tenant: r.get(1),
        source: r.get(2),
        call_id: r.get(3),
        received_at: r.get(4),
        from: r.get(5),
        to: r.get(6),
    }
}

/// Columns of a claimed delivery and its event, as `claimed` reads them.
const CLAIMED_COLUMNS: &str = "d.id, d.lease_token, d.event_id, d.attempts - d.series_start, d.created_at,
    e.content_type, e.query, e.body, e.normalized, e.id IS NULL";

/// The claimed deliveries of `rows` (in `CLAIMED_COLUMNS`), and how many ended dead because
/// their event is gone (not re-claimed forever).
async fn claimed(
    client: &impl tokio_postgres::GenericClient,
    rows: &[Row],
    now: i64,
) -> Result<(Vec<ClaimedDelivery>, u64), StoreError> {
    let missing: Vec<i64> = rows.iter().filter(|r| r.get::<_, bool>(9)).map(|r| r.get(0)).collect();
    if !missing.is_empty() {
        tracing::error!(deliveries = ?missing, "deliveries ended dead: their event is no longer stored");
        client
            .execute(
                "UPDATE deliveries SET state = 2, finished_at = $2, due_at = $2, claimed_by = NULL,
                     lease_token = NULL, last_error = 'not sent: the delivery''s event is no longer stored'
                 WHERE id = ANY($1) AND state = 0",
                &[&missing, &now],
            )
            .await
            .map_err(pg_error)?;
    }
    let deliveries = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(9))
        .map(|r| ClaimedDelivery {
            id: r.get(0),
            lease: r.get(1),
            event_id: r.get(2),
            attempt: r.get::<_, i32>(3).max(0) as u32 + 1,
            created_at: r.get(4),
            content_type: r.get::<_, Option<String>>(5).map(Arc::from),
            query: r.get::<_, Option<String>>(6).map(Arc::from),
            body: Bytes::from(r.get::<_, Vec<u8>>(7)),
            normalized: r.get::<_, Option<String>>(8).map(Arc::from),
        })
        .collect();
    Ok((deliveries, missing.len() as u64))
}

impl PgStore {
    /// `claim` for a destination that goes by call: the rules of the embedded store's
    /// `lease_by_call`, in one transaction. Claims of one such destination run one at a
    /// time across nodes (an advisory lock on the destination, taken before the query reads
    /// its snapshot), so every claim sees what the last one leased, and two nodes never
    /// hold two deliveries of one call at once.
    async fn claim_by_call(&self, request: ClaimRequest) -> Result<Claim, StoreError> {
        let now = now_ms();
        let lease_until = now + request.lease.as_millis() as i64;
        let rules = request.calls;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let token: i64 = tx
            .query_one(
                "SELECT nextval('lease_tokens') FROM pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 17))",
                &[&request.tenant, &request.destination],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        let candidates_sql = tx
            .prepare_cached(
                "SELECT d.id, d.created_at, d.status_rank,
                   CASE WHEN $5 AND d.status_rank IS NOT NULL THEN
                     (SELECT s.event_id FROM deliveries s
                      WHERE s.tenant = d.tenant AND s.destination = d.destination AND s.call_key = d.call_key
                        AND s.id <> d.id AND s.status_rank > d.status_rank AND s.state IN (0, 1)
                      ORDER BY s.state DESC, s.id LIMIT 1) END
                 FROM deliveries d
                 WHERE d.tenant = $1 AND d.destination = $2 AND d.state = 0 AND d.due_at <= $3
                   AND NOT EXISTS (SELECT 1 FROM paused p WHERE p.tenant = $1 AND p.destination = $2)
                   AND (NOT $6 OR d.call_key IS NULL OR (
                     NOT EXISTS (SELECT 1 FROM deliveries p
                       WHERE p.tenant = d.tenant AND p.destination = d.destination AND p.call_key = d.call_key
                         AND p.state = 0 AND p.id <> d.id
                         AND ((p.lease_token IS NOT NULL AND p.due_at > $3)
                              OR CASE WHEN p.seq IS NULL OR d.seq IS NULL OR p.seq = d.seq THEN p.id < d.id
                                      ELSE p.seq < d.seq END))
                     AND (d.seq IS NULL OR d.hold_until <= $3 OR d.seq <= (SELECT coalesce(max(f.seq) + 1, 0)
                       FROM deliveries f WHERE f.tenant = d.tenant AND f.destination = d.destination
                         AND f.call_key = d.call_key AND f.state <> 0))))
                 ORDER BY d.due_at LIMIT $4
                 FOR UPDATE OF d SKIP LOCKED",
            )
            .await
            .map_err(pg_error)?;
        let mut claim = Claim::default();
        let mut leased: Vec<Row> = Vec::new();
        for _ in 0..STALE_PASSES {
            let limit = (request.limit - leased.len()) as i64;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&request.tenant, &request.destination, &now, &limit, &rules.supersede, &rules.ordered];
            let candidates = tx.query(&candidates_sql, &params).await.map_err(pg_error)?;
            if candidates.is_empty() {
                break;
            }
            let (mut ended_ids, mut ended_states, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
            let mut picked = Vec::new();
            for row in &candidates {
                let id: i64 = row.get(0);
                match super::stale(&rules, row.get(2), row.get(3), now - row.get::<_, i64>(1)) {
                    Some((state, reason)) => {
                        match state {
                            DeliveryState::Superseded => claim.superseded += 1,
                            _ => claim.expired += 1,
                        }
                        ended_ids.push(id);
                        ended_states.push(state.code() as i16);
                        reasons.push(reason);
                    }
                    None => picked.push(id),
                }
            }
            if !ended_ids.is_empty() {
                tx.execute(
                    "UPDATE deliveries d SET state = x.s, last_error = x.r, finished_at = $4, due_at = $4,
                         claimed_by = NULL, lease_token = NULL
                     FROM unnest($1::int8[], $2::int2[], $3::text[]) AS x(id, s, r) WHERE d.id = x.id",
                    &[&ended_ids, &ended_states, &reasons, &now],
                )
                .await
                .map_err(pg_error)?;
            }
            if !picked.is_empty() {
                // Leased and read with their events in one round trip.
                let rows = tx
                    .query(
                        &format!(
                            "WITH d AS (UPDATE deliveries SET due_at = $2, claimed_by = $3, lease_token = $4
                                 WHERE id = ANY($1) RETURNING *)
                             SELECT {CLAIMED_COLUMNS} FROM d LEFT JOIN events e ON e.id = d.event_id ORDER BY d.id"
                        ),
                        &[&picked, &lease_until, &self.node, &token],
                    )
                    .await
                    .map_err(pg_error)?;
                leased.extend(rows);
            }
            if ended_ids.is_empty() || leased.len() >= request.limit {
                break;
            }
        }
        leased.sort_by_key(|r| r.get::<_, i64>(0));
        let (deliveries, dead) = claimed(&*tx, &leased, now).await?;
        // Deliveries waiting for their call's turn are not due to the worker (see SQLite);
        // only asked when nothing was claimed, as the worker only looks at it then.
        let next_due: Option<i64> = if !deliveries.is_empty() {
            None
        } else {
            tx.query_one(
                "SELECT min(at) FROM (
                   SELECT min(due_at) AS at FROM deliveries
                   WHERE tenant = $1 AND destination = $2 AND state = 0 AND due_at > $3
                   UNION ALL
                   SELECT min(hold_until) FROM deliveries
                   WHERE tenant = $1 AND destination = $2 AND state = 0 AND hold_until IS NOT NULL AND hold_until > $3
                 ) AS due WHERE NOT EXISTS (SELECT 1 FROM paused p WHERE p.tenant = $1 AND p.destination = $2)",
                &[&request.tenant, &request.destination, &now],
            )
            .await
            .map_err(pg_error)?
            .get(0)
        };
        tx.commit().await.map_err(pg_error)?;
        claim.deliveries = deliveries;
        claim.dead = dead;
        claim.next_due = next_due;
        self.finished_at_claim(&claim);
        Ok(claim)
    }

    /// This node's pending count loses what a claim finished unsent (the shared count is
    /// read back every `PENDING_REFRESH` anyway).
    fn finished_at_claim(&self, claim: &Claim) {
        let ended = claim.ended();
        if ended > 0 {
            let _ = self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(ended)));
        }
    }
}

/// A replay is a new attempt series: attempts restart (their rows keep their numbers), as
/// does the retry deadline.
const REPLAY: &str = "UPDATE deliveries SET state = 0, due_at = $1, created_at = $1, series_start = attempts,
    finished_at = NULL, last_error = NULL, claimed_by = NULL, lease_token = NULL";

#[async_trait]
impl Store for PgStore {
    async fn commit(&self, event: NewEvent) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.sender.try_send(commit::Queued { event, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Claim, StoreError> {
        if request.calls.by_call() {
            return self.claim_by_call(request).await;
        }
        let now = now_ms();
        let lease_until = now + request.lease.as_millis() as i64;
        let limit = request.limit as i64;
        let rows = self
            .query(
                "WITH token AS (SELECT nextval('lease_tokens') AS value),
                 picked AS (
                    SELECT id FROM deliveries
                    WHERE tenant = $1 AND destination = $2 AND state = 0 AND due_at <= $3
                      AND NOT EXISTS (SELECT 1 FROM paused p WHERE p.tenant = $1 AND p.destination = $2)
                    ORDER BY due_at LIMIT $4
                    FOR UPDATE SKIP LOCKED),
                 claimed AS (
                    UPDATE deliveries d SET due_at = $5, claimed_by = $6, lease_token = (SELECT value FROM token)
                    FROM picked WHERE d.id = picked.id
                    RETURNING d.id, d.lease_token, d.event_id, d.attempts - d.series_start AS attempts, d.created_at)
                 SELECT c.id, c.lease_token, c.event_id, c.attempts, c.created_at,
                        e.content_type, e.query, e.body, e.normalized, e.id IS NULL AS missing
                 FROM claimed c LEFT JOIN events e ON e.id = c.event_id
                 ORDER BY c.id",
                &[&request.tenant, &request.destination, &now, &limit, &lease_until, &self.node],
            )
            .await?;
        let client = self.client().await?;
        let (deliveries, dead) = claimed(&**client, &rows, now).await?;
        let next_due = self
            .query(
                // Paused (perhaps by another node): nothing is due, the worker polls.
                "SELECT min(due_at) FROM deliveries WHERE tenant = $1 AND destination = $2 AND state = 0
                   AND NOT EXISTS (SELECT 1 FROM paused p WHERE p.tenant = $1 AND p.destination = $2)",
                &[&request.tenant, &request.destination],
            )
            .await?
            .first()
            .and_then(|r| r.get(0));
        let claim = Claim { deliveries, next_due, dead, ..Claim::default() };
        self.finished_at_claim(&claim);
        Ok(claim)
    }

    async fn complete(&self, completion: Completion) -> Result<bool, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        let (reply, rx) = oneshot::channel();
        self.completions.send(complete::Queued { completion, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn release(&self, delivery: i64, lease: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE deliveries SET due_at = $3, claimed_by = NULL, lease_token = NULL
             WHERE id = $1 AND lease_token = $2 AND state = 0",
            &[&delivery, &lease, &now_ms()],
        )
        .await
        .map(|_| ())
    }

    fn pending_deliveries(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        self.query(
            "INSERT INTO readiness (node, checked_at) VALUES ($1, $2)
             ON CONFLICT (node) DO UPDATE SET checked_at = excluded.checked_at",
            &[&self.node, &now_ms()],
        )
        .await?;
        super::recently_failed(&self.last_failure)
    }

    async fn delivery_owner(&self, delivery: i64) -> Result<Option<(String, String)>, StoreError> {
        let rows = self.query("SELECT tenant, destination FROM deliveries WHERE id = $1", &[&delivery]).await?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    async fn deliveries_of(&self, event: Uuid) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut deliveries: Vec<DeliveryRecord> = self
            .query(
                "SELECT id, tenant, destination, state, last_error FROM deliveries WHERE event_id = $1 ORDER BY id",
                &[&event],
            )
            .await?
            .iter()
            .map(delivery_record)
            .collect();
        let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
        let attempts = self
            .query(
                "SELECT delivery_id, started_at, latency_us, status, error, response_prefix FROM attempts
                 WHERE delivery_id = ANY($1) ORDER BY delivery_id, n",
                &[&ids],
            )
            .await?;
        for row in &attempts {
            let id: i64 = row.get(0);
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == id) {
                d.attempts.push(attempt_record(row, 1));
            }
        }
        Ok(deliveries)
    }

    async fn events(&self, q: EventQuery) -> Result<Vec<EventSummary>, StoreError> {
        use super::admin::{EventParam, events_sql};
        use tokio_postgres::types::ToSql;
        let (sql, args) = events_sql(&q, &|n| format!("${n}"));
        let args: Vec<Box<dyn ToSql + Sync + Send>> = args
            .into_iter()
            .map(|a| -> Box<dyn ToSql + Sync + Send> {
                match a {
                    EventParam::Text(t) => Box::new(t),
                    EventParam::Int(i) => Box::new(i),
                    EventParam::Id(id) => Box::new(id),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        Ok(self.query(&sql, &refs).await?.iter().map(event_summary).collect())
    }

    async fn event(&self, id: Uuid) -> Result<Option<EventDetail>, StoreError> {
        let rows = self
            .query(
                "SELECT id, tenant, source, call_id, received_at, from_number, to_number, content_type, query, body,
                   normalized FROM events WHERE id = $1",
                &[&id],
            )
            .await?;
        let Some(r) = rows.first() else { return Ok(None) };
        Ok(Some(EventDetail {
            summary: event_summary(r),
            content_type: r.get(7),
            query: r.get(8),
            body: r.get(9),
            normalized: r.get(10),
            deliveries: self.deliveries_of(id).await?,
        }))
    }

    async fn deliveries(&self, q: DeliveryQuery) -> Result<Vec<DeliverySummary>, StoreError> {
        let state = q.state.map(|s| s.code() as i16);
        let limit = q.limit as i64;
        Ok(self
            .query(
                "SELECT id, event_id, tenant, destination, state, attempts - series_start, created_at, due_at, last_error
                 FROM deliveries
                 WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR destination = $2)
                   AND ($3::int2 IS NULL OR state = $3) AND ($4::int8 IS NULL OR created_at >= $4)
                   AND ($5::int8 IS NULL OR created_at < $5) AND ($6::int8 IS NULL OR id < $6)
                 ORDER BY id DESC LIMIT $7",
                &[&q.tenant, &q.destination, &state, &q.since, &q.until, &q.before, &limit],
            )
            .await?
            .iter()
            .map(|r| DeliverySummary {
                id: r.get(0),
                event_id: r.get(1),
                tenant: r.get(2),
                destination: r.get(3),
                state: DeliveryState::from_code(r.get::<_, i16>(4).into()),
                attempts: r.get::<_, i32>(5).max(0) as u32,
                created_at: r.get(6),
                due_at: r.get(7),
                last_error: r.get(8),
            })
            .collect())
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let mut stats = QueueStats::default();
        for row in self.query("SELECT state, count(*) FROM deliveries GROUP BY state", &[]).await? {
            let count = row.get::<_, i64>(1) as u64;
            match DeliveryState::from_code(row.get::<_, i16>(0).into()) {
                DeliveryState::Pending => stats.pending = count,
                DeliveryState::Delivered => stats.delivered = count,
                DeliveryState::Dead => stats.dead = count,
                DeliveryState::Superseded => stats.superseded = count,
                DeliveryState::Expired => stats.expired = count,
                DeliveryState::Cancelled => stats.cancelled = count,
            }
        }
        stats.per_destination = self
            .query(
                "SELECT tenant, destination, count(*), min(created_at) FROM deliveries WHERE state = 0
                 GROUP BY tenant, destination",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64, r.get(3)))
            .collect();
        Ok(stats)
    }

    async fn cancel_left_behind(
        &self,
        tenant: &str,
        destination: Option<&str>,
        created_to: i64,
    ) -> Result<u64, StoreError> {
        let state = DeliveryState::Cancelled.code() as i16;
        let reason = crate::store::catalog::cancel_reason(destination.is_none());
        let cancelled = self
            .execute(
                "UPDATE deliveries SET state = $1, finished_at = $2, last_error = $3, claimed_by = NULL,
                     lease_token = NULL
                 WHERE state = 0 AND tenant = $4 AND ($5::text IS NULL OR destination = $5) AND created_at <= $6",
                &[&state, &now_ms(), &reason, &tenant, &destination, &created_to],
            )
            .await?;
        if cancelled > 0 {
            let _ =
                self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(cancelled)));
        }
        Ok(cancelled)
    }

    async fn replay(&self, delivery: i64) -> Result<Replay, StoreError> {
        let queued = self.execute(&format!("{REPLAY} WHERE id = $2 AND state <> 0"), &[&now_ms(), &delivery]).await?;
        if queued == 1 {
            self.pending.fetch_add(1, Ordering::Relaxed);
            return Ok(Replay::Queued);
        }
        let exists = !self.query("SELECT 1 FROM deliveries WHERE id = $1", &[&delivery]).await?.is_empty();
        Ok(if exists { Replay::AlreadyPending } else { Replay::NotFound })
    }

    async fn replay_matching(&self, f: ReplayFilter) -> Result<u64, StoreError> {
        let state = f.state.code() as i16;
        let limit = f.limit as i64;
        let count = self
            .execute(
                &format!(
                    "{REPLAY} WHERE id IN (SELECT id FROM deliveries WHERE state = $2
                       AND ($3::text IS NULL OR tenant = $3) AND ($4::text IS NULL OR destination = $4)
                       AND ($5::int8 IS NULL OR created_at >= $5) AND ($6::int8 IS NULL OR created_at < $6)
                     ORDER BY id LIMIT $7 FOR UPDATE SKIP LOCKED)"
                ),
                &[&now_ms(), &state, &f.tenant, &f.destination, &f.since, &f.until, &limit],
            )
            .await?;
        self.pending.fetch_add(count, Ordering::Relaxed);
        Ok(count)
    }

    async fn set_paused(&self, tenant: &str, destination: &str, paused: bool) -> Result<(), StoreError> {
        let sql = if paused {
            "INSERT INTO paused (tenant, destination) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM paused WHERE tenant = $1 AND destination = $2"
        };
        self.execute(sql, &[&tenant, &destination]).await.map(|_| ())
    }

    async fn paused(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .query("SELECT tenant, destination FROM paused", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn purge(&self, delivered_before: i64, dead_before: i64, batch: usize) -> Result<u64, StoreError> {
        let batch = batch as i64;
        // Nodes purge concurrently; SKIP LOCKED keeps them off each other's rows.
        let rows = self
            .query(
                "WITH doomed AS (
                    SELECT id FROM deliveries
                    WHERE (state IN (1, 3, 4, 5) AND finished_at < $1) OR (state = 2 AND finished_at < $2)
                    LIMIT $3 FOR UPDATE SKIP LOCKED),
                 a AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM doomed) RETURNING 1),
                 d AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM doomed) RETURNING 1)
                 SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM d)",
                &[&delivered_before, &dead_before, &batch],
            )
            .await?;
        let mut count = rows.first().map_or(0, |r| r.get::<_, i64>(0));
        // Event ids are UUIDv7, which PostgreSQL orders bytewise: the id bound by arrival time.
        let mut boundary = [0u8; 16];
        boundary[..6].copy_from_slice(&delivered_before.max(0).to_be_bytes()[2..]);
        let boundary = Uuid::from_bytes(boundary);
        count += self
            .execute(
                "DELETE FROM events WHERE id IN (
                    SELECT e.id FROM events e WHERE e.id < $1
                      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                    LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&boundary, &batch],
            )
            .await? as i64;
        count += self
            .execute(
                "DELETE FROM dedupe WHERE (tenant, source, key) IN (
                    SELECT tenant, source, key FROM dedupe WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&now_ms(), &batch],
            )
            .await? as i64;
        Ok(count as u64)
    }

    async fn record_exchange(
        &self,
        event: Uuid,
        tenant: &str,
        destination: &str,
        attempt: AttemptRecord,
        delivered: bool,
    ) -> Result<(), StoreError> {
        let (state, last_error) = if delivered { (1i16, None) } else { (2, Some(attempt.summary())) };
        let latency = attempt.latency.as_micros() as i64;
        let status = attempt.status.map(i32::from);
        self.execute(
            "WITH d AS (
                INSERT INTO deliveries (event_id, tenant, destination, state, attempts, created_at, due_at, finished_at, last_error)
                VALUES ($1, $2, $3, $4, 1, $5, $5, $5, $6) RETURNING id)
             INSERT INTO attempts (delivery_id, n, started_at, latency_us, status, error, response_prefix)
             SELECT id, 1, $5, $7, $8, $9, $10 FROM d",
            &[
                &event,
                &tenant,
                &destination,
                &state,
                &attempt.started_at,
                &last_error,
                &latency,
                &status,
                &attempt.error,
                &attempt.response_prefix,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn close(&self) {
        self.stop.cancel();
        // The batchers write what is queued (commits and completions), then end; the
        // refresher has nothing to finish.
        if tokio::time::timeout(Duration::from_secs(30), self.tasks.wait()).await.is_err() {
            tracing::warn!("store tasks still running 30 s after close; closing the pool under them");
        }
        self.closed.store(true, Ordering::Relaxed);
        self.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count that reads a large queue is made less often, so that counting never takes
    /// more than a fiftieth of a connection's time; a quick one runs every second.
    #[test]
    fn the_pending_count_is_read_less_often_when_reading_it_costs_more() {
        assert_eq!(next_count_in(Duration::from_micros(300)), PENDING_REFRESH);
        assert_eq!(next_count_in(Duration::from_millis(20)), PENDING_REFRESH);
        assert_eq!(next_count_in(Duration::from_millis(80)), Duration::from_secs(4));
        assert_eq!(next_count_in(Duration::from_secs(5)), PENDING_REFRESH_MAX);
    }
}
