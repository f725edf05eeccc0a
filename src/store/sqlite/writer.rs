//! The single writer: group commit. It blocks for one command, takes whatever else is
//! already queued (up to `MAX_BATCH`), applies them all in one transaction, commits once
//! (one fsync with `synchronous = FULL`), and only then answers each caller. One failing
//! command does not fail its neighbours (the batch is then re-run with a savepoint around
//! each command); a failure that aborts the whole transaction (disk full) fails the whole
//! batch, and nobody is told "committed" for work that was not.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::AttemptRecord;
use crate::store::admin::ReplayFilter;
use crate::store::catalog::{AuditEntry, Change, KeyRecord, Written};
use crate::store::{
    Claim, ClaimRequest, ClaimedDelivery, Committed, Completion, DeliveryState, Leased, NewEvent, StoreError, now_ms,
};

const MAX_BATCH: usize = 1024;
/// Of each batch, this much is kept for the work lane when it has work waiting.
const WORK_SHARE: usize = 256;

/// A command with its place in its lane's budget, given back once it has been executed.
pub struct Queued {
    pub command: Command,
    pub _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

pub enum Command {
    Commit {
        event: NewEvent,
        reply: oneshot::Sender<Result<Committed, StoreError>>,
    },
    Claim {
        request: ClaimRequest,
        reply: oneshot::Sender<Result<Claim, StoreError>>,
    },
    Complete {
        completion: Completion,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Release {
        delivery: i64,
        lease: i64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// An operator's change or a responder exchange; answers how many rows it touched.
    Admin {
        write: Write,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// A change to the tenant catalog.
    Catalog {
        change: Box<Change>,
        reply: oneshot::Sender<Result<Written, StoreError>>,
    },
    /// Commit what is queued, then stop.
    Shutdown,
}

enum Done {
    Committed {
        deliveries: u64,
        leased: Leased,
    },
    Duplicate(Uuid),
    Claimed(Claim),
    Completed {
        recorded: bool,
        terminal: bool,
    },
    Released,
    Admin {
        count: u64,
        replayed: u64,
    },
    /// Pending deliveries that ended (cancelled) by an admin write.
    Ended(u64),
    Catalog(Written),
}

pub enum Write {
    Replay(i64),
    ReplayMatching(ReplayFilter),
    SetPaused {
        tenant: String,
        destination: String,
        paused: bool,
    },
    Purge {
        delivered_before: i64,
        dead_before: i64,
        batch: usize,
    },
    /// A readiness probe: a one-row write, refused past the ingest ceiling like an event.
    Probe,
    /// A tenant-scoped key, added (count 0 when the tenant does not exist) or removed.
    KeyCreate(KeyRecord, AuditEntry),
    KeyDelete {
        tenant: String,
        key_id: String,
        audit: AuditEntry,
    },
    /// Pending deliveries of a removed destination (every one of the tenant's: `None`),
    /// created up to `created_to`, cancelled.
    CancelLeftBehind {
        tenant: String,
        destination: Option<String>,
        created_to: i64,
    },
    /// A synchronous responder exchange, recorded as a finished delivery with one attempt.
    Exchange {
        event: Uuid,
        tenant: String,
        destination: String,
        attempt: AttemptRecord,
        delivered: bool,
    },
}

/// Moves up to `room` commands of a lane into the batch; returns how many it took.
fn take(
    lane: &mut VecDeque<Queued>,
    room: usize,
    batch: &mut Vec<Command>,
    permits: &mut Vec<Option<tokio::sync::OwnedSemaphorePermit>>,
    stopping: &mut bool,
) -> usize {
    let n = lane.len().min(room);
    for queued in lane.drain(..n) {
        match queued.command {
            Command::Shutdown => *stopping = true,
            command => batch.push(command),
        }
        permits.push(queued._permit);
    }
    n
}

pub struct Writer {
    conn: Connection,
    node: String,
    next_lease: i64,
    pending: Arc<AtomicU64>,
    /// Pages in use past which new events are refused (`max_size_bytes` less a reserve).
    ingest_ceiling: Option<i64>,
    /// Whether the last writing batch found the store past its ceiling (see `full`).
    full: bool,
    /// When a whole batch last failed to commit (Unix ms; 0: never), for readiness.
    last_failure: Arc<AtomicI64>,
}

impl Writer {
    pub fn new(
        conn: Connection,
        node: String,
        next_lease: i64,
        pending: Arc<AtomicU64>,
        ingest_ceiling: Option<i64>,
        last_failure: Arc<AtomicI64>,
    ) -> Self {
        Self { conn, node, next_lease, pending, ingest_ceiling, full: false, last_failure }
    }

    /// Runs batches until shut down. Each round takes everything queued (the lanes' budgets
    /// bound it) and fills the batch with event commits (and tenant changes) first: a
    /// provider waiting for its acknowledgement does not wait behind a drain's claims and
    /// completions.
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut permits = Vec::with_capacity(MAX_BATCH);
        let (mut commits, mut work) = (VecDeque::new(), VecDeque::new());
        let lane = |queued: Queued, commits: &mut VecDeque<Queued>, work: &mut VecDeque<Queued>| {
            // Tenant changes are rare and an operator waits on each: they go first too.
            let first = matches!(
                queued.command,
                Command::Commit { .. } | Command::Catalog { .. } | Command::Admin { write: Write::Probe, .. }
            );
            if first { commits.push_back(queued) } else { work.push_back(queued) }
        };
        let mut stopping = false;
        loop {
            if commits.is_empty() && work.is_empty() {
                let first = if stopping { rx.try_recv().ok() } else { rx.blocking_recv() };
                let Some(first) = first else { break };
                lane(first, &mut commits, &mut work);
            }
            while let Ok(queued) = rx.try_recv() {
                lane(queued, &mut commits, &mut work);
            }
            // Commits first, but never the whole batch: a flood of callbacks must not stop
            // deliveries (claims, completions) from draining.
            let mut taken = take(&mut commits, MAX_BATCH - WORK_SHARE, &mut batch, &mut permits, &mut stopping);
            taken += take(&mut work, MAX_BATCH - taken, &mut batch, &mut permits, &mut stopping);
            take(&mut commits, MAX_BATCH - taken, &mut batch, &mut permits, &mut stopping);
            if !batch.is_empty() {
                self.execute(&mut batch);
            }
            // The commands are answered: their places in the lanes are free again.
            permits.clear();
        }
    }

    fn execute(&mut self, batch: &mut Vec<Command>) {
        let started = std::time::Instant::now();
        let applied = self.apply_all(batch);
        crate::metrics::group_commit(batch.len(), started.elapsed());
        let results = match applied {
            Ok(results) => results,
            Err(e) => {
                self.last_failure.store(now_ms(), Ordering::Relaxed);
                tracing::error!(error = %e, batch = batch.len(), "store commit failed");
                (0..batch.len()).map(|_| Err(e.clone())).collect()
            }
        };
        let mut added = 0;
        let mut finished = 0;
        for result in &results {
            match result {
                Ok(Done::Committed { deliveries, .. }) => added += deliveries,
                Ok(Done::Admin { replayed, .. }) => added += replayed,
                Ok(Done::Completed { terminal: true, .. }) => finished += 1,
                Ok(Done::Claimed(claim)) => finished += claim.ended(),
                Ok(Done::Catalog(Written::Done { cancelled, .. }) | Done::Ended(cancelled)) => finished += cancelled,
                _ => {}
            }
        }
        if added > 0 {
            self.pending.fetch_add(added, Ordering::Relaxed);
        }
        if finished > 0 {
            self.pending.fetch_sub(finished, Ordering::Relaxed);
        }
        for (command, result) in batch.drain(..).zip(results) {
            reply(command, result);
        }
    }

    /// Applies the batch in one transaction. The fast path runs the commands one after the
    /// other; only if one fails is the transaction rolled back and the batch run again with
    /// a savepoint around each command, so the failure stays its own. (Savepoints on every
    /// command cost the writer a quarter of its time in sub-journal writes.)
    fn apply_all(&mut self, batch: &[Command]) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
        match self.transact(batch, false)? {
            Some(results) => Ok(results),
            // With a savepoint per command only a failure of the whole transaction is left,
            // and that is returned as an error above; `None` cannot come back.
            None => Ok(self.transact(batch, true)?.unwrap_or_default()),
        }
    }

    /// `Ok(None)`: a command failed on the fast path; nothing was committed.
    fn transact(
        &mut self,
        batch: &[Command],
        isolate: bool,
    ) -> Result<Option<Vec<Result<Done, StoreError>>>, StoreError> {
        let now = now_ms();
        let ceiling = self.ingest_ceiling;
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let writes = batch.iter().any(|c| {
            matches!(c, Command::Commit { .. } | Command::Complete { .. } | Command::Admin { write: Write::Probe, .. })
        });
        if writes {
            self.full = past_ceiling(&tx, ceiling, self.full)?;
        }
        let full = writes && self.full;
        let mut results = Vec::with_capacity(batch.len());
        for command in batch {
            if full && matches!(command, Command::Commit { .. } | Command::Admin { write: Write::Probe, .. }) {
                results.push(Err(StoreError::Full));
                continue;
            }
            if !isolate {
                match apply(&tx, command, now, &self.node, &mut self.next_lease, full) {
                    Ok(done) => results.push(Ok(done)),
                    Err(e) if tx.is_autocommit() => return Err(e.into()),
                    // Dropping the transaction rolls it back.
                    Err(_) => return Ok(None),
                }
                continue;
            }
            let savepoint = tx.savepoint()?;
            match apply(&savepoint, command, now, &self.node, &mut self.next_lease, full) {
                Ok(done) => {
                    savepoint.commit()?;
                    results.push(Ok(done));
                }
                Err(e) => {
                    drop(savepoint);
                    if tx.is_autocommit() {
                        // SQLite rolled the whole transaction back (e.g. disk full).
                        return Err(e.into());
                    }
                    results.push(Err(e.into()));
                }
            }
        }
        tx.commit()?;
        Ok(Some(results))
    }
}

/// Whether the store is too full for new events. The last tenth of `max_size_bytes` is
/// kept for the work that frees space: finishing deliveries (with a smaller history, see
/// `complete`) and purging. A store that let ingest or retry history take every page could
/// not record the deliveries that would drain it, and would stay full.
fn past_ceiling(tx: &Connection, ceiling: Option<i64>, was_full: bool) -> rusqlite::Result<bool> {
    let Some(ceiling) = ceiling else { return Ok(false) };
    let pages: i64 = tx.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = tx.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(full(pages - free, ceiling, was_full))
}

/// A full store stays full until a fiftieth of its ceiling (at least 4 pages) is free
/// again. Rows rewritten in place (a retry's count and last error) free and take pages by
/// the handful; without the margin those let single events in at the edge, each filling
/// the store again, and ingest would flap between accepting and refusing.
fn full(used: i64, ceiling: i64, was_full: bool) -> bool {
    let margin = if was_full { (ceiling / 50).max(4) } else { 0 };
    used >= ceiling - margin
}

fn reply(command: Command, result: Result<Done, StoreError>) {
    // A caller that gave up waiting has dropped its receiver; the work is committed anyway.
    match command {
        Command::Commit { reply, .. } => {
            let _ = reply.send(result.map(|d| match d {
                Done::Duplicate(id) => Committed::Duplicate(id),
                Done::Committed { leased, .. } => Committed::New(leased),
                _ => Committed::New(Leased::default()),
            }));
        }
        Command::Claim { reply, .. } => {
            let _ = reply.send(result.map(|d| match d {
                Done::Claimed(claim) => claim,
                _ => Claim::default(),
            }));
        }
        Command::Complete { reply, .. } => {
            let _ = reply.send(result.map(|d| matches!(d, Done::Completed { recorded: true, .. })));
        }
        Command::Release { reply, .. } => {
            let _ = reply.send(result.map(|_| ()));
        }
        Command::Admin { reply, .. } => {
            let _ = reply.send(result.map(|d| match d {
                Done::Admin { count, .. } | Done::Ended(count) => count,
                _ => 0,
            }));
        }
        Command::Catalog { reply, .. } => {
            let _ = reply.send(result.map(|d| match d {
                Done::Catalog(written) => written,
                _ => Written::VersionMismatch { current: None },
            }));
        }
        Command::Shutdown => {}
    }
}

fn apply(
    tx: &Connection,
    command: &Command,
    now: i64,
    node: &str,
    next_lease: &mut i64,
    pressure: bool,
) -> rusqlite::Result<Done> {
    match command {
        Command::Commit { event, .. } => {
            let lease = *next_lease;
            if event.destinations.iter().any(|t| t.lease.is_some()) {
                *next_lease += 1;
            }
            commit(tx, event, node, lease)
        }
        Command::Claim { request, .. } => {
            let lease = *next_lease;
            *next_lease += 1;
            claim(tx, request, now, node, lease).map(Done::Claimed)
        }
        Command::Complete { completion, .. } => complete(tx, completion, pressure),
        Command::Release { delivery, lease, .. } => {
            tx.prepare_cached(
                "UPDATE deliveries SET due_at = ?3, claimed_by = NULL, lease_token = NULL
                 WHERE id = ?1 AND lease_token = ?2 AND state = 0",
            )?
            .execute(params![delivery, lease, now])?;
            Ok(Done::Released)
        }
        Command::Admin { write: Write::Probe, .. } if pressure => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("the store is past its ingest ceiling".into()),
        )),
        Command::Admin { write: Write::Probe, .. } => {
            tx.prepare_cached(
                "INSERT INTO readiness (node, checked_at) VALUES (?1, ?2)
                 ON CONFLICT (node) DO UPDATE SET checked_at = excluded.checked_at",
            )?
            .execute(params![node, now])?;
            Ok(Done::Admin { count: 1, replayed: 0 })
        }
        Command::Admin { write, .. } => admin(tx, write, now),
        Command::Catalog { change, .. } => super::catalog::write(tx, change, now).map(Done::Catalog),
        Command::Shutdown => Ok(Done::Released),
    }
}

