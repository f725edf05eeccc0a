//! The HTTP/1.1 + h2c accept loop shared by ingest, admin and the sink, and the JSON error
//! shape every endpoint answers with.
//!
//! Connection-level protections live here: a semaphore permit is taken before `accept`
//! (bounded connection count); the whole pre-request phase — protocol detection (h1 or an
//! h2c preface) and the first request's headers — must end within `header_read_timeout`,
//! or the connection is closed (hyper's own header timer starts only once h1 is chosen, so
//! a socket that sends nothing, or half a preface, would otherwise hold its slot until the
//! idle timeout); and an idle timer closes connections that move no bytes and have no
//! request in progress. Shutdown
//! stops accepting, then lets open connections finish their requests (graceful), bounded
//! by the caller's drain time.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every response body: whole (nearly all of them), or streamed as it is produced (the
/// admin API's live tail). An enum, not a box: the ingest path pays nothing for the stream.
pub type Body = http_body_util::Either<Full<Bytes>, Streamed>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Either::Left(Full::new(bytes.into()))
}

/// A body sent as it is produced: chunks from a channel, ending when the sender is dropped.
pub struct Streamed(pub tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
}

impl From<&crate::config::Server> for Limits {
    fn from(s: &crate::config::Server) -> Self {
        Limits {
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout,
            idle_timeout: s.idle_timeout,
            drain_timeout: s.drain_timeout,
        }
    }
}

/// Connections the kernel may hold, handshake done, before `accept` takes them (capped by
/// `net.core.somaxconn`). A burst of providers connecting while every worker is busy would
/// otherwise overflow the default 1,024 and see their connections reset.
const LISTEN_BACKLOG: u32 = 8192;

/// Binds a listener with `LISTEN_BACKLOG` (and `SO_REUSEADDR`, as `TcpListener::bind` sets).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// `{"error":{"code":…,"message":…}}` with the given status; 429 and 503 carry Retry-After.
pub fn json_error(status: StatusCode, code: &str, message: &str, retry_after: Option<u64>) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = json_response(status, &body);
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Serves `handler` on `listener` until `shutdown` fires, then drains open connections for
/// at most `limits.drain_timeout`.
pub async fn serve<F, Fut>(listener: TcpListener, limits: Limits, shutdown: CancellationToken, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));

    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
        let handler = handler.clone();
        let in_flight = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = InFlight::enter(in_flight.clone());
            let response = handler(request, peer);
            async move {
                let response = response.await;
                drop(guard);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        let idle_timeout = limits.idle_timeout;
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            // Timed from this task's first run, not from accept, and the connection is
            // polled before the timers: a busy gateway must not blame the client for its
            // own delay in reading a request that is already in the socket.
            let first_request_by = Instant::now() + header_read_timeout;
            let mut deadline = Instant::now() + idle_timeout;
            loop {
                tokio::select! {
                    biased;
                    _ = &mut connection => break,
                    _ = tokio::time::sleep_until(first_request_by), if !activity.started() => {
                        // Checked again: the poll of the connection just before may have begun
                        // the first request (the branch's condition was read before it).
                        if !activity.started() {
                            // Dropping the connection closes the socket. (hyper answers 408
                            // itself to h1 headers that started but stalled.)
                            tracing::debug!(%peer, "connection closed: no request within header_read_timeout");
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        match activity.idle_until(idle_timeout) {
                            Some(next) => deadline = next,
                            None => break, // idle too long: dropping the connection closes it
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// When a connection last moved bytes, how many requests it has in progress, and whether
/// any request has begun.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    started: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
        }
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// `None` when the connection has been idle for `timeout`; otherwise when to look again.
    fn idle_until(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Some(Instant::now() + timeout);
        }
        let next = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout;
        (next > Instant::now()).then_some(next)
    }
}

struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> Self {
        activity.started.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records when it last read or wrote a byte.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
