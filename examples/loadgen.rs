//! A fixed-rate (open-loop) load generator for the load harness: POSTs a body at `rate`
//! requests per second for `seconds`, and reports latency percentiles measured from each
//! request's scheduled start, so a slow server cannot hide its queueing (no coordinated
//! omission). Run: `cargo run --release --example loadgen -- URL BODY_FILE RATE SECONDS`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, body, rate, seconds, ..] = args.as_slice() else {
        eprintln!("usage: loadgen URL BODY_FILE RATE SECONDS");
        std::process::exit(2);
    };
    let body = bytes::Bytes::from(std::fs::read(body).expect("body file"));
    let rate: f64 = rate.parse().expect("rate");
    let seconds: f64 = seconds.parse().expect("seconds");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build().unwrap();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds) as usize)));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = (rate * seconds) as u64;
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, body, latencies, failed) =
            (client.clone(), url.clone(), body.clone(), latencies.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let ok = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                latencies.lock().await.push(scheduled.elapsed());
            } else {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().await.clone();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"sent\":{total},\"ok\":{},\"failed\":{},\"seconds\":{elapsed:.2},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3}}}",
        latencies.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
}
