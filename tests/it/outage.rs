//! Outage and recovery: a destination goes down while callbacks keep arriving, then comes
//! back. While it is down its circuit opens and only probes reach it, however large the
//! backlog; when it is back the backlog drains at its rate limit, never faster; nothing is
//! lost. Prints the drain time.
//!
//! CI form: 5 s down, 1,000 events. Long form (10,000 pending, two minutes down):
//! `SWITCHBOARD_OUTAGE_SECS=120 SWITCHBOARD_OUTAGE_EVENTS=10000 cargo test --release --test it outage -- --nocapture`

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Gateway, Receiver, Reply, long_form};
use serde_json::Value;

const TOKEN: &str = "outage-admin-token";
const RATE: u32 = 200;
const BURST: u32 = 20;
const FAILURES: usize = 5;
const MAX_IN_FLIGHT: usize = 16;
const COOLDOWN: Duration = Duration::from_millis(200);
const MAX_COOLDOWN: Duration = Duration::from_secs(1);

/// The most probes a circuit opened at the start of `down` can send during it: one per
/// cooldown, the cooldown doubling from `COOLDOWN` up to `MAX_COOLDOWN`.
fn probes_within(down: Duration) -> usize {
    let (mut elapsed, mut cooldown, mut probes) = (Duration::ZERO, COOLDOWN, 0);
    while elapsed < down {
        elapsed += cooldown;
        probes += 1;
        cooldown = (cooldown * 2).min(MAX_COOLDOWN);
    }
    probes
}

