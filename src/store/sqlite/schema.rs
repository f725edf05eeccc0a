//! Versioned schema migrations, applied in order on open; `PRAGMA user_version` records
//! how many have run. Migrations are append-only: never edit one that has shipped.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: events, their deliveries, and every attempt.
    "CREATE TABLE events (
        id BLOB PRIMARY KEY,
        tenant TEXT NOT NULL,
        source TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        content_type TEXT,
        query TEXT,
        body BLOB NOT NULL
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        event_id BLOB NOT NULL,
        tenant TEXT NOT NULL,
        destination TEXT NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,   -- 0 pending, 1 delivered, 2 dead
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,            -- while leased: the lease expiry
        claimed_by TEXT,
        lease_token INTEGER,
        last_error TEXT
    );
    -- The queue: due pending deliveries of one destination, oldest first.
    CREATE INDEX deliveries_queue ON deliveries (tenant, destination, due_at) WHERE state = 0;
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE TABLE attempts (
        delivery_id INTEGER NOT NULL,
        n INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        latency_us INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        response_prefix BLOB NOT NULL,
        PRIMARY KEY (delivery_id, n)
    ) WITHOUT ROWID;",
    // 2: the normalized event beside the raw one, and provider dedupe keys.
    "ALTER TABLE events ADD COLUMN normalized TEXT;
    CREATE TABLE dedupe (
        tenant TEXT NOT NULL,
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, source, key)
    ) WITHOUT ROWID;",
    // 3: what operators search and purge by; replays as attempt series; paused destinations.
    "ALTER TABLE events ADD COLUMN call_id TEXT;
    CREATE INDEX events_tenant ON events (tenant, id);
    CREATE INDEX events_call ON events (tenant, call_id);
    ALTER TABLE deliveries ADD COLUMN finished_at INTEGER;
    ALTER TABLE deliveries ADD COLUMN series_start INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX deliveries_finished ON deliveries (state, finished_at) WHERE state != 0;
    CREATE INDEX deliveries_destination ON deliveries (tenant, destination, id);
    CREATE TABLE paused (
        tenant TEXT NOT NULL,
        destination TEXT NOT NULL,
        PRIMARY KEY (tenant, destination)
    ) WITHOUT ROWID;",
    // 4: readiness probes write here: a store that cannot commit is not ready.
    "CREATE TABLE readiness (
        node TEXT PRIMARY KEY,
        checked_at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 5: per-call delivery: the call a delivery belongs to, its status's rank, the provider's
    // sequence and how long an early event waits. Set only for destinations that go by call.
    "ALTER TABLE deliveries ADD COLUMN call_key TEXT;
    ALTER TABLE deliveries ADD COLUMN status_rank INTEGER;
    ALTER TABLE deliveries ADD COLUMN seq INTEGER;
    ALTER TABLE deliveries ADD COLUMN hold_until INTEGER;
    CREATE INDEX deliveries_call ON deliveries (tenant, destination, call_key, id) WHERE call_key IS NOT NULL;
    CREATE INDEX deliveries_hold ON deliveries (tenant, destination, hold_until)
        WHERE state = 0 AND hold_until IS NOT NULL;",
    // 6: the tenant catalog: tenants managed by API (tombstones kept: versions only rise),
    // their sealed secrets, tenant-scoped keys and the audit trail. `catalog_seq` numbers
    // every change, for nodes following the catalog.
    "CREATE TABLE catalog_seq (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
    INSERT INTO catalog_seq (id, seq) VALUES (1, 0);
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        document TEXT,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tenants_seq ON tenants (seq);
    CREATE TABLE tenant_secrets (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        sealed BLOB NOT NULL,
        PRIMARY KEY (tenant, name)
    ) WITHOUT ROWID;
    CREATE TABLE tenant_keys (
        key_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        hash BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tenant_keys_tenant ON tenant_keys (tenant);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        action TEXT NOT NULL,
        before_version INTEGER,
        after_version INTEGER
    );
    CREATE INDEX audit_tenant ON audit (tenant, seq);",
    // 7: the numbers a call was from and to, for finding it by phone number.
    "ALTER TABLE events ADD COLUMN from_number TEXT;
    ALTER TABLE events ADD COLUMN to_number TEXT;
    CREATE INDEX events_from ON events (from_number);
    CREATE INDEX events_to ON events (to_number);",
    // 8: a number's or a call's newest events straight from an index, in order (a million
    // events: the console's searches read a page, not every match).
    "DROP INDEX events_from;
    DROP INDEX events_to;
    CREATE INDEX events_from ON events (from_number, id);
    CREATE INDEX events_to ON events (to_number, id);
    CREATE INDEX events_call_any ON events (call_id, id);",
    // 9: a tenant's call is found through the call's index (a call has a handful of events),
    // so (tenant, call_id) was a second random-key index written with every event for nothing.
    "DROP INDEX events_call;",
];

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let applied = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if applied >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()
}
