//! The durable queue. An event and all its deliveries are committed together, and ingest
//! acknowledges only after that commit. Deliveries are claimed with leases (claimed_by,
//! lease token, lease expiry) rather than in-process locks, so several gateway nodes can
//! share one store; a result is recorded only by the holder of the current lease.
//!
//! Times are Unix milliseconds throughout.

pub mod admin;
pub mod catalog;
mod error;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

pub use error::StoreError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use admin::{DeliveryQuery, DeliverySummary, EventDetail, EventQuery, EventSummary, QueueStats, Replay, ReplayFilter};

/// How long after a failed commit a store still says it is not ready, even if a probe
/// write passes (a small write may fit where an event does not).
pub const READY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// `Err` while the last failed commit (Unix ms in `last_failure`; 0: none) is recent.
pub(crate) fn recently_failed(last_failure: &std::sync::atomic::AtomicI64) -> Result<(), StoreError> {
    let at = last_failure.load(std::sync::atomic::Ordering::Relaxed);
    let ago = Duration::from_millis(now_ms().saturating_sub(at).max(0) as u64);
    if at > 0 && ago < READY_AFTER_FAILURE { Err(StoreError::RecentlyFailed(ago)) } else { Ok(()) }
}

/// Unix milliseconds as RFC 3339, as the admin API and the live tail write times.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An accepted callback and the destinations it fans out to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub tenant: String,
    pub source: String,
    pub received_at: i64,
    /// Shared with the deliveries handed over from memory.
    pub content_type: Option<Arc<str>>,
    pub query: Option<Arc<str>>,
    pub body: Bytes,
    /// The normalized call event, as JSON: what templates render from, now and on replay.
    pub normalized: Arc<str>,
    /// The tenant's destinations this event goes to, one delivery each.
    pub destinations: Vec<Target>,
    /// The event's place in its call, for the destinations that go by call.
    pub call: Option<CallPlace>,
    /// The event's identities: the provider's dedupe key, the signed message's id. A repeat
    /// of any one of them within its window is the same event.
    pub dedupe: Vec<Dedupe>,
    /// The provider's call id, for finding the event again.
    pub call_id: Option<String>,
    /// The calling and called numbers as the provider sent them, for finding a call by number.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One delivery to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub destination: String,
    /// The destination orders, supersedes or expires by call: the delivery carries the
    /// event's `CallPlace`.
    pub by_call: bool,
    /// Handed over: the delivery is committed already leased to this node for this long,
    /// and its worker gets it from memory instead of claiming it (`Committed::New` says
    /// its id). Never for a delivery that goes by call.
    pub lease: Option<Duration>,
}

impl From<&str> for Target {
    fn from(destination: &str) -> Self {
        Self { destination: destination.to_string(), by_call: false, lease: None }
    }
}

/// Where an event stands in its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPlace {
    /// The call's key (its id unless the source names another).
    pub key: String,
    /// The status's life-cycle rank (`Status::rank`); `None` for an unknown status.
    pub rank: Option<i16>,
    /// The provider's sequence number, and until when (Unix ms) an event that arrived ahead
    /// of its turn waits for the ones before it.
    pub sequence: Option<(i64, i64)>,
}

/// The deliveries a commit leased to this node (the targets with a `lease`, in order),
/// under one lease token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leased {
    pub lease: i64,
    pub ids: Vec<i64>,
}

/// A provider's identity for a callback: a repeat with the same key before `until` is the
/// same event.
#[derive(Debug, Clone)]
pub struct Dedupe {
    pub key: String,
    /// Unix milliseconds.
    pub until: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    New(Leased),
    /// A repeat of an event already stored: nothing new was written.
    Duplicate(Uuid),
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub tenant: String,
    pub destination: String,
    pub limit: usize,
    /// How long the claim holds; past it, the delivery is due again for anyone.
    pub lease: Duration,
    /// The destination's per-call rules: which deliveries may go now, and which are stale.
    pub calls: crate::config::CallRules,
}

