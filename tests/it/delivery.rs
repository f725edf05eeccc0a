//! Delivery semantics: only 200 and 202 succeed; everything else is retried with backoff
//! until dead, except what `on_status` says means more (410 pauses the destination; 400,
//! 413, 422 are dead at once); Retry-After is honoured; webhook-id is stable across
//! attempts; destinations are isolated from each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard::store::DeliveryState;

use crate::support::{Gateway, Receiver, Reply};

const FAST_RETRY: &str = r#"retry = { max_attempts = 3, initial_backoff = "10ms", max_backoff = "20ms" }"#;

fn destination(id: &str, url: &str, extra: &str) -> String {
    format!("[[destination]]\nid = \"{id}\"\nurl = \"{url}\"\ntimeout = \"300ms\"\n{FAST_RETRY}\n{extra}\n")
}

#[tokio::test]
async fn only_200_and_202_succeed_everything_else_is_retried_until_dead() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|request, _| match request.path() {
        "/slow" => Reply::status(200).after(Duration::from_secs(2)),
        path => Reply::status(path.trim_start_matches("/s").parse().unwrap()),
    });
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let codes = [200, 202, 201, 204, 301, 404, 500, 503];
    let mut tenant =
        String::from("id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{ scheme = \"none\" }]\n");
    for code in codes {
        tenant += &destination(&format!("s{code}"), &receiver.url(&format!("/s{code}")), "");
    }
    tenant += &destination("slow", &receiver.url("/slow"), "");
    tenant += &destination("refused", &format!("http://{refused}/hook"), "");
    let gateway = Gateway::start("", &[&tenant]).await;

    let id = gateway.accept("acme", "s", "application/json", r#"{"callId":"c1"}"#).await;
    let deliveries = gateway.settled(id, Duration::from_secs(20)).await;
    assert_eq!(deliveries.len(), codes.len() + 2);
    for d in &deliveries {
        let statuses: Vec<Option<u16>> = d.attempts.iter().map(|a| a.status).collect();
        match d.destination.as_str() {
            "s200" | "s202" => {
                assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
                assert_eq!(d.attempts.len(), 1);
            }
            "slow" => {
                assert_eq!(d.state, DeliveryState::Dead);
                assert!(d.attempts.iter().all(|a| a.error.as_deref() == Some("timeout")), "{d:?}");
                assert_eq!(d.attempts.len(), 3);
            }
            "refused" => {
                assert_eq!(d.state, DeliveryState::Dead);
                assert_eq!(d.attempts.len(), 3);
                assert!(d.attempts.iter().all(|a| a.error.as_deref().unwrap().starts_with("connect")), "{d:?}");
            }
            other => {
                let code: u16 = other[1..].parse().unwrap();
                assert_eq!(d.state, DeliveryState::Dead, "{other} must not count as delivered");
                assert_eq!(statuses, vec![Some(code); 3], "{other}");
                assert!(d.last_error.as_deref().unwrap().contains("gave up after 3 attempts"), "{d:?}");
                if code != 204 {
                    assert_eq!(d.attempts[0].response_prefix, br#"{"ok":true}"#, "{other}");
                }
            }
        }
    }
    // Every attempt of the event carried the same webhook-id, numbered 1, 2, 3.
    let requests = receiver.requests();
    for code in [201, 204, 301, 404, 500, 503] {
        let path = format!("/s{code}");
        let attempts: Vec<_> = requests.iter().filter(|r| r.path() == path).collect();
        assert_eq!(attempts.len(), 3, "{path}");
        for (n, r) in attempts.iter().enumerate() {
            assert_eq!(r.header("webhook-id"), Some(id.to_string().as_str()));
            assert_eq!(r.header("x-switchboard-attempt"), Some((n + 1).to_string().as_str()));
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn retry_after_on_429_and_503_is_waited_for() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|request, before| match (request.path(), before) {
        ("/limited", 0) => Reply::status(429).header("retry-after", "1"),
        ("/unavailable", 0) => {
            let at = std::time::SystemTime::now() + Duration::from_secs(2);
            Reply::status(503).header("retry-after", httpdate::fmt_http_date(at))
        }
        _ => Reply::status(200),
    });
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{}{}",
        destination("limited", &receiver.url("/limited"), ""),
        destination("unavailable", &receiver.url("/unavailable"), ""),
    )
    // Retry-After is capped at max_backoff: leave room for it.
    .replace("max_backoff = \"20ms\"", "max_backoff = \"10s\"");
    let gateway = Gateway::start("", &[&tenant]).await;
    let id = gateway.accept("acme", "s", "application/json", "{}").await;
    let deliveries = gateway.settled(id, Duration::from_secs(15)).await;
    assert_eq!(deliveries.len(), 2, "{deliveries:#?}");
    assert!(deliveries.iter().all(|d| d.state == DeliveryState::Delivered), "{deliveries:#?}");
    let requests = receiver.requests();
    for path in ["/limited", "/unavailable"] {
        let at: Vec<_> = requests.iter().filter(|r| r.path() == path).map(|r| r.at).collect();
        assert_eq!(at.len(), 2, "{path}");
        let waited = at[1] - at[0];
        // Without Retry-After the backoff would be 10–20 ms.
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{path} waited {waited:?}: {deliveries:#?}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_destination_never_has_more_than_max_in_flight_attempts_at_once() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, _| Reply::status(200).after(Duration::from_millis(100)));
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{}",
        destination("crm", &receiver.url("/crm"), "max_in_flight = 2")
            .replace("timeout = \"300ms\"", "timeout = \"5s\""),
    );
    let gateway = Gateway::start("", &[&tenant]).await;
    for i in 0..8 {
        gateway.accept("acme", "s", "application/json", format!("{{\"n\":{i}}}")).await;
    }
    receiver.wait_until(Duration::from_secs(10), "8 deliveries", |r| r.len() == 8).await;
    assert_eq!(receiver.max_concurrent(), 2);
    gateway.stop().await;
}

/// Six destinations on one host, 64 requests each at once, in two bursts: the second goes
/// out on the connections the first opened. With the idle pool capped at 256 per host, the
/// first burst's connections past 256 were closed as they went idle and the second burst
/// opened them again (a quarter of all requests opened a connection at 50 destinations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_one_host_are_reused_however_many_destinations_share_it() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, _| Reply::status(200).after(Duration::from_millis(400)));
    let destinations: String = (1..=6)
        .map(|i| {
            destination(&format!("d{i}"), &receiver.url(&format!("/d{i}")), "max_in_flight = 64")
                .replace("timeout = \"300ms\"", "timeout = \"5s\"")
        })
        .collect();
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{destinations}"
    );
    let gateway = Arc::new(Gateway::start("", &[&tenant]).await);
    let burst = |round: usize| {
        let senders: Vec<_> = (0..64)
            .map(|n| {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    gateway.accept("acme", "s", "application/json", format!("{{\"n\":{}}}", round * 100 + n)).await;
                })
            })
            .collect();
        async move {
            for sender in senders {
                sender.await.unwrap();
            }
        }
    };
    burst(0).await;
    let first = receiver.wait_until(Duration::from_secs(30), "the first burst", |r| r.len() == 384).await;
    // Two more bursts; by the third, the pool holds as many connections as were ever busy at
    // once, so it needs next to none (it may need a few if more requests overlap than before).
    let mut opened: std::collections::HashSet<_> = first.iter().map(|r| r.peer).collect();
    burst(1).await;
    let two = receiver.wait_until(Duration::from_secs(30), "the second burst", |r| r.len() == 768).await;
    opened.extend(two.iter().map(|r| r.peer));
    burst(2).await;
    let all = receiver.wait_until(Duration::from_secs(30), "the third burst", |r| r.len() == 1152).await;
    let new: std::collections::HashSet<_> = all[768..].iter().map(|r| r.peer).filter(|p| !opened.contains(p)).collect();
    assert!(
        new.len() < 64,
        "the third burst opened {} new connections beside the {} before: idle ones were closed",
        new.len(),
        opened.len()
    );
    let most_at_once = receiver.max_concurrent();
    assert!(most_at_once > 256, "the test needs more requests at once than the old cap: {most_at_once}");
    Arc::try_unwrap(gateway).ok().expect("senders are done").stop().await;
}

