//! The provider-facing request path, top to bottom in `accept`: route → method → tenant
//! and source → content type → body (bounded while streaming, charged to the memory
//! budget) → authenticate → strip credentials, refuse unsigned query fields → rate limit →
//! parse and normalize → fan out → backpressure → durable commit → answer. The answer is
//! sent only after the event and every delivery it fans out to are committed; nothing is
//! acknowledged that a crash could lose. The parsed payload never lives across an await.

mod budget;
mod error;
pub mod payload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use governor::DefaultDirectRateLimiter;
use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use error::IngestError;

use crate::auth::{self, Inbound};
use crate::config::{Config, FixedResponse, RateLimit, Responder, Source, Tenant};
use crate::deliver::{Dispatcher, respond};
use crate::metrics;
use crate::normalize;
use crate::server::Body;
use crate::store::{ClaimedDelivery, Committed, Dedupe, NewEvent, Store, now_ms};

/// A tenant's inbound limiter, and one per source (aligned with `sources`).
struct Limiters {
    tenant: Option<DefaultDirectRateLimiter>,
    sources: Vec<Option<DefaultDirectRateLimiter>>,
    /// Aligned with `destinations`: the pacing of synchronous responder calls.
    responders: Vec<Option<DefaultDirectRateLimiter>>,
    /// The limits these were built from: a tenant changed with the same limits keeps its
    /// buckets (a change must not refill them).
    shape: LimitShape,
    /// Aligned with `sources`: the metric handles of an accepted callback.
    accepted: Vec<metrics::Accepted>,
}

type LimitShape = (Option<RateLimit>, Vec<(String, Option<RateLimit>)>, Vec<Option<RateLimit>>);

fn limit_shape(t: &Tenant) -> LimitShape {
    let is_responder = |i: usize| t.sources.iter().any(|s| s.responder.as_ref().is_some_and(|r| r.destination == i));
    (
        t.rate_limit,
        t.sources.iter().map(|s| (s.id.clone(), s.rate_limit)).collect(),
        t.destinations.iter().enumerate().map(|(i, d)| d.rate_limit.filter(|_| is_responder(i))).collect(),
    )
}

impl Limiters {
    fn new(t: &Tenant) -> Self {
        let shape = limit_shape(t);
        Limiters {
            tenant: shape.0.map(|r| r.limiter()),
            sources: shape.1.iter().map(|(_, r)| r.map(|r| r.limiter())).collect(),
            responders: shape.2.iter().map(|r| r.map(|r| r.limiter())).collect(),
            accepted: t.sources.iter().map(|s| metrics::Accepted::new(&t.id, &s.id)).collect(),
            shape,
        }
    }
}

/// The routing tables of one config version. A reload swaps them whole; a request in
/// flight keeps the version it started with.
pub struct Tables {
    config: Arc<Config>,
    limiters: HashMap<String, Arc<Limiters>>,
    /// Cancelled once these tables are dropped: no request routes with them any more.
    retired: CancellationToken,
    _retire: DropGuard,
}

impl Tables {
    fn new(config: Arc<Config>) -> Self {
        let limiters = config.tenants.values().map(|t| (t.id.clone(), Arc::new(Limiters::new(t)))).collect();
        Self::with(config, limiters)
    }

    fn with(config: Arc<Config>, limiters: HashMap<String, Arc<Limiters>>) -> Self {
        let retired = CancellationToken::new();
        Self { config, limiters, _retire: retired.clone().drop_guard(), retired }
    }

    /// The tables of `config`, where only the tenants `ids` changed since `self`.
    fn with_changes(&self, config: Arc<Config>, ids: &[&str]) -> Self {
        let mut limiters = self.limiters.clone();
        for &id in ids {
            match config.tenants.get(id) {
                None => {
                    limiters.remove(id);
                }
                Some(t) => {
                    let kept = limiters.get(id).is_some_and(|l| l.shape == limit_shape(t));
                    if !kept {
                        limiters.insert(id.to_string(), Arc::new(Limiters::new(t)));
                    }
                }
            }
        }
        Self::with(config, limiters)
    }
}

