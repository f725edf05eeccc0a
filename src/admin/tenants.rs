//! The control-plane endpoints: tenants, their sources, destinations, secrets and keys, and
//! the audit trail. The work is in `crate::control`; this maps HTTP onto it.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::api::{Params, rfc3339};
use super::{ApiError, Principal};
use crate::Gateway;
use crate::config::Origin;
use crate::control::{Changed, Edit, document, keys};
use crate::server::{Body, json_response};
use crate::store::catalog::{AuditEntry, KeyRecord};
use crate::store::now_ms;

/// A tenant document's size limit.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

pub async fn handle(
    gateway: &Gateway,
    principal: &Principal,
    request: Request<Incoming>,
    segments: &[&str],
    params: &Params,
) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    if let ["tenants", tenant, ..] = segments
        && !principal.sees(tenant)
    {
        return Err(ApiError::NotFound(format!("no tenant {tenant}")));
    }
    let if_match = if_match(&request)?;
    let actor = principal.actor();
    match (&method, segments) {
        (&Method::GET, ["audit"]) => {
            principal.admin_only()?;
            audit(gateway, params).await
        }
        (&Method::GET, ["tenants"]) => {
            principal.admin_only()?;
            list(gateway, params)
        }
        (&Method::GET, ["tenants", tenant]) => get(gateway, tenant).await,
        (&Method::PUT, ["tenants", tenant]) => {
            principal.admin_only()?;
            let body = read_json(request).await?;
            let changed = gateway.edit_tenant(tenant, Edit::Tenant(body), if_match, &actor).await?;
            Ok(written(changed, json!({ "id": tenant, "version": changed.version })))
        }
        (&Method::DELETE, ["tenants", tenant]) => {
            principal.admin_only()?;
            gateway.edit_tenant(tenant, Edit::DeleteTenant, if_match, &actor).await?;
            Ok(no_content())
        }
        (&Method::PUT, ["tenants", tenant, list @ ("destinations" | "sources"), id]) => {
            principal.may_write()?;
            if *list == "sources" {
                principal.admin_only()?;
            }
            let body = read_json(request).await?;
            let edit = element_edit(list, id, Some(body));
            let changed = gateway.edit_tenant(tenant, edit, if_match, &actor).await?;
            Ok(written(changed, json!({ "tenant": tenant, "id": id, "version": changed.version })))
        }
        (&Method::DELETE, ["tenants", tenant, list @ ("destinations" | "sources"), id]) => {
            principal.may_write()?;
            if *list == "sources" {
                principal.admin_only()?;
            }
            gateway.edit_tenant(tenant, element_edit(list, id, None), if_match, &actor).await?;
            Ok(no_content())
        }
        (&Method::POST, ["tenants", tenant, "render"]) => {
            let body = read_json(request).await?;
            let render = serde_json::from_value(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid render request: {e}")))?;
            let preview = gateway.playground(tenant, render).await?;
            Ok(json_response(StatusCode::OK, &serde_json::to_value(preview).unwrap_or_default()))
        }
        (&Method::GET, ["tenants", tenant, "secrets"]) => {
            let stored = live(gateway, tenant).await?;
            let names: Vec<&str> = stored.secrets.iter().map(|(n, _)| n.as_str()).collect();
            Ok(json_response(StatusCode::OK, &json!({ "secrets": names })))
        }
        (&Method::PUT, ["tenants", tenant, "secrets", name]) => {
            principal.may_write()?;
            let body = read_json(request).await?;
            let Some(value) = body.get("value").and_then(Value::as_str) else {
                return Err(ApiError::BadRequest("the body must be {\"value\": \"…\"}".into()));
            };
            let edit = Edit::Secret(name.to_string(), Some(value.to_string()));
            let changed = gateway.edit_tenant(tenant, edit, if_match, &actor).await?;
            Ok(written(changed, json!({ "tenant": tenant, "name": name, "version": changed.version })))
        }
        (&Method::DELETE, ["tenants", tenant, "secrets", name]) => {
            principal.may_write()?;
            gateway.edit_tenant(tenant, Edit::Secret(name.to_string(), None), if_match, &actor).await?;
            Ok(no_content())
        }
        (&Method::POST, ["tenants", tenant, "portal-tokens"]) => {
            principal.admin_only()?;
            exists(gateway, tenant)?;
            let body = read_json(request).await?;
            portal_token(gateway, tenant, &body)
        }
        (&Method::POST, ["tenants", tenant, "keys"]) => {
            principal.admin_only()?;
            create_key(gateway, tenant, &actor).await
        }
        (&Method::GET, ["tenants", tenant, "keys"]) => {
            principal.admin_only()?;
            exists(gateway, tenant)?;
            let keys = gateway.store.keys(tenant).await?;
            let keys: Vec<Value> =
                keys.iter().map(|k| json!({ "key_id": k.key_id, "created_at": rfc3339(k.created_at) })).collect();
            Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
        }
        (&Method::DELETE, ["tenants", tenant, "keys", key_id]) => {
            principal.admin_only()?;
            let audit = AuditEntry {
                actor: actor.name(),
                kind: "key".into(),
                target: key_id.to_string(),
                action: "delete".into(),
            };
            if gateway.store.key_delete(tenant, key_id, audit).await? {
                Ok(no_content())
            } else {
                Err(ApiError::NotFound(format!("no key {key_id} in tenant {tenant}")))
            }
        }
        (
            _,
            ["audit"]
            | ["tenants"]
            | ["tenants", _]
            | ["tenants", _, "destinations" | "sources" | "secrets", _]
            | ["tenants", _, "secrets" | "keys" | "render" | "portal-tokens"]
            | ["tenants", _, "keys", _],
        ) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound("no such endpoint".into())),
    }
}

