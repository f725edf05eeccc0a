//! Inbound authentication: every scheme a source lists must pass before its callback is
//! rate-limited, parsed or stored. Secret comparisons are constant-time. A failure's reason
//! is for the log only; the caller answers a bare 401.
//!
//! Besides pass or fail, authentication says what it vouched for: which parts of the
//! request a signature covers (`Covers`), so nothing unsigned rides along with signed
//! bytes, and the signed message's identity (`Replay`), so a captured request sent again
//! within its tolerance is recognised as the same event.

mod ip;
pub mod signatures;
pub mod telnyx;
pub mod vonage;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

pub use ip::{called_url, client_ip};
pub use signatures::{Algorithm, Encoding};

/// Why a callback was refused: logged, never sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

fn fail<T>(reason: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError(reason.into()))
}

/// The parts of a request a scheme authenticates, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Covers {
    /// The caller is known (token, password, address); the content is as trusted as the caller.
    Caller,
    /// A signature over the body (and a timestamp): the URL is outside the signed bytes.
    Body,
    /// A signature over the full URL and the body's fields (Twilio, Plivo).
    UrlAndBody,
}

/// A signed message's identity and how long a copy of it would still pass: a repeat before
/// `until` is the same message (a replay), not a new event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub id: String,
    /// Unix milliseconds.
    pub until: i64,
}

/// How long a Plivo V3 nonce is remembered: the scheme signs no timestamp, so a captured
/// request stays valid forever; a day bounds the memory and covers Plivo's own retries.
pub const NONCE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// What authentication looks at.
pub struct Inbound<'a> {
    pub method: &'a http::Method,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The client: the socket peer, or X-Forwarded-For's from a trusted proxy.
    pub client: IpAddr,
    /// Unix seconds.
    pub now: i64,
    /// The URL the provider called, without the query, for schemes that sign it: the
    /// source's `public_url`, else as a trusted proxy forwarded it, else as received.
    pub url: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub enum TokenAt {
    Header(HeaderName),
    Query(String),
}

/// One configured scheme, with its secrets resolved. Several secrets are accepted at once
/// while one is being rotated out.
#[derive(Debug, Clone)]
pub enum Scheme {
    None,
    Token {
        at: TokenAt,
        prefix: String,
        secrets: Vec<Arc<str>>,
    },
    Basic {
        username: String,
        secrets: Vec<Arc<str>>,
    },
    Hmac {
        algorithm: Algorithm,
        header: HeaderName,
        prefix: String,
        encoding: Encoding,
        /// The signed text is `{timestamp}.{body}` when a timestamp header is configured.
        timestamp: Option<(HeaderName, Duration)>,
        secrets: Vec<Arc<str>>,
    },
    StandardWebhooks {
        keys: Vec<Vec<u8>>,
    },
    Twilio {
        /// Overrides the URL the request was received at (see `Inbound::url`).
        public_url: Option<String>,
        secrets: Vec<Arc<str>>,
    },
    PlivoV3 {
        public_url: Option<String>,
        secrets: Vec<Arc<str>>,
    },
    VonageJwt {
        secrets: Vec<Arc<str>>,
        tolerance: Duration,
    },
    Telnyx {
        public_key: ed25519_dalek::VerifyingKey,
        tolerance: Duration,
    },
    IpAllow {
        cidrs: Vec<IpNet>,
    },
}

impl Scheme {
    pub fn covers(&self) -> Covers {
        match self {
            Scheme::None | Scheme::Token { .. } | Scheme::Basic { .. } | Scheme::IpAllow { .. } => Covers::Caller,
            Scheme::Hmac { .. }
            | Scheme::StandardWebhooks { .. }
            | Scheme::Telnyx { .. }
            | Scheme::VonageJwt { .. } => Covers::Body,
            Scheme::Twilio { .. } | Scheme::PlivoV3 { .. } => Covers::UrlAndBody,
        }
    }