/// How long the requests routing as before a removal may take to finish before what they
/// left behind is cancelled anyway (one that commits later leaves its delivery pending).
const LEFT_BEHIND_WAIT: Duration = Duration::from_secs(60);

pub struct Ingest {
    tables: ArcSwap<Tables>,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    /// Sized at start from `max_body_memory_bytes`; a reload does not resize it.
    budget: budget::Budget,
    /// Work that outlives a request (recording a responder exchange): shutdown waits for it.
    tasks: TaskTracker,
    tail: Arc<crate::tail::Tail>,
}

/// What a request turned out to be, for its metrics and log lines.
#[derive(Default)]
struct Seen {
    tenant: Option<Arc<Tenant>>,
    source: usize,
    duplicate: bool,
    event_id: Option<Uuid>,
}

impl Seen {
    /// The request's context for a log line. Made only when a line is written: a span per
    /// request formats its fields whether anything is logged or not.
    fn span(&self) -> tracing::Span {
        let tenant = self.tenant.as_deref();
        tracing::info_span!(
            "ingest",
            tenant = tenant.map(|t| t.id.as_str()),
            source = tenant.and_then(|t| t.sources.get(self.source)).map(|s| s.id.as_str()),
            event_id = self.event_id.map(tracing::field::display),
        )
    }
}

