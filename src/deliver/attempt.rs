//! One HTTP attempt of one delivery. The request carries the event's original body and
//! content type, plus `webhook-id` (the event id: the same on every retry, so receivers can
//! drop duplicates), `webhook-timestamp` and `x-switchboard-attempt`. At most
//! `RESPONSE_PREFIX` bytes of the answer are read, whatever its size.

use std::time::{Duration, Instant};

use http::{HeaderValue, Method, header};

use bytes::Bytes;

use std::net::IpAddr;
use std::sync::Arc;

use super::outcome::parse_retry_after;
use super::ssrf::{Guard, Refused, Resolver};
use crate::auth::signatures::sign_standard;
use crate::config::Destination;
use crate::ingest::payload;
use crate::normalize::{CallEvent, Payload};
use crate::store::{AttemptRecord, ClaimedDelivery, now_ms};
use crate::template::Data;

pub const RESPONSE_PREFIX: usize = 1024;

pub struct Sent {
    pub record: AttemptRecord,
    pub retry_after: Option<Duration>,
    /// No later attempt can succeed (the request cannot even be built).
    pub permanent: bool,
}

/// The HTTP client every delivery shares: pooled keep-alive connections, rustls, and no
/// redirects followed (a 3xx is a failed attempt, not an invitation to go elsewhere).
/// Proxies from the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) are ignored: a
/// proxy resolves the destination's name itself, past the SSRF guard.
pub fn client(guard: Arc<Guard>) -> reqwest::Result<reqwest::Client> {
    // Several callers may race to install it; the first one wins and that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .dns_resolver(Arc::new(Resolver(guard)))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Switchboard/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()
}

/// The request a delivery sends: the destination's templates rendered from the stored
/// event, or the provider's original body when the destination has no body template.
pub fn build(
    client: &reqwest::Client,
    guard: &Guard,
    destination: &Destination,
    delivery: &ClaimedDelivery,
    now_ms: i64,
) -> Result<reqwest::RequestBuilder, String> {
    let event: CallEvent =
        delivery.normalized.as_deref().and_then(|n| serde_json::from_str(n).ok()).unwrap_or_default();
    let payload = if destination.request.uses_payload() {
        let kind = delivery
            .content_type
            .as_deref()
            .and_then(|ct| HeaderValue::from_str(ct).ok())
            .and_then(|ct| payload::kind(Some(&ct)).ok().flatten());
        payload::fields(kind, &delivery.body, delivery.query.as_deref()).unwrap_or_default()
    } else {
        Payload::default()
    };
    let rendered = destination.request.render(&Data { event: &event, payload: &payload });
    if crate::template::has_dot_segment(&rendered.url) {
        return Err("rendered url has a `.` or `..` path segment from a placeholder value".into());
    }
    let url = reqwest::Url::parse(&rendered.url).map_err(|e| format!("rendered url is invalid: {e}"))?;
    // The resolver guards names; an address written in the URL never reaches it.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal.filter(|ip| !guard.permits(*ip)) {
        return Err(Refused { host: ip.to_string(), addr: ip }.to_string());
    }
    let mut id = uuid::Uuid::encode_buffer();
    let id = delivery.event_id.hyphenated().encode_lower(&mut id);
    let mut request = client
        .request(destination.method.clone(), url)
        .headers(rendered.headers.into_iter().collect())
        .header("webhook-id", &*id)
        .header("webhook-timestamp", now_ms / 1000)
        .header("x-switchboard-attempt", delivery.attempt);
    if destination.method != Method::GET {
        let (content_type, body) = match rendered.body {
            Some((content_type, body)) => (Some(content_type), Bytes::from(body)),
            None => original_body(delivery),
        };
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        if !destination.signing_keys.is_empty() {
            let signature = sign_standard(&destination.signing_keys, id, now_ms / 1000, &body);
            request = request.header("webhook-signature", signature);
        }
        request = request.body(body);
    }
    Ok(request)
}

/// The provider's body as received. A callback that came as a GET carries its fields in the
/// query string: they are forwarded as a form body.
fn original_body(delivery: &ClaimedDelivery) -> (Option<HeaderValue>, Bytes) {
    match (&delivery.content_type, &delivery.query) {
        (Some(ct), _) => (HeaderValue::from_str(ct).ok(), delivery.body.clone()),
        (None, Some(q)) if delivery.body.is_empty() => {
            (Some(HeaderValue::from_static("application/x-www-form-urlencoded")), Bytes::copy_from_slice(q.as_bytes()))
        }
        (None, _) => (None, delivery.body.clone()),
    }
}

pub async fn send(
    client: &reqwest::Client,
    guard: &Guard,
    destination: &Destination,
    delivery: &ClaimedDelivery,
) -> Sent {
    let started_at = now_ms();
    let start = Instant::now();
    let request = match build(client, guard, destination, delivery, started_at) {
        Ok(request) => request,
        Err(reason) => {
            return Sent {
                record: AttemptRecord {
                    started_at,
                    latency: start.elapsed(),
                    status: None,
                    error: Some(reason),
                    response_prefix: Vec::new(),
                },
                retry_after: None,
                permanent: true,
            };
        }
    };
    let request = request.timeout(destination.timeout);

    let (status, error, retry_after, response_prefix) = match request.send().await {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after =
                response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            let mut prefix = Vec::new();
            // The status is the answer; a body that then fails or stalls does not change it.
            while prefix.len() < RESPONSE_PREFIX {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let take = chunk.len().min(RESPONSE_PREFIX - prefix.len());
                        prefix.extend_from_slice(&chunk[..take]);
                    }
                    _ => break,
                }
            }
            (Some(status), None, retry_after, prefix)
        }
        Err(e) => {
            // A refused address will be refused on every attempt: no point retrying.
            let refused = refusal(&e);
            let error = refused.clone().unwrap_or_else(|| error_kind(&e));
            return Sent {
                record: AttemptRecord {
                    started_at,
                    latency: start.elapsed(),
                    status: None,
                    error: Some(error),
                    response_prefix: Vec::new(),
                },
                retry_after: None,
                permanent: refused.is_some(),
            };
        }
    };
    Sent {
        record: AttemptRecord { started_at, latency: start.elapsed(), status, error, response_prefix },
        retry_after,
        permanent: false,
    }
}

/// The attempt-record wording of a client error: `refused_private: …`, `timeout`,
/// `connect: …` or `io: …`.
pub fn describe_error(e: &reqwest::Error) -> String {
    refusal(e).unwrap_or_else(|| error_kind(e))
}

fn refusal(e: &reqwest::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(refused) = c.downcast_ref::<Refused>() {
            return Some(refused.to_string());
        }
        cause = c.source();
    }
    None
}

/// `timeout`, `connect: …` or `io: …`, with the innermost cause (e.g. "Connection refused").
fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".to_string();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let kind = if e.is_connect() { "connect" } else { "io" };
    format!("{kind}: {cause}")
}
