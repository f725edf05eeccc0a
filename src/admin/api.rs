//! The admin API's endpoints: events and their delivery history, deliveries, replay (one
//! or in bulk), destinations' pause and circuit state, pausing a destination, and reloading the configuration.

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiError, Principal};
use crate::Gateway;
use crate::deliver::StatusPage;
use crate::server::{Body, json_response};
use crate::store::admin::{DeliveryQuery, EventQuery, Replay, ReplayFilter};
pub(super) use crate::store::rfc3339;
use crate::store::{DeliveryRecord, DeliveryState};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
const MAX_BULK: usize = 10_000;

pub async fn handle(
    gateway: &Gateway,
    principal: &Principal,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let query = Params::parse(request.uri().query());
    if matches!(segments.first(), Some(&("tenants" | "audit"))) {
        return super::tenants::handle(gateway, principal, request, &segments, &query).await;
    }
    match (request.method().clone(), segments.as_slice()) {
        (Method::GET, ["events"]) => events(gateway, principal, &query).await,
        (Method::GET, ["events", id]) => event(gateway, principal, id).await,
        (Method::GET, ["deliveries"]) => deliveries(gateway, principal, &query).await,
        (Method::POST, ["deliveries", id, "replay"]) => replay_one(gateway, principal, id).await,
        (Method::POST, ["replay"]) => replay_bulk(gateway, principal, request).await,
        (Method::GET, ["destinations"]) => destinations(gateway, principal, &query).await,
        (Method::GET, ["tail"]) => {
            let tenant = principal.scope(query.get("tenant"))?;
            let mut response = Response::new(http_body_util::Either::Right(gateway.tail.stream(tenant)));
            let headers = response.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
            headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
            Ok(response)
        }
        (Method::POST, ["destinations", tenant, id, action @ ("pause" | "resume")]) => {
            pause(gateway, principal, tenant, id, *action == "pause").await
        }
        (Method::POST, ["reload"]) => match principal.admin_only().map(|_| gateway.reload())?.await {
            Ok(reloaded) => Ok(json_response(StatusCode::OK, &serde_json::to_value(reloaded).unwrap_or_default())),
            Err(errors) => {
                Err(ApiError::InvalidConfig(format!("configuration not reloaded; the running one stays:\n{errors}")))
            }
        },
        (
            _,
            ["events"]
            | ["events", _]
            | ["deliveries"]
            | ["destinations"]
            | ["replay"]
            | ["reload"]
            | ["deliveries", _, "replay"],
        ) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound("no such endpoint".into())),
    }
}

/// Query-string parameters, with typed readers that say what was wrong.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        Params(form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
    }

    pub(super) fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}"))),
            },
        }
    }

    /// The `next_cursor` of a previous page.
    pub(super) fn cursor<T: std::str::FromStr>(&self) -> Result<Option<T>, ApiError> {
        self.get("cursor")
            .map(|c| c.parse::<T>().map_err(|_| ApiError::BadRequest("cursor is not one this API gave".into())))
            .transpose()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name).map(|v| parse_time(&v).ok_or_else(|| bad_time(name))).transpose()
    }
}

fn bad_time(name: &str) -> ApiError {
    ApiError::BadRequest(format!("{name} must be RFC 3339 (2026-11-24T10:00:00Z) or Unix seconds"))
}

/// RFC 3339 or Unix seconds → Unix milliseconds.
fn parse_time(v: &str) -> Option<i64> {
    if let Ok(seconds) = v.parse::<i64>() {
        return seconds.checked_mul(1000);
    }
    v.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

fn state(v: &str) -> Result<DeliveryState, ApiError> {
    DeliveryState::parse(v).ok_or_else(|| {
        ApiError::BadRequest("state must be pending, delivered, dead, superseded, expired or cancelled".into())
    })
}

async fn events(gateway: &Gateway, principal: &Principal, params: &Params) -> Result<Response<Body>, ApiError> {
    let limit = params.limit()?;
    let before = params.cursor::<Uuid>()?;
    let query = EventQuery {
        tenant: principal.scope(params.get("tenant"))?,
        source: params.get("source"),
        call_id: params.get("call_id"),
        phone: params.get("phone"),
        since: params.time("since")?,
        until: params.time("until")?,
        before,
        limit,
    };
    let events = gateway.store.events(query).await?;
    let next = (events.len() == limit).then(|| events.last().map(|e| e.event_id.to_string())).flatten();
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "event_id": e.event_id, "tenant": e.tenant, "source": e.source,
                "call_id": e.call_id, "received_at": rfc3339(e.received_at), "from": e.from, "to": e.to,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "events": items, "next_cursor": next })))
}