fn element_edit(list: &str, id: &str, body: Option<Value>) -> Edit {
    if list == "sources" { Edit::Source(id.to_string(), body) } else { Edit::Destination(id.to_string(), body) }
}

/// `If-Match: "3"` (the `ETag` this API gives) or `3`. A weak tag never matches (If-Match
/// compares strongly): it stands for version 0, which no tenant has.
fn if_match(request: &Request<Incoming>) -> Result<Option<i64>, ApiError> {
    let Some(value) = request.headers().get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim();
    if text.starts_with("W/") {
        return Ok(Some(0));
    }
    text.trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::BadRequest("If-Match must be a tenant version, as its ETag gives it".into()))
}

async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    let body = Limited::new(request.into_body(), MAX_DOCUMENT_BYTES).collect().await.map_err(|_| {
        ApiError::BadRequest(format!("the body must be a JSON document of at most {} KiB", MAX_DOCUMENT_BYTES / 1024))
    })?;
    serde_json::from_slice(&body.to_bytes()).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))
}

fn with_etag(mut response: Response<Body>, version: i64) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

fn written(changed: Changed, body: Value) -> Response<Body> {
    let status = if changed.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut body = body;
    if changed.cancelled > 0 {
        body["cancelled_deliveries"] = json!(changed.cancelled);
    }
    with_etag(json_response(status, &body), changed.version)
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(crate::server::full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn exists(gateway: &Gateway, tenant: &str) -> Result<(), ApiError> {
    if gateway.config().tenants.contains_key(tenant) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no tenant {tenant}")))
    }
}

async fn live(gateway: &Gateway, tenant: &str) -> Result<crate::store::catalog::StoredTenant, ApiError> {
    gateway
        .store
        .catalog_tenant(tenant)
        .await?
        .filter(|s| s.document.is_some())
        .ok_or_else(|| ApiError::NotFound(format!("no tenant {tenant} managed through the API")))
}

fn managed_by(origin: &Origin) -> &'static str {
    match origin {
        Origin::File(_) => "file",
        Origin::Api { .. } => "api",
    }
}

fn list(gateway: &Gateway, params: &Params) -> Result<Response<Body>, ApiError> {
    let limit = params.limit()?;
    let after = params.get("cursor");
    let config = gateway.config();
    let mut page: Vec<(&String, &std::sync::Arc<crate::config::Tenant>)> =
        config.tenants.iter().filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a)).collect();
    // Only the page is sorted: a listing of ten thousand tenants does not sort them all.
    if page.len() > limit {
        page.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
        page.truncate(limit);
    }
    page.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let next = (page.len() == limit).then(|| page.last().map(|(id, _)| id.to_string())).flatten();
    let items: Vec<Value> = page
        .iter()
        .map(|(id, t)| {
            json!({
                "id": id,
                "version": match t.origin { Origin::Api { version } => Some(version), Origin::File(_) => None },
                "managed_by": managed_by(&t.origin),
                "sources": t.sources.len(),
                "destinations": t.destinations.len(),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "tenants": items, "next_cursor": next })))
}