#[derive(Debug, Default)]
pub struct Claim {
    pub deliveries: Vec<ClaimedDelivery>,
    /// The earliest time another delivery of this destination may become claimable
    /// (a retry, or a lease that expires), if any is pending.
    pub next_due: Option<i64>,
    /// Deliveries found with stored data that no longer decodes: ended dead at the claim,
    /// with the reason, instead of being handed out.
    pub dead: u64,
    /// Deliveries ended unsent because a later status of their call was delivered or queued.
    pub superseded: u64,
    /// Live-status deliveries ended unsent because they outlived the destination's `live_ttl`.
    pub expired: u64,
}

impl Claim {
    /// Deliveries the claim finished without handing them out.
    pub fn ended(&self) -> u64 {
        self.dead + self.superseded + self.expired
    }
}

#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub lease: i64,
    pub event_id: Uuid,
    /// 1-based number of the attempt about to be made.
    pub attempt: u32,
    /// When the event arrived (or was replayed): the retry deadline counts from here.
    pub created_at: i64,
    /// Shared by every delivery of a handed-over event.
    pub content_type: Option<Arc<str>>,
    pub query: Option<Arc<str>>,
    pub body: Bytes,
    pub normalized: Option<Arc<str>>,
}

/// What one attempt observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub started_at: i64,
    pub latency: Duration,
    pub status: Option<u16>,
    /// Error kind when no status was received: timeout, connect, io…
    pub error: Option<String>,
    /// The first bytes of the response body.
    pub response_prefix: Vec<u8>,
}