fn delivery_json(d: &DeliveryRecord) -> Value {
    let attempts: Vec<Value> = d
        .attempts
        .iter()
        .map(|a| {
            json!({
                "at": rfc3339(a.started_at),
                "status": a.status,
                "error": a.error,
                "latency_ms": a.latency.as_secs_f64() * 1000.0,
                "response": String::from_utf8_lossy(&a.response_prefix),
            })
        })
        .collect();
    json!({
        "id": d.id, "destination": d.destination, "state": d.state,
        "last_error": d.last_error, "attempts": attempts,
    })
}

async fn event(gateway: &Gateway, principal: &Principal, id: &str) -> Result<Response<Body>, ApiError> {
    let uuid = id.parse::<Uuid>().map_err(|_| ApiError::NotFound(format!("no event {id}")))?;
    let event = gateway
        .store
        .event(uuid)
        .await?
        .filter(|e| principal.sees(&e.summary.tenant))
        .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))?;
    let body = match std::str::from_utf8(&event.body) {
        Ok(text) => json!(text),
        Err(_) => json!(crate::auth::signatures::base64_encode(&event.body)),
    };
    let normalized: Value =
        event.normalized.as_deref().and_then(|n| serde_json::from_str(n).ok()).unwrap_or(Value::Null);
    let deliveries: Vec<Value> = event.deliveries.iter().map(delivery_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "event_id": event.summary.event_id,
            "tenant": event.summary.tenant,
            "source": event.summary.source,
            "call_id": event.summary.call_id,
            "received_at": rfc3339(event.summary.received_at),
            "payload": { "content_type": event.content_type, "query": event.query, "body": body },
            "normalized": normalized,
            "deliveries": deliveries,
        }),
    ))
}

async fn deliveries(gateway: &Gateway, principal: &Principal, params: &Params) -> Result<Response<Body>, ApiError> {
    let limit = params.limit()?;
    let before = params.cursor::<i64>()?;
    let query = DeliveryQuery {
        tenant: principal.scope(params.get("tenant"))?,
        destination: params.get("destination"),
        state: params.get("state").map(|s| state(&s)).transpose()?,
        since: params.time("since")?,
        until: params.time("until")?,
        before,
        limit,
    };
    let found = gateway.store.deliveries(query).await?;
    let next = (found.len() == limit).then(|| found.last().map(|d| d.id.to_string())).flatten();
    let items: Vec<Value> = found
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "event_id": d.event_id, "tenant": d.tenant, "destination": d.destination,
                "state": d.state, "attempts": d.attempts, "created_at": rfc3339(d.created_at),
                "next_attempt_at": (d.state == DeliveryState::Pending).then(|| rfc3339(d.due_at)),
                "last_error": d.last_error,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "deliveries": items, "next_cursor": next })))
}

