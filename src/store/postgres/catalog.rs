//! The tenant catalog on PostgreSQL. A write locks the `catalog_seq` row first, so writers
//! from every node take turns and sequence numbers commit in the order they were taken:
//! a node following changes past its last `seq` never skips one that committed late.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, pg_error};
use crate::store::catalog::{
    AuditEntry, AuditRecord, Catalog, Change, KeyRecord, StoredTenant, Written, cancel_reason,
};
use crate::store::{DeliveryState, StoreError, now_ms};

const COLUMNS: &str = "SELECT id, version, seq, document, updated_at FROM tenants";

fn stored(r: &Row) -> StoredTenant {
    StoredTenant {
        id: r.get(0),
        version: r.get(1),
        seq: r.get(2),
        document: r.get(3),
        secrets: Vec::new(),
        updated_at: r.get(4),
    }
}

fn key_record(r: &Row) -> KeyRecord {
    KeyRecord { key_id: r.get(0), tenant: r.get(1), hash: r.get(2), created_at: r.get(3) }
}

const AUDIT: &str = "INSERT INTO audit (at, actor, tenant, kind, target, action, before_version, after_version)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The live version (`None`: absent or deleted) and the row's last version.
async fn versions(tx: &tokio_postgres::Transaction<'_>, tenant: &str) -> Result<(Option<i64>, i64), StoreError> {
    let row = tx
        .query_opt("SELECT version, document IS NOT NULL FROM tenants WHERE id = $1", &[&tenant])
        .await
        .map_err(pg_error)?;
    Ok(match row.map(|r| (r.get::<_, i64>(0), r.get::<_, bool>(1))) {
        Some((version, true)) => (Some(version), version),
        Some((version, false)) => (None, version),
        None => (None, 0),
    })
}