#[tokio::test]
async fn a_stuck_destination_does_not_delay_a_healthy_one() {
    let (stuck, healthy) = (Receiver::start().await, Receiver::start().await);
    // Counted on arrival: the stuck receiver records a request only once answered, 20 s on.
    let arrived = Arc::new(AtomicUsize::new(0));
    stuck.reply_with({
        let arrived = arrived.clone();
        move |_, _| {
            arrived.fetch_add(1, Ordering::SeqCst);
            Reply::status(200).after(Duration::from_secs(20))
        }
    });
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{}{}",
        destination("stuck", &stuck.url("/"), "max_in_flight = 1").replace("300ms", "30s"),
        destination("healthy", &healthy.url("/"), ""),
    );
    let gateway = Gateway::start("drain_timeout = \"200ms\"", &[&tenant]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(gateway.accept("acme", "s", "application/json", format!("{{\"n\":{i}}}")).await);
    }
    // The stuck destination has its first request in hand...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while arrived.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stuck destination never got its request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and the healthy one gets everything meanwhile.
    healthy.wait_until(Duration::from_secs(5), "all 5 at the healthy destination", |r| r.len() == 5).await;
    // Still stuck on that one request (its slot is its only one), the rest waiting their turn.
    assert_eq!(arrived.load(Ordering::SeqCst), 1, "max_in_flight = 1");
    assert_eq!(stuck.max_concurrent(), 1);
    for id in ids {
        // The receiver counts a request as it answers; the outcome is recorded just after.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let deliveries = loop {
            let deliveries = gateway.store.deliveries_of(id).await.unwrap();
            let healthy = deliveries.iter().find(|d| d.destination == "healthy").map(|d| d.state);
            if healthy == Some(DeliveryState::Delivered) || tokio::time::Instant::now() >= deadline {
                break deliveries;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let state = |destination: &str| deliveries.iter().find(|d| d.destination == destination).map(|d| d.state);
        assert_eq!(state("healthy"), Some(DeliveryState::Delivered), "{deliveries:#?}");
        assert_eq!(state("stuck"), Some(DeliveryState::Pending), "{deliveries:#?}");
    }
    gateway.stop().await;
}

