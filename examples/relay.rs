//! The end-to-end yardstick of the load harness: a relay that stores nothing. For each
//! POST it sends the body to every sink URL given, at once, with hyper's pooled client,
//! and answers 200 once all of them answered — what this machine can carry with no
//! durability, no normalization and no templates. Switchboard's carried rate is measured
//! against it, side by side. Run:
//! `cargo run --release --example relay -- 127.0.0.1:18094 http://127.0.0.1:18091/a http://127.0.0.1:18091/b …`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18094".into());
    let sinks: Vec<hyper::Uri> = args.map(|a| a.parse().expect("a sink URL")).collect();
    assert!(!sinks.is_empty(), "usage: relay LISTEN SINK_URL...");
    let sinks: &'static [hyper::Uri] = Vec::leak(sinks);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("relay listening on {addr}, {} sinks", sinks.len());
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let sends = sinks.iter().map(|uri| {
                        let request = Request::post(uri.clone())
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(body.clone()))
                            .expect("a valid request");
                        let client = client.clone();
                        async move {
                            match client.request(request).await {
                                Ok(response) => response.into_body().collect().await.is_ok(),
                                Err(_) => false,
                            }
                        }
                    });
                    let all = futures_join_all(sends).await;
                    let status = if all { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
                    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Polls the sends together on this task (join_all, without spawning); `true` when every
/// one succeeded.
async fn futures_join_all<F: std::future::Future<Output = bool>>(sends: impl Iterator<Item = F>) -> bool {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = sends.map(|f| Some(Box::pin(f))).collect();
    let mut ok = true;
    std::future::poll_fn(|cx| {
        let mut done = true;
        for slot in pending.iter_mut() {
            if let Some(send) = slot {
                match send.as_mut().poll(cx) {
                    std::task::Poll::Ready(sent) => {
                        ok &= sent;
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    ok
}
