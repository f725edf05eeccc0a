//! Call-aware delivery against the binary, on both stores: each call's events reach an
//! ordered destination in commit order, one at a time, while a call held in retries holds
//! no other call back; a destination back from an outage gets each call's backlog in order;
//! a status the call has left is superseded, a stale live one expires; and two nodes on one
//! PostgreSQL never send two events of one call at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::gateway::{client, write_config};
use crate::support::postgres::database;
use crate::support::process::Serve;
use crate::support::receiver::Captured;
use crate::support::{Receiver, Reply};

const TOKEN: &str = "calls-admin-token";

/// One test, two stores: `$name` runs `super::$name(store_extra)` on SQLite, then on a
/// fresh PostgreSQL database when one can be started.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(String::new()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = crate::support::postgres::database().await else { return };
                    super::$name(format!("url = \"{url}\"\npool_size = 8")).await;
                }
            )*
        }
    };
}

both_stores!(
    ordered_calls_keep_commit_order_and_a_call_in_retries_holds_no_other,
    a_destination_back_from_an_outage_gets_each_calls_backlog_in_order,
    a_status_the_call_has_left_is_superseded_and_a_stale_live_one_expires,
    provider_sequence_puts_shuffled_callbacks_back_in_order,
);

/// A TeleCMI source (dedupe off: the tests send many events per call) and the given
/// destinations, each `(id, extra lines)`, all on `receiver` at `/{id}`.
fn tenant(receiver: &Receiver, destinations: &[(&str, &str)]) -> String {
    let mut toml = "id = \"acme\"\n[[source]]\nid = \"telecmi\"\nprovider = \"telecmi\"\ndedupe_window = \"0s\"\n\
                    auth = [{ scheme = \"none\" }]\n"
        .to_string();
    for (id, extra) in destinations {
        toml += &format!(
            "[[destination]]\nid = \"{id}\"\nurl = \"{}\"\nmax_in_flight = 16\ntimeout = \"2s\"\n\
             retry = {{ initial_backoff = \"50ms\", max_backoff = \"200ms\" }}\n{extra}\n",
            receiver.url(&format!("/{id}"))
        );
    }
    toml
}

async fn start(dir: &std::path::Path, store_extra: &str, tenant: &str) -> Serve {
    let store_extra = format!("{store_extra}\n\n[admin]\ntoken = {{ env = \"SB_ADMIN_TOKEN\" }}\n");
    let config = write_config(dir, "", &store_extra, &[tenant]);
    Serve::start_env(&config, &[("SB_ADMIN_TOKEN", TOKEN)]).await
}

/// A TeleCMI live event of `call`, numbered `n` (a field the receiver reads back).
fn callback(call: usize, n: usize, status: &str) -> String {
    json!({"type": "event", "cmiuuid": format!("call-{call}"), "status": status, "n": n, "from": 9876543210u64})
        .to_string()
}

/// The call and number a delivered request carries.
fn mark(request: &Captured) -> (String, u64) {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    (body["cmiuuid"].as_str().unwrap().to_string(), body["n"].as_u64().unwrap())
}