fn admin(tx: &Connection, write: &Write, now: i64) -> rusqlite::Result<Done> {
    // A replay is a new attempt series: the attempt count restarts (history is kept, so
    // attempt rows keep their numbers), and so does the retry deadline.
    const REPLAY: &str = "UPDATE deliveries SET state = 0, due_at = ?1, created_at = ?1, series_start = attempts,
             finished_at = NULL, last_error = NULL, claimed_by = NULL, lease_token = NULL";
    match write {
        // Written by `apply`, which knows the node and the ceiling.
        Write::Probe => Ok(Done::Admin { count: 0, replayed: 0 }),
        Write::Replay(id) => {
            let count =
                tx.prepare_cached(&format!("{REPLAY} WHERE id = ?2 AND state != 0"))?.execute(params![now, id])? as u64;
            Ok(Done::Admin { count, replayed: count })
        }
        Write::ReplayMatching(f) => {
            let count = tx
                .prepare_cached(&format!(
                    "{REPLAY} WHERE id IN (SELECT id FROM deliveries WHERE state = ?2
                       AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR destination = ?4)
                       AND (?5 IS NULL OR created_at >= ?5) AND (?6 IS NULL OR created_at < ?6)
                     ORDER BY id LIMIT ?7)"
                ))?
                .execute(params![now, f.state.code(), f.tenant, f.destination, f.since, f.until, f.limit as i64])?
                as u64;
            Ok(Done::Admin { count, replayed: count })
        }
        Write::KeyCreate(key, audit) => {
            let count = u64::from(super::catalog::key_create(tx, key, audit)?);
            Ok(Done::Admin { count, replayed: 0 })
        }
        Write::KeyDelete { tenant, key_id, audit } => {
            let count = u64::from(super::catalog::key_delete(tx, tenant, key_id, audit, now)?);
            Ok(Done::Admin { count, replayed: 0 })
        }
        Write::SetPaused { tenant, destination, paused } => {
            let sql = if *paused {
                "INSERT OR IGNORE INTO paused (tenant, destination) VALUES (?1, ?2)"
            } else {
                "DELETE FROM paused WHERE tenant = ?1 AND destination = ?2"
            };
            let count = tx.prepare_cached(sql)?.execute(params![tenant, destination])? as u64;
            Ok(Done::Admin { count, replayed: 0 })
        }
        Write::CancelLeftBehind { tenant, destination, created_to } => {
            let reason = crate::store::catalog::cancel_reason(destination.is_none());
            let cancelled = tx
                .prepare_cached(
                    "UPDATE deliveries SET state = ?1, finished_at = ?2, last_error = ?3, claimed_by = NULL,
                         lease_token = NULL
                     WHERE state = 0 AND tenant = ?4 AND (?5 IS NULL OR destination = ?5) AND created_at <= ?6",
                )?
                .execute(params![DeliveryState::Cancelled.code(), now, reason, tenant, destination, created_to])?;
            Ok(Done::Ended(cancelled as u64))
        }
        Write::Exchange { event, tenant, destination, attempt, delivered } => {
            let (state, last_error) = if *delivered { (1, None) } else { (2, Some(attempt.summary())) };
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO deliveries (event_id, tenant, destination, state, attempts, created_at, due_at, finished_at, last_error)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?5, ?6) RETURNING id",
                )?
                .query_row(params![event.as_bytes(), tenant, destination, state, attempt.started_at, last_error], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO attempts (delivery_id, n, started_at, latency_us, status, error, response_prefix)
                 VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                id,
                attempt.started_at,
                attempt.latency.as_micros() as i64,
                attempt.status,
                attempt.error,
                attempt.response_prefix
            ])?;
            Ok(Done::Admin { count: 1, replayed: 0 })
        }
        Write::Purge { delivered_before, dead_before, batch } => {
            let ids: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM deliveries WHERE (state IN (1, 3, 4, 5) AND finished_at < ?1) OR (state = 2 AND finished_at < ?2) LIMIT ?3",
                )?
                .query_map(params![delivered_before, dead_before, *batch as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut count = 0;
            for id in &ids {
                count += tx.prepare_cached("DELETE FROM attempts WHERE delivery_id = ?1")?.execute(params![id])?;
                count += tx.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?.execute(params![id])?;
            }
            // Event ids are UUIDv7: their first 48 bits are the arrival time in ms, so the
            // primary key orders them by age.
            let mut boundary = [0u8; 16];
            boundary[..6].copy_from_slice(&(*delivered_before).max(0).to_be_bytes()[2..]);
            count += tx
                .prepare_cached(
                    "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.id < ?1
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?2)",
                )?
                .execute(params![&boundary[..], *batch as i64])?;
            count += tx
                .prepare_cached(
                    "DELETE FROM dedupe WHERE (tenant, source, key) IN
                       (SELECT tenant, source, key FROM dedupe WHERE expires_at < ?1 LIMIT ?2)",
                )?
                .execute(params![now, *batch as i64])?;
            Ok(Done::Admin { count: count as u64, replayed: 0 })
        }
    }
}

