//! The HTTP client every delivery shares: hyper's pooled client over rustls, with the SSRF
//! guard as its resolver. Keep-alive connections are pooled per host with no cap on idle
//! ones; redirects are never followed (a 3xx is a failed attempt, not an invitation to go
//! elsewhere) and proxies from the environment are not used (a proxy would resolve the
//! destination's name itself, past the guard).
//!
//! hyper's client rather than reqwest: per request, reqwest's layers (its own URL type
//! converted to a URI, default headers merged, a timeout future, redirect and proxy
//! bookkeeping) cost about 8 µs of CPU on top of hyper's 12 µs (BENCHMARKS.md), and a
//! delivery gateway makes several requests per event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ssrf::{Guard, Refused, Resolver};

/// Sent as `User-Agent` when a destination's headers name none.
pub fn user_agent() -> HeaderValue {
    HeaderValue::from_static(concat!("Switchboard/", env!("CARGO_PKG_VERSION")))
}

/// The system's trust store could not be read, so no TLS connection could be verified.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for deliveries: {0}")]
pub struct SetupError(#[from] rustls::Error);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The guard refused every address the destination's name resolved to.
    #[error(transparent)]
    Refused(Refused),
    /// The connection could not be made; the innermost cause (e.g. "Connection refused").
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed after it was made.
    #[error("io: {0}")]
    Io(String),
}

#[derive(Clone)]
pub struct Client {
    inner: legacy::Client<HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>,
}

impl Client {
    pub fn new(guard: Arc<Guard>) -> Result<Self, SetupError> {
        // Several callers may race to install it; the first one wins and that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(Resolver(guard));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // No cap on idle connections: in use or idle, their number per host is bounded
            // by the destinations' `max_in_flight`, and a cap below it made every request
            // past it open a new connection (a quarter of them at 50 destinations on one
            // host).
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Ok(Self { inner })
    }

    /// Sends one request; the answer's body is the caller's to read (or drop).
    pub async fn send(&self, request: Request<Bytes>) -> Result<Response<Incoming>, SendError> {
        self.inner.request(request.map(Full::new)).await.map_err(|e| SendError::from_client(&e))
    }
}

impl SendError {
    fn from_client(e: &legacy::Error) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if let Some(refused) = c.downcast_ref::<Refused>() {
                return Self::Refused(refused.clone());
            }
            cause = c.source();
        }
        if e.is_connect() { Self::Connect(innermost(e)) } else { Self::Io(innermost(e)) }
    }
}

/// The innermost cause of an error (e.g. "Connection refused"), which says the most.
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = e;
    while let Some(inner) = innermost.source() {
        innermost = inner;
    }
    innermost.to_string()
}
