//! The tenant catalog: tenants managed by API, with their sealed secrets, tenant-scoped
//! keys and the audit trail of every change. It lives in the same store as the queue, so
//! every node sharing the queue sees the same tenants, and a restart keeps them.
//!
//! Every change to a tenant bumps its `version` (what `If-Match` compares) and takes the
//! next catalog `seq`: nodes follow the catalog by asking for changes past the last `seq`
//! they applied. Writes take the sequence in order of commit (one writer at a time), so a
//! node never skips a change that committed late.

use async_trait::async_trait;

use super::StoreError;

/// A tenant as stored. `document` is `None` once deleted: the row stays as a tombstone so
/// versions keep rising and other nodes learn of the deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTenant {
    pub id: String,
    pub version: i64,
    pub seq: i64,
    /// The tenant's fields as JSON, without secrets.
    pub document: Option<String>,
    /// Sealed secret values, by name, in name order.
    pub secrets: Vec<(String, Vec<u8>)>,
    pub updated_at: i64,
}

/// One change to one tenant, applied whole or not at all.
#[derive(Debug, Clone)]
pub struct Change {
    pub tenant: String,
    /// `If-Match`: the version the writer read; the change is refused if it moved.
    pub expect: Option<i64>,
    /// The tenant's new document; `None` deletes the tenant, its secrets and keys.
    pub document: Option<String>,
    /// Secrets to seal in (`Some`) or remove (`None`).
    pub secrets: Vec<(String, Option<Vec<u8>>)>,
    /// Destinations whose pending deliveries end `cancelled` (all of them when the tenant
    /// is deleted).
    pub cancel: Vec<String>,
    pub audit: AuditEntry,
}

/// Who changed what, as the audit trail records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// `admin`, or `key:<key id>` for a tenant-scoped key.
    pub actor: String,
    /// tenant, source, destination, secret or key.
    pub kind: String,
    /// The id or name of what changed (the tenant's id for a whole tenant).
    pub target: String,
    /// put, delete or create.
    pub action: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Done {
        version: i64,
        seq: i64,
        /// The tenant did not exist (or was deleted) before.
        created: bool,
        cancelled: u64,
    },
    /// `expect` did not match: nothing was written. `None`: the tenant does not exist.
    VersionMismatch { current: Option<i64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: i64,
    pub tenant: String,
    pub entry: AuditEntry,
    pub before_version: Option<i64>,
    pub after_version: Option<i64>,
}

/// A tenant-scoped API key: only the hash of its secret part is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub tenant: String,
    pub hash: Vec<u8>,
    pub created_at: i64,
}

#[async_trait]
pub trait Catalog: Send + Sync {
    /// The last change's sequence number (0: none yet).
    async fn catalog_seq(&self) -> Result<i64, StoreError>;
    /// Tenants changed after `seq` (tombstones included), in sequence order.
    async fn catalog_changes(&self, after: i64) -> Result<Vec<StoredTenant>, StoreError>;
    /// One tenant (a tombstone too).
    async fn catalog_tenant(&self, id: &str) -> Result<Option<StoredTenant>, StoreError>;
    /// Live tenants in id order after `after`, without secrets.
    async fn catalog_list(&self, after: Option<String>, limit: usize) -> Result<Vec<StoredTenant>, StoreError>;
    async fn catalog_write(&self, change: Change) -> Result<Written, StoreError>;
    /// Adds a key (to a tenant of the API or of a file: the caller checks it exists).
    async fn key_create(&self, key: KeyRecord, audit: AuditEntry) -> Result<bool, StoreError>;
    /// `false` if the tenant has no such key.
    async fn key_delete(&self, tenant: &str, key_id: &str, audit: AuditEntry) -> Result<bool, StoreError>;
    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError>;
    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, StoreError>;
    /// Newest first; `before` is the cursor (the last `seq` of the previous page).
    async fn audit(
        &self,
        tenant: Option<String>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// The reason a cancelled delivery carries.
pub fn cancel_reason(tenant_deleted: bool) -> &'static str {
    if tenant_deleted { "cancelled: the tenant was deleted" } else { "cancelled: the destination was removed" }
}
