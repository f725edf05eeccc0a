//! The provider-facing request path, top to bottom in `accept`: route → method → tenant
//! and source → content type → body (bounded while streaming) → authenticate → rate limit
//! → parse and normalize → fan out → backpressure → durable commit → answer. The answer is sent only after the event and every delivery it
//! fans out to are committed; nothing is acknowledged that a crash could lose.

mod error;
pub mod payload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tracing::Instrument;
use uuid::Uuid;

pub use error::IngestError;

use crate::auth::{self, Inbound};
use crate::config::{Config, Source};
use crate::deliver::Wakers;
use crate::normalize;
use crate::server::Body;
use crate::store::{Committed, Dedupe, NewEvent, Store, now_ms};

/// A tenant's inbound limiter, and one per source (aligned with `sources`).
struct Limiters {
    tenant: Option<DefaultDirectRateLimiter>,
    sources: Vec<Option<DefaultDirectRateLimiter>>,
}

pub struct Ingest {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    wakers: Wakers,
    limiters: HashMap<String, Limiters>,
}

impl Ingest {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, wakers: Wakers) -> Self {
        let limiters = config
            .tenants
            .values()
            .map(|t| {
                let limiters = Limiters {
                    tenant: t.rate_limit.map(|r| r.limiter()),
                    sources: t
                        .sources
                        .iter()
                        .map(|s| s.rate_limit.map(|r| r.limiter()))
                        .collect(),
                };
                (t.id.clone(), limiters)
            })
            .collect();
        Self {
            config,
            store,
            wakers,
            limiters,
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let span = tracing::info_span!(
            "ingest",
            tenant = tracing::field::Empty,
            source = tracing::field::Empty,
            event_id = tracing::field::Empty
        );
        async move {
            match self.accept(request, peer).await {
                Ok(response) => response,
                Err(e) => {
                    match &e {
                        IngestError::Store(cause) => {
                            tracing::error!(error = %cause, "event not stored")
                        }
                        IngestError::Unauthorized(reason) => {
                            tracing::warn!(%reason, "callback unauthorized")
                        }
                        e => tracing::info!(code = e.code(), "callback refused"),
                    }
                    e.into_response()
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn accept(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, IngestError> {
        let received_at = now_ms();
        let (parts, body) = request.into_parts();
        let (tenant_id, source_id) = route(parts.uri.path()).ok_or(IngestError::NotFound)?;
        if parts.method != Method::POST && parts.method != Method::GET {
            return Err(IngestError::MethodNotAllowed);
        }
        let tenant = self
            .config
            .tenants
            .get(tenant_id)
            .ok_or(IngestError::UnknownTenant)?;
        let (index, source) = tenant
            .sources
            .iter()
            .enumerate()
            .find(|(_, s)| s.id == source_id)
            .ok_or(IngestError::UnknownSource)?;
        let span = tracing::Span::current();
        span.record("tenant", tenant_id);
        span.record("source", source_id);

        let kind = match parts.method {
            Method::GET => None,
            _ => payload::kind(parts.headers.get(header::CONTENT_TYPE))?,
        };
        let body = match parts.method {
            Method::GET => Bytes::new(),
            _ => self.read_body(&parts.headers, body).await?,
        };
        let query = parts.uri.query().filter(|q| !q.is_empty());
        let inbound = Inbound {
            method: &parts.method,
            query,
            headers: &parts.headers,
            body: &body,
            client: auth::client_ip(
                peer.ip(),
                &parts.headers,
                &self.config.server.trusted_proxies,
            ),
            now: received_at / 1000,
        };
        auth::verify(&source.auth, &inbound).map_err(|e| IngestError::Unauthorized(e.0))?;
        self.admit(tenant_id, index)?;
        let payload = payload::fields(kind, &body, query)?;
        let query = query.map(str::to_owned);
        let content_type = match parts.method {
            Method::GET => None,
            _ => parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };

        let id = Uuid::now_v7();
        let mut id_text = Uuid::encode_buffer();
        let id_text = &*id.hyphenated().encode_lower(&mut id_text);
        span.record("event_id", id_text);
        let context = normalize::Context {
            event_id: id_text,
            tenant: &tenant.id,
            source: &source.id,
            provider: source.provider,
            received_at,
            timezone: &source.timezone,
        };
        let (call, dedupe_key) = normalize::normalize(&payload, &context);
        let destinations = crate::fanout::destinations(tenant, source, &call);
        let pending = self.store.pending_deliveries();
        if !destinations.is_empty()
            && pending + destinations.len() as u64 > self.config.server.max_pending_deliveries
        {
            return Err(IngestError::Backlog);
        }
        let dedupe = dedupe_key
            .zip(source.dedupe_window)
            .map(|(key, window)| Dedupe {
                key,
                until: received_at.saturating_add(window.as_millis() as i64),
            });
        let committed = self
            .store
            .commit(NewEvent {
                id,
                tenant: tenant.id.clone(),
                source: source.id.clone(),
                received_at,
                content_type,
                query,
                body,
                normalized: serde_json::to_string(&call).unwrap_or_default(),
                destinations,
                dedupe,
            })
            .await?;
        if let Committed::Duplicate(first) = committed {
            // The provider is re-sending because our answer was slow: answer as the first time.
            tracing::info!(first = %first, "duplicate callback");
            return Ok(acknowledge(first, source));
        }
        self.wakers.wake(tenant, source);
        tracing::debug!("event committed");
        Ok(acknowledge(id, source))
    }

    /// The tenant's limit, then the source's: over either, 429 before anything is parsed.
    fn admit(&self, tenant: &str, source: usize) -> Result<(), IngestError> {
        let Some(limiters) = self.limiters.get(tenant) else {
            return Ok(());
        };
        let checks = [
            limiters.tenant.as_ref(),
            limiters.sources.get(source).and_then(Option::as_ref),
        ];
        for limiter in checks.into_iter().flatten() {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(IngestError::RateLimited {
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
        }
        Ok(())
    }

    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Bytes, IngestError> {
        let limit = self.config.server.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(IngestError::TooLarge { limit });
        }
        let body = Limited::new(body, limit).collect();
        match tokio::time::timeout(self.config.server.body_read_timeout, body).await {
            Err(_) => Err(IngestError::BodyTimeout),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(IngestError::TooLarge { limit })
            }
            Ok(Err(e)) => Err(IngestError::Malformed(format!(
                "could not read the body: {e}"
            ))),
        }
    }
}

/// `/v1/hooks/{tenant}/{source}` → (tenant, source); nothing else matches.
fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/hooks/")?;
    let (tenant, source) = rest.split_once('/')?;
    (!tenant.is_empty() && !source.is_empty() && !source.contains('/')).then_some((tenant, source))
}

fn acknowledge(id: Uuid, source: &Source) -> Response<Body> {
    let mut encoded = Uuid::encode_buffer();
    let id = &*id.hyphenated().encode_lower(&mut encoded);
    let mut response = match &source.response {
        Some(fixed) => {
            let mut r = Response::new(Full::new(fixed.body.clone()));
            *r.status_mut() = fixed.status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, fixed.content_type.clone());
            r
        }
        None => {
            let mut r = Response::new(Full::new(Bytes::from(format!("{{\"event_id\":\"{id}\"}}"))));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    };
    if let Ok(value) = HeaderValue::from_str(id) {
        response
            .headers_mut()
            .insert("x-switchboard-event-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes_only_the_hook_path() {
        assert_eq!(route("/v1/hooks/acme/telecmi"), Some(("acme", "telecmi")));
        assert_eq!(route("/v1/hooks/acme/telecmi/x"), None);
        assert_eq!(route("/v1/hooks/acme/"), None);
        assert_eq!(route("/v1/hooks//x"), None);
        assert_eq!(route("/v1/hook/acme/x"), None);
    }
}
