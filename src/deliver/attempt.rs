//! One HTTP attempt of one delivery. The request carries the event's original body and
//! content type, plus `webhook-id` (the event id: the same on every retry, so receivers can
//! drop duplicates), `webhook-timestamp` and `x-switchboard-attempt`. At most
//! `RESPONSE_PREFIX` bytes of the answer are read, whatever its size.

use std::time::{Duration, Instant};

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::BodyExt;

use super::client::{Client, SendError, user_agent};
use super::outcome::parse_retry_after;
use super::ssrf::{Guard, Refused};
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
    /// Why no answer came back, when none did.
    pub error: Option<AttemptError>,
}

impl Sent {
    /// No later attempt can succeed (the request cannot be built, or its address is refused).
    pub fn permanent(&self) -> bool {
        self.error.as_ref().is_some_and(AttemptError::is_permanent)
    }
}

/// Why a delivery's request could not be made from what is stored.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The normalized event stored with it no longer decodes: rendering it would send
    /// defaults in place of the call's fields.
    #[error("not sent: the stored normalized event does not decode: {0}")]
    CorruptEvent(String),
    /// The stored body no longer reads as fields, and a template reads them.
    #[error("not sent: the stored body does not parse: {0}")]
    CorruptBody(String),
    #[error("rendered url has a `.` or `..` path segment from a placeholder value")]
    DotSegment,
    #[error("rendered url is invalid: {0}")]
    InvalidUrl(#[from] url::ParseError),
    #[error("rendered url is invalid: {0}")]
    InvalidUri(#[from] http::uri::InvalidUri),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Why an attempt got no answer (or none that could be used).
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Refused(Refused),
    #[error("timeout")]
    Timeout,
    /// The connection could not be made; the innermost cause (e.g. "Connection refused").
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed after it was made.
    #[error("io: {0}")]
    Io(String),
    /// Over the destination's rate limit (synchronous responders, which cannot wait).
    #[error("rate_limited: over the destination's rate_limit")]
    RateLimited,
    #[error("response_too_large: over max_response_bytes ({0})")]
    ResponseTooLarge(usize),
}

impl AttemptError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Build(_) | Self::Refused(_))
    }

    /// The outcome label of the attempt metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Build(BuildError::Refused(_)) | Self::Refused(_) => "refused_private",
            Self::Build(_) => "not_sent",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect_error",
            Self::Io(_) | Self::ResponseTooLarge(_) => "error",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl From<SendError> for AttemptError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Refused(refused) => Self::Refused(refused),
            SendError::Connect(cause) => Self::Connect(cause),
            SendError::Io(cause) => Self::Io(cause),
        }
    }
}