async fn replay_one(gateway: &Gateway, principal: &Principal, id: &str) -> Result<Response<Body>, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound(format!("no delivery {id}")))?;
    let Some((tenant, destination)) = gateway.store.delivery_owner(id).await?.filter(|(t, _)| principal.sees(t)) else {
        return Err(ApiError::NotFound(format!("no delivery {id}")));
    };
    match gateway.store.replay(id).await? {
        Replay::Queued => {
            gateway.dispatcher().wake_matching(Some(&tenant), Some(&destination));
            Ok(json_response(StatusCode::OK, &json!({ "queued": 1 })))
        }
        Replay::NotFound => Err(ApiError::NotFound(format!("no delivery {id}"))),
        Replay::AlreadyPending => Err(ApiError::Conflict(format!("delivery {id} is pending already"))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct BulkReplay {
    tenant: Option<String>,
    destination: Option<String>,
    state: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

async fn replay_bulk(
    gateway: &Gateway,
    principal: &Principal,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| ApiError::BadRequest("the body must be a JSON object of at most 64 KiB".into()))?
        .to_bytes();
    let filter: BulkReplay = if body.is_empty() {
        BulkReplay::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid filter: {e}")))?
    };
    let state = match filter.state.as_deref().map(state).transpose()? {
        None => DeliveryState::Dead,
        Some(DeliveryState::Pending) => {
            return Err(ApiError::BadRequest("pending deliveries are queued already".into()));
        }
        Some(s) => s,
    };
    let time = |v: Option<String>, name: &str| v.map(|v| parse_time(&v).ok_or_else(|| bad_time(name))).transpose();
    let limit = filter.limit.unwrap_or(MAX_BULK);
    if !(1..=MAX_BULK).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_BULK}")));
    }
    let tenant = principal.scope(filter.tenant)?;
    let queued = gateway
        .store
        .replay_matching(ReplayFilter {
            tenant: tenant.clone(),
            destination: filter.destination.clone(),
            state,
            since: time(filter.since, "since")?,
            until: time(filter.until, "until")?,
            limit,
        })
        .await?;
    if queued > 0 {
        gateway.dispatcher().wake_matching(tenant.as_deref(), filter.destination.as_deref());
    }
    Ok(json_response(StatusCode::OK, &json!({ "queued": queued })))
}

/// Destinations on this node, a page at a time in (tenant, id) order: pause, circuit,
/// queue; `?health=true` adds the last hour. `next_cursor` is the page's last destination.
async fn destinations(gateway: &Gateway, principal: &Principal, params: &Params) -> Result<Response<Body>, ApiError> {
    let tenant = principal.scope(params.get("tenant"))?;
    let limit = params.limit()?;
    let cursor = params.get("cursor");
    let after = match cursor.as_deref().map(|c| c.split_once('/')) {
        None => None,
        Some(Some(after)) => Some(after),
        Some(None) => return Err(ApiError::BadRequest("cursor must be a next_cursor of this list (tenant/id)".into())),
    };
    let sees = |t: &str| principal.sees(t);
    let (page, more) = gateway.dispatcher().status_page(&StatusPage {
        tenant: tenant.as_deref(),
        after,
        limit,
        sees: &sees,
        with_health: params.get("health").is_some_and(|v| v == "true"),
    });
    // Queue figures as /metrics has them (read from the store at most every few seconds).
    let stats = gateway.queue_figures.get(gateway.store.as_ref()).await.unwrap_or_default();
    let waiting = stats.waiting();
    let now = crate::store::now_ms();
    let items: Vec<Value> = page
        .iter()
        .map(|d| {
            let (t, id) = d.destination.split_once('/').unwrap_or_default();
            let pending = waiting.get(&(t, id));
            let mut item = serde_json::to_value(d).unwrap_or_default();
            item["pending"] = json!(pending.map_or(0, |p| p.0));
            item["oldest_pending_seconds"] = json!(pending.map(|p| (now - p.1).max(0) / 1000));
            item
        })
        .collect();
    let next = more.then(|| page.last().map(|d| d.destination.clone())).flatten();
    Ok(json_response(StatusCode::OK, &json!({ "destinations": items, "next_cursor": next })))
}

async fn pause(
    gateway: &Gateway,
    principal: &Principal,
    tenant: &str,
    id: &str,
    paused: bool,
) -> Result<Response<Body>, ApiError> {
    let config = gateway.config();
    let exists =
        principal.sees(tenant) && config.tenants.get(tenant).is_some_and(|t| t.destinations.iter().any(|d| d.id == id));
    if !exists {
        return Err(ApiError::NotFound(format!("no destination {tenant}/{id}")));
    }
    // Durable first: a restart must not resume what an operator paused.
    gateway.store.set_paused(tenant, id, paused).await?;
    gateway.dispatcher().set_paused(tenant, id, paused);
    Ok(json_response(StatusCode::OK, &json!({ "destination": format!("{tenant}/{id}"), "paused": paused })))
}