impl Ingest {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        tasks: TaskTracker,
        tail: Arc<crate::tail::Tail>,
    ) -> Self {
        let budget = budget::Budget::new(config.server.max_body_memory_bytes);
        Self { tables: ArcSwap::from_pointee(Tables::new(config)), store, dispatcher, budget, tasks, tail }
    }

    /// Takes a new config for the next requests. Rate-limit buckets start full again.
    pub fn swap(&self, config: Arc<Config>) {
        self.tables.store(Arc::new(Tables::new(config)));
    }

    /// Takes a config where only the tenants `ids` changed; the others keep their buckets.
    /// Gives back the tables it replaced: requests in flight may still be routing with them.
    pub fn update(&self, config: Arc<Config>, ids: &[&str]) -> Arc<Tables> {
        let replaced = self.tables.load_full();
        self.tables.store(Arc::new(replaced.with_changes(config, ids)));
        replaced
    }

    /// After the API removed destinations (`None`: a whole tenant) and cancelled their
    /// pending deliveries: a request that routed with the tables from before (`routed`) can
    /// still commit one, as can another node until it follows the change. Once the requests
    /// here are done, what is pending for those destinations is cancelled too, unless a
    /// destination is back by then. Each node does this, so each node's stragglers go.
    pub fn cancel_left_behind(self: &Arc<Self>, routed: Arc<Tables>, removed: Vec<(String, Option<String>)>) {
        let ingest = self.clone();
        self.tasks.spawn(async move {
            let retired = routed.retired.clone();
            drop(routed);
            if tokio::time::timeout(LEFT_BEHIND_WAIT, retired.cancelled()).await.is_err() {
                tracing::warn!("requests routing as before a removal are still running; cancelling without them");
            }
            let created_to = crate::store::now_ms();
            let config = ingest.tables.load().config.clone();
            for (tenant, destination) in removed {
                let back = match (config.tenants.get(&tenant), destination.as_deref()) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(t), Some(d)) => t.destinations.iter().any(|x| x.id == d),
                };
                if back {
                    continue;
                }
                match ingest.store.cancel_left_behind(&tenant, destination.as_deref(), created_to).await {
                    Ok(0) => {}
                    Ok(cancelled) => {
                        tracing::info!(
                            tenant,
                            destination,
                            cancelled,
                            "deliveries committed during a removal cancelled"
                        )
                    }
                    Err(e) => tracing::error!(tenant, destination, error = %e,
                        "deliveries committed during a removal could not be cancelled; they stay pending"),
                }
            }
        });
    }

    pub async fn handle(self: Arc<Self>, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        {
            let started = std::time::Instant::now();
            let tables = self.tables.load_full();
            let mut seen = Seen::default();
            let result = self.accept(&tables, request, peer, &mut seen).await;
            let (tenant, source) = match &seen.tenant {
                Some(t) => (t.id.as_str(), t.sources.get(seen.source).map_or("", |s| s.id.as_str())),
                None => ("", ""),
            };
            let outcome = match &result {
                Ok(_) if seen.duplicate => "duplicate",
                Ok(_) => "accepted",
                Err(e) => e.outcome(),
            };
            let accepted =
                (outcome == "accepted").then(|| tables.limiters.get(tenant)?.accepted.get(seen.source)).flatten();
            match accepted {
                Some(handles) => handles.record(started.elapsed()),
                None => metrics::ingest(tenant, source, outcome, started.elapsed()),
            }
            match result {
                Ok(response) => response,
                Err(e) => {
                    let _span = seen.span().entered();
                    match &e {
                        IngestError::Store(cause) => tracing::error!(error = %cause, "event not stored"),
                        IngestError::Unauthorized(reason) => tracing::warn!(%reason, "callback unauthorized"),
                        IngestError::UnknownTenant => {
                            tracing::info!(code = e.code(), "callback refused: unknown tenant")
                        }
                        IngestError::UnknownSource => {
                            tracing::info!(code = e.code(), "callback refused: unknown source")
                        }
                        e => tracing::info!(code = e.code(), "callback refused"),
                    }
                    e.into_response()
                }
            }
        }
    }

    async fn accept(
        &self,
        tables: &Tables,
        request: Request<Incoming>,
        peer: SocketAddr,
        seen: &mut Seen,
    ) -> Result<Response<Body>, IngestError> {
        let received_at = now_ms();
        let (parts, body) = request.into_parts();
        let (tenant_id, source_id) = route(parts.uri.path()).ok_or(IngestError::NotFound)?;
        if parts.method != Method::POST && parts.method != Method::GET {
            return Err(IngestError::MethodNotAllowed);
        }
        // Unknown tenant and unknown source answer alike: the answer must not tell a prober
        // which tenants exist.
        let tenant = tables.config.tenants.get(tenant_id).ok_or(IngestError::UnknownTenant)?;
        seen.tenant = Some(tenant.clone());
        let (index, source) =
            tenant.sources.iter().enumerate().find(|(_, s)| s.id == source_id).ok_or(IngestError::UnknownSource)?;
        seen.source = index;

        let is_get = parts.method == Method::GET;
        let kind = if is_get { None } else { payload::kind(parts.headers.get(header::CONTENT_TYPE))? };
        let mut held = self.budget.hold();
        let body = if is_get {
            Bytes::new()
        } else {
            read_body(&tables.config, &parts.headers, body, &self.budget, &mut held).await?
        };
        let query = parts.uri.query().filter(|q| !q.is_empty());
        let trusted_proxies = &tables.config.server.trusted_proxies;
        let called = match &source.public_url {
            _ if !auth::signs_url(&source.auth) => None,
            Some(url) => Some(std::borrow::Cow::Borrowed(url.as_str())),
            None => auth::called_url(peer.ip(), &parts.headers, parts.uri.path(), trusted_proxies).map(Into::into),
        };
        let inbound = Inbound {
            method: &parts.method,
            query,
            headers: &parts.headers,
            body: &body,
            client: auth::client_ip(peer.ip(), &parts.headers, trusted_proxies),
            now: received_at / 1000,
            url: called.as_deref(),
        };
        let replay = auth::verify(&source.auth, &inbound).map_err(|e| IngestError::Unauthorized(e.0))?;
        // A credential read from the query is checked, then gone: never stored, shown,
        // rendered or forwarded.
        let query = auth::without_credentials(&source.auth, query).map(String::from);
        if query.is_some() && !auth::query_is_trusted(&source.auth) {
            return Err(IngestError::UnsignedQuery);
        }
        admit(tables, tenant_id, index)?;
        let content_type = if is_get {
            None
        } else {
            parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };

        let id = Uuid::now_v7();
        let mut id_text = Uuid::encode_buffer();
        let id_text = &*id.hyphenated().encode_lower(&mut id_text);
        seen.event_id = Some(id);
        let context = normalize::Context {
            event_id: id_text,
            tenant: &tenant.id,
            source: &source.id,
            provider: source.provider,
            received_at,
            timezone: &source.timezone,
        };
        // The parsed payload can be many times the body's size: it is built, read and
        // dropped here, in one step with no await, so it never waits for the commit.
        let (call, dedupe_key, destinations, place) = {
            let payload = payload::fields(kind, &body, query.as_deref())?;
            let (call, dedupe_key) = normalize::normalize(&payload, &context);
            let destinations = crate::fanout::destinations(tenant, source, &call);
            let place = if destinations.iter().any(|t| t.by_call) {
                crate::fanout::call_place(source, &payload, &call, received_at)
            } else {
                None
            };
            (call, dedupe_key, destinations, place)
        };
        let pending = self.store.pending_deliveries();
        if !destinations.is_empty() && pending + destinations.len() as u64 > tables.config.server.max_pending_deliveries
        {
            return Err(IngestError::Backlog);
        }
        let normalized: Arc<str> = serde_json::to_string(&call).unwrap_or_default().into();
        // The event as a delivery of it is sent: to a responder now, and to the workers it is
        // handed over to after the commit (they share its body and text).
        let as_sent = ClaimedDelivery {
            id: 0,
            lease: 0,
            event_id: id,
            attempt: 1,
            created_at: received_at,
            content_type: content_type.map(Arc::from),
            query: query.map(Arc::from),
            body,
            normalized: Some(normalized.clone()),
        };
        let provider_key = dedupe_key
            .zip(source.dedupe_window)
            .map(|(key, window)| Dedupe { key, until: received_at.saturating_add(window.as_millis() as i64) });
        // A signed message seen before, while a copy of it would still pass, is a replay: the
        // same event, answered as the first time.
        let replay = replay.map(|r| Dedupe { key: format!("\u{1e}replay\u{1e}{}", r.id), until: r.until });
        let dedupe = provider_key.into_iter().chain(replay).collect();
        // Deliveries whose workers have room are committed leased to this node and handed
        // to them from memory: no claim, no re-read of the event.
        let mut destinations = destinations;
        let hand_over = self.dispatcher.reserve(&tenant.id, &mut destinations);
        let committed = self
            .store
            .commit(NewEvent {
                id,
                tenant: tenant.id.clone(),
                source: source.id.clone(),
                received_at,
                content_type: as_sent.content_type.clone(),
                query: as_sent.query.clone(),
                body: as_sent.body.clone(),
                normalized,
                destinations,
                call: place,
                dedupe,
                call_id: call.id.clone(),
                from: call.from.clone(),
                to: call.to.clone(),
            })
            .await?;
        let event_id = match committed {
            Committed::New(leased) => {
                self.dispatcher.committed(&as_sent, hand_over, &leased);
                if self.tail.watched() {
                    self.tail.publish(crate::tail::Item::Event {
                        tenant: tenant.id.clone(),
                        source: source.id.clone(),
                        event_id: id,
                        call_id: call.id.clone(),
                        at: crate::store::rfc3339(received_at),
                    });
                }
                id
            }
            Committed::Duplicate(first) => {
                // The provider is re-sending because our answer was slow: answer as the first
                // time (a responder is asked again: its answer was not kept).
                seen.duplicate = true;
                seen.span().in_scope(|| tracing::info!(first = %first, "duplicate callback"));
                first
            }
        };
        match &source.responder {
            None => Ok(acknowledge(event_id, source)),
            // A responder gets the callback exactly as a queued delivery would.
            Some(responder) => {
                let delivery = ClaimedDelivery { event_id, ..as_sent };
                Ok(self.respond(tables, tenant, responder, &delivery).await)
            }
        }
    }

    /// Asks the responder and answers the provider with its answer, or the fallback.
    async fn respond(
        &self,
        tables: &Tables,
        tenant: &Tenant,
        responder: &Responder,
        delivery: &ClaimedDelivery,
    ) -> Response<Body> {
        let destination = &tenant.destinations[responder.destination];
        let pacer = tables.limiters.get(&tenant.id).and_then(|l| l.responders.get(responder.destination)?.as_ref());
        let (client, guard) = self.dispatcher.client();
        let (answer, sent) = respond::exchange(client, guard, destination, delivery, responder, pacer).await;
        let delivered = answer.is_some();
        let outcome = metrics::attempt_outcome(sent.record.status, delivered, sent.error.as_ref());
        let record = sent.record;
        metrics::attempt(&tenant.id, &destination.id, outcome, record.latency);
        // The exchange joins the event's history after the provider has its answer; it is a
        // record of what happened, not a delivery anything waits on.
        let (store, event, tenant_id, destination_id) =
            (self.store.clone(), delivery.event_id, tenant.id.clone(), destination.id.clone());
        self.tasks.spawn(async move {
            if let Err(e) = store.record_exchange(event, &tenant_id, &destination_id, record, delivered).await {
                tracing::warn!(error = %e, "responder exchange not recorded");
            }
        });
        let mut response = match answer {
            Some(answer) => {
                let mut r = Response::new(crate::server::full(answer.body));
                *r.status_mut() = answer.status;
                *r.headers_mut() = answer.headers;
                r
            }
            None => {
                tracing::warn!(
                    tenant = %tenant.id,
                    destination = %destination.id,
                    event_id = %delivery.event_id,
                    "responder failed; answering with the fallback"
                );
                fixed(&responder.fallback)
            }
        };
        set_event_id(&mut response, delivery.event_id);
        response
    }
}

