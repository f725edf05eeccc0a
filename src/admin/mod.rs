//! The operator-facing listener. `/healthz` (process up), `/readyz` (the store can commit) and
//! `/metrics` (Prometheus text) are open; everything under `/v1/` needs
//! `Authorization: Bearer <token>`: the `[admin] token` (everything), or a tenant-scoped
//! key (its own tenant's destinations, secrets, events and deliveries; anything of
//! another tenant is not found). Errors have the same JSON shape as ingest.

mod api;
pub mod console;
mod tenants;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
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
            let mut response = Response::new(crate::server::full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (_, p) if p.starts_with("/v1/") => match authorized(&gateway, &request).await {
            Ok(principal) => api::handle(&gateway, &principal, request).await.unwrap_or_else(ApiError::into_response),
            Err(e) => e.into_response(),
        },
        (_, "/healthz" | "/readyz" | "/metrics") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET", None)
        }
        (&Method::GET, p) => console::asset(p, &gateway.config().portal)
            .unwrap_or_else(|| json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None)),
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None),
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    /// A tenant-scoped key or a portal token: its tenant, its id (for the audit trail),
    /// and whether it may change anything (a portal token, shown in a page, may not).
    Tenant {
        tenant: String,
        key_id: String,
        writes: bool,
    },
}

impl Principal {
    pub fn actor(&self) -> crate::control::Actor {
        match self {
            Principal::Admin => crate::control::Actor::Admin,
            Principal::Tenant { key_id, .. } => crate::control::Actor::Key(key_id.clone()),
        }
    }

    /// Whether this caller may see `tenant` at all. Others' tenants are not found, never
    /// forbidden: a key cannot learn which tenants exist.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant { tenant: own, .. } => own == tenant,
        }
    }

    /// The tenant a listing is confined to: a key's own, whatever the query asked.
    pub fn scope(&self, asked: Option<String>) -> Result<Option<String>, ApiError> {
        match self {
            Principal::Admin => Ok(asked),
            Principal::Tenant { tenant, .. } => match asked {
                Some(other) if other != *tenant => Err(ApiError::NotFound(format!("no tenant {other}"))),
                _ => Ok(Some(tenant.clone())),
            },
        }
    }

    /// Changes to the tenant: the admin token and tenant keys, not a portal token.
    pub fn may_write(&self) -> Result<(), ApiError> {
        match self {
            Principal::Tenant { writes: false, .. } => {
                Err(ApiError::Forbidden("a portal token can look and replay, not change the tenant"))
            }
            _ => Ok(()),
        }
    }

    /// Only the admin token may: answers 403 to a tenant key.
    pub fn admin_only(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant { .. } => {
                Err(ApiError::Forbidden("a tenant key cannot do this; it takes the admin token"))
            }
        }
    }
}

async fn authorized(gateway: &Gateway, request: &Request<Incoming>) -> Result<Principal, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::control::portal::is_portal_token(presented) {
        let config = gateway.config();
        let now = crate::store::now_ms() / 1000;
        let tenant = config.secrets_key.as_ref().and_then(|key| crate::control::portal::verify(key, presented, now));
        return match tenant {
            Some(tenant) if config.tenants.contains_key(&tenant) => {
                Ok(Principal::Tenant { tenant, key_id: "portal".to_string(), writes: false })
            }
            _ => Err(ApiError::Unauthorized("unauthorized")),
        };
    }
    if let Some((key_id, secret)) = crate::control::keys::parse(presented) {
        let key = gateway.store.key(key_id).await?;
        return match key {
            // A key opens nothing once its tenant is gone (a tenant file removed).
            Some(key)
                if crate::control::keys::matches(secret, &key.hash)
                    && gateway.config().tenants.contains_key(&key.tenant) =>
            {
                Ok(Principal::Tenant { tenant: key.tenant, key_id: key.key_id, writes: true })
            }
            _ => Err(ApiError::Unauthorized("unauthorized")),
        };
    }
    let config = gateway.config();
    let Some(token) = config.admin_token.as_deref() else {
        return Err(ApiError::Unauthorized("the admin API is off: set [admin] token in the configuration"));
    };
    if crate::auth::signatures::equal(presented.as_bytes(), token.as_bytes()) {
        Ok(Principal::Admin)
    } else {
        Err(ApiError::Unauthorized("unauthorized"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
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
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
}

impl ApiError {
    fn into_response(self) -> Response<Body> {
        use crate::control::ControlError;
        if let Self::Control(ControlError::Invalid(problems)) = &self {
            let body = serde_json::json!({ "error": {
                "code": "invalid_config",
                "message": self.to_string(),
                "errors": problems,
            }});
            return json_response(StatusCode::UNPROCESSABLE_ENTITY, &body);
        }
        let (status, code) = match &self {
            Self::Control(e) => match e {
                ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                ControlError::ManagedByFile(_) => (StatusCode::CONFLICT, "managed_by_file"),
                ControlError::PreconditionFailed { .. } => (StatusCode::PRECONDITION_FAILED, "version_mismatch"),
                ControlError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config"),
                ControlError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
                ControlError::NoSecretsKey => (StatusCode::CONFLICT, "no_secrets_key"),
                ControlError::Seal(e) => {
                    tracing::error!(error = %e, "a tenant secret could not be sealed or opened");
                    (StatusCode::INTERNAL_SERVER_ERROR, "secrets_unavailable")
                }
                ControlError::Contended => (StatusCode::CONFLICT, "contended"),
                ControlError::Store(e) => {
                    tracing::error!(error = %e, "admin request failed in the store");
                    (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
                }
            },
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
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
