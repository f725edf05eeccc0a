//! The delivery client's cost per request: Switchboard's client (hyper's pooled client, as
//! deliveries use it) against reqwest with the settings deliveries had before, each sending
//! 600-byte POSTs over 32 keep-alive connections to the bare hyper server for 5 s on a
//! two-thread runtime. Prints requests/s and the process's CPU per request.
//! Run: `cargo run --release --example ceiling -- 127.0.0.1:18090 &` then
//! `cargo run --release --example clients -- switchboard` (or `reqwest`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

/// User and system CPU of this process so far (clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "switchboard".into());
    let url = std::env::args().nth(2).unwrap_or_else(|| "http://127.0.0.1:18090/hook".into());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let guard = switchboard::deliver::ssrf::Guard { allow_private: true, allowlist: Vec::new() };
        let ours = switchboard::deliver::Client::new(Arc::new(guard)).unwrap();
        let theirs = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let body = Bytes::from(vec![b'x'; 600]);
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        let (cpu_before, start) = (cpu(), Instant::now());
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (ours, theirs, sent, body, url, which) =
                (ours.clone(), theirs.clone(), sent.clone(), body.clone(), url.clone(), which.clone());
            tasks.push(tokio::spawn(async move {
                let uri: http::Uri = url.parse().unwrap();
                let parsed = url::Url::parse(&url).unwrap();
                while Instant::now() < deadline {
                    let status = if which == "reqwest" {
                        let request = theirs
                            .post(parsed.clone())
                            .header("content-type", "application/json")
                            .header("webhook-id", "msg_1")
                            .timeout(Duration::from_secs(30))
                            .body(body.clone());
                        let response = request.send().await.unwrap();
                        let status = response.status();
                        let _ = response.bytes().await;
                        status
                    } else {
                        let request = http::Request::post(uri.clone())
                            .header("content-type", "application/json")
                            .header("webhook-id", "msg_1")
                            .body(body.clone())
                            .unwrap();
                        let response =
                            tokio::time::timeout(Duration::from_secs(30), ours.send(request)).await.unwrap().unwrap();
                        let status = response.status();
                        let _ = response.into_body().collect().await;
                        status
                    };
                    assert!(status.is_success());
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let (cpu, wall, n) = (cpu() - cpu_before, start.elapsed(), sent.load(Ordering::Relaxed));
        println!(
            "{which}: {:.0} requests/s, {:.1} µs CPU per request",
            n as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64
        );
    });
}
