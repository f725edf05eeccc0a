//! The control plane at platform scale, against a running gateway (benches/load/control.sh):
//!
//!   control_scale seed ADMIN TOKEN SINK TENANTS
//!       PUTs TENANTS tenants of five templated destinations each, 8 at a time.
//!   control_scale churn ADMIN INGEST TOKEN SINK TENANTS RATE SECONDS
//!       Sends TelECMI callbacks to random tenants at RATE per second (open loop) while one
//!       tenant is replaced every 50 ms; prints the PUT latency percentiles (each PUT answers
//!       once the change is committed and serving on that node) and every callback that
//!       did not get a 2xx.
//!   control_scale first-ok INGEST TENANT SECONDS
//!       Polls until a callback to TENANT is accepted; prints the milliseconds it took.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SEED: &str = include_str!("../tests/fixtures/seeds/telecmi.json");

fn tenant(sink: &str, n: u64, revision: u64) -> Value {
    let destinations: Vec<Value> = (0..5)
        .map(|d| {
            json!({
                "id": format!("d{d}"),
                "url": format!("{sink}/t{n}/d{d}/<<id>>"),
                "headers": { "X-Tenant": format!("t{n}"), "X-Revision": revision.to_string() },
                "body": "{\"call\": <<id>>, \"status\": <<status>>, \"from\": <<from>>, \"to\": <<to>>}",
                "timeout": "5s",
            })
        })
        .collect();
    json!({
        "source": [{ "id": "telecmi", "provider": "telecmi", "auth": [{ "scheme": "none" }] }],
        "destination": destinations,
    })
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build().unwrap()
}

async fn put(client: &reqwest::Client, admin: &str, token: &str, sink: &str, n: u64, revision: u64) -> Duration {
    let started = Instant::now();
    let response = client
        .put(format!("{admin}/v1/tenants/t{n}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(tenant(sink, n, revision).to_string())
        .send()
        .await
        .expect("the admin API answers");
    let status = response.status();
    assert!(status.is_success(), "PUT t{n}: {status} {}", response.text().await.unwrap_or_default());
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["seed", admin, token, sink, tenants] => {
            let tenants: u64 = tenants.parse().unwrap();
            let client = client();
            let next = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    let (client, next) = (client.clone(), next.clone());
                    let (admin, token, sink) = (admin.to_string(), token.to_string(), sink.to_string());
                    tokio::spawn(async move {
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= tenants {
                                return;
                            }
                            put(&client, &admin, &token, &sink, n, 0).await;
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await.unwrap();
            }
            println!("seeded {tenants} tenants in {:.1} s", started.elapsed().as_secs_f64());
        }
        ["churn", admin, ingest, token, sink, tenants, rate, seconds] => {
            let tenants: u64 = tenants.parse().unwrap();
            let rate: f64 = rate.parse().unwrap();
            let seconds: f64 = seconds.parse().unwrap();
            let client = client();
            let failed = Arc::new(AtomicU64::new(0));
            let sent = Arc::new(AtomicU64::new(0));
            let stop = Instant::now() + Duration::from_secs_f64(seconds);
            let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
            let load = {
                let statuses = statuses.clone();
                let (client, failed, sent, ingest) = (client.clone(), failed.clone(), sent.clone(), ingest.to_string());
                tokio::spawn(async move {
                    let interval = Duration::from_secs_f64(1.0 / rate);
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for i in 0.. {
                        let at = start + interval.mul_f64(i as f64);
                        if at >= stop {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        let n = fastrand::u64(0..tenants);
                        let body = SEED.replace("703ee423-e5f8-4120-9c17-5216c679afdd", &format!("call-{i}"));
                        let (client, failed, sent, statuses) =
                            (client.clone(), failed.clone(), sent.clone(), statuses.clone());
                        let url = format!("{ingest}/v1/hooks/t{n}/telecmi");
                        tasks.push(tokio::spawn(async move {
                            let status = client
                                .post(url)
                                .header("content-type", "application/json")
                                .body(body)
                                .send()
                                .await
                                .map_or(0, |r| r.status().as_u16());
                            sent.fetch_add(1, Ordering::Relaxed);
                            if !(200..300).contains(&status) {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let mut seen = statuses.lock().unwrap();
                                *seen.entry(status).or_insert(0u64) += 1;
                            }
                        }));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                })
            };
            let mut latencies = Vec::new();
            let mut revision = 1;
            while Instant::now() < stop {
                let n = fastrand::u64(0..tenants);
                latencies.push(put(&client, admin, token, sink, n, revision).await);
                revision += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            load.await.unwrap();
            latencies.sort();
            println!(
                "puts {} p50 {:.1} ms p99 {:.1} ms max {:.1} ms; callbacks {} not accepted {} (by status, 0 = no answer: {:?})",
                latencies.len(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                sent.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed),
                statuses.lock().unwrap()
            );
        }
        ["first-ok", ingest, tenant, seconds] => {
            let client = client();
            let started = Instant::now();
            let limit = Duration::from_secs(seconds.parse().unwrap());
            loop {
                let sent = client
                    .post(format!("{ingest}/v1/hooks/{tenant}/telecmi"))
                    .header("content-type", "application/json")
                    .body(SEED)
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    println!("{}", started.elapsed().as_millis());
                    return;
                }
                assert!(started.elapsed() < limit, "{tenant} not served within {limit:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        _ => {
            eprintln!("usage: see the comment at the top of examples/control_scale.rs");
            std::process::exit(2);
        }
    }
}