/// The tenant's limit, then the source's: over either, 429 before anything is parsed.
fn admit(tables: &Tables, tenant: &str, source: usize) -> Result<(), IngestError> {
    let Some(limiters) = tables.limiters.get(tenant) else { return Ok(()) };
    let checks = [limiters.tenant.as_ref(), limiters.sources.get(source).and_then(Option::as_ref)];
    for limiter in checks.into_iter().flatten() {
        if let Some(retry_after) = over_limit(limiter) {
            return Err(IngestError::RateLimited { retry_after });
        }
    }
    Ok(())
}

/// Takes one token; when there is none, the whole seconds until there is (at least 1),
/// read on the limiter's own clock (a fake one in tests).
fn over_limit<C: Clock>(limiter: &RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>) -> Option<u64> {
    let not_until = limiter.check().err()?;
    let wait = not_until.wait_time_from(limiter.clock().now());
    Some(wait.as_secs_f64().ceil().max(1.0) as u64)
}

/// Reads the body within `max_body_bytes` and `body_read_timeout`, charging every byte to
/// the memory budget before it is buffered (the declared length up front).
async fn read_body(
    config: &Config,
    headers: &http::HeaderMap,
    body: Incoming,
    budget: &budget::Budget,
    held: &mut budget::Held,
) -> Result<Bytes, IngestError> {
    let limit = config.server.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(IngestError::TooLarge { limit });
    }
    let declared = declared.unwrap_or(0) as usize;
    let read = async {
        let mut body = body;
        // Over the budget, the rest of the body is read and thrown away, not kept: the
        // provider then gets its 503 on a clean connection (a close with unread data in the
        // socket would reset it and lose the answer).
        let mut over_budget = budget.grow(held, declared).is_err();
        let mut buffer = BytesMut::with_capacity(if over_budget { 0 } else { declared });
        let mut seen = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| IngestError::Malformed(format!("could not read the body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            seen += data.len();
            if seen > limit {
                return Err(IngestError::TooLarge { limit });
            }
            over_budget = over_budget || budget.grow(held, seen).is_err();
            if !over_budget {
                buffer.extend_from_slice(&data);
            }
        }
        if over_budget { Err(IngestError::MemoryBudget) } else { Ok(buffer.freeze()) }
    };
    tokio::time::timeout(config.server.body_read_timeout, read).await.map_err(|_| IngestError::BodyTimeout)?
}

