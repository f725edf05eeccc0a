//! The binary itself, killed: `kill -9` loses no acknowledged event, and SIGTERM drains and
//! exits 0. Both restart on the same SQLite file and check every acknowledged event reached
//! every destination at least once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::gateway::{client, write_config};
use crate::support::process::Serve;
use crate::support::{Receiver, Reply, seed};

/// TeleCMI's sample callback for a call of its own: the same call twice would be one event.
fn callback(n: usize) -> String {
    String::from_utf8(seed("telecmi.json"))
        .unwrap()
        .replace("703ee423-e5f8-4120-9c17-5216c679afdd", &format!("call-{n}"))
}

fn tenant(receiver: &Receiver) -> String {
    format!(
        r#"id = "acme"
[[source]]
id = "telecmi"
provider = "telecmi"
auth = [{{ scheme = "none" }}]
[[destination]]
id = "crm"
url = "{}"
max_in_flight = 4
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
[[destination]]
id = "analytics"
url = "{}"
max_in_flight = 4
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
"#,
        receiver.url("/crm"),
        receiver.url("/analytics")
    )
}

/// Waits until each of `ids` has arrived at both destinations.
async fn all_delivered(receiver: &Receiver, ids: &HashSet<String>, within: Duration) {
    let what = format!("{} events at both destinations", ids.len());
    receiver
        .wait_until(within, &what, |requests| {
            ["/crm", "/analytics"].iter().all(|path| {
                let seen: HashSet<&str> =
                    requests.iter().filter(|r| r.path() == *path).filter_map(|r| r.header("webhook-id")).collect();
                ids.iter().all(|id| seen.contains(id.as_str()))
            })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event() {
    let receiver = Receiver::start().await;
    // Slow enough that a backlog of pending deliveries exists when the process dies.
    receiver.reply_with(|_, _| Reply::status(200).after(Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", "", &[&tenant(&receiver)]);
    let mut gateway = Serve::start(&config).await;

    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let url = gateway.hook("acme", "telecmi");
    let senders: Vec<_> = (0..8)
        .map(|sender| {
            let (url, acknowledged) = (url.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let client = client();
                for n in 0..50 {
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(callback(sender * 1000 + n))
                        .send()
                        .await;
                    // Only an answered 200 is an acknowledgement; a connection the kill cut is not.
                    let Ok(response) = sent else { break };
                    if response.status() == 200 {
                        let id = response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
                        acknowledged.lock().unwrap().insert(id);
                    }
                }
            })
        })
        .collect();

    // Kill mid-load, once a few hundred events are in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 200 {
        assert!(tokio::time::Instant::now() < deadline, "ingest too slow: {}", gateway.log());
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill9().await;
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let delivered_before: HashSet<String> =
        receiver.requests().iter().filter_map(|r| r.header("webhook-id").map(str::to_owned)).collect();
    let pending = acknowledged.iter().filter(|id| !delivered_before.contains(*id)).count();
    assert!(pending > 0, "the kill came too late to test anything: every event was already delivered");

    let _restarted = Serve::start(&config).await;
    all_delivered(&receiver, &acknowledged, Duration::from_secs(60)).await;
    eprintln!(
        "kill -9: {} acknowledged, {pending} not yet delivered at the kill, all delivered after restart",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_attempts_and_exits_0() {
    let receiver = Receiver::start().await;
    // Every request is counted on arrival (a request the gateway abandons mid-reply is
    // counted too, though the receiver never records it as answered).
    let arrivals = Arc::new(Mutex::new(HashMap::<(String, String), usize>::new()));
    receiver.reply_with({
        let arrivals = arrivals.clone();
        move |request, _| {
            let id = request.header("webhook-id").unwrap_or_default().to_string();
            *arrivals.lock().unwrap().entry((request.path().to_string(), id)).or_default() += 1;
            Reply::status(200).after(Duration::from_millis(300))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "drain_timeout = \"2s\"", "", &[&tenant(&receiver)]);
    let mut gateway = Serve::start(&config).await;
    let client = client();
    let mut acknowledged = HashSet::new();
    for n in 0..40 {
        let response = client
            .post(gateway.hook("acme", "telecmi"))
            .header("content-type", "application/json")
            .body(callback(n))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        acknowledged.insert(response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string());
    }
    assert_eq!(acknowledged.len(), 40);
    // SIGTERM while attempts are out: arrived at the receiver, not yet answered.
    let in_flight = || arrivals.lock().unwrap().values().sum::<usize>() - receiver.requests().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while in_flight() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no attempt in flight to drain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = gateway.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}; log:\n{}", gateway.log());
    assert!(gateway.log().contains("stopped"), "{}", gateway.log());
    // Drained: everything the stopped process sent was answered and received.
    assert_eq!(in_flight(), 0, "attempts abandoned at SIGTERM");

    let restarted = Serve::start(&config).await;
    let ready = client.get(format!("http://{}/readyz", restarted.admin)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    all_delivered(&receiver, &acknowledged, Duration::from_secs(60)).await;
    // Nothing is left pending in the store, so no attempt can still be on its way...
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("data/switchboard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pending: i64 = db.query_row("SELECT count(*) FROM deliveries WHERE state = 0", [], |r| r.get(0)).unwrap();
        if pending == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pending} deliveries still pending after all arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and each event reached each destination exactly once: the drain recorded every
    // attempt it let finish, so the restarted process sent none of them again.
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 2 * acknowledged.len(), "{arrivals:?}");
    let again: Vec<_> = arrivals.iter().filter(|(_, n)| **n != 1).collect();
    assert!(again.is_empty(), "delivered more than once: {again:?}");
}

/// The crash loop: sustained ingest into three destinations while the binary is killed
/// with SIGKILL at random moments and restarted, `SWITCHBOARD_CRASH_KILLS` times (3 by
/// default; the long form in docs/reliability.md runs 20). Afterwards every acknowledged
/// event has reached every destination, every delivered event was at least stored, and
/// duplicates — counted and printed — stay within what can have been in flight at a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_no_acknowledged_event() {
    const PATHS: [&str; 3] = ["/crm", "/analytics", "/ticketing"];
    const IN_FLIGHT: usize = 4;
    let kills = crate::support::long_form("SWITCHBOARD_CRASH_KILLS", 3) as usize;
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, _| Reply::status(200).after(Duration::from_millis(10)));
    let destinations: String = PATHS
        .iter()
        .map(|p| {
            format!(
                "[[destination]]\nid = \"{}\"\nurl = \"{}\"\nmax_in_flight = {IN_FLIGHT}\n\
                 retry = {{ initial_backoff = \"50ms\", max_backoff = \"200ms\" }}\n",
                &p[1..],
                receiver.url(p)
            )
        })
        .collect();
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"telecmi\"\nprovider = \"telecmi\"\nauth = [{{ scheme = \"none\" }}]\n{destinations}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", "", &[&tenant]);
    let mut gateway = Serve::start(&config).await;

    let url = Arc::new(Mutex::new(gateway.hook("acme", "telecmi")));
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (url, acknowledged, sent, running) = (url.clone(), acknowledged.clone(), sent.clone(), running.clone());
            tokio::spawn(async move {
                let client = client();
                let mut n = 0;
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let target = url.lock().unwrap().clone();
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let response = client
                        .post(&target)
                        .header("content-type", "application/json")
                        .body(callback(sender * 1_000_000 + n))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => {
                            let id = r.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();
                            acknowledged.lock().unwrap().insert(id);
                        }
                        // Down between a kill and its restart: try again shortly.
                        _ => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        })
        .collect();

    for kill in 0..kills {
        // A random moment: after some more acknowledgements, plus up to 250 ms.
        let target = acknowledged.lock().unwrap().len() + 50;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acknowledged.lock().unwrap().len() < target {
            assert!(tokio::time::Instant::now() < deadline, "ingest stalled before kill {kill}: {}", gateway.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..250))).await;
        gateway.kill9().await;
        gateway = Serve::start(&config).await;
        *url.lock().unwrap() = gateway.hook("acme", "telecmi");
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let what = format!("{} acknowledged events at all three destinations", acknowledged.len());
    let requests = receiver
        .wait_until(Duration::from_secs(120), &what, |requests| {
            PATHS.iter().all(|path| {
                let seen: HashSet<&str> =
                    requests.iter().filter(|r| r.path() == *path).filter_map(|r| r.header("webhook-id")).collect();
                acknowledged.iter().all(|id| seen.contains(id.as_str()))
            })
        })
        .await;

    let mut copies = std::collections::HashMap::<(String, String), usize>::new();
    for r in &requests {
        *copies.entry((r.path().to_string(), r.header("webhook-id").unwrap().to_string())).or_default() += 1;
    }
    // Delivered without an acknowledgement (the kill cut the answer): it must be stored.
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("data/switchboard.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let unacknowledged: HashSet<&String> =
        copies.keys().map(|(_, id)| id).filter(|id| !acknowledged.contains(*id)).collect();
    // Whatever was delivered was stored first — acknowledged or not (a kill may have cut the
    // answer). Checked for every delivered id, so the loop never runs empty.
    let delivered: HashSet<&String> = copies.keys().map(|(_, id)| id).collect();
    assert!(!delivered.is_empty());
    for id in &delivered {
        let id: uuid::Uuid = id.parse().unwrap();
        let stored: i64 = db
            .query_row("SELECT count(*) FROM events WHERE id = ?1", [id.as_bytes().as_slice()], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 1, "{id} was delivered but never stored");
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    // At a kill, each destination can have `max_in_flight` requests out and as many results
    // not yet recorded: all of them are sent again.
    let bound = kills * 2 * IN_FLIGHT * PATHS.len();
    eprintln!(
        "crash loop: {kills} kills survived, {} callbacks sent, {} acknowledged, 0 lost, {} delivered unacknowledged (stored), {duplicates} duplicate deliveries (bound {bound})",
        sent.load(std::sync::atomic::Ordering::Relaxed),
        acknowledged.len(),
        unacknowledged.len()
    );
    assert!(duplicates <= bound, "{duplicates} duplicates: more than could have been in flight at {kills} kills");
}
