//! Soak: the binary at a steady moderate rate for a long time, fanning out to two
//! destinations, one of which fails 1% of deliveries for good (they go dead after three
//! attempts). Retention is short, so once it applies the store stops growing. Every 10 s
//! the gateway's RSS, open file descriptors and store size (database and WAL) are sampled;
//! after the warm-up they must be flat. Prints the samples and a verdict.
//!
//! CI form: 60 s at 50 events/s, 10 s retention. Long form:
//! `SWITCHBOARD_SOAK_SECS=1800 SWITCHBOARD_SOAK_RATE=200 SWITCHBOARD_SOAK_RETENTION=60 cargo test --release --test it soak -- --nocapture`

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use switchboard::server::{self, Limits};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::support::gateway::write_config;
use crate::support::long_form;
use crate::support::process::Serve;

const SAMPLE_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counts {
    crm: AtomicU64,
    analytics_ok: AtomicU64,
    analytics_failed: AtomicU64,
}

/// Two destinations on one listener that only counts: `/crm` always 200, `/analytics` 500
/// for callbacks marked to fail.
async fn receiver(counts: Arc<Counts>, stop: CancellationToken) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_connections: 4096,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_millis(100),
    };
    tokio::spawn(server::serve(listener, limits, stop, move |request: Request<Incoming>, _| {
        let counts = counts.clone();
        async move {
            let path = request.uri().path().to_string();
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let fail = path == "/analytics" && body.windows(11).any(|w| w == b"\"fail\":true");
            let counter = match (path.as_str(), fail) {
                ("/crm", _) => &counts.crm,
                (_, false) => &counts.analytics_ok,
                (_, true) => &counts.analytics_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut response = Response::new(server::full(Bytes::from_static(b"{}")));
            *response.status_mut() = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
            response
        }
    }));
    addr
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kb: u64,
    fds: u64,
    store_bytes: u64,
    accepted: u64,
}

/// One reading of the gateway's resources. Every figure must be readable: a wrong path or a
/// process gone must fail the soak, not read as a flat zero.
fn sample(pid: u32, data: &Path, started: Instant, accepted: u64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the gateway's /proc status");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the gateway's /proc fds").count() as u64;
    let store_bytes: u64 = std::fs::read_dir(data)
        .expect("the store's directory")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(rss_kb > 0 && fds > 0 && store_bytes > 0, "implausible sample: {rss_kb} kB, {fds} fds, {store_bytes} B");
    Sample { at: started.elapsed(), rss_kb, fds, store_bytes, accepted }
}

