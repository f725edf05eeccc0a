//! A capturing receiver: a real HTTP server on 127.0.0.1:0 standing in for a customer
//! system. It records every request and answers what the test tells it to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use switchboard::server::{self, Limits};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// When the answer went back (after the reply's delay).
    pub answered: Instant,
    /// The status it was answered with.
    pub status: u16,
    /// The connection it came on (the client's address and port).
    pub peer: SocketAddr,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
    pub body: Option<Bytes>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), delay: Duration::ZERO, body: None }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Decides the reply from the request and how many requests came before it on its path.
type Script = dyn Fn(&Captured, usize) -> Reply + Send + Sync;

struct State {
    requests: Mutex<Vec<Captured>>,
    count: watch::Sender<usize>,
    script: Mutex<Arc<Script>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            script: Mutex::new(Arc::new(|_: &Captured, _| Reply::status(200))),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        let limits = Limits {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_millis(100),
        };
        let handler_state = state.clone();
        tokio::spawn(server::serve(listener, limits, stop.clone(), move |request, peer| {
            handle(handler_state.clone(), request, peer)
        }));
        Self { addr, state, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn reply_with(&self, script: impl Fn(&Captured, usize) -> Reply + Send + Sync + 'static) {
        *self.state.script.lock().unwrap() = Arc::new(script);
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most requests that were ever being answered at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `done` holds for the requests received so far, for at most `within`.
    pub async fn wait_until(&self, within: Duration, what: &str, done: impl Fn(&[Captured]) -> bool) -> Vec<Captured> {
        let mut changes = self.state.count.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            {
                let requests = self.state.requests.lock().unwrap();
                if done(&requests) {
                    return requests.clone();
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                let got = self.requests().len();
                panic!("timed out after {within:?} waiting for {what} ({got} requests received)");
            }
        }
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>, peer: SocketAddr) -> Response<server::Body> {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let captured = Captured {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers,
        body,
        at: Instant::now(),
        answered: Instant::now(),
        status: 0,
        peer,
    };
    let script = state.script.lock().unwrap().clone();
    let before = state.requests.lock().unwrap().iter().filter(|r| r.path() == captured.path()).count();
    let reply = script(&captured, before);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let captured = Captured { answered: Instant::now(), status: reply.status, ..captured };
    {
        let mut requests = state.requests.lock().unwrap();
        requests.push(captured);
        state.count.send_replace(requests.len());
    }
    let body = reply.body.unwrap_or_else(|| Bytes::from_static(b"{\"ok\":true}"));
    let mut response = Response::new(server::full(body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