/// Posts each `(call, n, status)` and checks each was acknowledged. `lanes` requests go at
/// once; an entry waits for the one before it in its lane.
async fn send(hook: &str, lanes: Vec<Vec<(usize, usize, &'static str)>>) {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in lanes {
        let hook = hook.to_string();
        tasks.spawn(async move {
            let http = client();
            for (call, n, status) in lane {
                let response = http
                    .post(&hook)
                    .header("content-type", "application/json")
                    .body(callback(call, n, status))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Per call: the requests to `path`, in arrival order.
fn by_call<'a>(requests: &'a [Captured], path: &str) -> HashMap<String, Vec<&'a Captured>> {
    let mut calls: HashMap<String, Vec<&Captured>> = HashMap::new();
    for r in requests.iter().filter(|r| r.path() == path) {
        calls.entry(mark(r).0).or_default().push(r);
    }
    for list in calls.values_mut() {
        list.sort_by_key(|r| r.at);
    }
    calls
}

/// Each call's requests never overlapped, its attempts went in commit order, and its
/// successful deliveries are exactly `0..events`.
fn assert_in_order(requests: &[Captured], path: &str, calls: usize, events: u64) {
    let per_call = by_call(requests, path);
    assert_eq!(per_call.len(), calls, "{path}: every call arrived");
    for (call, list) in &per_call {
        for pair in list.windows(2) {
            assert!(pair[1].at >= pair[0].answered, "{path} {call}: two requests of one call overlapped");
            assert!(mark(pair[1]).1 >= mark(pair[0]).1, "{path} {call}: out of order: {:?}", numbers(list));
        }
        let delivered: Vec<u64> = list.iter().filter(|r| r.status == 200).map(|r| mark(r).1).collect();
        assert_eq!(delivered, (0..events).collect::<Vec<_>>(), "{path} {call}");
    }
}

fn numbers(list: &[&Captured]) -> Vec<(u64, u16)> {
    list.iter().map(|r| (mark(r).1, r.status)).collect()
}

const CALLS: usize = 200;
const EVENTS: usize = 3;

/// 200 calls, 3 events each, sent interleaved (each call's events in order, calls shuffled,
/// 16 at once) to two ordered destinations: `steady` answers every request, `flaky` fails the
/// first attempts of one event in seven calls. Both get every call in commit order, one
/// request at a time; and while a call waits for its retry, other calls' events are
/// delivered to the same destination (no head-of-line blocking, shown by order of arrival,
/// not by timing).
async fn ordered_calls_keep_commit_order_and_a_call_in_retries_holds_no_other(store_extra: String) {
    let receiver = Receiver::start().await;
    let failed: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let failures = failed.clone();
    receiver.reply_with(move |request, _| {
        let (call, n) = mark(request);
        let number: usize = call.trim_start_matches("call-").parse().unwrap();
        // Event 1 of every seventh call fails twice, then goes through.
        if request.path() == "/flaky" && number.is_multiple_of(7) && n == 1 {
            let mut failed = failures.lock().unwrap();
            let count = failed.entry(call).or_default();
            if *count < 2 {
                *count += 1;
                return Reply::status(500);
            }
        }
        Reply::status(200)
    });
    let dir = tempfile::tempdir().unwrap();
    let ordered = "ordering = \"per_call\"";
    let gateway = start(dir.path(), &store_extra, &tenant(&receiver, &[("steady", ordered), ("flaky", ordered)])).await;
    let hook = gateway.hook("acme", "telecmi");

    for n in 0..EVENTS {
        let mut calls: Vec<usize> = (0..CALLS).collect();
        fastrand::shuffle(&mut calls);
        let lanes = calls.chunks(CALLS / 16).map(|c| c.iter().map(|&call| (call, n, "answered")).collect()).collect();
        send(&hook, lanes).await;
    }
    let total = CALLS * EVENTS;
    let requests = receiver
        .wait_until(Duration::from_secs(120), "every event delivered to both destinations", |r| {
            ["/steady", "/flaky"]
                .iter()
                .all(|p| r.iter().filter(|r| r.path() == *p && r.status == 200).count() >= total)
        })
        .await;
    assert_in_order(&requests, "/steady", CALLS, EVENTS as u64);
    assert_in_order(&requests, "/flaky", CALLS, EVENTS as u64);

    // No head-of-line blocking: between a held call's failed attempt and its retry, other
    // calls' events were delivered to the same destination.
    let flaky = by_call(&requests, "/flaky");
    let held: Vec<&String> = flaky.keys().filter(|c| failed.lock().unwrap().contains_key(*c)).collect();
    assert_eq!(held.len(), CALLS.div_ceil(7), "every seventh call was held in retries");
    for call in held {
        let list = &flaky[call];
        let first_failure = list.iter().find(|r| r.status == 500).unwrap();
        let retry = list.iter().find(|r| r.status == 200 && mark(r).1 == 1).unwrap();
        let others = requests
            .iter()
            .filter(|r| r.path() == "/flaky" && mark(r).0 != *call)
            .filter(|r| r.at > first_failure.answered && r.answered < retry.at)
            .count();
        assert!(others > 0, "{call}: nothing else went out while it waited for its retry");
    }
}

/// The destination fails everything for a while, with each call's backlog growing; once it
/// answers again, every call's events arrive in order.
async fn a_destination_back_from_an_outage_gets_each_calls_backlog_in_order(store_extra: String) {
    const CALLS: usize = 40;
    const EVENTS: usize = 4;
    let receiver = Receiver::start().await;
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = up.clone();
    receiver.reply_with(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) { Reply::status(200) } else { Reply::status(500) }
    });
    let dir = tempfile::tempdir().unwrap();
    let extra = "ordering = \"per_call\"\ncircuit_breaker = { failures = 0 }";
    let gateway = start(dir.path(), &store_extra, &tenant(&receiver, &[("crm", extra)])).await;
    let hook = gateway.hook("acme", "telecmi");
    let statuses = ["waiting", "started", "answered", "hangup"];
    // Ten lanes of four calls, each call's events in order.
    let lanes = (0..10)
        .map(|lane| {
            (lane * 4..lane * 4 + 4).flat_map(|call| (0..EVENTS).map(move |n| (call, n, statuses[n]))).collect()
        })
        .collect();
    send(&hook, lanes).await;
    // Down until every call has failed at least once.
    receiver
        .wait_until(Duration::from_secs(30), "a failed attempt of every call", |r| {
            r.iter().map(|r| mark(r).0).collect::<HashSet<_>>().len() == CALLS
        })
        .await;
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let requests = receiver
        .wait_until(Duration::from_secs(60), "every backlog delivered", |r| {
            r.iter().filter(|r| r.status == 200).count() >= CALLS * EVENTS
        })
        .await;
    assert!(requests.iter().any(|r| r.status == 500), "the outage was seen");
    assert_in_order(&requests, "/crm", CALLS, EVENTS as u64);
}

/// ringing arriving after completed is superseded, not delivered, and the history says by
/// which event; a live event older than `live_ttl` when its turn comes expires.
async fn a_status_the_call_has_left_is_superseded_and_a_stale_live_one_expires(store_extra: String) {
    let receiver = Receiver::start().await;
    // The live dashboard is slow: a call's live events wait behind each other past live_ttl.
    receiver.reply_with(|request, _| {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let slow = request.path() == "/live" && body["status"] == "waiting";
        Reply::status(200).after(if slow { Duration::from_millis(1500) } else { Duration::ZERO })
    });
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(
        dir.path(),
        &store_extra,
        &tenant(
            &receiver,
            &[
                ("crm", "ordering = \"per_call\"\nsupersede = true\nwhen = { id = [\"call-1\"] }"),
                ("unordered", "supersede = true\nwhen = { id = [\"call-1\"] }"),
                ("live", "ordering = \"per_call\"\nlive_ttl = \"1s\"\nwhen = { id = [\"call-2\"] }"),
                ("plain", ""),
            ],
        ),
    )
    .await;
    let hook = gateway.hook("acme", "telecmi");
    // Call 1: completed (hangup) arrives first, then ringing and answered, shuffled late.
    send(&hook, vec![vec![(1, 0, "hangup")]]).await;
    receiver
        .wait_until(Duration::from_secs(30), "hangup at crm and unordered", |r| {
            ["/crm", "/unordered"].iter().all(|p| r.iter().any(|r| r.path() == *p))
        })
        .await;
    send(&hook, vec![vec![(1, 1, "started"), (1, 2, "answered")]]).await;
    // Call 2 for the live dashboard: queued (slow to deliver), then ringing, which waits
    // its turn past live_ttl.
    send(&hook, vec![vec![(2, 0, "waiting"), (2, 1, "started"), (2, 2, "hangup")]]).await;

    let requests = receiver
        .wait_until(Duration::from_secs(30), "plain got all six; live got call 2's end", |r| {
            r.iter().filter(|r| r.path() == "/plain").count() == 6
                && r.iter().any(|r| r.path() == "/live" && mark(r) == ("call-2".into(), 2))
        })
        .await;
    let sent = |path: &str, call: &str| -> Vec<u64> {
        let mut list: Vec<&Captured> = requests.iter().filter(|r| r.path() == path && mark(r).0 == call).collect();
        list.sort_by_key(|r| r.at);
        list.iter().map(|r| mark(r).1).collect()
    };
    let mut plain = sent("/plain", "call-1");
    plain.sort();
    assert_eq!(plain, [0, 1, 2], "without supersede everything goes");
    // Superseding needs the later status delivered (or queued): call 1's stale two never go.
    let (admin, http) = (gateway.admin_url(), client());
    let unsent = |path: &'static str| {
        let (admin, http) = (admin.clone(), http.clone());
        async move {
            let url = format!("{admin}/v1/deliveries?destination={path}&limit=100");
            let body: Value = http.get(url).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
            body["deliveries"].as_array().unwrap().clone()
        }
    };
    for path in ["crm", "unordered"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let deliveries = loop {
            let all = unsent(path).await;
            if all.iter().filter(|d| d["state"] == "superseded").count() >= 2 || Instant::now() > deadline {
                break all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let superseded: Vec<&Value> = deliveries.iter().filter(|d| d["state"] == "superseded").collect();
        assert_eq!(superseded.len(), 2, "{path}: {deliveries:#?}");
        for d in superseded {
            assert!(d["last_error"].as_str().unwrap().starts_with("not sent: superseded by event "), "{d}");
        }
    }
    assert_eq!(sent("/crm", "call-1"), [0]);
    assert_eq!(sent("/unordered", "call-1"), [0]);
    // The live dashboard: queued went (slowly), ringing expired while it waited, the end went.
    assert_eq!(sent("/live", "call-2"), [0, 2]);
    let live = unsent("live").await;
    let expired: Vec<&Value> = live.iter().filter(|d| d["state"] == "expired").collect();
    assert_eq!(expired.len(), 1, "{live:#?}");
    // Visible in metrics too.
    let metrics = http.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "switchboard_deliveries_unsent_total{tenant=\"acme\",destination=\"crm\",reason=\"superseded\"} 2",
        "switchboard_deliveries_unsent_total{tenant=\"acme\",destination=\"live\",reason=\"expired\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
}

/// Two nodes on one PostgreSQL, one ordered destination, calls spread over both nodes'
/// ingest: the receiver never sees two requests of one call at once, and each call's
/// events arrive in the order they were committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_send_two_events_of_one_call_at_once() {
    const CALLS: usize = 30;
    const EVENTS: usize = 6;
    let Some(url) = database().await else { return };
    let receiver = Receiver::start().await;
    // Slow answers keep requests in flight, so an overlap would be seen.
    receiver.reply_with(|_, _| Reply::status(200).after(Duration::from_millis(15)));
    let dir = tempfile::tempdir().unwrap();
    let tenant = tenant(&receiver, &[("crm", "ordering = \"per_call\"")]);
    let config = write_config(dir.path(), "", &format!("url = \"{url}\"\npool_size = 8"), &[&tenant]);
    let nodes = [Serve::start(&config).await, Serve::start(&config).await];
    // Each call's events alternate between the nodes, each sent after the last was acknowledged.
    let mut tasks = tokio::task::JoinSet::new();
    for call in 0..CALLS {
        let hooks: Vec<String> = nodes.iter().map(|n| n.hook("acme", "telecmi")).collect();
        tasks.spawn(async move {
            for n in 0..EVENTS {
                send(&hooks[(call + n) % 2], vec![vec![(call, n, "answered")]]).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let requests =
        receiver.wait_until(Duration::from_secs(60), "every event delivered", |r| r.len() >= CALLS * EVENTS).await;
    assert_in_order(&requests, "/crm", CALLS, EVENTS as u64);
    assert!(receiver.max_concurrent() > 1, "calls went out in parallel; only one call's were serialized");
}

/// Twilio-style form callbacks carrying `SequenceNumber`, sent shuffled (2, 0, 1 for
/// every call): the source orders by the provider's sequence, so the destination gets 0, 1,
/// 2; the early 2 waited for the others rather than for its whole window.
async fn provider_sequence_puts_shuffled_callbacks_back_in_order(store_extra: String) {
    const CALLS: usize = 20;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"twilio\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n\
         call_key = \"payload.CallSid\"\norder_by = \"provider_sequence\"\nsequence = \"payload.SequenceNumber\"\n\
         reorder_window = \"20s\"\n\
         [[destination]]\nid = \"crm\"\nurl = \"{}\"\nordering = \"per_call\"\n",
        receiver.url("/crm")
    );
    let gateway = start(dir.path(), &store_extra, &tenant).await;
    let hook = gateway.hook("acme", "twilio");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for call in 0..CALLS {
        let hook = hook.clone();
        tasks.spawn(async move {
            let http = client();
            for (seq, status) in [(2, "completed"), (0, "ringing"), (1, "in-progress")] {
                let body = format!("CallSid=CA{call:04}&CallStatus={status}&SequenceNumber={seq}");
                let response = http
                    .post(&hook)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let requests =
        receiver.wait_until(Duration::from_secs(15), "every callback delivered", |r| r.len() >= CALLS * 3).await;
    assert!(started.elapsed() < Duration::from_secs(15), "nothing waited out its 20 s window");
    let mut per_call: HashMap<String, Vec<&Captured>> = HashMap::new();
    for r in &requests {
        let body = String::from_utf8_lossy(&r.body).to_string();
        let sid = body.split('&').find_map(|kv| kv.strip_prefix("CallSid=")).unwrap().to_string();
        per_call.entry(sid).or_default().push(r);
    }
    assert_eq!(per_call.len(), CALLS);
    for (call, mut list) in per_call {
        list.sort_by_key(|r| r.at);
        let order: Vec<String> = list
            .iter()
            .map(|r| {
                let body = String::from_utf8_lossy(&r.body).to_string();
                body.split('&').find_map(|kv| kv.strip_prefix("SequenceNumber=")).unwrap().to_string()
            })
            .collect();
        assert_eq!(order, ["0", "1", "2"], "{call}");
    }
}
