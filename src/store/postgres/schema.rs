//! Versioned migrations for the shared store. Several nodes may start at once, so the
//! whole check-and-apply runs in one transaction under an advisory lock: the first node
//! applies, the others wait and then find nothing left to do. Append-only, as for SQLite.

use tokio_postgres::Client;

/// `pg_advisory_xact_lock` key: "switchboard" folded into 64 bits, so it cannot collide
/// with another application's small integer keys by accident.
const LOCK_KEY: i64 = 0x5377_6974_6368_626f;

const MIGRATIONS: &[&str] = &[
    // 1: the whole queue as the embedded store has it after its third migration.
    "CREATE TABLE events (
        id uuid PRIMARY KEY,
        tenant text NOT NULL,
        source text NOT NULL,
        received_at bigint NOT NULL,
        content_type text,
        query text,
        body bytea NOT NULL,
        normalized text,
        call_id text
    );
    CREATE INDEX events_tenant ON events (tenant, id);
    CREATE INDEX events_call ON events (tenant, call_id);
    CREATE TABLE deliveries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id uuid NOT NULL,
        tenant text NOT NULL,
        destination text NOT NULL,
        state smallint NOT NULL DEFAULT 0,  -- 0 pending, 1 delivered, 2 dead
        attempts integer NOT NULL DEFAULT 0,
        series_start integer NOT NULL DEFAULT 0,
        created_at bigint NOT NULL,
        due_at bigint NOT NULL,             -- while leased: the lease expiry
        finished_at bigint,
        claimed_by text,
        lease_token bigint,
        last_error text
    );
    CREATE INDEX deliveries_queue ON deliveries (tenant, destination, due_at) WHERE state = 0;
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE INDEX deliveries_finished ON deliveries (state, finished_at) WHERE state <> 0;
    CREATE INDEX deliveries_destination ON deliveries (tenant, destination, id);
    CREATE TABLE attempts (
        delivery_id bigint NOT NULL,
        n integer NOT NULL,
        started_at bigint NOT NULL,
        latency_us bigint NOT NULL,
        status integer,
        error text,
        response_prefix bytea NOT NULL,
        PRIMARY KEY (delivery_id, n)
    );
    CREATE TABLE dedupe (
        tenant text NOT NULL,
        source text NOT NULL,
        key text NOT NULL,
        event_id uuid NOT NULL,
        expires_at bigint NOT NULL,
        PRIMARY KEY (tenant, source, key)
    );
    CREATE TABLE paused (
        tenant text NOT NULL,
        destination text NOT NULL,
        PRIMARY KEY (tenant, destination)
    );
    -- Lease tokens are global: a node fences another node's stale result by token alone.
    CREATE SEQUENCE lease_tokens;",
    // 2: readiness probes write here: a store that cannot commit is not ready.
    "CREATE TABLE readiness (
        node text PRIMARY KEY,
        checked_at bigint NOT NULL
    );",
    // 3: per-call delivery, as the embedded store's fifth migration.
    "ALTER TABLE deliveries ADD COLUMN call_key text, ADD COLUMN status_rank smallint,
        ADD COLUMN seq bigint, ADD COLUMN hold_until bigint;
    CREATE INDEX deliveries_call ON deliveries (tenant, destination, call_key, id) WHERE call_key IS NOT NULL;
    CREATE INDEX deliveries_hold ON deliveries (tenant, destination, hold_until)
        WHERE state = 0 AND hold_until IS NOT NULL;",
    // 4: the tenant catalog, as the embedded store's sixth migration. Writers lock the
    // `catalog_seq` row, so sequence numbers commit in order.
    "CREATE TABLE catalog_seq (id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
    INSERT INTO catalog_seq (id, seq) VALUES (1, 0);
    CREATE TABLE tenants (
        id text PRIMARY KEY,
        version bigint NOT NULL,
        seq bigint NOT NULL,
        document text,
        updated_at bigint NOT NULL
    );
    CREATE INDEX tenants_seq ON tenants (seq);
    CREATE TABLE tenant_secrets (
        tenant text NOT NULL,
        name text NOT NULL,
        sealed bytea NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE tenant_keys (
        key_id text PRIMARY KEY,
        tenant text NOT NULL,
        hash bytea NOT NULL,
        created_at bigint NOT NULL
    );
    CREATE INDEX tenant_keys_tenant ON tenant_keys (tenant);
    CREATE TABLE audit (
        seq bigserial PRIMARY KEY,
        at bigint NOT NULL,
        actor text NOT NULL,
        tenant text NOT NULL,
        kind text NOT NULL,
        target text NOT NULL,
        action text NOT NULL,
        before_version bigint,
        after_version bigint
    );
    CREATE INDEX audit_tenant ON audit (tenant, seq);",
    // 5: the numbers a call was from and to, as the embedded store's seventh migration.
    "ALTER TABLE events ADD COLUMN from_number text, ADD COLUMN to_number text;
    CREATE INDEX events_from ON events (from_number);
    CREATE INDEX events_to ON events (to_number);",
    // 6: as the embedded store's eighth migration.
    "DROP INDEX events_from;
    DROP INDEX events_to;
    CREATE INDEX events_from ON events (from_number, id);
    CREATE INDEX events_to ON events (to_number, id);
    CREATE INDEX events_call_any ON events (call_id, id);",
    // 9: a tenant's call is found through the call's index (a call has a handful of events),
    // so (tenant, call_id) was a second random-key index written with every event for nothing.
    "DROP INDEX events_call;",
];

pub async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS switchboard_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM switchboard_migrations", &[]).await?.get(0);
    let applied = applied.max(0) as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO switchboard_migrations (version) VALUES ($1)", &[&(i as i32 + 1)]).await?;
    }
    tx.commit().await?;
    Ok(MIGRATIONS.len().saturating_sub(applied))
}
