//! The operator-facing listener: health now; the admin API joins it later.
//! `/healthz` answers while the process runs; `/readyz` only while the store answers too.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::server::{Body, json_error, json_response};
use crate::store::Store;

pub async fn handle(store: Arc<dyn Store>, request: Request<Incoming>) -> Response<Body> {
    if request.method() != Method::GET {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
            None,
        );
    }
    match request.uri().path() {
        "/healthz" => json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        "/readyz" => match store.ping().await {
            Ok(()) => json_response(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
            Err(e) => {
                tracing::warn!(error = %e, "not ready: store unreachable");
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "the store is not reachable",
                    Some(1),
                )
            }
        },
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None),
    }
}