async fn get(gateway: &Gateway, tenant: &str) -> Result<Response<Body>, ApiError> {
    let config = gateway.config();
    if let Some(Origin::File(path)) = config.tenants.get(tenant).map(|t| &t.origin) {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ApiError::Conflict(format!("tenant file {} cannot be read now: {e}", path.display())))?;
        let mut doc = document::from_toml(&text)
            .map_err(|e| ApiError::Conflict(format!("tenant file {} no longer parses: {e}", path.display())))?;
        // Names only: a file's secret references say where values live.
        if let Some(secrets) = doc.as_object_mut().and_then(|d| d.remove("secrets")) {
            let names: Vec<&String> = secrets.as_object().map(|m| m.keys().collect()).unwrap_or_default();
            doc["secrets"] = json!(names);
        }
        doc["id"] = json!(tenant);
        doc["version"] = Value::Null;
        doc["managed_by"] = json!("file");
        return Ok(json_response(StatusCode::OK, &doc));
    }
    let stored = live(gateway, tenant).await.map_err(|_| ApiError::NotFound(format!("no tenant {tenant}")))?;
    let mut doc = json!({ "id": tenant, "version": stored.version, "managed_by": "api" });
    if let Some(Value::Object(fields)) = stored.document.as_deref().and_then(|d| serde_json::from_str(d).ok()) {
        doc.as_object_mut().expect("an object").extend(fields);
    }
    doc["secrets"] = json!(stored.secrets.iter().map(|(n, _)| n).collect::<Vec<_>>());
    doc["updated_at"] = json!(rfc3339(stored.updated_at));
    Ok(with_etag(json_response(StatusCode::OK, &doc), stored.version))
}

async fn create_key(
    gateway: &Gateway,
    tenant: &str,
    actor: &crate::control::Actor,
) -> Result<Response<Body>, ApiError> {
    exists(gateway, tenant)?;
    let minted = keys::mint().ok_or_else(|| ApiError::Conflict("no randomness available for a key; retry".into()))?;
    let record = KeyRecord {
        key_id: minted.key_id.clone(),
        tenant: tenant.to_string(),
        hash: minted.hash,
        created_at: now_ms(),
    };
    let audit =
        AuditEntry { actor: actor.name(), kind: "key".into(), target: minted.key_id.clone(), action: "create".into() };
    gateway.store.key_create(record, audit).await?;
    Ok(json_response(StatusCode::CREATED, &json!({ "key_id": minted.key_id, "token": minted.token, "tenant": tenant })))
}

/// `{"expires_in": "10m"}` (default 10 minutes, at most an hour).
fn portal_token(gateway: &Gateway, tenant: &str, body: &Value) -> Result<Response<Body>, ApiError> {
    let config = gateway.config();
    let key = config.secrets_key.as_ref().ok_or(crate::control::ControlError::NoSecretsKey)?;
    let lifetime = match body.get("expires_in").and_then(Value::as_str) {
        None => std::time::Duration::from_secs(600),
        Some(text) => humantime::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero() && *d <= crate::control::portal::MAX_LIFETIME)
            .ok_or_else(|| ApiError::BadRequest("expires_in must be a duration of at most 1h, e.g. \"10m\"".into()))?,
    };
    let expires_at = now_ms() / 1000 + lifetime.as_secs() as i64;
    let token = crate::control::portal::mint(key, tenant, expires_at);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "token": token, "expires_at": rfc3339(expires_at * 1000), "url": format!("/portal?token={token}") }),
    ))
}

async fn audit(gateway: &Gateway, params: &Params) -> Result<Response<Body>, ApiError> {
    let limit = params.limit()?;
    let before = params.cursor::<i64>()?;
    let records = gateway.store.audit(params.get("tenant"), before, limit).await?;
    let next = (records.len() == limit).then(|| records.last().map(|r| r.seq.to_string())).flatten();
    let items: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq, "at": rfc3339(r.at), "actor": r.entry.actor, "tenant": r.tenant,
                "kind": r.entry.kind, "target": r.entry.target, "action": r.entry.action,
                "before_version": r.before_version, "after_version": r.after_version,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "audit": items, "next_cursor": next })))
}