impl PgStore {
    async fn secrets_of(&self, tenant: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .query("SELECT name, sealed FROM tenant_secrets WHERE tenant = $1 ORDER BY name", &[&tenant])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

#[async_trait]
impl Catalog for PgStore {
    async fn catalog_seq(&self) -> Result<i64, StoreError> {
        let rows = self.query("SELECT seq FROM catalog_seq WHERE id = 1", &[]).await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    async fn catalog_changes(&self, after: i64) -> Result<Vec<StoredTenant>, StoreError> {
        let rows = self.query(&format!("{COLUMNS} WHERE seq > $1 ORDER BY seq"), &[&after]).await?;
        let mut tenants: Vec<StoredTenant> = rows.iter().map(stored).collect();
        for tenant in tenants.iter_mut().filter(|t| t.document.is_some()) {
            tenant.secrets = self.secrets_of(&tenant.id).await?;
        }
        Ok(tenants)
    }

    async fn catalog_tenant(&self, id: &str) -> Result<Option<StoredTenant>, StoreError> {
        let rows = self.query(&format!("{COLUMNS} WHERE id = $1"), &[&id]).await?;
        let Some(mut tenant) = rows.first().map(stored) else { return Ok(None) };
        tenant.secrets = self.secrets_of(id).await?;
        Ok(Some(tenant))
    }

    async fn catalog_list(&self, after: Option<String>, limit: usize) -> Result<Vec<StoredTenant>, StoreError> {
        let rows = self
            .query(
                &format!("{COLUMNS} WHERE document IS NOT NULL AND ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2"),
                &[&after, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(stored).collect())
    }

    async fn catalog_write(&self, change: Change) -> Result<Written, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // The lock that orders writers: taken before anything is read.
        let seq: i64 = tx
            .query_one("UPDATE catalog_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        let (live, last) = versions(&tx, &change.tenant).await?;
        if change.expect.is_some() && change.expect != live {
            // Dropping the transaction rolls the sequence back too.
            return Ok(Written::VersionMismatch { current: live });
        }
        let now = now_ms();
        let version = last + 1;
        tx.execute(
            "INSERT INTO tenants (id, version, seq, document, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, seq = excluded.seq,
               document = excluded.document, updated_at = excluded.updated_at",
            &[&change.tenant, &version, &seq, &change.document, &now],
        )
        .await
        .map_err(pg_error)?;
        let deleted = change.document.is_none();
        if deleted {
            tx.execute("DELETE FROM tenant_secrets WHERE tenant = $1", &[&change.tenant]).await.map_err(pg_error)?;
            tx.execute("DELETE FROM tenant_keys WHERE tenant = $1", &[&change.tenant]).await.map_err(pg_error)?;
        } else {
            for (name, sealed) in &change.secrets {
                let done = match sealed {
                    Some(sealed) => {
                        tx.execute(
                            "INSERT INTO tenant_secrets (tenant, name, sealed) VALUES ($1, $2, $3)
                             ON CONFLICT (tenant, name) DO UPDATE SET sealed = excluded.sealed",
                            &[&change.tenant, name, sealed],
                        )
                        .await
                    }
                    None => {
                        tx.execute(
                            "DELETE FROM tenant_secrets WHERE tenant = $1 AND name = $2",
                            &[&change.tenant, name],
                        )
                        .await
                    }
                };
                done.map_err(pg_error)?;
            }
        }
        let state = DeliveryState::Cancelled.code() as i16;
        let reason = cancel_reason(deleted);
        // Leases are taken away too: an attempt in flight cannot bring a cancelled delivery back.
        const CANCEL: &str = "UPDATE deliveries SET state = $1, finished_at = $2, last_error = $3, claimed_by = NULL,
             lease_token = NULL WHERE state = 0 AND tenant = $4";
        let mut cancelled = 0;
        if deleted {
            cancelled += tx.execute(CANCEL, &[&state, &now, &reason, &change.tenant]).await.map_err(pg_error)?;
        } else {
            for destination in &change.cancel {
                cancelled += tx
                    .execute(
                        &format!("{CANCEL} AND destination = $5"),
                        &[&state, &now, &reason, &change.tenant, destination],
                    )
                    .await
                    .map_err(pg_error)?;
            }
        }
        let after = (!deleted).then_some(version);
        let a = &change.audit;
        tx.execute(AUDIT, &[&now, &a.actor, &change.tenant, &a.kind, &a.target, &a.action, &live, &after])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        if cancelled > 0 {
            let _ =
                self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| Some(p.saturating_sub(cancelled)));
        }
        Ok(Written::Done { version, seq, created: live.is_none(), cancelled })
    }

    async fn key_create(&self, key: KeyRecord, audit: AuditEntry) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let (live, _) = versions(&tx, &key.tenant).await?;
        tx.execute(
            "INSERT INTO tenant_keys (key_id, tenant, hash, created_at) VALUES ($1, $2, $3, $4)",
            &[&key.key_id, &key.tenant, &key.hash, &key.created_at],
        )
        .await
        .map_err(pg_error)?;
        let a = &audit;
        tx.execute(AUDIT, &[&key.created_at, &a.actor, &key.tenant, &a.kind, &a.target, &a.action, &live, &live])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(true)
    }

    async fn key_delete(&self, tenant: &str, key_id: &str, audit: AuditEntry) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let gone = tx
            .execute("DELETE FROM tenant_keys WHERE tenant = $1 AND key_id = $2", &[&tenant, &key_id])
            .await
            .map_err(pg_error)?;
        if gone == 1 {
            let (live, _) = versions(&tx, tenant).await?;
            let a = &audit;
            tx.execute(AUDIT, &[&now_ms(), &a.actor, &tenant, &a.kind, &a.target, &a.action, &live, &live])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(gone == 1)
    }

    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let rows = self
            .query("SELECT key_id, tenant, hash, created_at FROM tenant_keys WHERE key_id = $1", &[&key_id])
            .await?;
        Ok(rows.first().map(key_record))
    }

    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT key_id, tenant, hash, created_at FROM tenant_keys WHERE tenant = $1 ORDER BY created_at, key_id",
                &[&tenant],
            )
            .await?;
        Ok(rows.iter().map(key_record).collect())
    }

    async fn audit(
        &self,
        tenant: Option<String>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT seq, at, tenant, actor, kind, target, action, before_version, after_version FROM audit
                 WHERE ($1::text IS NULL OR tenant = $1) AND ($2::int8 IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
                &[&tenant, &before, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditRecord {
                seq: r.get(0),
                at: r.get(1),
                tenant: r.get(2),
                entry: AuditEntry { actor: r.get(3), kind: r.get(4), target: r.get(5), action: r.get(6) },
                before_version: r.get(7),
                after_version: r.get(8),
            })
            .collect())
    }
}
