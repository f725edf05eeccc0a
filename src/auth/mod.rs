//! Inbound authentication: every scheme a source lists must pass before its callback is
//! rate-limited, parsed or stored. Secret comparisons are constant-time. A failure's reason
//! is for the log only; the caller answers a bare 401.

mod ip;
pub mod signatures;
pub mod telnyx;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

pub use ip::client_ip;
pub use signatures::{Algorithm, Encoding};

/// Why a callback was refused: logged, never sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

fn fail<T>(reason: impl Into<String>) -> Result<T, AuthError> {
    Err(AuthError(reason.into()))
}

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
        public_url: String,
        secrets: Vec<Arc<str>>,
    },
    PlivoV3 {
        public_url: String,
        secrets: Vec<Arc<str>>,
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
    pub fn verify(&self, request: &Inbound) -> Result<(), AuthError> {
        match self {
            Scheme::None => Ok(()),
            Scheme::Token { at, prefix, secrets } => {
                let presented = match at {
                    TokenAt::Header(name) => header(request.headers, name)?.to_string(),
                    TokenAt::Query(name) => {
                        query_value(request.query, name).ok_or_else(|| AuthError(format!("no {name} in the query")))?
                    }
                };
                let token =
                    presented.strip_prefix(prefix.as_str()).ok_or_else(|| AuthError("token prefix missing".into()))?;
                any_secret(secrets, |s| signatures::equal(token.as_bytes(), s.as_bytes()))
            }
            Scheme::Basic { username, secrets } => {
                let value = header(request.headers, &http::header::AUTHORIZATION)?;
                let encoded = value.strip_prefix("Basic ").ok_or_else(|| AuthError("not Basic credentials".into()))?;
                let decoded = signatures::base64_decode(encoded.trim())
                    .ok_or_else(|| AuthError("credentials are not base64".into()))?;
                let expected_user = format!("{username}:");
                let password = decoded.strip_prefix(expected_user.as_bytes());
                let password = password.ok_or_else(|| AuthError("wrong username".into()))?;
                any_secret(secrets, |s| signatures::equal(password, s.as_bytes()))
            }
            Scheme::Hmac { algorithm, header: name, prefix, encoding, timestamp, secrets } => {
                let presented = header(request.headers, name)?;
                let presented = presented
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(|| AuthError("signature prefix missing".into()))?;
                let presented = encoding
                    .decode(presented.trim())
                    .ok_or_else(|| AuthError("signature is not valid hex or base64".into()))?;
                let signed_prefix = match timestamp {
                    None => String::new(),
                    Some((ts_header, tolerance)) => {
                        let ts = header(request.headers, ts_header)?;
                        fresh(ts, request.now, *tolerance)?;
                        format!("{ts}.")
                    }
                };
                any_secret(secrets, |s| {
                    let mac = algorithm.mac(s.as_bytes(), &[signed_prefix.as_bytes(), request.body]);
                    signatures::equal(&mac, &presented)
                })
            }
            Scheme::StandardWebhooks { keys } => {
                signatures::verify_standard(request.headers, request.body, request.now, keys)
            }
            Scheme::Twilio { public_url, secrets } => signatures::verify_twilio(request, public_url, secrets),
            Scheme::PlivoV3 { public_url, secrets } => signatures::verify_plivo_v3(request, public_url, secrets),
            Scheme::Telnyx { public_key, tolerance } => telnyx::verify(request, public_key, *tolerance),
            Scheme::IpAllow { cidrs } => {
                if cidrs.iter().any(|net| net.contains(&request.client)) {
                    Ok(())
                } else {
                    fail(format!("client {} is not in the allowed networks", request.client))
                }
            }
        }
    }
}

/// All of a source's schemes must pass.
pub fn verify(schemes: &[Scheme], request: &Inbound) -> Result<(), AuthError> {
    schemes.iter().try_for_each(|s| s.verify(request))
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

/// A timestamp header (Unix seconds) within `tolerance` of now, either way.
fn fresh(timestamp: &str, now: i64, tolerance: Duration) -> Result<(), AuthError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| AuthError("timestamp is not a number".into()))?;
    if (now - ts).unsigned_abs() > tolerance.as_secs() {
        return fail(format!("timestamp {ts} is outside the {}s tolerance", tolerance.as_secs()));
    }
    Ok(())
}