/// Writes the event and its deliveries; those with a `lease` are written already leased to
/// `node` under `lease`, and their ids come back for the hand-over.
fn commit(tx: &Connection, event: &NewEvent, node: &str, lease: i64) -> rusqlite::Result<Done> {
    for dedupe in &event.dedupe {
        let existing: Option<(Vec<u8>, i64)> = tx
            .prepare_cached(DEDUPE_SQL)?
            .query_map(params![event.tenant, event.source, dedupe.key], |r| Ok((r.get(0)?, r.get(1)?)))?
            .next()
            .transpose()?;
        if let Some((id, expires_at)) = existing
            && expires_at > event.received_at
        {
            return Ok(Done::Duplicate(Uuid::from_slice(&id).unwrap_or_default()));
        }
    }
    for dedupe in &event.dedupe {
        tx.prepare_cached(
            "INSERT INTO dedupe (tenant, source, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at",
        )?
        .execute(params![event.tenant, event.source, dedupe.key, event.id.as_bytes(), dedupe.until])?;
    }
    tx.prepare_cached(
        "INSERT INTO events (id, tenant, source, received_at, content_type, query, body, normalized, call_id,
           from_number, to_number)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        event.id.as_bytes(),
        event.tenant,
        event.source,
        event.received_at,
        event.content_type.as_deref(),
        event.query.as_deref(),
        &event.body[..],
        &*event.normalized,
        event.call_id,
        event.from,
        event.to,
    ])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (event_id, tenant, destination, created_at, due_at, claimed_by, lease_token)
         VALUES (?1, ?2, ?3, ?4, ?4 + coalesce(?5, 0), ?6, ?7)",
    )?;
    let mut leased = Leased::default();
    for target in event.destinations.iter().filter(|t| !t.by_call || event.call.is_none()) {
        // A leased delivery is due again only when its lease ends, as a claimed one.
        let held = target.lease.map(|l| l.as_millis() as i64);
        let (by, token) = if held.is_some() { (Some(node), Some(lease)) } else { (None, None) };
        insert.execute(params![
            event.id.as_bytes(),
            event.tenant,
            target.destination,
            event.received_at,
            held,
            by,
            token
        ])?;
        if held.is_some() {
            leased.lease = lease;
            leased.ids.push(tx.last_insert_rowid());
        }
    }
    if let Some(call) = &event.call {
        let mut insert = tx.prepare_cached(
            "INSERT INTO deliveries (event_id, tenant, destination, created_at, due_at, call_key, status_rank, seq, hold_until)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let (seq, hold_until) = call.sequence.unzip();
        for target in event.destinations.iter().filter(|t| t.by_call) {
            insert.execute(params![
                event.id.as_bytes(),
                event.tenant,
                target.destination,
                event.received_at,
                call.key,
                call.rank,
                seq,
                hold_until
            ])?;
        }
    }
    Ok(Done::Committed { deliveries: event.destinations.len() as u64, leased })
}