impl AttemptRecord {
    /// A short account of the attempt, kept on the delivery for inspection.
    pub fn summary(&self) -> String {
        match (self.status, &self.error) {
            (Some(status), Some(error)) => format!("HTTP {status}: {error}"),
            (Some(status), None) => format!("HTTP {status}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "no answer".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Delivered,
    Retry { at: i64 },
    Dead { reason: String },
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub delivery: i64,
    pub lease: i64,
    pub attempt: AttemptRecord,
    pub next: Next,
}

impl Completion {
    /// The delivery's new state, due time and last error, as both stores write them: a
    /// finished delivery's due time is when its last attempt started.
    pub fn row(&self) -> (DeliveryState, i64, Option<String>) {
        let a = &self.attempt;
        match &self.next {
            Next::Delivered => (DeliveryState::Delivered, a.started_at, None),
            Next::Retry { at } => (DeliveryState::Pending, *at, Some(a.summary())),
            Next::Dead { reason } => (DeliveryState::Dead, a.started_at, Some(reason.clone())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
    /// Not sent: a later status of the same call was delivered or queued (`supersede`).
    Superseded,
    /// Not sent: a live status that outlived the destination's `live_ttl`.
    Expired,
    /// Not sent: its destination or tenant was removed through the control plane.
    Cancelled,
}

impl DeliveryState {
    pub fn code(self) -> i64 {
        match self {
            Self::Pending => 0,
            Self::Delivered => 1,
            Self::Dead => 2,
            Self::Superseded => 3,
            Self::Expired => 4,
            Self::Cancelled => 5,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            "superseded" => Self::Superseded,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn from_code(code: i64) -> Self {
        match code {
            1 => Self::Delivered,
            2 => Self::Dead,
            3 => Self::Superseded,
            4 => Self::Expired,
            5 => Self::Cancelled,
            _ => Self::Pending,
        }
    }
}

/// Why a claim ended a by-call delivery unsent, or `None` to send it: `superseded_by` is the
/// event of a later status of the call delivered or queued (when the destination
/// supersedes), `age_ms` how long the delivery has waited. Both stores decide with this.
pub(crate) fn stale(
    rules: &crate::config::CallRules,
    rank: Option<i16>,
    superseded_by: Option<Uuid>,
    age_ms: i64,
) -> Option<(DeliveryState, String)> {
    if let Some(later) = superseded_by.filter(|_| rules.supersede) {
        return Some((
            DeliveryState::Superseded,
            format!("not sent: superseded by event {later}, a later status of the call"),
        ));
    }
    let live = rank.is_some_and(|r| r <= crate::normalize::Status::LAST_LIVE_RANK);
    match rules.live_ttl {
        Some(ttl) if live && age_ms >= ttl.as_millis() as i64 => Some((
            DeliveryState::Expired,
            format!("not sent: a live status still unsent after live_ttl ({})", humantime::format_duration(ttl)),
        )),
        _ => None,
    }
}

/// A delivery with its whole history, for inspection.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: i64,
    pub tenant: String,
    pub destination: String,
    pub state: DeliveryState,
    pub attempts: Vec<AttemptRecord>,
    pub last_error: Option<String>,
}

#[async_trait]
pub trait Store: catalog::Catalog + Send + Sync + 'static {
    /// Durably commits the event and one pending delivery per destination — unless its
    /// dedupe key names an event stored within the window, which is returned instead.
    /// Returns only after the commit (group-committed with concurrent callers).
    async fn commit(&self, event: NewEvent) -> Result<Committed, StoreError>;
    /// Leases up to `limit` due deliveries of one destination, oldest due first.
    async fn claim(&self, request: ClaimRequest) -> Result<Claim, StoreError>;
    /// Records an attempt and the delivery's next state. `Ok(false)` when the lease was
    /// lost (expired and taken by someone else): nothing is recorded then.
    async fn complete(&self, completion: Completion) -> Result<bool, StoreError>;
    /// Gives a leased delivery back, due now, without counting an attempt.
    async fn release(&self, delivery: i64, lease: i64) -> Result<(), StoreError>;
    /// Deliveries not yet delivered or dead (this node's view), for backpressure.
    fn pending_deliveries(&self) -> u64;
    /// Whether other nodes queue deliveries in this store too (so idle workers must look
    /// for work now and then rather than only wait to be woken).
    fn shared(&self) -> bool {
        false
    }
    /// Whether the store can commit new events now: a small write, not only a connection
    /// check, and no failed commit in the last `READY_AFTER_FAILURE` (a disk that is full or
    /// read-only must take the node out of its load balancer).
    async fn ready(&self) -> Result<(), StoreError>;
    async fn deliveries_of(&self, event: Uuid) -> Result<Vec<DeliveryRecord>, StoreError>;
    /// The tenant and destination a delivery belongs to, if it exists.
    async fn delivery_owner(&self, delivery: i64) -> Result<Option<(String, String)>, StoreError>;
    /// Flushes what was submitted and stops the writer.
    async fn close(&self);

    async fn events(&self, query: EventQuery) -> Result<Vec<EventSummary>, StoreError>;
    async fn event(&self, id: Uuid) -> Result<Option<EventDetail>, StoreError>;
    async fn deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliverySummary>, StoreError>;
    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;
    /// Queues a delivered or dead delivery again as a new attempt series (same event, same
    /// `webhook-id`; attempt numbers and the retry deadline start over).
    async fn replay(&self, delivery: i64) -> Result<Replay, StoreError>;
    /// Replays up to `filter.limit` matching finished deliveries; returns how many. Those
    /// are pending afterwards, so repeating the call does not queue them twice.
    async fn replay_matching(&self, filter: ReplayFilter) -> Result<u64, StoreError>;
    async fn set_paused(&self, tenant: &str, destination: &str, paused: bool) -> Result<(), StoreError>;
    async fn paused(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Cancels the pending deliveries of a destination the API removed (`None`: of every
    /// destination of a deleted tenant) created up to `created_to`: those committed by
    /// requests still routing as before the removal, after it had cancelled the others.
    /// Returns how many.
    async fn cancel_left_behind(
        &self,
        tenant: &str,
        destination: Option<&str>,
        created_to: i64,
    ) -> Result<u64, StoreError>;
    /// Deletes up to `batch` deliveries delivered before `delivered_before` or dead before
    /// `dead_before`, with their attempts, then events left with no deliveries that arrived
    /// before `delivered_before`, and expired dedupe keys. Returns how many rows went.
    async fn purge(&self, delivered_before: i64, dead_before: i64, batch: usize) -> Result<u64, StoreError>;
    /// Records a synchronous responder exchange as a finished delivery of `event`.
    async fn record_exchange(
        &self,
        event: Uuid,
        tenant: &str,
        destination: &str,
        attempt: AttemptRecord,
        delivered: bool,
    ) -> Result<(), StoreError>;
}