    /// Passes or fails; on a pass, the signed message's identity where the scheme has one.
    pub fn verify(&self, request: &Inbound) -> Result<Option<Replay>, AuthError> {
        match self {
            Scheme::None => Ok(None),
            Scheme::Token { at, prefix, secrets } => {
                let presented = match at {
                    TokenAt::Header(name) => header(request.headers, name)?.to_string(),
                    TokenAt::Query(name) => {
                        query_value(request.query, name).ok_or_else(|| AuthError(format!("no {name} in the query")))?
                    }
                };
                let token =
                    presented.strip_prefix(prefix.as_str()).ok_or_else(|| AuthError("token prefix missing".into()))?;
                any_secret(secrets, |s| signatures::equal(token.as_bytes(), s.as_bytes())).map(|()| None)
            }
            Scheme::Basic { username, secrets } => {
                let value = header(request.headers, &http::header::AUTHORIZATION)?;
                let encoded = value.strip_prefix("Basic ").ok_or_else(|| AuthError("not Basic credentials".into()))?;
                let decoded = signatures::base64_decode(encoded.trim())
                    .ok_or_else(|| AuthError("credentials are not base64".into()))?;
                let expected_user = format!("{username}:");
                let password = decoded.strip_prefix(expected_user.as_bytes());
                let password = password.ok_or_else(|| AuthError("wrong username".into()))?;
                any_secret(secrets, |s| signatures::equal(password, s.as_bytes())).map(|()| None)
            }
            Scheme::Hmac { algorithm, header: name, prefix, encoding, timestamp, secrets } => {
                let presented = header(request.headers, name)?;
                let presented = presented
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(|| AuthError("signature prefix missing".into()))?;
                let presented = encoding
                    .decode(presented.trim())
                    .ok_or_else(|| AuthError("signature is not valid hex or base64".into()))?;
                let (signed_prefix, valid_until) = match timestamp {
                    None => (String::new(), None),
                    Some((ts_header, tolerance)) => {
                        let ts = header(request.headers, ts_header)?;
                        let at = fresh(ts, request.now, *tolerance)?;
                        (format!("{ts}."), Some(until(at, *tolerance)))
                    }
                };
                any_secret(secrets, |s| {
                    let mac = algorithm.mac(s.as_bytes(), &[signed_prefix.as_bytes(), request.body]);
                    signatures::equal(&mac, &presented)
                })?;
                // The MAC matched, so its bytes are canonical: they name this (timestamp, body).
                // Without a timestamp nothing tells a replay from a re-sent event: see the docs.
                Ok(valid_until.map(|until| Replay { id: format!("hmac:{}", hex::encode(&presented)), until }))
            }
            Scheme::StandardWebhooks { keys } => {
                signatures::verify_standard(request.headers, request.body, request.now, keys)
            }
            Scheme::Twilio { public_url, secrets } => {
                signatures::verify_twilio(request, signed_url(public_url, request)?, secrets).map(|()| None)
            }
            Scheme::PlivoV3 { public_url, secrets } => {
                signatures::verify_plivo_v3(request, signed_url(public_url, request)?, secrets)
            }
            Scheme::VonageJwt { secrets, tolerance } => vonage::verify(request, secrets, *tolerance),
            Scheme::Telnyx { public_key, tolerance } => telnyx::verify(request, public_key, *tolerance),
            Scheme::IpAllow { cidrs } => {
                if cidrs.iter().any(|net| net.contains(&request.client)) {
                    Ok(None)
                } else {
                    fail(format!("client {} is not in the allowed networks", request.client))
                }
            }
        }
    }
}

/// The URL a provider signed: the scheme's own `public_url`, else the request's.
fn signed_url<'a>(public_url: &'a Option<String>, request: &Inbound<'a>) -> Result<&'a str, AuthError> {
    public_url.as_deref().or(request.url).ok_or_else(|| AuthError("the URL the provider called is unknown".into()))
}

/// Whether a scheme signs the URL, so ingest must work out the URL the provider called.
pub fn signs_url(schemes: &[Scheme]) -> bool {
    schemes.iter().any(|s| s.covers() == Covers::UrlAndBody)
}

/// All of a source's schemes must pass. Returns the signed message's identity, if a scheme
/// gives one.
pub fn verify(schemes: &[Scheme], request: &Inbound) -> Result<Option<Replay>, AuthError> {
    let mut replay = None;
    for scheme in schemes {
        let id = scheme.verify(request)?;
        replay = replay.or(id);
    }
    Ok(replay)
}

/// Whether the query string may carry fields into the payload. Not when a scheme signs only
/// the body: the query would be unsigned input beside signed input, and anyone holding one
/// captured request could add fields to it. A scheme that signs the URL covers it.
pub fn query_is_trusted(schemes: &[Scheme]) -> bool {
    let strongest = schemes.iter().map(Scheme::covers).max().unwrap_or(Covers::Caller);
    strongest != Covers::Body
}

/// The query string without the credentials a token scheme read from it: they are checked
/// here and must not be stored, shown or forwarded. Other fields keep their exact bytes.
pub fn without_credentials<'q>(schemes: &[Scheme], query: Option<&'q str>) -> Option<std::borrow::Cow<'q, str>> {
    use std::borrow::Cow;
    let query = query?;
    let names: Vec<&str> = schemes
        .iter()
        .filter_map(|s| match s {
            Scheme::Token { at: TokenAt::Query(name), .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Some(Cow::Borrowed(query));
    }
    let is_credential = |piece: &str| {
        let name = piece.split('=').next().unwrap_or("");
        form_urlencoded::parse(name.as_bytes()).next().is_some_and(|(k, _)| names.contains(&&*k))
    };
    let kept: Vec<&str> = query.split('&').filter(|p| !p.is_empty() && !is_credential(p)).collect();
    (!kept.is_empty()).then(|| Cow::Owned(kept.join("&")))
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, AuthError> {
    headers
        .get(name)
        .ok_or_else(|| AuthError(format!("missing {name} header")))?
        .to_str()
        .map_err(|_| AuthError(format!("{name} header is not text")))
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn any_secret(secrets: &[Arc<str>], matches: impl Fn(&str) -> bool) -> Result<(), AuthError> {
    // Every secret is tried, so timing does not tell which one matched.
    let ok = secrets.iter().fold(false, |ok, s| matches(s) | ok);
    if ok { Ok(()) } else { fail("credentials do not match") }
}

/// A timestamp header (Unix seconds) within `tolerance` of now, either way; returns it.
fn fresh(timestamp: &str, now: i64, tolerance: Duration) -> Result<i64, AuthError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| AuthError("timestamp is not a number".into()))?;
    if (now - ts).unsigned_abs() > tolerance.as_secs() {
        return fail(format!("timestamp {ts} is outside the {}s tolerance", tolerance.as_secs()));
    }
    Ok(ts)
}

/// The last moment (Unix ms) a message signed at `timestamp` still passes the tolerance.
fn until(timestamp: i64, tolerance: Duration) -> i64 {
    timestamp.saturating_add(tolerance.as_secs() as i64).saturating_mul(1000)
}