/// Answers that mean more than "retry": 410 pauses the destination (stored, visible, not
/// hammered) and its deliveries wait for the resume; 422 is dead at once; `on_status`
/// overrides per destination; a redirect is recorded with where it pointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_mean_something_pause_kill_or_retry() {
    const TOKEN: &str = "admin-token-on-status";
    let receiver = Receiver::start().await;
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(true));
    receiver.reply_with({
        let gone = gone.clone();
        move |request, _| match request.path() {
            "/gone" if gone.load(Ordering::SeqCst) => Reply::status(410),
            "/unprocessable" => Reply::status(422),
            "/unauthorized" => Reply::status(401),
            "/moved" => Reply::status(302).header("location", "https://crm.example/new-hook"),
            _ => Reply::status(200),
        }
    });
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{}{}{}{}{}",
        destination("gone", &receiver.url("/gone"), ""),
        destination("unprocessable", &receiver.url("/unprocessable"), ""),
        destination("unauthorized", &receiver.url("/unauthorized"), "on_status = { 401 = \"dead\" }"),
        // Its failures would otherwise open its circuit and slow the test's later events.
        destination("moved", &receiver.url("/moved"), "circuit_breaker = { failures = 0 }"),
        destination("healthy", &receiver.url("/healthy"), ""),
    );
    let admin = "[admin]\ntoken = { env = \"SB_ADMIN\" }\n";
    let gateway = Gateway::start_env("", admin, &[&tenant], &[("SB_ADMIN", TOKEN)]).await;
    let first = gateway.accept("acme", "s", "application/json", r#"{"n":0}"#).await;
    // The first 410 pauses the destination, durably.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gateway.store.paused().await.unwrap().contains(&("acme".to_string(), "gone".to_string())) {
        assert!(tokio::time::Instant::now() < deadline, "a 410 did not pause the destination");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = vec![first];
    for n in 1..4 {
        ids.push(gateway.accept("acme", "s", "application/json", format!("{{\"n\":{n}}}")).await);
    }
    // The healthy destination got all four: anything sent to the paused one would be in by now.
    receiver
        .wait_until(Duration::from_secs(10), "four at the healthy destination", |r| {
            r.iter().filter(|c| c.path() == "/healthy").count() == 4
        })
        .await;
    let settled = |name: &'static str| {
        let store = gateway.store.clone();
        let id = first;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let d = store.deliveries_of(id).await.unwrap().into_iter().find(|d| d.destination == name).unwrap();
                if d.state != DeliveryState::Pending {
                    return d;
                }
                assert!(tokio::time::Instant::now() < deadline, "{name} not settled: {d:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let unprocessable = settled("unprocessable").await;
    assert_eq!((unprocessable.state, unprocessable.attempts.len()), (DeliveryState::Dead, 1), "{unprocessable:?}");
    assert!(unprocessable.last_error.as_deref().unwrap().contains("on_status says dead"), "{unprocessable:?}");
    let unauthorized = settled("unauthorized").await;
    assert_eq!((unauthorized.state, unauthorized.attempts.len()), (DeliveryState::Dead, 1), "override: 401 is dead");
    let moved = settled("moved").await;
    assert_eq!(moved.attempts[0].status, Some(302));
    assert_eq!(moved.attempts[0].error.as_deref(), Some("redirect not followed: https://crm.example/new-hook"));
    assert_eq!(moved.attempts.len(), 3, "a redirect is retried like any failure");

    let gone_requests = receiver.requests().iter().filter(|c| c.path() == "/gone").count();
    assert_eq!(gone_requests, 1, "a paused destination is not hammered");
    for id in &ids {
        let d = gateway.store.deliveries_of(*id).await.unwrap().into_iter().find(|d| d.destination == "gone").unwrap();
        assert_eq!(d.state, DeliveryState::Pending, "kept for the resume: {d:?}");
    }

    // Fixed and resumed by API: every waiting delivery goes out.
    gone.store(false, Ordering::SeqCst);
    let resumed = gateway
        .client
        .post(format!("http://{}/v1/destinations/acme/gone/resume", gateway.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    receiver
        .wait_until(Duration::from_secs(10), "the four after the resume", |r| {
            r.iter().filter(|c| c.path() == "/gone").count() == 5
        })
        .await;
    for id in ids {
        let d = gateway.settled(id, Duration::from_secs(10)).await;
        let gone = d.iter().find(|d| d.destination == "gone").unwrap();
        assert_eq!(gone.state, DeliveryState::Delivered, "{gone:?}");
    }
    gateway.stop().await;
}

/// A 429 slows the whole destination down, not just the delivery that got it: the spacing
/// between its requests grows while it says "too much", and shrinks back to full speed
/// once it copes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_slows_the_destination_then_it_recovers() {
    let receiver = Receiver::start().await;
    let seen = Arc::new(AtomicUsize::new(0));
    receiver.reply_with({
        let seen = seen.clone();
        // The first six requests are told to back off, whatever delivery they carry.
        move |_, _| if seen.fetch_add(1, Ordering::SeqCst) < 6 { Reply::status(429) } else { Reply::status(200) }
    });
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n{}",
        destination("crm", &receiver.url("/crm"), "max_in_flight = 4\ncircuit_breaker = { failures = 0 }")
            .replace("max_attempts = 3", "max_attempts = 20"),
    );
    let gateway = Gateway::start("", &[&tenant]).await;
    const EVENTS: usize = 40;
    for n in 0..EVENTS {
        gateway.accept("acme", "s", "application/json", format!("{{\"n\":{n}}}")).await;
    }
    let got = receiver.wait_until(Duration::from_secs(30), "every event delivered", |r| r.len() == EVENTS + 6).await;
    let mut at: Vec<_> = got.iter().map(|r| r.at).collect();
    at.sort();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let widest = *gaps.iter().max().unwrap();
    let tail: Duration = gaps[gaps.len() - 5..].iter().sum();
    eprintln!("widest gap {widest:?}; last five gaps {tail:?} in all; whole run {:?}", at[at.len() - 1] - at[0]);
    // Without the slowdown every request of this run is a few ms apart (10–20 ms backoff).
    assert!(widest >= Duration::from_millis(400), "the destination was not slowed: widest gap {widest:?}");
    assert!(tail < Duration::from_millis(100), "it never got back to full speed: last five gaps {tail:?}");
    gateway.stop().await;
}
