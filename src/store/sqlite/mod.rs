//! The embedded store: one SQLite file in WAL mode. All writes go through a single writer
//! thread that group-commits whatever is queued (see `writer`); reads for inspection use a
//! small pool of reader connections on the blocking pool (WAL lets them read while the
//! writer writes), so one slow listing does not hold up the next. Only one process may use a file at a time, so
//! leases found at open belong to a dead process and are released at once.

#[allow(unsafe_code)]
mod alloc;
mod catalog;
mod queries;
mod schema;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::admin::{
    DeliveryQuery, DeliverySummary, EventDetail, EventQuery, EventSummary, QueueStats, Replay, ReplayFilter,
};
use super::catalog::{AuditEntry, AuditRecord, Catalog, Change, KeyRecord, StoredTenant, Written};
use super::{
    AttemptRecord, Claim, ClaimRequest, Committed, Completion, DeliveryRecord, DeliveryState, NewEvent, Store,
    StoreError,
};
use crate::config::{self, Synchronous};
use writer::{Command, Queued, Write};

/// How many event commits may wait for the writer before ingest is told the store is busy;
/// and, apart, how many other commands (claims, completions, operators' writes) may wait
/// before their callers wait too. Separate budgets are separate lanes: a backlog draining
/// (claims and completions by the thousand) never makes ingest answer 503.
const QUEUE_CAPACITY: usize = 8192;
/// Reader connections: listings, history and metrics figures run this many at once.
const READERS: usize = 4;

/// Reader connections, each lent to one read at a time.
struct Readers {
    idle: Mutex<Vec<Connection>>,
    available: Arc<tokio::sync::Semaphore>,
}

/// A lent reader connection. It goes back to the pool when dropped, on the blocking thread
/// that used it, whatever happened: a caller that stopped waiting (a client that hung up)
/// or a query that panicked must not shrink the pool.
struct Lent {
    conn: Option<Connection>,
    readers: Arc<Readers>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.readers.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }
}

