//! What can go wrong in a store, typed so callers branch on the kind, never on the words,
//! and with the database's own error kept as the source for the log.

use std::sync::Arc;
use std::time::Duration;

/// A database error shared by every caller of a failed batch.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The writer's queue is full: the store is not keeping up with ingest.
    #[error("store is busy")]
    Busy,
    /// The disk or the configured size limit is full.
    #[error("store is full")]
    Full,
    #[error("store is closed")]
    Closed,
    /// The database can be read but not written: a read-only disk or file, a standby.
    #[error("store is read-only: {0}")]
    ReadOnly(#[source] Source),
    /// The database could not be reached, or the connection was lost mid-operation.
    #[error("store is unreachable: {0}")]
    Unreachable(#[source] Source),
    /// The database refused or failed one operation.
    #[error("store failed: {source}")]
    Database {
        #[source]
        source: Source,
        /// Whether the same operation may pass later (a lock, a conflict between
        /// transactions, an I/O hiccup) rather than fail the same way every time.
        retriable: bool,
    },
    /// The store could not be set up (a directory, a thread, TLS, a pool).
    #[error("store cannot start: {0}")]
    Setup(String),
    /// An event with this id is already stored (never expected: ids are UUIDv7).
    #[error("an event with this id is already stored")]
    Conflict,
    /// A commit failed moments ago; the store may pass a small probe yet fail an event.
    #[error("a commit failed {0:?} ago")]
    RecentlyFailed(Duration),
}

impl StoreError {
    /// Whether the same operation may succeed later without anyone changing anything.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Busy | Self::Full | Self::Unreachable(_) | Self::RecentlyFailed(_) => true,
            Self::Database { retriable, .. } => *retriable,
            Self::Closed | Self::ReadOnly(_) | Self::Setup(_) | Self::Conflict => false,
        }
    }

    /// A short stable name, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Full => "full",
            Self::Closed => "closed",
            Self::ReadOnly(_) => "read_only",
            Self::Unreachable(_) => "unreachable",
            Self::Database { .. } => "database",
            Self::Setup(_) => "setup",
            Self::Conflict => "conflict",
            Self::RecentlyFailed(_) => "recently_failed",
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let code = e.sqlite_error_code();
        let source: Source = Arc::new(e);
        match code {
            Some(C::DiskFull) => StoreError::Full,
            Some(C::ReadOnly) => StoreError::ReadOnly(source),
            Some(C::CannotOpen) => StoreError::Unreachable(source),
            Some(C::DatabaseBusy | C::DatabaseLocked | C::SystemIoFailure | C::OutOfMemory) => {
                StoreError::Database { source, retriable: true }
            }
            _ => StoreError::Database { source, retriable: false },
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            // No answer from the server: the connection failed or closed.
            return StoreError::Unreachable(Arc::new(e));
        };
        let code = db.code().clone();
        let class = &code.code()[..2];
        let source: Source = Arc::new(e);
        match class {
            _ if code == SqlState::DISK_FULL => StoreError::Full,
            _ if code == SqlState::READ_ONLY_SQL_TRANSACTION => StoreError::ReadOnly(source),
            // Connection exceptions, operator intervention (shutdown), insufficient resources.
            "08" | "57" | "53" => StoreError::Unreachable(source),
            // Serialization failures and deadlocks: run it again.
            "40" => StoreError::Database { source, retriable: true },
            _ => StoreError::Database { source, retriable: false },
        }
    }
}

/// Ingest never waits for room in a store's queue: a full queue means the store is behind,
/// and the provider is better told 503 now than left hanging.
impl<T> From<tokio::sync::mpsc::error::TrySendError<T>> for StoreError {
    fn from(e: tokio::sync::mpsc::error::TrySendError<T>) -> Self {
        match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            tokio::sync::mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_map_to_kinds() {
        let err =
            |code| StoreError::from(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".into())));
        assert_eq!(err(rusqlite::ffi::SQLITE_FULL).kind(), "full");
        assert_eq!(err(rusqlite::ffi::SQLITE_READONLY).kind(), "read_only");
        assert!(!err(rusqlite::ffi::SQLITE_READONLY).is_retriable());
        assert!(err(rusqlite::ffi::SQLITE_BUSY).is_retriable());
        assert!(!err(rusqlite::ffi::SQLITE_CONSTRAINT).is_retriable());
        // The database's words stay reachable as the source.
        let e = err(rusqlite::ffi::SQLITE_CONSTRAINT);
        assert!(std::error::Error::source(&e).is_some());
    }
}
