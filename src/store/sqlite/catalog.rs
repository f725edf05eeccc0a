//! The tenant catalog in the embedded store. Writes run on the writer thread, inside its
//! batch transaction like every other write; reads use the reader pool.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::DeliveryState;
use crate::store::catalog::{AuditEntry, AuditRecord, Change, KeyRecord, StoredTenant, Written, cancel_reason};

/// The live version of a tenant, `None` when absent or deleted; and the row's version
/// whatever it holds (a tombstone's too), so a re-created tenant's version keeps rising.
fn versions(tx: &Connection, tenant: &str) -> rusqlite::Result<(Option<i64>, i64)> {
    let row: Option<(i64, bool)> = tx
        .prepare_cached("SELECT version, document IS NOT NULL FROM tenants WHERE id = ?1")?
        .query_row(params![tenant], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        Some((version, true)) => (Some(version), version),
        Some((version, false)) => (None, version),
        None => (None, 0),
    })
}

fn next_seq(tx: &Connection) -> rusqlite::Result<i64> {
    tx.prepare_cached("UPDATE catalog_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq")?.query_row([], |r| r.get(0))
}

fn audit(
    tx: &Connection,
    now: i64,
    tenant: &str,
    entry: &AuditEntry,
    before: Option<i64>,
    after: Option<i64>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit (at, actor, tenant, kind, target, action, before_version, after_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![now, entry.actor, tenant, entry.kind, entry.target, entry.action, before, after])?;
    Ok(())
}

/// Applies one change; returns how it went and how many pending deliveries it cancelled.
pub fn write(tx: &Connection, change: &Change, now: i64) -> rusqlite::Result<Written> {
    let (live, last) = versions(tx, &change.tenant)?;
    if change.expect.is_some() && change.expect != live {
        return Ok(Written::VersionMismatch { current: live });
    }
    let seq = next_seq(tx)?;
    let version = last + 1;
    tx.prepare_cached(
        "INSERT INTO tenants (id, version, seq, document, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, seq = excluded.seq,
           document = excluded.document, updated_at = excluded.updated_at",
    )?
    .execute(params![change.tenant, version, seq, change.document, now])?;
    let deleted = change.document.is_none();
    if deleted {
        tx.prepare_cached("DELETE FROM tenant_secrets WHERE tenant = ?1")?.execute(params![change.tenant])?;
        tx.prepare_cached("DELETE FROM tenant_keys WHERE tenant = ?1")?.execute(params![change.tenant])?;
    } else {
        for (name, sealed) in &change.secrets {
            match sealed {
                Some(sealed) => tx
                    .prepare_cached(
                        "INSERT INTO tenant_secrets (tenant, name, sealed) VALUES (?1, ?2, ?3)
                         ON CONFLICT (tenant, name) DO UPDATE SET sealed = excluded.sealed",
                    )?
                    .execute(params![change.tenant, name, sealed])?,
                None => tx
                    .prepare_cached("DELETE FROM tenant_secrets WHERE tenant = ?1 AND name = ?2")?
                    .execute(params![change.tenant, name])?,
            };
        }
    }
    let cancelled_state = DeliveryState::Cancelled.code();
    let reason = cancel_reason(deleted);
    let mut cancelled = 0;
    // Leases are taken away too: an attempt in flight cannot bring a cancelled delivery back.
    const CANCEL: &str = "UPDATE deliveries SET state = ?1, finished_at = ?2, last_error = ?3, claimed_by = NULL,
         lease_token = NULL WHERE state = 0 AND tenant = ?4";
    if deleted {
        cancelled += tx.prepare_cached(CANCEL)?.execute(params![cancelled_state, now, reason, change.tenant])?;
    } else {
        for destination in &change.cancel {
            cancelled += tx.prepare_cached(&format!("{CANCEL} AND destination = ?5"))?.execute(params![
                cancelled_state,
                now,
                reason,
                change.tenant,
                destination
            ])?;
        }
    }
    audit(tx, now, &change.tenant, &change.audit, live, (!deleted).then_some(version))?;
    Ok(Written::Done { version, seq, created: live.is_none(), cancelled: cancelled as u64 })
}

