//! What operators ask of the store: listings with cursor pagination, one event with its
//! whole history, queue figures for metrics, replay, pause, and retention.

use serde::Serialize;
use uuid::Uuid;

use super::{DeliveryRecord, DeliveryState};

/// Newest first; `before` is the cursor (the last id of the previous page).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub tenant: Option<String>,
    pub source: Option<String>,
    pub call_id: Option<String>,
    /// A number the call was from or to, as the provider sent it.
    pub phone: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    pub before: Option<Uuid>,
    pub limit: usize,
}

/// An event listing's SQL: only the filters given (so the indexes on them are used), and
/// by phone number the newest page of each number index, merged. `param(n)` writes the
/// n-th placeholder (`?n` or `$n`); the parameters come back in order.
pub fn events_sql(q: &EventQuery, param: &dyn Fn(usize) -> String) -> (String, Vec<EventParam>) {
    const COLUMNS: &str = "id, tenant, source, call_id, received_at, from_number, to_number";
    let mut args = Vec::new();
    let mut clauses = Vec::new();
    let mut add = |column: &str, op: &str, value: EventParam| {
        args.push(value);
        clauses.push(format!("{column} {op} {}", param(args.len())));
    };
    if let Some(v) = &q.tenant {
        add("tenant", "=", EventParam::Text(v.clone()));
    }
    if let Some(v) = &q.source {
        add("source", "=", EventParam::Text(v.clone()));
    }
    if let Some(v) = &q.call_id {
        add("call_id", "=", EventParam::Text(v.clone()));
    }
    if let Some(v) = q.since {
        add("received_at", ">=", EventParam::Int(v));
    }
    if let Some(v) = q.until {
        add("received_at", "<", EventParam::Int(v));
    }
    if let Some(v) = q.before {
        add("id", "<", EventParam::Id(v));
    }
    args.push(EventParam::Int(q.limit as i64));
    let limit = param(args.len());
    let filters = if clauses.is_empty() { String::new() } else { format!(" AND {}", clauses.join(" AND ")) };
    let sql = match &q.phone {
        None => format!("SELECT {COLUMNS} FROM events WHERE true{filters} ORDER BY id DESC LIMIT {limit}"),
        Some(phone) => {
            args.push(EventParam::Text(phone.clone()));
            let phone = param(args.len());
            format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM events WHERE from_number = {phone}{filters} ORDER BY id DESC LIMIT {limit}) a
                 UNION
                 SELECT * FROM (SELECT {COLUMNS} FROM events WHERE to_number = {phone}{filters} ORDER BY id DESC LIMIT {limit}) b
                 ORDER BY 1 DESC LIMIT {limit}"
            )
        }
    };
    (sql, args)
}

/// A parameter of `events_sql`.
#[derive(Debug, Clone)]
pub enum EventParam {
    Text(String),
    Int(i64),
    Id(Uuid),
}

#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub event_id: Uuid,
    pub tenant: String,
    pub source: String,
    pub call_id: Option<String>,
    pub received_at: i64,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EventDetail {
    pub summary: EventSummary,
    pub content_type: Option<String>,
    pub query: Option<String>,
    pub body: Vec<u8>,
    pub normalized: Option<String>,
    pub deliveries: Vec<DeliveryRecord>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub tenant: Option<String>,
    pub destination: Option<String>,
    pub state: Option<DeliveryState>,
    /// Unix milliseconds on the delivery's creation (or last replay), inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub before: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    pub id: i64,
    pub event_id: Uuid,
    pub tenant: String,
    pub destination: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at: i64,
    pub due_at: i64,
    pub last_error: Option<String>,
}

/// Which finished deliveries a bulk replay queues again.
#[derive(Debug, Clone)]
pub struct ReplayFilter {
    pub tenant: Option<String>,
    pub destination: Option<String>,
    /// Delivered or dead; never pending (those are queued already).
    pub state: DeliveryState,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// At most this many per call.
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub superseded: u64,
    pub expired: u64,
    pub cancelled: u64,
    /// (tenant, destination, pending count, oldest pending creation time in ms).
    pub per_destination: Vec<(String, String, u64, i64)>,
}

impl QueueStats {
    /// `per_destination` by (tenant, destination): (pending count, oldest creation in ms).
    /// Callers look up many destinations, and a linear search each is quadratic in a wide
    /// backlog (50,000 destinations took 5 s to list).
    pub fn waiting(&self) -> std::collections::HashMap<(&str, &str), (u64, i64)> {
        self.per_destination.iter().map(|(t, d, n, created)| ((t.as_str(), d.as_str()), (*n, *created))).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    Queued,
    NotFound,
    /// Still pending: it is queued already.
    AlreadyPending,
}