pub struct SqliteStore {
    sender: mpsc::UnboundedSender<Queued>,
    commits: Arc<Semaphore>,
    work: Arc<Semaphore>,
    closed: AtomicBool,
    readers: Arc<Readers>,
    pending: Arc<AtomicU64>,
    /// When the writer last failed a whole batch (Unix ms), for readiness.
    last_failure: Arc<AtomicI64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn open_connection(path: &Path, config: &config::Store) -> rusqlite::Result<Connection> {
    alloc::install();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The writer cycles through some thirty statements (commits, claims by call or not,
    // completions, admin writes): rusqlite's default cache of 16 would evict and re-parse
    // them in the hot loop.
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match config.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "cache_size", -16_000)?; // 16 MB
    if let Some(max) = config.max_size_bytes {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        conn.pragma_update(None, "max_page_count", (max as i64 / page_size).max(1))?;
    }
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies migrations and starts the writer.
    pub fn open(path: &Path, config: &config::Store, node: &str) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = open_connection(path, config)?;
        schema::migrate(&mut conn)?;
        // Single process per file: any lease still held was held by a process that died.
        conn.execute(
            "UPDATE deliveries SET due_at = min(due_at, ?1), claimed_by = NULL, lease_token = NULL
             WHERE state = 0 AND lease_token IS NOT NULL",
            params![super::now_ms()],
        )?;
        let pending =
            conn.query_row("SELECT count(*) FROM deliveries WHERE state = 0", [], |r| r.get::<_, i64>(0))? as u64;
        let next_lease: i64 =
            conn.query_row("SELECT coalesce(max(lease_token), 0) + 1 FROM deliveries", [], |r| r.get(0))?;
        let readers = (0..READERS).map(|_| open_connection(path, config)).collect::<rusqlite::Result<Vec<_>>>()?;
        let ingest_ceiling = match config.max_size_bytes {
            Some(_) => {
                let max: i64 = conn.query_row("PRAGMA max_page_count", [], |r| r.get(0))?;
                Some(max - max / 10)
            }
            None => None,
        };

        let pending = Arc::new(AtomicU64::new(pending));
        let (sender, receiver) = mpsc::unbounded_channel();
        let last_failure = Arc::new(AtomicI64::new(0));
        let writer = writer::Writer::new(
            conn,
            node.to_string(),
            next_lease,
            pending.clone(),
            ingest_ceiling,
            last_failure.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Setup(format!("cannot start the writer thread: {e}")))?;

        Ok(Self {
            sender,
            commits: Arc::new(Semaphore::new(QUEUE_CAPACITY)),
            work: Arc::new(Semaphore::new(QUEUE_CAPACITY)),
            closed: AtomicBool::new(false),
            readers: Arc::new(Readers {
                idle: Mutex::new(readers),
                available: Arc::new(tokio::sync::Semaphore::new(READERS)),
            }),
            pending,
            last_failure,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// A command in the work lane.
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        self.call_in(&self.work, make).await
    }

    /// A command in the lane `budget` counts for.
    async fn call_in<T>(
        &self,
        budget: &Arc<Semaphore>,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let permit = budget.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        self.sender.send(Queued { command: make(reply), _permit: Some(permit) }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self.readers.available.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let conn = self.readers.idle.lock().unwrap_or_else(|p| p.into_inner()).pop().ok_or(StoreError::Closed)?;
        let lent = Lent { conn: Some(conn), readers: self.readers.clone(), _permit: permit };
        tokio::task::spawn_blocking(move || {
            let conn = lent.conn.as_ref().expect("lent until dropped");
            f(conn).map_err(StoreError::from)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Catalog for SqliteStore {
    async fn catalog_seq(&self) -> Result<i64, StoreError> {
        self.read(catalog::seq).await
    }

    async fn catalog_changes(&self, after: i64) -> Result<Vec<StoredTenant>, StoreError> {
        self.read(move |conn| catalog::changes(conn, after)).await
    }

    async fn catalog_tenant(&self, id: &str) -> Result<Option<StoredTenant>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| catalog::tenant(conn, &id)).await
    }

    async fn catalog_list(&self, after: Option<String>, limit: usize) -> Result<Vec<StoredTenant>, StoreError> {
        self.read(move |conn| catalog::list(conn, after.as_deref(), limit)).await
    }

    async fn catalog_write(&self, change: Change) -> Result<Written, StoreError> {
        // In the commits' lane: a tenant change waits behind neither a drain's claims nor
        // the workers queued for the work lane.
        self.call_in(&self.commits, |reply| Command::Catalog { change: Box::new(change), reply }).await
    }

    async fn key_create(&self, key: KeyRecord, audit: AuditEntry) -> Result<bool, StoreError> {
        self.call(|reply| Command::Admin { write: Write::KeyCreate(key, audit), reply }).await.map(|n| n == 1)
    }

    async fn key_delete(&self, tenant: &str, key_id: &str, audit: AuditEntry) -> Result<bool, StoreError> {
        let write = Write::KeyDelete { tenant: tenant.to_string(), key_id: key_id.to_string(), audit };
        self.call(|reply| Command::Admin { write, reply }).await.map(|n| n == 1)
    }

    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let key_id = key_id.to_string();
        self.read(move |conn| catalog::key(conn, &key_id)).await
    }

    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let tenant = tenant.to_string();
        self.read(move |conn| catalog::keys(conn, &tenant)).await
    }

    async fn audit(
        &self,
        tenant: Option<String>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |conn| catalog::audit_trail(conn, tenant.as_deref(), before, limit)).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, event: NewEvent) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        let permit = self.commits.clone().try_acquire_owned().map_err(|_| StoreError::Busy)?;
        let command = Command::Commit { event, reply };
        self.sender.send(Queued { command, _permit: Some(permit) }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Claim, StoreError> {
        self.call(|reply| Command::Claim { request, reply }).await
    }

    async fn complete(&self, completion: Completion) -> Result<bool, StoreError> {
        self.call(|reply| Command::Complete { completion, reply }).await
    }

    async fn release(&self, delivery: i64, lease: i64) -> Result<(), StoreError> {
        self.call(|reply| Command::Release { delivery, lease, reply }).await
    }

    fn pending_deliveries(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Relaxed) || self.sender.is_closed() {
            return Err(StoreError::Closed);
        }
        // In the commits' lane: readiness is whether a commit would go through now.
        self.call_in(&self.commits, |reply| Command::Admin { write: Write::Probe, reply }).await?;
        super::recently_failed(&self.last_failure)
    }

    async fn deliveries_of(&self, event: Uuid) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read(move |conn| queries::deliveries_of(conn, event)).await
    }

    async fn delivery_owner(&self, delivery: i64) -> Result<Option<(String, String)>, StoreError> {
        use rusqlite::OptionalExtension;
        self.read(move |conn| {
            conn.prepare_cached("SELECT tenant, destination FROM deliveries WHERE id = ?1")?
                .query_row(params![delivery], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .await
    }

    async fn events(&self, query: EventQuery) -> Result<Vec<EventSummary>, StoreError> {
        self.read(move |conn| queries::events(conn, &query)).await
    }

    async fn event(&self, id: Uuid) -> Result<Option<EventDetail>, StoreError> {
        self.read(move |conn| queries::event(conn, id)).await
    }

    async fn deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliverySummary>, StoreError> {
        self.read(move |conn| queries::deliveries(conn, &query)).await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.read(queries::queue_stats).await
    }

    async fn replay(&self, delivery: i64) -> Result<Replay, StoreError> {
        match self.read(move |conn| queries::delivery_state(conn, delivery)).await? {
            None => return Ok(Replay::NotFound),
            Some(DeliveryState::Pending) => return Ok(Replay::AlreadyPending),
            Some(_) => {}
        }
        let count = self.call(|reply| Command::Admin { write: Write::Replay(delivery), reply }).await?;
        // It became pending between the read and the write (replayed by someone else).
        Ok(if count == 1 { Replay::Queued } else { Replay::AlreadyPending })
    }

    async fn replay_matching(&self, filter: ReplayFilter) -> Result<u64, StoreError> {
        self.call(|reply| Command::Admin { write: Write::ReplayMatching(filter), reply }).await
    }

    async fn set_paused(&self, tenant: &str, destination: &str, paused: bool) -> Result<(), StoreError> {
        let write = Write::SetPaused { tenant: tenant.to_string(), destination: destination.to_string(), paused };
        self.call(|reply| Command::Admin { write, reply }).await.map(|_| ())
    }

    async fn paused(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(queries::paused).await
    }

    async fn cancel_left_behind(
        &self,
        tenant: &str,
        destination: Option<&str>,
        created_to: i64,
    ) -> Result<u64, StoreError> {
        let write = Write::CancelLeftBehind {
            tenant: tenant.to_string(),
            destination: destination.map(str::to_string),
            created_to,
        };
        self.call(|reply| Command::Admin { write, reply }).await
    }

    async fn purge(&self, delivered_before: i64, dead_before: i64, batch: usize) -> Result<u64, StoreError> {
        self.call(|reply| Command::Admin { write: Write::Purge { delivered_before, dead_before, batch }, reply }).await
    }

    async fn record_exchange(
        &self,
        event: Uuid,
        tenant: &str,
        destination: &str,
        attempt: AttemptRecord,
        delivered: bool,
    ) -> Result<(), StoreError> {
        let write = Write::Exchange {
            event,
            tenant: tenant.to_string(),
            destination: destination.to_string(),
            attempt,
            delivered,
        };
        self.call(|reply| Command::Admin { write, reply }).await.map(|_| ())
    }

    async fn close(&self) {
        // The writer commits everything queued before the shutdown command, then stops.
        self.closed.store(true, Ordering::Relaxed);
        let _ = self.sender.send(Queued { command: Command::Shutdown, _permit: None });
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Committed, NewEvent, now_ms};

    fn event(id: Uuid) -> NewEvent {
        NewEvent {
            id,
            tenant: "t".into(),
            source: "s".into(),
            received_at: now_ms(),
            content_type: None,
            query: None,
            body: bytes::Bytes::from_static(b"{}"),
            normalized: "{}".into(),
            destinations: vec!["d".into()],
            call: None,
            dedupe: Vec::new(),
            call_id: None,
            from: None,
            to: None,
        }
    }

    fn open(dir: &std::path::Path) -> SqliteStore {
        let config = config::Store {
            backend: config::Backend::Sqlite { path: dir.join("t.db") },
            synchronous: Synchronous::Normal,
            max_size_bytes: None,
            retention: std::time::Duration::from_secs(60),
            dead_retention: std::time::Duration::from_secs(60),
        };
        SqliteStore::open(&dir.join("t.db"), &config, "n").unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_abandoned_or_panicking_keep_the_reader_pool_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for _ in 0..READERS + 1 {
            // A client that hangs up while its listing runs.
            let slow = store.read(|conn| {
                std::thread::sleep(std::time::Duration::from_millis(30));
                conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            });
            assert!(tokio::time::timeout(std::time::Duration::from_millis(1), slow).await.is_err());
            // A query that panics.
            let panicked = store.read(|_| -> rusqlite::Result<()> { panic!("a broken query") }).await;
            assert!(matches!(panicked, Err(StoreError::Closed)));
        }
        for _ in 0..READERS * 2 {
            store.queue_stats().await.expect("every reader is back in the pool");
        }
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_command_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let config = config::Store {
            backend: config::Backend::Sqlite { path: dir.path().join("t.db") },
            synchronous: Synchronous::Normal,
            max_size_bytes: None,
            retention: std::time::Duration::from_secs(60),
            dead_retention: std::time::Duration::from_secs(60),
        };
        let store = Arc::new(SqliteStore::open(&dir.path().join("t.db"), &config, "n").unwrap());
        let taken = Uuid::now_v7();
        assert_eq!(store.commit(event(taken)).await.unwrap(), Committed::New(Default::default()));
        // Many commits at once, so they share batches; every other one reuses a taken id.
        let commits: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                let id = if i % 2 == 0 { taken } else { Uuid::now_v7() };
                tokio::spawn(async move { (i, store.commit(event(id)).await) })
            })
            .collect();
        for commit in commits {
            let (i, result) = commit.await.unwrap();
            assert_eq!(result.is_ok(), i % 2 == 1, "commit {i}: {result:?}");
        }
        assert_eq!(store.pending_deliveries(), 33, "the failed commits left nothing behind");
        assert_eq!(store.queue_stats().await.unwrap().pending, 33);
        store.close().await;
    }
}