async fn circuit(gateway: &Gateway) -> String {
    let status: Value = gateway
        .client
        .get(format!("http://{}/v1/destinations", gateway.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["destinations"][0]["circuit"].as_str().unwrap_or_default().to_string()
}

/// The circuit gauge and the opened counter of `outage/crm`, parsed by the Prometheus client.
async fn circuit_metrics(gateway: &Gateway) -> (f64, f64) {
    let text =
        gateway.client.get(format!("http://{}/metrics", gateway.admin)).send().await.unwrap().text().await.unwrap();
    let parsed = crate::support::oracle::call(serde_json::json!({"op": "prometheus-parse", "text": text}));
    let value = |name: &str| {
        parsed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == name && s["labels"]["tenant"] == "outage" && s["labels"]["destination"] == "crm")
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    };
    (value("switchboard_destination_circuit_open"), value("switchboard_destination_circuit_opened_total"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_gets_probes_then_drains_at_its_rate_limit() {
    let down_for = Duration::from_secs(long_form("SWITCHBOARD_OUTAGE_SECS", 5));
    let events = long_form("SWITCHBOARD_OUTAGE_EVENTS", 1000) as usize;
    let rate = long_form("SWITCHBOARD_OUTAGE_RATE", RATE.into()) as u32;

    let crm = Receiver::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let attempts_while_down = Arc::new(AtomicUsize::new(0));
    crm.reply_with({
        let (down, attempts) = (down.clone(), attempts_while_down.clone());
        move |_, _| {
            if down.load(Ordering::SeqCst) {
                attempts.fetch_add(1, Ordering::SeqCst);
                Reply::status(503)
            } else {
                Reply::status(200)
            }
        }
    });
    let tenant = format!(
        "id = \"outage\"\n\
         [[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n\
         [[destination]]\nid = \"crm\"\nurl = \"{}\"\nmax_in_flight = {MAX_IN_FLIGHT}\n\
         rate_limit = {{ per_second = {rate}, burst = {BURST} }}\n\
         retry = {{ max_attempts = 100, initial_backoff = \"100ms\", max_backoff = \"1s\" }}\n\
         circuit_breaker = {{ failures = {FAILURES}, cooldown = \"{}ms\", max_cooldown = \"{}ms\" }}\n",
        crm.url("/crm"),
        COOLDOWN.as_millis(),
        MAX_COOLDOWN.as_millis(),
    );
    let admin = "[admin]\ntoken = { env = \"SB_ADMIN\" }\n";
    let gateway =
        Gateway::start_env("max_pending_deliveries = 1000000", admin, &[&tenant], &[("SB_ADMIN", TOKEN)]).await;

    // The outage: callbacks arrive at a steady pace for its whole length.
    let started = Instant::now();
    let mut ids = HashSet::new();
    let mut tick = tokio::time::interval(down_for / events as u32);
    let mut saw_open = false;
    for n in 0..events {
        tick.tick().await;
        ids.insert(
            gateway.accept("outage", "s", "application/json", format!("{{\"callId\":\"c{n}\"}}")).await.to_string(),
        );
        if n % 100 == 99 && !saw_open {
            saw_open = circuit(&gateway).await != "closed";
        }
    }
    let elapsed = started.elapsed();
    if elapsed < down_for {
        tokio::time::sleep(down_for - elapsed).await;
    }
    let attempts = attempts_while_down.load(Ordering::SeqCst);
    let outage = started.elapsed();
    assert!(saw_open, "the admin API never showed the circuit open during the outage");
    // The metrics say so too (the tenant's name is this test's own: the recorder is shared
    // by every in-process gateway of the test binary).
    let open = circuit_metrics(&gateway).await;
    assert_eq!(open.0, 1.0, "switchboard_destination_circuit_open while down");
    assert!(open.1 >= 1.0, "switchboard_destination_circuit_opened_total while down");
    let bound = FAILURES + MAX_IN_FLIGHT + probes_within(outage);
    assert!(
        attempts <= bound,
        "{attempts} attempts reached the destination while it was down, bound {bound} \
         ({FAILURES} to open + {MAX_IN_FLIGHT} in flight + probes)"
    );

    // Back up: the backlog drains, paced.
    // Taken before the flip, so it can only undercount what arrived while down.
    let before_up = crm.requests().len();
    let up = Instant::now();
    down.store(false, Ordering::SeqCst);
    let within = Duration::from_secs(60 + 2 * events as u64 / rate as u64);
    let got = crm
        .wait_until(within, "every event delivered after the outage", |requests| {
            // The count first: building the set on every arrival would cost the machine more
            // than the gateway's drain does.
            requests.len() >= before_up + events
                && requests
                    .iter()
                    .filter(|r| r.at >= up)
                    .filter_map(|r| r.header("webhook-id"))
                    .collect::<HashSet<_>>()
                    .len()
                    >= events
        })
        .await;
    let delivered: Vec<_> = got.iter().filter(|r| r.at >= up).collect();
    let drained = delivered.iter().map(|r| r.at).max().unwrap().duration_since(up);
    let first = delivered.iter().map(|r| r.at).min().unwrap().duration_since(up);
    let received: HashSet<&str> = delivered.iter().filter_map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| received.contains(id.as_str())), "an acknowledged event never arrived");

    // No one-second window holds more than the rate plus its burst, with room for arrivals
    // bunched by a busy machine (the receiver stamps them when it gets to run). Unpaced, the
    // same backlog arrives at thousands a second.
    let mut times: Vec<Instant> = delivered.iter().map(|r| r.at).collect();
    times.sort();
    let mut busiest = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        busiest = busiest.max(end - start + 1);
    }
    let ceiling = (rate + BURST + rate / 2) as usize;
    assert!(busiest <= ceiling, "{busiest} deliveries in one second, over the rate limit ({rate}/s, burst {BURST})");

    // The last completions are recorded just after their answers arrived.
    let settle = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = gateway.store.queue_stats().await.unwrap();
        if stored.pending == 0 || tokio::time::Instant::now() > settle {
            assert_eq!((stored.pending, stored.dead), (0, 0), "every delivery ends delivered: {stored:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(circuit(&gateway).await, "closed");
    assert_eq!(circuit_metrics(&gateway).await.0, 0.0, "switchboard_destination_circuit_open once back");
    let pace = events as f64 / drained.as_secs_f64();
    println!(
        "outage: {events} events over {:.1} s down; {attempts} attempts reached it while down (bound {bound}, \
         without a breaker each pending delivery retries on its own); back up: first delivery after {} ms, \
         {events} drained in {:.2} s ({pace:.0}/s; rate limit {rate}/s, burst {BURST}); busiest second {busiest}; \
         duplicates {}",
        outage.as_secs_f64(),
        first.as_millis(),
        drained.as_secs_f64(),
        delivered.len() - received.len(),
    );
    gateway.stop().await;
}

/// A delivery that waited past its retry deadline — here behind a pause — is dead without a
/// request when it is next claimed, and its record says it was never sent.
#[tokio::test]
async fn a_delivery_that_waited_past_its_deadline_is_dead_without_a_request() {
    let crm = Receiver::start().await;
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n\
         [[destination]]\nid = \"crm\"\nurl = \"{}\"\n\
         retry = {{ initial_backoff = \"100ms\", max_backoff = \"100ms\", deadline = \"1s\" }}\n",
        crm.url("/crm")
    );
    let admin = "[admin]\ntoken = { env = \"SB_ADMIN\" }\n";
    let gateway = Gateway::start_env("", admin, &[&tenant], &[("SB_ADMIN", TOKEN)]).await;
    let control = |action: &str| {
        gateway
            .client
            .post(format!("http://{}/v1/destinations/acme/crm/{action}", gateway.admin))
            .bearer_auth(TOKEN)
            .send()
    };
    assert_eq!(control("pause").await.unwrap().status(), 200);
    let accepted = tokio::time::Instant::now();
    let id = gateway.accept("acme", "s", "application/json", "{\"callId\":\"late\"}").await;
    // The deadline (1 s) and its grace (a tenth) pass while the destination is paused.
    tokio::time::sleep_until(accepted + Duration::from_millis(1300)).await;
    assert_eq!(control("resume").await.unwrap().status(), 200);

    let deliveries = gateway.settled(id, Duration::from_secs(10)).await;
    assert_eq!(deliveries[0].state, switchboard::store::DeliveryState::Dead);
    let error = deliveries[0].attempts[0].error.as_deref().unwrap_or_default();
    assert!(error.starts_with("not sent: the deadline of 1s passed"), "{error}");
    assert_eq!(deliveries[0].attempts[0].status, None);
    assert!(crm.requests().is_empty(), "a request went out past the deadline");
    gateway.stop().await;
}