/// `/v1/hooks/{tenant}/{source}` → (tenant, source); nothing else matches.
fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/hooks/")?;
    let (tenant, source) = rest.split_once('/')?;
    (!tenant.is_empty() && !source.is_empty() && !source.contains('/')).then_some((tenant, source))
}

fn fixed(answer: &FixedResponse) -> Response<Body> {
    let mut r = Response::new(crate::server::full(answer.body.clone()));
    *r.status_mut() = answer.status;
    r.headers_mut().insert(header::CONTENT_TYPE, answer.content_type.clone());
    r
}

fn set_event_id(response: &mut Response<Body>, id: Uuid) {
    let mut encoded = Uuid::encode_buffer();
    if let Ok(value) = HeaderValue::from_str(id.hyphenated().encode_lower(&mut encoded)) {
        response.headers_mut().insert("x-switchboard-event-id", value);
    }
}

fn acknowledge(id: Uuid, source: &Source) -> Response<Body> {
    let mut response = match &source.response {
        Some(answer) => fixed(answer),
        None => {
            let mut r = Response::new(crate::server::full(Bytes::from(format!("{{\"event_id\":\"{id}\"}}"))));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    };
    set_event_id(&mut response, id);
    response
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;
    use governor::{Quota, RateLimiter};

    use super::{over_limit, route};

    /// Bursts, Retry-After and refill on governor's fake clock: exact, and no test sleeps.
    #[test]
    fn a_limit_answers_when_the_next_token_comes() {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::new(2).unwrap()).allow_burst(NonZeroU32::new(3).unwrap());
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        for _ in 0..3 {
            assert_eq!(over_limit(&limiter), None, "the burst passes");
        }
        // The next token is 0.5 s away: Retry-After rounds up to a whole second.
        assert_eq!(over_limit(&limiter), Some(1));
        clock.advance(Duration::from_millis(499));
        assert_eq!(over_limit(&limiter), Some(1));
        clock.advance(Duration::from_millis(1));
        assert_eq!(over_limit(&limiter), None, "one token came back");
        assert_eq!(over_limit(&limiter), Some(1));
        // Idle long enough, the whole burst is back, and no more.
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(over_limit(&limiter), None);
        }
        assert_eq!(over_limit(&limiter), Some(1));

        let slow = RateLimiter::direct_with_clock(
            Quota::per_minute(NonZeroU32::new(6).unwrap()).allow_burst(NonZeroU32::new(1).unwrap()),
            clock.clone(),
        );
        assert_eq!(over_limit(&slow), None);
        assert_eq!(over_limit(&slow), Some(10), "one per 10 s: Retry-After says 10");
    }

    #[test]
    fn routes_only_the_hook_path() {
        assert_eq!(route("/v1/hooks/acme/telecmi"), Some(("acme", "telecmi")));
        assert_eq!(route("/v1/hooks/acme/telecmi/x"), None);
        assert_eq!(route("/v1/hooks/acme/"), None);
        assert_eq!(route("/v1/hooks//x"), None);
        assert_eq!(route("/v1/hooks/acme/x"), Some(("acme", "x")));
        assert_eq!(route("/v1/hook/acme/x"), None);
    }
}
