//! The operator-facing listener. `/healthz` (process up), `/readyz` (the store can commit) and
//! `/metrics` (Prometheus text) are open; everything under `/v1/` needs
//! `Authorization: Bearer <[admin] token>`. Errors have the same JSON shape as ingest.

mod api;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::Gateway;
use crate::server::{Body, json_error, json_response};

const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => {
            // A store too slow to answer is as good as down for a provider waiting on a commit.
            let ready = tokio::time::timeout(READY_TIMEOUT, gateway.store.ready()).await;
            match ready {
                Ok(Ok(())) => json_response(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "not ready: the store cannot commit");
                    json_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the store cannot commit events", Some(1))
                }
                Err(_) => {
                    tracing::warn!("not ready: the store did not answer in time");
                    json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_ready",
                        "the store did not answer in time",
                        Some(1),
                    )
                }
            }
        }
        (&Method::GET, "/metrics") => {
            let text = crate::metrics::render(&gateway.config(), gateway.store.as_ref(), &gateway.queue_figures).await;
            let mut response = Response::new(Full::new(text.into()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (_, p) if p.starts_with("/v1/") => match authorized(&gateway, &request) {
            Ok(()) => api::handle(&gateway, request).await.unwrap_or_else(ApiError::into_response),
            Err(e) => e.into_response(),
        },
        (_, "/healthz" | "/readyz" | "/metrics") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET", None)
        }
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None),
    }
}

fn authorized(gateway: &Gateway, request: &Request<Incoming>) -> Result<(), ApiError> {
    let config = gateway.config();
    let Some(token) = config.admin_token.as_deref() else {
        return Err(ApiError::Unauthorized("the admin API is off: set [admin] token in the configuration"));
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::auth::signatures::equal(presented.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("unauthorized"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    InvalidConfig(String),
    #[error("the store could not answer; retry later")]
    Store(#[from] crate::store::StoreError),
}

impl ApiError {
    fn into_response(self) -> Response<Body> {
        let (status, code) = match &self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::InvalidConfig(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config"),
            Self::Store(e) => {
                tracing::error!(error = %e, "admin request failed in the store");
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
        };
        let retry_after = (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        json_error(status, code, &self.to_string(), retry_after)
    }
}