/// A leased delivery: id, event id, attempts in this series, created at.
type Picked = (i64, Vec<u8>, u32, i64);

/// How many times one claim looks again for a call's next delivery after ending stale
/// ones (a call whose ringing, in-progress and completed all waited ends two, then sends one).
const STALE_PASSES: usize = 8;

fn claim(tx: &Connection, request: &ClaimRequest, now: i64, node: &str, lease: i64) -> rusqlite::Result<Claim> {
    let lease_until = now + request.lease.as_millis() as i64;
    let mut claim = Claim::default();
    let rows = if request.calls.by_call() {
        lease_by_call(tx, request, now, node, lease, &mut claim)?
    } else {
        tx.prepare_cached(CLAIM_SQL)?
            .query_map(
                params![request.tenant, request.destination, now, request.limit as i64, lease_until, node, lease],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .collect::<rusqlite::Result<Vec<Picked>>>()?
    };
    load(tx, request, rows, now, lease, claim)
}

/// The claim's statements. A parameter compared with an indexed column or used as a LIMIT
/// makes SQLite compile the statement again at every new binding, unless it is written
/// `+?N` (an expression, not a bare parameter): the plan is the same, and the re-preparing,
/// which was most of a by-call claim's cost, is gone. `hot_statements_are_not_prepared_again`
/// checks it.
const CLAIM_SQL: &str = "UPDATE deliveries SET due_at = ?5, claimed_by = ?6, lease_token = ?7
     WHERE id IN (SELECT id FROM deliveries
                  WHERE tenant = +?1 AND destination = +?2 AND state = 0 AND due_at <= ?3
                  ORDER BY due_at LIMIT +?4)
     RETURNING id, event_id, attempts - series_start, created_at";
const BY_CALL_SQL: &str = "SELECT d.id, d.event_id, d.attempts - d.series_start, d.created_at, d.status_rank,
                   CASE WHEN ?5 AND d.status_rank IS NOT NULL THEN
                     (SELECT s.event_id FROM deliveries s
                      WHERE s.tenant = d.tenant AND s.destination = d.destination AND s.call_key = d.call_key
                        AND s.id != d.id AND s.status_rank > d.status_rank AND s.state IN (0, 1)
                      ORDER BY s.state DESC, s.id LIMIT 1) END
                 FROM deliveries d
                 WHERE d.tenant = +?1 AND d.destination = +?2 AND d.state = 0 AND d.due_at <= ?3
                   AND (NOT ?6 OR d.call_key IS NULL OR (
                     NOT EXISTS (SELECT 1 FROM deliveries p
                       WHERE p.tenant = d.tenant AND p.destination = d.destination AND p.call_key = d.call_key
                         AND p.state = 0 AND p.id != d.id
                         AND ((p.lease_token IS NOT NULL AND p.due_at > ?3)
                              OR CASE WHEN p.seq IS NULL OR d.seq IS NULL OR p.seq = d.seq THEN p.id < d.id
                                      ELSE p.seq < d.seq END))
                     AND (d.seq IS NULL OR d.hold_until <= ?3 OR d.seq <= (SELECT coalesce(max(f.seq) + 1, 0)
                       FROM deliveries f WHERE f.tenant = d.tenant AND f.destination = d.destination
                         AND f.call_key = d.call_key AND f.state != 0))))

                 ORDER BY d.due_at LIMIT +?4";
const NEXT_DUE_BY_CALL_SQL: &str = "SELECT min(at) FROM (
       SELECT min(due_at) AS at FROM deliveries
       WHERE tenant = +?1 AND destination = +?2 AND state = 0 AND due_at > ?3
       UNION ALL
       SELECT min(hold_until) FROM deliveries
       WHERE tenant = +?1 AND destination = +?2 AND state = 0 AND hold_until IS NOT NULL AND hold_until > ?3)";
