//! `switchboard sink`: a receiving server that prints every request it gets and answers a
//! fixed status. The local stand-in for a customer system in the quick start.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{self, Limits};

const MAX_BODY: usize = 16 << 20;

/// With `quiet`, requests are read and answered but not printed (for load tests).
pub async fn run(listener: TcpListener, status: StatusCode, quiet: bool, shutdown: CancellationToken) {
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let limits = Limits {
        max_connections: 1024,
        header_read_timeout: std::time::Duration::from_secs(10),
        idle_timeout: std::time::Duration::from_secs(60),
        drain_timeout: std::time::Duration::from_secs(1),
    };
    server::serve(listener, limits, shutdown, move |request: Request<Incoming>, _peer| {
        let out = out.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = Limited::new(body, MAX_BODY).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            if quiet {
                let mut response = Response::new(crate::server::full(Bytes::from_static(b"{\"ok\":true}")));
                *response.status_mut() = status;
                return response;
            }
            let mut text = format!("{} {} {:?}\n", parts.method, parts.uri, parts.version);
            for (name, value) in &parts.headers {
                text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
            }
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&body));
            text.push_str("\n---\n");
            {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            let mut response = Response::new(crate::server::full(Bytes::from_static(b"{\"ok\":true}")));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
    })
    .await;
}