fn mean(samples: &[Sample], f: impl Fn(&Sample) -> u64) -> f64 {
    samples.iter().map(|s| f(s) as f64).sum::<f64>() / samples.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_steady_run_leaks_nothing() {
    let secs = long_form("SWITCHBOARD_SOAK_SECS", 60);
    let rate = long_form("SWITCHBOARD_SOAK_RATE", 50);
    let retention = long_form("SWITCHBOARD_SOAK_RETENTION", 10);

    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let _stop_receiver = stop.clone().drop_guard();
    let addr = receiver(counts.clone(), stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let destination = |id: &str| {
        format!(
            "[[destination]]\nid = \"{id}\"\nurl = \"http://{addr}/{id}\"\n\
             retry = {{ max_attempts = 3, initial_backoff = \"200ms\", max_backoff = \"500ms\" }}\n"
        )
    };
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{}{}",
        destination("crm"),
        destination("analytics"),
    );
    let store = format!("retention = \"{retention}s\"\ndead_retention = \"{retention}s\"");
    let config = write_config(dir.path(), "", &store, &[&tenant]);
    let gateway = Serve::start(&config).await;
    let pid = gateway.child.id().unwrap();
    let data = dir.path().join("data");

    // Steady load: one callback every 1/rate s, each on its own task, at most 64 at once.
    let client = crate::support::gateway::client();
    let hook = gateway.hook("acme", "s");
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let load = tokio::spawn({
        let (accepted, refused, in_flight) = (accepted.clone(), refused.clone(), in_flight.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(secs) {
                tick.tick().await;
                let permit = in_flight.clone().acquire_owned().await.unwrap();
                let body = format!("{{\"callId\":\"c{n}\",\"fail\":{}}}", n.is_multiple_of(100));
                let (client, hook, accepted, refused) =
                    (client.clone(), hook.clone(), accepted.clone(), refused.clone());
                tokio::spawn(async move {
                    let ok = client
                        .post(&hook)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    let counter = if ok { &accepted } else { &refused };
                    counter.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
                n += 1;
            }
            n
        }
    });

    let mut samples = vec![sample(pid, &data, started, 0)];
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(SAMPLE_EVERY.min(Duration::from_secs(secs).saturating_sub(started.elapsed()))).await;
        samples.push(sample(pid, &data, started, accepted.load(Ordering::Relaxed)));
    }
    let sent = load.await.unwrap();
    // The last callbacks' answers, then their deliveries.
    let _ = in_flight.acquire_many(64).await.unwrap();
    let total = accepted.load(Ordering::Relaxed);
    // Every callback sent was accepted, so exactly the marked ones fail.
    assert_eq!(refused.load(Ordering::Relaxed), 0, "callbacks were refused during a moderate steady load");
    assert_eq!(total, sent);
    let failing = sent.div_ceil(100);
    // Each failing delivery goes dead after its three attempts, no more.
    let failed_attempts = 3 * failing;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.crm.load(Ordering::Relaxed) < total
        || counts.analytics_ok.load(Ordering::Relaxed) < total - failing
        || counts.analytics_failed.load(Ordering::Relaxed) < failed_attempts
    {
        assert!(Instant::now() < deadline, "deliveries did not catch up within 60 s of the load's end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts.analytics_failed.load(Ordering::Relaxed), failed_attempts, "a dead delivery was retried");

    println!("soak: {secs} s at {rate} events/s, retention {retention} s");
    println!("{:>7} {:>9} {:>5} {:>11} {:>9}", "t (s)", "RSS (MB)", "fds", "store (MB)", "accepted");
    for s in &samples {
        println!(
            "{:>7.0} {:>9.1} {:>5} {:>11.1} {:>9}",
            s.at.as_secs_f64(),
            s.rss_kb as f64 / 1024.0,
            s.fds,
            s.store_bytes as f64 / 1e6,
            s.accepted
        );
    }
    // Flat once retention applies: past twice the retention, the last third of the samples
    // against the first third.
    let settled: Vec<Sample> =
        samples.iter().copied().filter(|s| s.at >= Duration::from_secs(2 * retention + 5)).collect();
    assert!(settled.len() >= 3, "too short a run to judge: {} settled samples", settled.len());
    let third = settled.len().div_ceil(3);
    let (early, late) = (&settled[..third], &settled[settled.len() - third..]);
    let rss = (mean(early, |s| s.rss_kb) / 1024.0, mean(late, |s| s.rss_kb) / 1024.0);
    let fds = (mean(early, |s| s.fds), mean(late, |s| s.fds));
    let store = (mean(early, |s| s.store_bytes) / 1e6, mean(late, |s| s.store_bytes) / 1e6);
    let peak_rss = samples.iter().map(|s| s.rss_kb).max().unwrap() as f64 / 1024.0;
    // The leak rate, if any: RSS gained per event accepted between the two thirds.
    let events_between = (mean(late, |s| s.accepted) - mean(early, |s| s.accepted)).max(1.0);
    let bytes_per_event = (rss.1 - rss.0) * 1024.0 * 1024.0 / events_between;
    let flat = |(a, b): (f64, f64), slack: f64| b <= a * 1.2 + slack;
    let verdict = flat(rss, 8.0) && flat(fds, 16.0) && flat(store, 4.0) && refused.load(Ordering::Relaxed) == 0;
    println!(
        "verdict: {}; settled early→late: RSS {:.1}→{:.1} MB ({bytes_per_event:+.0} B per event, peak {peak_rss:.1}), fds {:.0}→{:.0}, store {:.1}→{:.1} MB; \
         {total} accepted, {} refused; crm {} delivered, analytics {} delivered + {} failing attempts",
        if verdict { "FLAT" } else { "GROWING" },
        rss.0,
        rss.1,
        fds.0,
        fds.1,
        store.0,
        store.1,
        refused.load(Ordering::Relaxed),
        counts.crm.load(Ordering::Relaxed),
        counts.analytics_ok.load(Ordering::Relaxed),
        counts.analytics_failed.load(Ordering::Relaxed),
    );
    assert!(verdict, "resources kept growing after retention applied");
}
