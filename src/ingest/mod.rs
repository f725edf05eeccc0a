//! The provider-facing request path, top to bottom in `accept`: route → method → tenant
//! and source → content type → body (bounded while streaming) → check → backpressure →
//! durable commit → answer. The answer is sent only after the event and every delivery it
//! fans out to are committed; nothing is acknowledged that a crash could lose.

mod error;
pub mod payload;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tracing::Instrument;
use uuid::Uuid;

pub use error::IngestError;

use crate::config::{Config, Source, Tenant};
use crate::deliver::Wakers;
use crate::server::Body;
use crate::store::{NewEvent, Store, now_ms};

pub struct Ingest {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    wakers: Wakers,
}

impl Ingest {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, wakers: Wakers) -> Self {
        Self {
            config,
            store,
            wakers,
        }
    }

    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let span = tracing::info_span!(
            "ingest",
            tenant = tracing::field::Empty,
            source = tracing::field::Empty,
            event_id = tracing::field::Empty
        );
        async move {
            match self.accept(request).await {
                Ok(response) => response,
                Err(e) => {
                    match &e {
                        IngestError::Store(cause) => {
                            tracing::error!(error = %cause, "event not stored")
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

    async fn accept(&self, request: Request<Incoming>) -> Result<Response<Body>, IngestError> {
        let received_at = now_ms();
        let (tenant_id, source_id) = route(request.uri().path()).ok_or(IngestError::NotFound)?;
        if request.method() != Method::POST && request.method() != Method::GET {
            return Err(IngestError::MethodNotAllowed);
        }
        let tenant = self
            .config
            .tenants
            .get(tenant_id)
            .ok_or(IngestError::UnknownTenant)?;
        let source = tenant.source(source_id).ok_or(IngestError::UnknownSource)?;
        let span = tracing::Span::current();
        span.record("tenant", tenant_id);
        span.record("source", source_id);

        let query = request
            .uri()
            .query()
            .filter(|q| !q.is_empty())
            .map(str::to_owned);
        if let Some(q) = &query {
            payload::check_form(q.as_bytes())
                .map_err(|m| IngestError::Malformed(format!("invalid query string: {m}")))?;
        }
        let (content_type, body) = if request.method() == Method::GET {
            (None, Bytes::new())
        } else {
            let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
            let kind = payload::kind(content_type.as_ref())?;
            let body = self.read_body(request).await?;
            payload::check(kind, &body)?;
            (
                content_type.and_then(|v| v.to_str().ok().map(str::to_owned)),
                body,
            )
        };

        let destinations = crate::fanout::destinations(tenant, source);
        let pending = self.store.pending_deliveries();
        if !destinations.is_empty()
            && pending + destinations.len() as u64 > self.config.server.max_pending_deliveries
        {
            return Err(IngestError::Backlog);
        }

        let id = Uuid::now_v7();
        span.record("event_id", tracing::field::display(id));
        self.store
            .commit(NewEvent {
                id,
                tenant: tenant.id.clone(),
                source: source.id.clone(),
                received_at,
                content_type,
                query,
                body,
                destinations,
            })
            .await?;
        self.wakers.wake(tenant, source);
        tracing::debug!("event committed");
        Ok(acknowledge(id, tenant, source))
    }

    async fn read_body(&self, request: Request<Incoming>) -> Result<Bytes, IngestError> {
        let limit = self.config.server.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(IngestError::TooLarge { limit });
        }
        let body = Limited::new(request.into_body(), limit).collect();
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

fn acknowledge(id: Uuid, _tenant: &Tenant, source: &Source) -> Response<Body> {
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
