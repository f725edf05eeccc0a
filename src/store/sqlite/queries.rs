//! Read-only queries for operators, on the reader connection.

use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use crate::store::admin::{DeliveryQuery, DeliverySummary, EventDetail, EventQuery, EventSummary, QueueStats};
use crate::store::{AttemptRecord, DeliveryRecord, DeliveryState};

fn uuid(bytes: Vec<u8>) -> Uuid {
    Uuid::from_slice(&bytes).unwrap_or_default()
}

fn event_summary(r: &Row) -> rusqlite::Result<EventSummary> {
    Ok(EventSummary {
        event_id: uuid(r.get(0)?),
        tenant: r.get(1)?,
        source: r.get(2)?,
        call_id: r.get(3)?,
        received_at: r.get(4)?,
        from: r.get(5)?,
        to: r.get(6)?,
    })
}

pub fn events(conn: &Connection, q: &EventQuery) -> rusqlite::Result<Vec<EventSummary>> {
    use crate::store::admin::{EventParam, events_sql};
    use rusqlite::types::Value;
    let (sql, args) = events_sql(q, &|n| format!("?{n}"));
    let args: Vec<Value> = args
        .into_iter()
        .map(|a| match a {
            EventParam::Text(t) => Value::Text(t),
            EventParam::Int(i) => Value::Integer(i),
            EventParam::Id(id) => Value::Blob(id.as_bytes().to_vec()),
        })
        .collect();
    conn.prepare_cached(&sql)?.query_map(rusqlite::params_from_iter(args), event_summary)?.collect()
}

pub fn event(conn: &Connection, id: Uuid) -> rusqlite::Result<Option<EventDetail>> {
    let row = conn
        .prepare_cached(
            "SELECT id, tenant, source, call_id, received_at, from_number, to_number, content_type, query, body, normalized
             FROM events WHERE id = ?1",
        )?
        .query_row(params![id.as_bytes()], |r| {
            Ok((event_summary(r)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?))
        })
        .optional()?;
    let Some((summary, content_type, query, body, normalized)) = row else { return Ok(None) };
    Ok(Some(EventDetail { summary, content_type, query, body, normalized, deliveries: deliveries_of(conn, id)? }))
}

pub fn deliveries_of(conn: &Connection, event: Uuid) -> rusqlite::Result<Vec<DeliveryRecord>> {
    let mut deliveries = conn.prepare_cached(
        "SELECT id, tenant, destination, state, last_error FROM deliveries WHERE event_id = ?1 ORDER BY id",
    )?;
    let mut attempts = conn.prepare_cached(
        "SELECT started_at, latency_us, status, error, response_prefix FROM attempts WHERE delivery_id = ?1 ORDER BY n",
    )?;
    let rows = deliveries
        .query_map(params![event.as_bytes()], |r| {
            Ok(DeliveryRecord {
                id: r.get(0)?,
                tenant: r.get(1)?,
                destination: r.get(2)?,
                state: DeliveryState::from_code(r.get(3)?),
                last_error: r.get(4)?,
                attempts: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|mut d| {
            d.attempts = attempts
                .query_map(params![d.id], |r| {
                    Ok(AttemptRecord {
                        started_at: r.get(0)?,
                        latency: std::time::Duration::from_micros(r.get::<_, i64>(1)? as u64),
                        status: r.get(2)?,
                        error: r.get(3)?,
                        response_prefix: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(d)
        })
        .collect()
}

pub fn deliveries(conn: &Connection, q: &DeliveryQuery) -> rusqlite::Result<Vec<DeliverySummary>> {
    conn.prepare_cached(
        "SELECT id, event_id, tenant, destination, state, attempts - series_start, created_at, due_at, last_error FROM deliveries
         WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR destination = ?2) AND (?3 IS NULL OR state = ?3)
           AND (?4 IS NULL OR created_at >= ?4) AND (?5 IS NULL OR created_at < ?5) AND (?6 IS NULL OR id < ?6)
         ORDER BY id DESC LIMIT ?7",
    )?
    .query_map(
        params![q.tenant, q.destination, q.state.map(DeliveryState::code), q.since, q.until, q.before, q.limit as i64],
        |r| {
            Ok(DeliverySummary {
                id: r.get(0)?,
                event_id: uuid(r.get(1)?),
                tenant: r.get(2)?,
                destination: r.get(3)?,
                state: DeliveryState::from_code(r.get(4)?),
                attempts: r.get(5)?,
                created_at: r.get(6)?,
                due_at: r.get(7)?,
                last_error: r.get(8)?,
            })
        },
    )?
    .collect()
}

pub fn queue_stats(conn: &Connection) -> rusqlite::Result<QueueStats> {
    let mut stats = QueueStats::default();
    let mut by_state = conn.prepare_cached("SELECT state, count(*) FROM deliveries GROUP BY state")?;
    for row in by_state.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)))? {
        let (state, count) = row?;
        match DeliveryState::from_code(state) {
            DeliveryState::Pending => stats.pending = count,
            DeliveryState::Delivered => stats.delivered = count,
            DeliveryState::Dead => stats.dead = count,
            DeliveryState::Superseded => stats.superseded = count,
            DeliveryState::Expired => stats.expired = count,
            DeliveryState::Cancelled => stats.cancelled = count,
        }
    }
    stats.per_destination = conn
        .prepare_cached(
            "SELECT tenant, destination, count(*), min(created_at) FROM deliveries WHERE state = 0 GROUP BY tenant, destination",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(stats)
}

pub fn delivery_state(conn: &Connection, id: i64) -> rusqlite::Result<Option<DeliveryState>> {
    conn.prepare_cached("SELECT state FROM deliveries WHERE id = ?1")?
        .query_row(params![id], |r| r.get::<_, i64>(0))
        .optional()
        .map(|s| s.map(DeliveryState::from_code))
}

pub fn paused(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    conn.prepare_cached("SELECT tenant, destination FROM paused")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::admin::{EventQuery, events_sql};

    /// How SQLite would run a search: the plan's details, one line each.
    fn plan(conn: &Connection, q: &EventQuery) -> String {
        let (sql, args) = events_sql(q, &|n| format!("?{n}"));
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Value::Null; args.len()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("\n")
    }

    /// Every console search reads an index, never the whole events table; a tenant's call
    /// goes through the call's own index.
    #[test]
    fn event_searches_read_an_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::migrate(&mut conn).unwrap();
        let text = |s: &str| Some(s.to_string());
        let searches = [
            (
                EventQuery { tenant: text("acme"), call_id: text("c1"), limit: 50, ..Default::default() },
                "events_call_any",
            ),
            (EventQuery { call_id: text("c1"), limit: 50, ..Default::default() }, "events_call_any"),
            (EventQuery { tenant: text("acme"), limit: 50, ..Default::default() }, "events_tenant"),
            (EventQuery { phone: text("+15550100"), limit: 50, ..Default::default() }, "events_from"),
            (EventQuery { phone: text("+15550100"), limit: 50, ..Default::default() }, "events_to"),
        ];
        let mut used = Vec::new();
        for (q, index) in searches {
            used.push(index);
            let plan = plan(&conn, &q);
            assert!(plan.contains(&format!("INDEX {index}")), "{q:?} does not use {index}:\n{plan}");
            assert!(!plan.lines().any(|l| l.trim() == "SCAN events"), "{q:?} scans every event:\n{plan}");
        }
        // Each event writes every index on its table: none is kept that no search reads.
        let mut indexes: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_list('events') WHERE origin = 'c'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        indexes.sort();
        used.sort();
        used.dedup();
        assert_eq!(indexes, used);
    }
}
