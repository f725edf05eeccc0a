//! Everything ingest can refuse, and the one place those refusals become HTTP answers.

use http::{HeaderValue, Response, StatusCode, header};

use crate::server::{Body, json_error};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no such endpoint; callbacks go to /v1/hooks/{{tenant}}/{{source}}")]
    NotFound,
    /// Unknown tenant and unknown source answer alike (only the log tells them apart), so
    /// the answer cannot be used to find which tenants exist.
    #[error("no such tenant or source")]
    UnknownTenant,
    #[error("no such tenant or source")]
    UnknownSource,
    #[error("method not allowed; use POST, or GET with the fields in the query string")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Malformed(String),
    /// The reason is logged, never sent: a prober learns nothing from the answer.
    #[error("unauthorized")]
    Unauthorized(String),
    #[error("too many callbacks; retry later")]
    RateLimited { retry_after: u64 },
    /// A source whose signature covers only the body got fields in the query string:
    /// unsigned input beside signed input is refused, not merged.
    #[error(
        "this source's signature covers only the body; send every field in the signed body, not in the query string"
    )]
    UnsignedQuery,
    #[error("too many callback bodies are being received at once; retry later")]
    MemoryBudget,
    #[error("the request body was not received in time")]
    BodyTimeout,
    #[error("too many deliveries are pending; retry later")]
    Backlog,
    #[error("the event could not be stored; retry later")]
    Store(#[from] StoreError),
}

impl IngestError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::UnknownTenant | Self::UnknownSource => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Malformed(_) | Self::UnsignedQuery => StatusCode::BAD_REQUEST,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Backlog | Self::MemoryBudget | Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable name of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::UnknownTenant | Self::UnknownSource => "unknown_hook",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::TooLarge { .. } => "payload_too_large",
            Self::Malformed(_) => "malformed_body",
            Self::UnsignedQuery => "unsigned_query",
            Self::MemoryBudget => "overloaded",
            Self::BodyTimeout => "request_timeout",
            Self::Unauthorized(_) => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Backlog => "backlog_full",
            Self::Store(_) => "store_unavailable",
        }
    }

    /// The outcome label of the ingest metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooLarge { .. } => "too_large",
            Self::Backlog | Self::MemoryBudget | Self::Store(_) => "unavailable",
            Self::NotFound | Self::UnknownTenant | Self::UnknownSource => "not_found",
            _ => "bad_request",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        // The store's own words stay in the log: a 503 body carries no internals.
        let retry_after = match &self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            _ => (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        };
        let mut response = json_error(status, self.code(), &self.to_string(), retry_after);
        if let Self::MethodNotAllowed = self {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        if matches!(self, Self::TooLarge { .. } | Self::BodyTimeout) {
            // The rest of the body was not read; the connection cannot be reused.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