pub fn key_create(tx: &Connection, key: &KeyRecord, entry: &AuditEntry) -> rusqlite::Result<bool> {
    let (live, _) = versions(tx, &key.tenant)?;
    tx.prepare_cached("INSERT INTO tenant_keys (key_id, tenant, hash, created_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![key.key_id, key.tenant, key.hash, key.created_at])?;
    audit(tx, key.created_at, &key.tenant, entry, live, live)?;
    Ok(true)
}

pub fn key_delete(tx: &Connection, tenant: &str, key_id: &str, entry: &AuditEntry, now: i64) -> rusqlite::Result<bool> {
    let gone = tx
        .prepare_cached("DELETE FROM tenant_keys WHERE tenant = ?1 AND key_id = ?2")?
        .execute(params![tenant, key_id])?;
    if gone == 1 {
        let (live, _) = versions(tx, tenant)?;
        audit(tx, now, tenant, entry, live, live)?;
    }
    Ok(gone == 1)
}

pub fn seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT seq FROM catalog_seq WHERE id = 1")?.query_row([], |r| r.get(0))
}

fn secrets_of(conn: &Connection, tenant: &str) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    conn.prepare_cached("SELECT name, sealed FROM tenant_secrets WHERE tenant = ?1 ORDER BY name")?
        .query_map(params![tenant], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

fn stored(r: &rusqlite::Row) -> rusqlite::Result<StoredTenant> {
    Ok(StoredTenant {
        id: r.get(0)?,
        version: r.get(1)?,
        seq: r.get(2)?,
        document: r.get(3)?,
        secrets: Vec::new(),
        updated_at: r.get(4)?,
    })
}

const COLUMNS: &str = "SELECT id, version, seq, document, updated_at FROM tenants";

pub fn changes(conn: &Connection, after: i64) -> rusqlite::Result<Vec<StoredTenant>> {
    let mut tenants: Vec<StoredTenant> = conn
        .prepare_cached(&format!("{COLUMNS} WHERE seq > ?1 ORDER BY seq"))?
        .query_map(params![after], stored)?
        .collect::<rusqlite::Result<_>>()?;
    for tenant in tenants.iter_mut().filter(|t| t.document.is_some()) {
        tenant.secrets = secrets_of(conn, &tenant.id)?;
    }
    Ok(tenants)
}

pub fn tenant(conn: &Connection, id: &str) -> rusqlite::Result<Option<StoredTenant>> {
    let Some(mut tenant) =
        conn.prepare_cached(&format!("{COLUMNS} WHERE id = ?1"))?.query_row(params![id], stored).optional()?
    else {
        return Ok(None);
    };
    tenant.secrets = secrets_of(conn, id)?;
    Ok(Some(tenant))
}

pub fn list(conn: &Connection, after: Option<&str>, limit: usize) -> rusqlite::Result<Vec<StoredTenant>> {
    conn.prepare_cached(&format!(
        "{COLUMNS} WHERE document IS NOT NULL AND (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2"
    ))?
    .query_map(params![after, limit as i64], stored)?
    .collect()
}

fn key_record(r: &rusqlite::Row) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord { key_id: r.get(0)?, tenant: r.get(1)?, hash: r.get(2)?, created_at: r.get(3)? })
}

pub fn key(conn: &Connection, key_id: &str) -> rusqlite::Result<Option<KeyRecord>> {
    conn.prepare_cached("SELECT key_id, tenant, hash, created_at FROM tenant_keys WHERE key_id = ?1")?
        .query_row(params![key_id], key_record)
        .optional()
}

pub fn keys(conn: &Connection, tenant: &str) -> rusqlite::Result<Vec<KeyRecord>> {
    conn.prepare_cached(
        "SELECT key_id, tenant, hash, created_at FROM tenant_keys WHERE tenant = ?1 ORDER BY created_at, key_id",
    )?
    .query_map(params![tenant], key_record)?
    .collect()
}

pub fn audit_trail(
    conn: &Connection,
    tenant: Option<&str>,
    before: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<AuditRecord>> {
    conn.prepare_cached(
        "SELECT seq, at, tenant, actor, kind, target, action, before_version, after_version FROM audit
         WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR seq < ?2) ORDER BY seq DESC LIMIT ?3",
    )?
    .query_map(params![tenant, before, limit as i64], |r| {
        Ok(AuditRecord {
            seq: r.get(0)?,
            at: r.get(1)?,
            tenant: r.get(2)?,
            entry: AuditEntry { actor: r.get(3)?, kind: r.get(4)?, target: r.get(5)?, action: r.get(6)? },
            before_version: r.get(7)?,
            after_version: r.get(8)?,
        })
    })?
    .collect()
}
