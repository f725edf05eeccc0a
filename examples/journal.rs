//! A prototype of the storage design issue #14 points at, measured against the store as it
//! is: what one SQLite writer thread costs per event, with an fsync per batch, in both.
//!
//! - **rows** (today's schema, the writer's statements as `store::sqlite::writer` runs them):
//!   an event row with its five search indexes and its id index, a delivery row per
//!   destination with three indexes, a dedupe row; a completion updates the delivery (its
//!   state and due time are indexed) and inserts an attempt row.
//! - **journal**: the acknowledgement writes an append-only journal row (the event and its
//!   destinations, no secondary index), the dedupe row, and one row per delivery in a compact
//!   index of pending state keyed (destination, due, delivery). A completion deletes the
//!   pending row and appends an outcome row (the attempt history, keyed by delivery id,
//!   which is the journal sequence and the destination's place). The search index (tenant,
//!   call, both numbers, event id) and the dedupe table are built off the acknowledgement,
//!   in batches of `INDEX_EVERY` journal rows, and that cost is counted here. A dedupe check
//!   reads the table and the keys journaled since its last batch (kept in memory; on a
//!   restart they would be read back from the journal's unindexed tail).
//!
//! Two workloads: `ingest` (commits only: destinations paused, figure 2b) and `carry` (each
//! batch also completes every delivery of the batch before it at the first try, figure 1).
//! One thread drives each design with exactly `--batch` events per transaction (wrk's 32
//! connections against a writer bound give batches of about 16), `synchronous = FULL`.
//! Printed per design: events/s the thread sustains, its CPU µs per event, and the bytes the
//! process wrote per event (WAL, checkpoints).
//!
//! With `--postgres URL` (a server's URL; two databases are created on it) the same two
//! designs run on PostgreSQL instead: **rows** is the store itself (`PgStore`, its batched
//! commits and completions, driven by `--batch` concurrent callers), **journal** the same
//! tables as above written with the same batching (one `unnest` statement per table). There
//! the figure that matters is PostgreSQL's own CPU per event (all its processes).
//! Run: `cargo run --release --example journal -- [--seconds 8] [--batch 16] [--dir DIR]
//! [--postgres URL]`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

/// Journal rows between two runs of the search indexer.
const INDEX_EVERY: i64 = 4096;
const DESTINATIONS: [&str; 3] = ["crm", "ticketing", "analytics"];

