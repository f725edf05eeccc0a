//! Call control: a callback that is a question (Wavecell's handleURL wants a `commands`
//! array, Twilio wants TwiML, Exotel branches on 200 versus 302) is forwarded to the
//! tenant's responder at once, and the responder's answer becomes the provider's answer.
//! The exchange bypasses the queue but not the destination's rate limit, SSRF guard,
//! signing or timeout; its answer is read up to the destination's `max_response_bytes`.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use governor::DefaultDirectRateLimiter;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;

use super::attempt::{self, AttemptError, RESPONSE_PREFIX, Sent};
use super::client::{self, Client};
use super::ssrf::Guard;
use crate::config::{Destination, Responder};
use crate::store::{AttemptRecord, ClaimedDelivery, now_ms};

/// What the responder said, to hand to the provider.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Headers that describe one connection, not the answer: never relayed.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Calls the responder; `None` when the provider must get the fallback instead. The rest
/// is the exchange as an attempt, for the event's history and metrics.
pub async fn exchange(
    client: &Client,
    guard: &Guard,
    destination: &Destination,
    delivery: &ClaimedDelivery,
    responder: &Responder,
    pacer: Option<&DefaultDirectRateLimiter>,
) -> (Option<Answer>, Sent) {
    let timeout = responder.timeout;
    let started_at = now_ms();
    let start = Instant::now();
    let failed = |error: AttemptError, status: Option<u16>| Sent {
        record: AttemptRecord {
            started_at,
            latency: start.elapsed(),
            status,
            error: Some(error.to_string()),
            response_prefix: Vec::new(),
        },
        retry_after: None,
        error: Some(error),
    };
    if pacer.is_some_and(|p| p.check().is_err()) {
        return (None, failed(AttemptError::RateLimited, None));
    }
    let request = match attempt::build(guard, destination, delivery, started_at) {
        Ok(request) => request,
        Err(e) => return (None, failed(e.into(), None)),
    };
    let limit = destination.max_response_bytes;
    let exchange = async {
        let response = client.send(request).await.map_err(|e| (e.into(), None))?;
        let status = response.status();
        let (parts, mut incoming) = response.into_parts();
        let mut body = BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| (AttemptError::Io(client::innermost(&e)), Some(status)))?;
            let Ok(chunk) = frame.into_data() else { continue };
            if body.len() + chunk.len() > limit {
                return Err((AttemptError::ResponseTooLarge(limit), Some(status)));
            }
            body.extend_from_slice(&chunk);
        }
        let mut headers = parts.headers;
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        Ok(Answer { status, headers, body: body.freeze() })
    };
    match tokio::time::timeout(timeout.min(destination.timeout), exchange).await {
        Err(_) => (None, failed(AttemptError::Timeout, None)),
        Ok(Err((error, status))) => (None, failed(error, status.map(|s| s.as_u16()))),
        Ok(Ok(answer)) => {
            let status = answer.status.as_u16();
            let prefix = answer.body[..answer.body.len().min(RESPONSE_PREFIX)].to_vec();
            let record = AttemptRecord {
                started_at,
                latency: start.elapsed(),
                status: Some(status),
                error: None,
                response_prefix: prefix,
            };
            let relayed = destination.is_success(status)
                || destination.pass_through_codes.contains(&status)
                || responder.pass_through.contains(&status);
            (relayed.then_some(answer), Sent { record, retry_after: None, error: None })
        }
    }
}
