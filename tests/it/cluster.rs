//! Several `switchboard serve` processes on one PostgreSQL queue, one of them killed with
//! SIGKILL mid-load: every acknowledged event still reaches every destination, and the
//! only duplicates are attempts that were in flight on the killed node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::gateway::{client, write_config};
use crate::support::postgres::database;
use crate::support::process::Serve;
use crate::support::{Receiver, Reply, seed};

const DESTINATIONS: [&str; 2] = ["/crm", "/analytics"];
const MAX_IN_FLIGHT: usize = 4;

fn tenant(receiver: &Receiver) -> String {
    let destination = |id: &str, path: &str| {
        format!(
            "[[destination]]\nid = \"{id}\"\nurl = \"{}\"\nmax_in_flight = {MAX_IN_FLIGHT}\ntimeout = \"1s\"\n\
             retry = {{ initial_backoff = \"50ms\", max_backoff = \"200ms\" }}\n",
            receiver.url(path)
        )
    };
    format!(
        "id = \"acme\"\n[[source]]\nid = \"telecmi\"\nprovider = \"telecmi\"\nauth = [{{ scheme = \"none\" }}]\n{}{}",
        destination("crm", "/crm"),
        destination("analytics", "/analytics")
    )
}

fn callback(n: usize) -> String {
    String::from_utf8(seed("telecmi.json"))
        .unwrap()
        .replace("703ee423-e5f8-4120-9c17-5216c679afdd", &format!("call-{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_lose_nothing() {
    let Some(url) = database().await else { return };
    let receiver = Receiver::start().await;
    // Slow enough that every node holds leased, in-flight deliveries when one dies.
    receiver.reply_with(|_, _| Reply::status(200).after(Duration::from_millis(25)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", &format!("url = \"{url}\"\npool_size = 8"), &[&tenant(&receiver)]);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Serve::start(&config).await);
    }
    let hooks: Vec<String> = nodes.iter().map(|n| n.hook("acme", "telecmi")).collect();

    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let senders: Vec<_> = (0..6)
        .map(|sender| {
            let (hooks, acknowledged) = (hooks.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let client = client();
                for n in 0..60 {
                    // Round-robin over the nodes; a node that is gone refuses, the next one takes it.
                    let url = &hooks[(sender + n) % hooks.len()];
                    let sent = client
                        .post(url)
                        .header("content-type", "application/json")
                        .body(callback(sender * 1000 + n))
                        .send()
                        .await;
                    if let Ok(response) = sent
                        && response.status() == 200
                    {
                        let id = response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
                        acknowledged.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 120 {
        assert!(tokio::time::Instant::now() < deadline, "ingest too slow: {}", nodes[0].log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes[1].kill9().await;
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let seen_at_kill = receiver.requests().len();
    assert!(
        seen_at_kill < acknowledged.len() * DESTINATIONS.len(),
        "the kill came too late to test anything: everything was already delivered"
    );

    // The killed node's leases expire (timeout × 2 + 30 s) and the survivors take them over.
    let what = format!("{} events at both destinations", acknowledged.len());
    let requests = receiver
        .wait_until(Duration::from_secs(120), &what, |requests| {
            DESTINATIONS.iter().all(|path| {
                let seen: HashSet<&str> =
                    requests.iter().filter(|r| r.path() == *path).filter_map(|r| r.header("webhook-id")).collect();
                acknowledged.iter().all(|id| seen.contains(id.as_str()))
            })
        })
        .await;

    let mut copies: HashMap<(String, String), usize> = HashMap::new();
    for r in &requests {
        *copies.entry((r.path().to_string(), r.header("webhook-id").unwrap().to_string())).or_default() += 1;
    }
    // Whatever was delivered was stored first, acknowledged or not (the kill may have cut
    // the answer). Every delivered id is checked, so the loop never runs empty.
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let delivered: HashSet<&String> = copies.keys().map(|(_, id)| id).collect();
    assert!(!delivered.is_empty());
    for id in delivered {
        let id: uuid::Uuid = id.parse().unwrap();
        let stored: i64 = db.query_one("SELECT count(*) FROM events WHERE id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(stored, 1, "{id} was delivered but never stored");
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    // At most every slot of every destination on the killed node had an attempt in flight.
    // Requests out plus results not yet recorded, per destination, on the killed node.
    let in_flight_bound = 2 * MAX_IN_FLIGHT * DESTINATIONS.len();
    eprintln!(
        "cluster: {} acknowledged across 3 nodes, {} requests seen at the kill, {} delivered after, {duplicates} duplicates (bound {in_flight_bound})",
        acknowledged.len(),
        seen_at_kill,
        requests.len()
    );
    assert!(duplicates <= in_flight_bound, "{duplicates} duplicates, more than the killed node had in flight");
}

/// A shared store that cannot be reached at start: a few connection attempts with backoff
/// (the database may be starting beside the gateway), then a clear error and a non-zero exit.
#[tokio::test]
async fn an_unreachable_postgres_at_start_is_a_clear_error_and_a_failed_exit() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", &format!("url = \"postgres://gw@{closed}/queue\""), &[]);
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(crate::support::process::BIN).arg("serve").arg("--config").arg(&config).output(),
    )
    .await
    .expect("gave up in time")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("cannot connect to postgres after 6 attempts"), "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(10), "it retried with backoff before giving up");
}

/// PostgreSQL lost while running: ingest answers 503 and acknowledges nothing while it is
/// down, and when it is back the gateway resumes by itself — ingest and deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_while_running_is_503_then_resumes_by_itself() {
    let Some(postgres) = crate::support::postgres::Private::start() else { return };
    let receiver = Receiver::start().await;
    let gateway =
        crate::support::Gateway::start_with("", &format!("url = \"{}\"", postgres.url), &[&tenant(&receiver)]).await;
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let post = || {
        let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gateway.post("acme", "telecmi", "application/json", callback(n))
    };
    let mut acknowledged = HashSet::new();
    for _ in 0..5 {
        let response = post().await;
        assert_eq!(response.status(), 200);
        acknowledged.insert(response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string());
    }

    postgres.down();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    while refused < 3 {
        let response = post().await;
        match response.status().as_u16() {
            503 => {
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
                refused += 1;
            }
            status => panic!("ingest answered {status} with its database down"),
        }
        assert!(tokio::time::Instant::now() < deadline);
    }

    postgres.up();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = post().await;
        if response.status() == 200 {
            acknowledged.insert(response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string());
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(tokio::time::Instant::now() < deadline, "ingest still refused 30 s after the database came back");
        // Each turn is a real callback, as a provider retrying would send.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    receiver
        .wait_until(Duration::from_secs(30), "every acknowledged event at both destinations", |requests| {
            DESTINATIONS.iter().all(|path| {
                let seen: HashSet<&str> =
                    requests.iter().filter(|r| r.path() == *path).filter_map(|r| r.header("webhook-id")).collect();
                acknowledged.iter().all(|id| seen.contains(id.as_str()))
            })
        })
        .await;
    gateway.stop().await;
}