fn main() {
    let mut seconds = 8u64;
    let mut batch = 16usize;
    let mut dir: Option<PathBuf> = None;
    let mut postgres: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => seconds = value.parse().expect("--seconds N"),
            "--batch" => batch = value.parse().expect("--batch N"),
            "--dir" => dir = Some(value.into()),
            "--postgres" => postgres = Some(value),
            _ => panic!("usage: journal [--seconds N] [--batch N] [--dir DIR] [--postgres URL]"),
        }
    }
    let scratch = tempfile::tempdir_in(dir.unwrap_or_else(std::env::temp_dir)).expect("a scratch directory");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if let Some(url) = postgres {
        runtime.block_on(pg::compare(&url, batch, Duration::from_secs(seconds)));
        return;
    }
    println!("| design | workload | events/s, one writer thread | writer CPU per event | written per event |");
    println!("|---|---|---|---|---|");
    for workload in [Workload::Ingest, Workload::Carry] {
        for design in [Design::Rows, Design::Journal] {
            let path = scratch.path().join(format!("{design:?}-{workload:?}.db"));
            let conn = open(&path, design, &runtime);
            let figures = run(conn, design, workload, batch, Duration::from_secs(seconds));
            println!(
                "| {design:?} | {workload:?} | {:.0} | {:.1} µs ({:.1} µs indexing) | {:.1} KB |",
                figures.events as f64 / figures.wall.as_secs_f64(),
                figures.cpu.as_secs_f64() * 1e6 / figures.events as f64,
                figures.indexing.as_secs_f64() * 1e6 / figures.events as f64,
                figures.written as f64 / 1024.0 / figures.events as f64,
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Design {
    Rows,
    Journal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    Ingest,
    Carry,
}

/// A connection as the store opens its writer's; today's schema comes from the store itself.
fn open(path: &Path, design: Design, runtime: &tokio::runtime::Runtime) -> Connection {
    let store = switchboard::config::Store {
        backend: switchboard::config::Backend::Sqlite { path: path.to_path_buf() },
        synchronous: switchboard::config::Synchronous::Full,
        max_size_bytes: None,
        retention: Duration::from_secs(3600),
        dead_retention: Duration::from_secs(3600),
    };
    if design == Design::Rows {
        let opened = switchboard::store::SqliteStore::open(path, &store, "prototype").expect("the store opens");
        runtime.block_on(switchboard::store::Store::close(&opened));
    }
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "cache_size", -16_000).unwrap();
    conn.set_prepared_statement_cache_capacity(64);
    if design == Design::Journal {
        conn.execute_batch(
            "CREATE TABLE journal (
                seq INTEGER PRIMARY KEY,
                id BLOB NOT NULL, tenant TEXT NOT NULL, source TEXT NOT NULL, received_at INTEGER NOT NULL,
                content_type TEXT, query TEXT, body BLOB NOT NULL, normalized TEXT,
                call_id TEXT, from_number TEXT, to_number TEXT,
                destinations TEXT NOT NULL, dedupe TEXT, dedupe_until INTEGER);
            CREATE TABLE pending (
                destination INTEGER NOT NULL, due_at INTEGER NOT NULL, delivery INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, lease INTEGER,
                PRIMARY KEY (destination, due_at, delivery)) WITHOUT ROWID;
            CREATE TABLE outcomes (
                delivery INTEGER NOT NULL, n INTEGER NOT NULL, started_at INTEGER NOT NULL,
                latency_us INTEGER NOT NULL, status INTEGER, error TEXT, response_prefix BLOB NOT NULL,
                PRIMARY KEY (delivery, n)) WITHOUT ROWID;
            CREATE TABLE dedupe (
                tenant TEXT NOT NULL, source TEXT NOT NULL, key TEXT NOT NULL,
                event_id BLOB NOT NULL, expires_at INTEGER NOT NULL,
                PRIMARY KEY (tenant, source, key)) WITHOUT ROWID;
            CREATE TABLE search (key TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (key, seq)) WITHOUT ROWID;
            CREATE TABLE indexed (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
            INSERT INTO indexed VALUES (1, 0);",
        )
        .unwrap();
    }
    conn
}

/// One callback as ingest stores it: the Wavecell seed with a fresh call id, its normalized
/// form as the normalizer writes it, one dedupe key.
struct Event {
    id: uuid::Uuid,
    call_id: String,
    body: String,
    normalized: String,
    dedupe: String,
    received_at: i64,
}

fn event() -> Event {
    let id = uuid::Uuid::now_v7();
    // Providers' call ids are random, not sequential: index inserts land anywhere.
    // (A v7 id's random bits, first.)
    let call_id = format!("{:032x}", uuid::Uuid::now_v7().as_u128().rotate_left(64));
    let received_at = switchboard::store::now_ms();
    let body = format!(
        r#"{{"callId":"{call_id}","sessionId":"s-{call_id}","eventType":"CALL_RECEIVED","direction":0,"timestamp":"2019-10-16T08:12:01Z","sourceMsisdn":"6512345678","targetMsisdn":"6587654321","status":"NOT_CONNECTED","duration":0,"dtmf":787}}"#
    );
    let normalized = format!(
        r#"{{"event_id":"{id}","tenant":"bench","source":"wavecell","provider":"wavecell","received_at":"2026-11-29T10:56:23.086+00:00","id":"{call_id}","parent_id":null,"session_id":"s-{call_id}","event":"received","direction":"inbound","from":"6512345678","to":"6587654321","agent":null,"status":"ringing","provider_status":"NOT_CONNECTED","duration":0,"talk_duration":null,"occurred_at":"2019-10-16T08:12:01+00:00","started_at":null,"ended_at":null,"recording_url":null,"dtmf":"787","sip_status":null,"error_code":null,"sequence":null}}"#
    );
    Event { id, dedupe: format!("{call_id}:received:NOT_CONNECTED"), call_id, body, normalized, received_at }
}

struct Figures {
    events: u64,
    wall: Duration,
    cpu: Duration,
    /// Of `cpu`, the search and dedupe index batches.
    indexing: Duration,
    written: u64,
}

/// A delivery made in one batch, completed (first try, 200) in the next.
struct Made {
    id: i64,
    destination: i64,
    due_at: i64,
}

fn run(mut conn: Connection, design: Design, workload: Workload, batch: usize, length: Duration) -> Figures {
    let (cpu0, written0, started) = (thread_cpu(), written(), Instant::now());
    let mut events = 0u64;
    let mut made: Vec<Made> = Vec::new();
    let mut next_seq = 1i64;
    let mut lease = 1i64;
    let mut unindexed = std::collections::HashSet::new();
    let mut indexing = Duration::ZERO;
    while started.elapsed() < length {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
        let finished = std::mem::take(&mut made);
        for _ in 0..batch {
            let e = event();
            match design {
                Design::Rows => commit_rows(&tx, &e, workload, lease, &mut made),
                Design::Journal => commit_journal(&tx, &e, next_seq, &mut unindexed, &mut made),
            }
            next_seq += 1;
        }
        if workload == Workload::Carry {
            for m in &finished {
                match design {
                    Design::Rows => complete_rows(&tx, m, lease - 1),
                    Design::Journal => complete_journal(&tx, m),
                }
            }
        }
        tx.commit().unwrap();
        lease += 1;
        events += batch as u64;
        if design == Design::Journal && next_seq % INDEX_EVERY < batch as i64 {
            let before = thread_cpu();
            index(&mut conn);
            indexing += thread_cpu() - before;
            unindexed.clear();
        }
    }
    let wall = started.elapsed();
    Figures { events, wall, cpu: thread_cpu() - cpu0, indexing, written: written() - written0 }
}

fn seen(tx: &Connection, e: &Event) -> bool {
    tx.prepare_cached("SELECT expires_at FROM dedupe WHERE tenant = ?1 AND source = ?2 AND key = ?3")
        .unwrap()
        .query_row(params!["bench", "wavecell", e.dedupe], |r| r.get::<_, i64>(0))
        .is_ok()
}

fn dedupe(tx: &Connection, e: &Event) {
    assert!(!seen(tx, e), "every call id is new");
    tx.prepare_cached(
        "INSERT INTO dedupe (tenant, source, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tenant, source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at",
    )
    .unwrap()
    .execute(params!["bench", "wavecell", e.dedupe, e.id.as_bytes(), e.received_at + 86_400_000])
    .unwrap();
}

fn commit_rows(tx: &Connection, e: &Event, workload: Workload, lease: i64, made: &mut Vec<Made>) {
    dedupe(tx, e);
    tx.prepare_cached(
        "INSERT INTO events (id, tenant, source, received_at, content_type, query, body, normalized, call_id,
           from_number, to_number)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .unwrap()
    .execute(params![
        e.id.as_bytes(),
        "bench",
        "wavecell",
        e.received_at,
        "application/json",
        None::<&str>,
        e.body.as_bytes(),
        e.normalized,
        e.call_id,
        "6512345678",
        "6587654321"
    ])
    .unwrap();
    // Handed over when delivering (leased to this node), queued when paused.
    let held = (workload == Workload::Carry).then_some(30_000i64);
    let (by, token) = if held.is_some() { (Some("prototype"), Some(lease)) } else { (None, None) };
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO deliveries (event_id, tenant, destination, created_at, due_at, claimed_by, lease_token)
             VALUES (?1, ?2, ?3, ?4, ?4 + coalesce(?5, 0), ?6, ?7)",
        )
        .unwrap();
    for destination in DESTINATIONS {
        insert.execute(params![e.id.as_bytes(), "bench", destination, e.received_at, held, by, token]).unwrap();
        made.push(Made { id: tx.last_insert_rowid(), destination: 0, due_at: 0 });
    }
}

fn complete_rows(tx: &Connection, m: &Made, lease: i64) {
    let now = switchboard::store::now_ms();
    let n: i64 = tx
        .prepare_cached(
            "UPDATE deliveries SET state = ?3, attempts = attempts + 1, due_at = ?4,
                 claimed_by = NULL, lease_token = NULL, last_error = ?5,
                 finished_at = CASE WHEN ?3 != 0 THEN ?4 END
             WHERE id = ?1 AND lease_token = ?2 AND state = 0
             RETURNING attempts",
        )
        .unwrap()
        .query_row(params![m.id, lease, 1, now, None::<&str>], |r| r.get(0))
        .expect("the delivery is leased to this writer");
    tx.prepare_cached(
        "INSERT INTO attempts (delivery_id, n, started_at, latency_us, status, error, response_prefix)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .unwrap()
    .execute(params![m.id, n, now, 800, 200, None::<&str>, b"ok".as_slice()])
    .unwrap();
}

fn commit_journal(
    tx: &Connection,
    e: &Event,
    seq: i64,
    unindexed: &mut std::collections::HashSet<String>,
    made: &mut Vec<Made>,
) {
    assert!(!seen(tx, e) && unindexed.insert(e.dedupe.clone()), "every call id is new");
    tx.prepare_cached(
        "INSERT INTO journal (seq, id, tenant, source, received_at, content_type, query, body, normalized,
           call_id, from_number, to_number, destinations, dedupe, dedupe_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .unwrap()
    .execute(params![
        seq,
        e.id.as_bytes(),
        "bench",
        "wavecell",
        e.received_at,
        "application/json",
        None::<&str>,
        e.body.as_bytes(),
        e.normalized,
        e.call_id,
        "6512345678",
        "6587654321",
        "crm,ticketing,analytics",
        e.dedupe,
        e.received_at + 86_400_000
    ])
    .unwrap();
    let mut insert =
        tx.prepare_cached("INSERT INTO pending (destination, due_at, delivery) VALUES (?1, ?2, ?3)").unwrap();
    for place in 0..DESTINATIONS.len() as i64 {
        // A delivery's id is its event's journal sequence and its destination's place.
        let (id, destination) = (seq * 64 + place, place + 1);
        insert.execute(params![destination, e.received_at, id]).unwrap();
        made.push(Made { id, destination, due_at: e.received_at });
    }
}

fn complete_journal(tx: &Connection, m: &Made) {
    let now = switchboard::store::now_ms();
    let gone = tx
        .prepare_cached("DELETE FROM pending WHERE destination = ?1 AND due_at = ?2 AND delivery = ?3")
        .unwrap()
        .execute(params![m.destination, m.due_at, m.id])
        .unwrap();
    assert_eq!(gone, 1, "the delivery was pending");
    tx.prepare_cached(
        "INSERT INTO outcomes (delivery, n, started_at, latency_us, status, error, response_prefix)
         VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
    )
    .unwrap()
    .execute(params![m.id, now, 800, 200, None::<&str>, b"ok".as_slice()])
    .unwrap();
}

/// The search index of the journal rows not yet indexed, in one transaction.
fn index(conn: &mut Connection) {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    let from: i64 = tx.query_row("SELECT seq FROM indexed", [], |r| r.get(0)).unwrap();
    let to: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM journal", [], |r| r.get(0)).unwrap();
    tx.execute(
        "INSERT INTO search (key, seq)
         SELECT k, seq FROM (
           SELECT 't:' || tenant AS k, seq FROM journal WHERE seq > ?1 AND seq <= ?2
           UNION ALL SELECT 'c:' || call_id, seq FROM journal WHERE seq > ?1 AND seq <= ?2 AND call_id IS NOT NULL
           UNION ALL SELECT 'n:' || from_number, seq FROM journal WHERE seq > ?1 AND seq <= ?2 AND from_number IS NOT NULL
           UNION ALL SELECT 'n:' || to_number, seq FROM journal WHERE seq > ?1 AND seq <= ?2 AND to_number IS NOT NULL
           UNION ALL SELECT 'i:' || hex(id), seq FROM journal WHERE seq > ?1 AND seq <= ?2)
         ORDER BY 1, 2",
        params![from, to],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO dedupe (tenant, source, key, event_id, expires_at)
         SELECT tenant, source, dedupe, id, dedupe_until FROM journal
         WHERE seq > ?1 AND seq <= ?2 AND dedupe IS NOT NULL ORDER BY 1, 2, 3
         ON CONFLICT (tenant, source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at",
        params![from, to],
    )
    .unwrap();
    tx.execute("UPDATE indexed SET seq = ?1", params![to]).unwrap();
    tx.commit().unwrap();
}

/// This thread's CPU time (user and system), from procfs.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // After the command name (which may hold spaces) come the fields from 3 on: utime and
    // stime are 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |n: usize| rest.split_whitespace().nth(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((field(14) + field(15)) * 10)
}

/// Bytes this process has written (`wchar`: WAL frames, checkpoints).
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: ").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

mod pg {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use switchboard::store::{AttemptRecord, Committed, Completion, NewEvent, Next, PgStore, Store, Target};

    use super::{DESTINATIONS, INDEX_EVERY, event};

    pub async fn compare(url: &str, batch: usize, length: Duration) {
        let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("PostgreSQL");
        tokio::spawn(connection);
        println!(
            "| design (PostgreSQL) | workload | events/s | PostgreSQL CPU per event | gateway-side CPU per event |"
        );
        println!("|---|---|---|---|---|");
        for carry in [false, true] {
            for journal in [false, true] {
                let name =
                    format!("prototype_{}_{}_{}", if journal { "journal" } else { "rows" }, carry, std::process::id());
                admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
                let mut config: tokio_postgres::Config = url.parse().unwrap();
                config.dbname(&name);
                let (pg0, own0, started) = (postgres_cpu(), super::thread_cpu(), Instant::now());
                let events = if journal {
                    run_journal(&config, batch, carry, length).await
                } else {
                    run_rows(&config, batch, carry, length).await
                };
                let wall = started.elapsed();
                let (pg, own) = (postgres_cpu() - pg0, super::thread_cpu() - own0);
                println!(
                    "| {} | {} | {:.0} | {:.1} µs | {:.1} µs |",
                    if journal { "Journal" } else { "Rows" },
                    if carry { "Carry" } else { "Ingest" },
                    events as f64 / wall.as_secs_f64(),
                    pg.as_secs_f64() * 1e6 / events as f64,
                    own.as_secs_f64() * 1e6 / events as f64,
                );
                admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
            }
        }
    }

    fn new_event() -> NewEvent {
        let e = event();
        NewEvent {
            id: e.id,
            tenant: "bench".into(),
            source: "wavecell".into(),
            received_at: e.received_at,
            content_type: Some("application/json".into()),
            query: None,
            body: Bytes::from(e.body),
            normalized: e.normalized.into(),
            destinations: Vec::new(),
            call: None,
            dedupe: vec![switchboard::store::Dedupe { key: e.dedupe, until: e.received_at + 86_400_000 }],
            call_id: Some(e.call_id),
            from: Some("6512345678".into()),
            to: Some("6587654321".into()),
        }
    }

    /// Today's store: `batch` callers commit at once; with `carry` each batch's deliveries
    /// are handed over (leased) and completed with the next batch.
    async fn run_rows(config: &tokio_postgres::Config, batch: usize, carry: bool, length: Duration) -> u64 {
        let store = Arc::new(PgStore::open(config, 16, "prototype").await.expect("the store opens"));
        let lease = carry.then_some(Duration::from_secs(30));
        let started = Instant::now();
        let (mut events, mut made) = (0u64, Vec::<(i64, i64)>::new());
        while started.elapsed() < length {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..batch {
                let store = store.clone();
                let mut e = new_event();
                e.destinations =
                    DESTINATIONS.iter().map(|d| Target { destination: d.to_string(), by_call: false, lease }).collect();
                tasks.spawn(async move { Some(store.commit(e).await.unwrap()) });
            }
            for (delivery, lease) in std::mem::take(&mut made) {
                let store = store.clone();
                let attempt = AttemptRecord {
                    started_at: switchboard::store::now_ms(),
                    latency: Duration::from_micros(800),
                    status: Some(200),
                    error: None,
                    response_prefix: b"ok".to_vec(),
                };
                tasks.spawn(async move {
                    let completion = Completion { delivery, lease, attempt, next: Next::Delivered };
                    assert!(store.complete(completion).await.unwrap(), "the lease is held");
                    None
                });
            }
            while let Some(done) = tasks.join_next().await {
                if let Some(Committed::New(leased)) = done.unwrap() {
                    made.extend(leased.ids.iter().map(|&id| (id, leased.lease)));
                }
            }
            events += batch as u64;
        }
        store.close().await;
        events
    }

    const JOURNAL_SCHEMA: &str = "
        CREATE TABLE journal (
            seq bigserial PRIMARY KEY,
            id uuid NOT NULL, tenant text NOT NULL, source text NOT NULL, received_at bigint NOT NULL,
            content_type text, query text, body bytea NOT NULL, normalized text,
            call_id text, from_number text, to_number text, destinations text NOT NULL);
        CREATE TABLE pending (
            destination int NOT NULL, due_at bigint NOT NULL, delivery bigint NOT NULL,
            attempts int NOT NULL DEFAULT 0, lease bigint,
            PRIMARY KEY (destination, due_at, delivery));
        CREATE TABLE outcomes (
            delivery bigint NOT NULL, n int NOT NULL, started_at bigint NOT NULL, latency_us bigint NOT NULL,
            status int, error text, response_prefix bytea NOT NULL, PRIMARY KEY (delivery, n));
        CREATE TABLE dedupe (
            tenant text NOT NULL, source text NOT NULL, key text NOT NULL, event_id uuid NOT NULL,
            expires_at bigint NOT NULL, PRIMARY KEY (tenant, source, key));
        CREATE TABLE search (key text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (key, seq));
        CREATE TABLE indexed (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
        INSERT INTO indexed VALUES (1, 0);";

    /// The journal design with the store's batching: one transaction per batch of commits
    /// (journal, dedupe, pending rows) and one per batch of completions (pending rows
    /// deleted, outcomes appended), each table one `unnest` statement; the search index every
    /// `INDEX_EVERY` events.
    async fn run_journal(config: &tokio_postgres::Config, batch: usize, carry: bool, length: Duration) -> u64 {
        let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(JOURNAL_SCHEMA).await.unwrap();
        let journal = client
            .prepare(
                "INSERT INTO journal (id, tenant, source, received_at, content_type, body, normalized, call_id,
                   from_number, to_number, destinations)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bytea[],
                   $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                 RETURNING seq, received_at",
            )
            .await
            .unwrap();
        let dedupe = client
            .prepare(
                "INSERT INTO dedupe (tenant, source, key, event_id, expires_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bigint[])
                 ON CONFLICT (tenant, source, key) DO UPDATE SET event_id = excluded.event_id,
                   expires_at = excluded.expires_at WHERE dedupe.expires_at <= $6",
            )
            .await
            .unwrap();
        let pending = client
            .prepare(
                "INSERT INTO pending (destination, due_at, delivery, lease)
                 SELECT * FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::bigint[])",
            )
            .await
            .unwrap();
        let delete = client
            .prepare(
                "DELETE FROM pending p USING unnest($1::int[], $2::bigint[], $3::bigint[], $4::bigint[]) AS c(d, due, id, lease)
                 WHERE p.destination = c.d AND p.due_at = c.due AND p.delivery = c.id AND p.lease = c.lease",
            )
            .await
            .unwrap();
        let outcomes = client
            .prepare(
                "INSERT INTO outcomes (delivery, n, started_at, latency_us, status, response_prefix)
                 SELECT d, 1, s, l, st, p FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::bytea[])
                   AS c(d, s, l, st, p)",
            )
            .await
            .unwrap();
        let started = Instant::now();
        let (mut events, mut lease, mut made) = (0u64, 1i64, Vec::<(i32, i64, i64, i64)>::new());
        let mut since_index = 0i64;
        while started.elapsed() < length {
            let batch_events: Vec<NewEvent> = (0..batch).map(|_| new_event()).collect();
            let tx = client.transaction().await.unwrap();
            let col = |f: &dyn Fn(&NewEvent) -> Option<String>| batch_events.iter().map(f).collect::<Vec<_>>();
            let ids: Vec<uuid::Uuid> = batch_events.iter().map(|e| e.id).collect();
            let received: Vec<i64> = batch_events.iter().map(|e| e.received_at).collect();
            let bodies: Vec<&[u8]> = batch_events.iter().map(|e| &e.body[..]).collect();
            let rows = tx
                .query(
                    &journal,
                    &[
                        &ids,
                        &col(&|e| Some(e.tenant.clone())),
                        &col(&|e| Some(e.source.clone())),
                        &received,
                        &col(&|e| e.content_type.as_deref().map(str::to_string)),
                        &bodies,
                        &col(&|e| Some(e.normalized.to_string())),
                        &col(&|e| e.call_id.clone()),
                        &col(&|e| e.from.clone()),
                        &col(&|e| e.to.clone()),
                        &col(&|_| Some("crm,ticketing,analytics".to_string())),
                    ],
                )
                .await
                .unwrap();
            let keys = col(&|e| Some(e.dedupe[0].key.clone()));
            let untils: Vec<i64> = batch_events.iter().map(|e| e.dedupe[0].until).collect();
            let now = switchboard::store::now_ms();
            tx.execute(
                &dedupe,
                &[&col(&|e| Some(e.tenant.clone())), &col(&|e| Some(e.source.clone())), &keys, &ids, &untils, &now],
            )
            .await
            .unwrap();
            let (mut dests, mut dues, mut deliveries, mut leases) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let finished = std::mem::take(&mut made);
            for row in &rows {
                let (seq, due): (i64, i64) = (row.get(0), row.get(1));
                for place in 0..DESTINATIONS.len() as i64 {
                    let held = carry.then_some(lease);
                    dests.push(place as i32 + 1);
                    dues.push(due);
                    deliveries.push(seq * 64 + place);
                    leases.push(held);
                    if carry {
                        made.push((place as i32 + 1, due, seq * 64 + place, lease));
                    }
                }
            }
            tx.execute(&pending, &[&dests, &dues, &deliveries, &leases]).await.unwrap();
            tx.commit().await.unwrap();
            if carry && !finished.is_empty() {
                let tx = client.transaction().await.unwrap();
                let d: Vec<i32> = finished.iter().map(|f| f.0).collect();
                let due: Vec<i64> = finished.iter().map(|f| f.1).collect();
                let id: Vec<i64> = finished.iter().map(|f| f.2).collect();
                let l: Vec<i64> = finished.iter().map(|f| f.3).collect();
                let gone = tx.execute(&delete, &[&d, &due, &id, &l]).await.unwrap();
                assert_eq!(gone as usize, finished.len(), "every completed delivery was pending");
                let started_at = vec![now; finished.len()];
                let latency = vec![800i64; finished.len()];
                let status = vec![200i32; finished.len()];
                let prefix = vec![b"ok".as_slice(); finished.len()];
                tx.execute(&outcomes, &[&id, &started_at, &latency, &status, &prefix]).await.unwrap();
                tx.commit().await.unwrap();
            }
            lease += 1;
            events += batch as u64;
            since_index += batch as i64;
            if since_index >= INDEX_EVERY {
                since_index = 0;
                client
                    .batch_execute(
                        "BEGIN;
                         INSERT INTO search (key, seq)
                         SELECT k, seq FROM (
                           SELECT 't:' || tenant AS k, seq FROM journal WHERE seq > (SELECT seq FROM indexed)
                           UNION ALL SELECT 'c:' || call_id, seq FROM journal WHERE seq > (SELECT seq FROM indexed) AND call_id IS NOT NULL
                           UNION ALL SELECT 'n:' || from_number, seq FROM journal WHERE seq > (SELECT seq FROM indexed) AND from_number IS NOT NULL
                           UNION ALL SELECT 'n:' || to_number, seq FROM journal WHERE seq > (SELECT seq FROM indexed) AND to_number IS NOT NULL
                           UNION ALL SELECT 'i:' || id::text, seq FROM journal WHERE seq > (SELECT seq FROM indexed)) k
                         ORDER BY 1, 2;
                         UPDATE indexed SET seq = (SELECT coalesce(max(seq), 0) FROM journal);
                         COMMIT;",
                    )
                    .await
                    .unwrap();
            }
        }
        events
    }

    /// CPU time of every PostgreSQL process on the machine (backends, WAL writer, checkpointer).
    fn postgres_cpu() -> Duration {
        let mut ticks = 0u64;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let path = entry.path();
            if std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "postgres") {
                let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
                let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                let field =
                    |n: usize| rest.split_whitespace().nth(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
                ticks += field(14) + field(15);
            }
        }
        Duration::from_millis(ticks * 10)
    }
}