/// The request a delivery sends: the destination's templates rendered from the stored
/// event, or the provider's original body when the destination has no body template.
pub fn build(
    guard: &Guard,
    destination: &Destination,
    delivery: &ClaimedDelivery,
    now_ms: i64,
) -> Result<Request<Bytes>, BuildError> {
    // Decoded only when a template reads it (decided at load): most destinations forward
    // the original body, and an attempt then costs no JSON parse at all.
    let event: CallEvent = match (destination.request.uses_event(), delivery.normalized.as_deref()) {
        (false, _) => CallEvent::default(),
        (true, Some(n)) => serde_json::from_str(n).map_err(|e| BuildError::CorruptEvent(e.to_string()))?,
        (true, None) => return Err(BuildError::CorruptEvent("it is missing".into())),
    };
    let payload = if destination.request.uses_payload() {
        let kind = match delivery.content_type.as_deref() {
            None => None,
            Some(ct) => {
                let value = HeaderValue::from_str(ct).map_err(|e| BuildError::CorruptBody(e.to_string()))?;
                payload::kind(Some(&value)).map_err(|e| BuildError::CorruptBody(e.to_string()))?
            }
        };
        payload::fields(kind, &delivery.body, delivery.query.as_deref())
            .map_err(|e| BuildError::CorruptBody(e.to_string()))?
    } else {
        Payload::default()
    };
    let rendered = destination.request.render(&Data { event: &event, payload: &payload });
    let (url, uri) = match destination.request.static_url() {
        Some((url, uri)) => (Cow::Borrowed(url), uri.clone()),
        None if crate::template::has_dot_segment(&rendered.url) => return Err(BuildError::DotSegment),
        None => {
            let url = url::Url::parse(&rendered.url)?;
            let uri = Uri::try_from(url.as_str())?;
            (Cow::Owned(url), uri)
        }
    };
    // The resolver guards names; an address written in the URL never reaches it.
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal.filter(|ip| !guard.permits(*ip)) {
        return Err(Refused { host: ip.to_string(), addr: ip }.into());
    }
    let mut id = uuid::Uuid::encode_buffer();
    let id = delivery.event_id.hyphenated().encode_lower(&mut id);
    let (content_type, body) = match (&destination.method, rendered.body) {
        (&Method::GET, _) => (None, Bytes::new()),
        (_, Some((content_type, body))) => (Some(content_type), Bytes::from(body)),
        (_, None) => original_body(delivery),
    };
    let signature = (destination.method != Method::GET && !destination.signing_keys.is_empty())
        .then(|| sign_standard(&destination.signing_keys, id, now_ms / 1000, &body));
    let mut request = Request::new(body);
    *request.method_mut() = destination.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.reserve(rendered.headers.len() + 7);
    for (name, value) in rendered.headers {
        headers.append(name, value);
    }
    let id = HeaderValue::from_str(id).expect("a hyphenated uuid is a header value");
    headers.append(HeaderName::from_static("webhook-id"), id);
    headers.append(HeaderName::from_static("webhook-timestamp"), HeaderValue::from(now_ms / 1000));
    headers.append(HeaderName::from_static("x-switchboard-attempt"), HeaderValue::from(delivery.attempt));
    if let Some(ct) = content_type {
        headers.append(header::CONTENT_TYPE, ct);
    }
    if let Some(signature) = signature {
        let signature = HeaderValue::try_from(signature).expect("base64 signatures are header values");
        // Replaces one the destination's headers set: a receiver reads one signature.
        headers.insert(HeaderName::from_static("webhook-signature"), signature);
    }
    // What any HTTP client sends unasked, unless the destination's headers say otherwise.
    headers.entry(header::USER_AGENT).or_insert_with(user_agent);
    headers.entry(header::ACCEPT).or_insert(HeaderValue::from_static("*/*"));
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

pub async fn send(client: &Client, guard: &Guard, destination: &Destination, delivery: &ClaimedDelivery) -> Sent {
    let started_at = now_ms();
    let start = Instant::now();
    let failed = |error: AttemptError| Sent {
        record: AttemptRecord {
            started_at,
            latency: start.elapsed(),
            status: None,
            error: Some(error.to_string()),
            response_prefix: Vec::new(),
        },
        retry_after: None,
        error: Some(error),
    };
    let request = match build(guard, destination, delivery, started_at) {
        Ok(request) => request,
        Err(e) => return failed(e.into()),
    };
    // The timeout covers the answer and the part of its body that is read.
    let deadline = tokio::time::Instant::now() + destination.timeout;
    let response = match tokio::time::timeout_at(deadline, client.send(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return failed(e.into()),
        Err(_) => return failed(AttemptError::Timeout),
    };
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    // Redirects are never followed; the record says where this one pointed.
    let redirect = response.status().is_redirection().then(|| {
        let location = response.headers().get(header::LOCATION).map(|v| String::from_utf8_lossy(v.as_bytes()));
        let location: String = location.as_deref().unwrap_or("(no Location)").chars().take(512).collect();
        format!("redirect not followed: {location}")
    });
    let mut body = response.into_body();
    let mut prefix = Vec::new();
    // The status is the answer; a body that then fails or stalls does not change it. A
    // body read to its end gives the connection back to the pool.
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Ok(chunk) = frame.into_data() {
            let take = chunk.len().min(RESPONSE_PREFIX - prefix.len());
            prefix.extend_from_slice(&chunk[..take]);
            if prefix.len() == RESPONSE_PREFIX {
                break;
            }
        }
    }
    Sent {
        record: AttemptRecord {
            started_at,
            latency: start.elapsed(),
            status: Some(status),
            error: redirect,
            response_prefix: prefix,
        },
        retry_after,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::deliver::testing::destination;

    fn delivery(normalized: Option<&str>, content_type: &str, body: &'static [u8]) -> ClaimedDelivery {
        ClaimedDelivery {
            id: 1,
            lease: 1,
            event_id: uuid::Uuid::now_v7(),
            attempt: 1,
            created_at: 0,
            content_type: Some(content_type.into()),
            query: None,
            body: Bytes::from_static(body),
            normalized: normalized.map(Arc::from),
        }
    }

    /// Stored data that no longer decodes is never rendered as defaults: the attempt is not
    /// made, and the error is permanent (the delivery ends dead with it).
    /// A URL without placeholders is parsed once, at load, and requests go to it as written;
    /// one with placeholders is parsed per request, its values escaped.
    #[test]
    fn a_static_url_is_parsed_once_and_sent_as_written() {
        let guard = Guard { allow_private: true, allowlist: Vec::new() };
        let fixed = destination("http://127.0.0.1:9/hooks/crm?tenant=acme", None, 3);
        assert!(fixed.request.static_url().is_some());
        let templated = destination("http://127.0.0.1:9/hooks/<<status>>", None, 3);
        assert!(templated.request.static_url().is_none());
        let event =
            serde_json::to_string(&CallEvent { status: crate::normalize::Status::Busy, ..Default::default() }).unwrap();
        let d = delivery(Some(&event), "application/json", b"{}");
        let url = |dest| build(&guard, dest, &d, 0).unwrap().uri().to_string();
        assert_eq!(url(&fixed), "http://127.0.0.1:9/hooks/crm?tenant=acme");
        assert_eq!(url(&templated), "http://127.0.0.1:9/hooks/busy");
    }

    #[test]
    fn corrupt_stored_data_is_not_sent() {
        let guard = Guard { allow_private: true, allowlist: Vec::new() };
        let uses_event = destination("http://127.0.0.1/<<status>>", None, 3);
        let uses_payload = destination("http://127.0.0.1/", Some(r#"{"from": "<<payload.from>>"}"#), 3);
        let event = serde_json::to_string(&CallEvent::default()).unwrap();
        let good = delivery(Some(&event), "application/json", br#"{"from":"91"}"#);
        assert!(build(&guard, &uses_event, &good, 0).is_ok());
        assert!(build(&guard, &uses_payload, &good, 0).is_ok());

        let broken_event = delivery(Some("{\"status\": "), "application/json", b"{}");
        let e = build(&guard, &uses_event, &broken_event, 0).unwrap_err();
        assert!(matches!(e, BuildError::CorruptEvent(_)), "{e}");
        let missing_event = delivery(None, "application/json", b"{}");
        assert!(matches!(build(&guard, &uses_event, &missing_event, 0), Err(BuildError::CorruptEvent(_))));

        let broken_body = delivery(Some(&event), "application/json", b"{\"from\": ");
        let e = build(&guard, &uses_payload, &broken_body, 0).unwrap_err();
        assert!(matches!(e, BuildError::CorruptBody(_)), "{e}");
        assert!(AttemptError::from(e).is_permanent());
        // A destination that forwards the body as it is needs neither to parse it nor to
        // decode the event.
        let forwards = destination("http://127.0.0.1/", None, 3);
        assert!(build(&guard, &forwards, &broken_body, 0).is_ok());
        assert!(build(&guard, &forwards, &broken_event, 0).is_ok());
    }
}