const DEDUPE_SQL: &str = "SELECT event_id, expires_at FROM dedupe WHERE tenant = ?1 AND source = ?2 AND key = ?3";
const NEXT_DUE_SQL: &str = "SELECT min(due_at) FROM deliveries WHERE tenant = +?1 AND destination = +?2 AND state = 0";

/// Leases due deliveries of a destination that goes by call. With `ordered`, only a call's
/// first pending delivery (by provider sequence, then commit order) is due, and none while
/// another of the call is in flight; an early event of a sequenced call waits until its
/// `hold_until` unless it follows the last one finished. Stale ones (superseded, expired)
/// end here, unsent, and the call's next is looked for again.
fn lease_by_call(
    tx: &Connection,
    request: &ClaimRequest,
    now: i64,
    node: &str,
    lease: i64,
    claim: &mut Claim,
) -> rusqlite::Result<Vec<Picked>> {
    let rules = request.calls;
    let lease_until = now + request.lease.as_millis() as i64;
    let mut leased = Vec::new();
    for _ in 0..STALE_PASSES {
        let candidates = tx
            .prepare_cached(BY_CALL_SQL)?
            .query_map(
                params![
                    request.tenant,
                    request.destination,
                    now,
                    (request.limit - leased.len()) as i64,
                    rules.supersede,
                    rules.ordered
                ],
                |r| {
                    Ok((
                        (r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, u32>(2)?, r.get::<_, i64>(3)?),
                        r.get::<_, Option<i16>>(4)?,
                        r.get::<_, Option<Vec<u8>>>(5)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if candidates.is_empty() {
            break;
        }
        let mut ended = 0;
        for (row, rank, later) in candidates {
            let later = later.and_then(|id| Uuid::from_slice(&id).ok());
            if let Some((state, reason)) = crate::store::stale(&rules, rank, later, now - row.3) {
                end(tx, row.0, state, now, &reason)?;
                match state {
                    DeliveryState::Superseded => claim.superseded += 1,
                    _ => claim.expired += 1,
                }
                ended += 1;
                continue;
            }
            tx.prepare_cached("UPDATE deliveries SET due_at = ?2, claimed_by = ?3, lease_token = ?4 WHERE id = ?1")?
                .execute(params![row.0, lease_until, node, lease])?;
            leased.push(row);
        }
        if ended == 0 || leased.len() >= request.limit {
            break;
        }
    }
    Ok(leased)
}

/// Reads the leased deliveries' events and the destination's next due time.
fn load(
    tx: &Connection,
    request: &ClaimRequest,
    rows: Vec<Picked>,
    now: i64,
    lease: i64,
    mut claim: Claim,
) -> rusqlite::Result<Claim> {
    let mut event = tx.prepare_cached("SELECT content_type, query, body, normalized FROM events WHERE id = ?1")?;
    let mut deliveries = Vec::with_capacity(rows.len());
    let mut dead = 0;
    for (id, event_id, attempts, created_at) in rows {
        let stored = event
            .query_row(params![event_id], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        // A row that no longer decodes ends dead with the reason: sending a nil webhook-id or
        // an empty event would be sending wrong data, and retrying cannot repair it.
        let (event_id, (content_type, query, body, normalized)) = match (Uuid::from_slice(&event_id), stored) {
            (Ok(event_id), Some(stored)) => (event_id, stored),
            (Err(_), _) => {
                end_undecodable(tx, id, now, "not sent: the stored event id is not a UUID")?;
                dead += 1;
                continue;
            }
            (Ok(_), None) => {
                end_undecodable(tx, id, now, "not sent: the delivery's event is no longer stored")?;
                dead += 1;
                continue;
            }
        };
        deliveries.push(ClaimedDelivery {
            id,
            lease,
            event_id,
            attempt: attempts + 1,
            created_at,
            content_type: content_type.map(Arc::from),
            query: query.map(Arc::from),
            body: Bytes::from(body),
            normalized: normalized.map(Arc::from),
        });
    }
    deliveries.sort_unstable_by_key(|d| d.id);
    claim.next_due = if request.calls.by_call() {
        // Deliveries due but waiting for their call's turn are not "due" to the worker: it is
        // woken when the call's delivery in flight finishes, or at the next retry, lease
        // expiry or end of a reorder hold. Only asked when nothing was claimed: the worker
        // looks at it only then, and it reads every pending delivery of the destination.
        if !deliveries.is_empty() {
            return Ok(Claim { deliveries, dead, ..claim });
        }
        tx.prepare_cached(NEXT_DUE_BY_CALL_SQL)?
            .query_row(params![request.tenant, request.destination, now], |r| r.get(0))?
    } else {
        tx.prepare_cached(NEXT_DUE_SQL)?.query_row(params![request.tenant, request.destination], |r| r.get(0))?
    };
    claim.deliveries = deliveries;
    claim.dead = dead;
    Ok(claim)
}

fn end_undecodable(tx: &Connection, delivery: i64, now: i64, reason: &str) -> rusqlite::Result<()> {
    tracing::error!(delivery, reason, "delivery ended dead: its stored data does not decode");
    end(tx, delivery, DeliveryState::Dead, now, reason)
}

/// Finishes a delivery at a claim, unsent, with the reason.
fn end(tx: &Connection, delivery: i64, state: DeliveryState, now: i64, reason: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE deliveries SET state = ?4, finished_at = ?2, due_at = ?2, last_error = ?3,
             claimed_by = NULL, lease_token = NULL
         WHERE id = ?1",
    )?
    .execute(params![delivery, now, reason, state.code()])?;
    Ok(())
}

/// Under `pressure` (the store is past its ingest ceiling) the history shrinks so that
/// finishing deliveries always fits in the reserve: a failed attempt that will be retried
/// leaves no attempt row (the delivery keeps its count and last error), and no response
/// prefix is kept.
fn complete(tx: &Connection, c: &Completion, pressure: bool) -> rusqlite::Result<Done> {
    let a = &c.attempt;
    let (state, due_at, last_error) = c.row();
    let state = state.code();
    let n: Option<i64> = tx
        .prepare_cached(
            "UPDATE deliveries SET state = ?3, attempts = attempts + 1, due_at = ?4,
                 claimed_by = NULL, lease_token = NULL, last_error = ?5,
                 finished_at = CASE WHEN ?3 != 0 THEN ?4 END
             WHERE id = ?1 AND lease_token = ?2 AND state = 0
             RETURNING attempts",
        )?
        .query_map(params![c.delivery, c.lease, state, due_at, last_error], |r| r.get(0))?
        .next()
        .transpose()?;
    let Some(n) = n else {
        return Ok(Done::Completed { recorded: false, terminal: false });
    };
    if pressure && state == 0 {
        return Ok(Done::Completed { recorded: true, terminal: false });
    }
    let prefix: &[u8] = if pressure { &[] } else { &a.response_prefix };
    tx.prepare_cached(
        "INSERT INTO attempts (delivery_id, n, started_at, latency_us, status, error, response_prefix)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![c.delivery, n, a.started_at, a.latency.as_micros() as i64, a.status, a.error, prefix,])?;
    Ok(Done::Completed { recorded: true, terminal: state != 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_store_stays_full_until_a_margin_is_free() {
        let ceiling = 1_000;
        assert!(!full(999, ceiling, false), "below the ceiling: room");
        assert!(full(1_000, ceiling, false), "at the ceiling: full");
        assert!(full(990, ceiling, true), "a few pages freed: still full");
        assert!(!full(979, ceiling, true), "more than a fiftieth freed: room again");
        assert!(full(6, 10, true) && !full(5, 10, true), "at least 4 pages");
    }

    /// Each claim statement, run three times with new values, is compiled once.
    #[test]
    fn hot_statements_are_not_prepared_again() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::migrate(&mut conn).unwrap();
        let statements = [
            ("claim", CLAIM_SQL),
            ("claim by call", BY_CALL_SQL),
            ("next due by call", NEXT_DUE_BY_CALL_SQL),
            ("next due", NEXT_DUE_SQL),
            ("dedupe", DEDUPE_SQL),
        ];
        for (name, sql) in statements {
            let mut stmt = conn.prepare(sql).unwrap();
            for round in 0..3i64 {
                let values: [&dyn rusqlite::ToSql; 7] =
                    [&format!("t{round}"), &format!("d{round}"), &round, &(round + 1), &true, &"node", &round];
                for (i, value) in values.iter().take(stmt.parameter_count()).enumerate() {
                    stmt.raw_bind_parameter(i + 1, value).unwrap();
                }
                let mut rows = stmt.raw_query();
                while rows.next().unwrap().is_some() {}
            }
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "{name} was compiled again");
        }
    }
}
