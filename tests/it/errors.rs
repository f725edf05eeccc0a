//! Every refusal ingest can give, each produced for real, with its status and JSON code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Gateway, Receiver, Reply};

const TENANT: &str = "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{ scheme = \"none\" }]\n";

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status(), status, "expected {code}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().unwrap().to_string()
}

/// Sends raw bytes on a new connection and returns everything the server answers until it
/// closes the connection (bounded).
async fn raw(gateway: &Gateway, request: &[u8], hold_open: bool) -> String {
    let mut stream = TcpStream::connect(gateway.ingest).await.unwrap();
    stream.write_all(request).await.unwrap();
    if !hold_open {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn malformed_bodies_are_400_with_the_place() {
    let gateway = Gateway::start("", &[TENANT]).await;
    let m = expect_error(
        gateway.post("acme", "s", "application/json", "{\n\"a\": 1,\n\"b\": tru\n}").await,
        400,
        "malformed_body",
    )
    .await;
    assert!(m.contains("expected ident at line 4"), "{m}");
    let m = expect_error(gateway.post("acme", "s", "application/json", "[1,2]").await, 400, "malformed_body").await;
    assert!(m.contains("must be an object"), "{m}");
    expect_error(
        gateway.post("acme", "s", "application/json", vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}']).await,
        400,
        "malformed_body",
    )
    .await;
    let m = expect_error(
        gateway.post("acme", "s", "application/x-www-form-urlencoded", "a=1&b=%G1").await,
        400,
        "malformed_body",
    )
    .await;
    assert!(m.contains("byte 6"), "{m}");
    let bad_query = gateway.client.get(format!("{}?a=%", gateway.hook("acme", "s"))).send().await.unwrap();
    expect_error(bad_query, 400, "malformed_body").await;
    gateway.stop().await;
}

#[tokio::test]
async fn unknown_routes_tenants_and_sources_are_404() {
    let gateway = Gateway::start("", &[TENANT]).await;
    let post = |url: String| gateway.client.post(url).header("content-type", "application/json").body("{}").send();
    // Tenant enumeration: an unknown tenant and a known tenant's unknown source are answered
    // byte for byte alike.
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let mut headers: Vec<String> =
            r.headers().iter().filter(|(n, _)| *n != "date").map(|(n, v)| format!("{n}: {v:?}")).collect();
        headers.sort();
        (status, headers, r.bytes().await.unwrap())
    };
    let unknown_tenant = answer(post(gateway.hook("nobody", "s")).await.unwrap()).await;
    let unknown_source = answer(post(gateway.hook("acme", "nothing")).await.unwrap()).await;
    assert_eq!(unknown_tenant, unknown_source);
    expect_error(post(gateway.hook("nobody", "s")).await.unwrap(), 404, "unknown_hook").await;
    expect_error(post(format!("http://{}/v1/hooks/acme", gateway.ingest)).await.unwrap(), 404, "not_found").await;
    expect_error(post(format!("http://{}/v1/hooks/acme/s/extra", gateway.ingest)).await.unwrap(), 404, "not_found")
        .await;
    gateway.stop().await;
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let gateway = Gateway::start("", &[TENANT]).await;
    for method in [reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH] {
        let response = gateway.client.request(method, gateway.hook("acme", "s")).send().await.unwrap();
        assert_eq!(response.headers()["allow"], "GET, POST");
        expect_error(response, 405, "method_not_allowed").await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn unsupported_content_types_are_415() {
    let gateway = Gateway::start("", &[TENANT]).await;
    expect_error(gateway.post("acme", "s", "text/plain", "hello").await, 415, "unsupported_media_type").await;
    expect_error(gateway.post("acme", "s", "application/xml", "<a/>").await, 415, "unsupported_media_type").await;
    let no_type = gateway.client.post(gateway.hook("acme", "s")).body("{}").send().await.unwrap();
    expect_error(no_type, 415, "unsupported_media_type").await;
    gateway.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_declared_or_streamed() {
    let gateway = Gateway::start("max_body_bytes = 1024", &[TENANT]).await;
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(2000));
    expect_error(gateway.post("acme", "s", "application/json", big).await, 413, "payload_too_large").await;

    // Chunked, so the size is only known while streaming: refused once past the limit,
    // without reading the rest.
    let mut request = b"POST /v1/hooks/acme/s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        request.extend_from_slice(format!("200\r\n{}\r\n", "x".repeat(512)).as_bytes());
    }
    let answer = raw(&gateway, &request, true).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");

    // At the limit is fine.
    let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(1024 - 8));
    assert_eq!(gateway.post("acme", "s", "application/json", fits).await.status(), 200);
    gateway.stop().await;
}

#[tokio::test]
async fn backlog_past_its_bound_is_503_with_retry_after() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, _| Reply::status(500));
    let tenant = format!(
        "{TENANT}[[destination]]\nid = \"down\"\nurl = \"{}\"\nretry = {{ initial_backoff = \"1h\", max_backoff = \"1h\" }}\n",
        receiver.url("/")
    );
    let gateway = Gateway::start("max_pending_deliveries = 3", &[&tenant]).await;
    for _ in 0..3 {
        assert_eq!(gateway.post("acme", "s", "application/json", "{}").await.status(), 200);
    }
    let refused = gateway.post("acme", "s", "application/json", "{}").await;
    assert_eq!(refused.headers()["retry-after"], "1");
    expect_error(refused, 503, "backlog_full").await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_store_that_cannot_commit_is_503_and_nothing_is_acknowledged() {
    let receiver = Receiver::start().await;
    receiver.reply_with(|_, _| Reply::status(500));
    let tenant = format!(
        "{TENANT}[[destination]]\nid = \"down\"\nurl = \"{}\"\nretry = {{ initial_backoff = \"1h\", max_backoff = \"1h\" }}\n",
        receiver.url("/")
    );
    let gateway = Gateway::start_with("", "max_size_bytes = 262144", &[&tenant]).await;
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(16_000));
    let mut acknowledged = Vec::new();
    let refused = loop {
        let response = gateway.post("acme", "s", "application/json", body.clone()).await;
        if response.status() != 200 {
            break response;
        }
        acknowledged.push(response.headers()["x-switchboard-event-id"].to_str().unwrap().parse().unwrap());
        assert!(acknowledged.len() < 100, "the store never filled up");
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let message = expect_error(refused, 503, "store_unavailable").await;
    assert!(!message.contains("sqlite"), "internals leaked: {message}");
    // A node that cannot store events says so to its load balancer.
    let ready = gateway.client.get(format!("http://{}/readyz", gateway.admin)).send().await.unwrap();
    expect_error(ready, 503, "not_ready").await;
    // Everything acknowledged is in the store.
    assert!(!acknowledged.is_empty(), "the store filled before anything was acknowledged");
    for id in acknowledged {
        assert_eq!(gateway.store.deliveries_of(id).await.unwrap().len(), 1);
    }
    gateway.stop().await;
}

/// The store fills while a destination is down; when it is back, its backlog is delivered
/// (the store keeps room for recording that), retention purges it, and ingest accepts again
/// by itself: no restart, nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_recovers_by_itself_once_space_returns() {
    let receiver = Receiver::start().await;
    let down = Arc::new(AtomicBool::new(true));
    receiver.reply_with({
        let down = down.clone();
        // Back up, it answers with a page (1 KiB kept per attempt): recording that needs room.
        move |_, _| match down.load(Ordering::SeqCst) {
            true => Reply::status(500).body(""),
            false => Reply::status(200).body("x".repeat(4096)),
        }
    });
    let tenant = format!(
        "{TENANT}[[destination]]\nid = \"crm\"\nurl = \"{}\"\ncircuit_breaker = {{ failures = 0 }}\n\
         retry = {{ max_attempts = 1000, initial_backoff = \"200ms\", max_backoff = \"200ms\" }}\n",
        receiver.url("/")
    );
    let gateway = Gateway::start_with("", "max_size_bytes = 1048576\nretention = \"1s\"", &[&tenant]).await;
    let body = |n: usize| format!("{{\"callId\":\"c{n}\",\"pad\":\"{}\"}}", "x".repeat(200));
    let mut acknowledged = Vec::new();
    loop {
        let response = gateway.post("acme", "s", "application/json", body(acknowledged.len())).await;
        if response.status() != 200 {
            expect_error(response, 503, "store_unavailable").await;
            break;
        }
        acknowledged.push(response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string());
        assert!(acknowledged.len() < 20_000, "the store never filled up");
    }
    // Full stays full while nothing drains: refused, not acknowledged, and not ready.
    for _ in 0..3 {
        expect_error(gateway.post("acme", "s", "application/json", body(0)).await, 503, "store_unavailable").await;
    }
    let readyz = format!("http://{}/readyz", gateway.admin);
    expect_error(gateway.client.get(&readyz).send().await.unwrap(), 503, "not_ready").await;

    down.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = gateway.post("acme", "s", "application/json", body(acknowledged.len())).await;
        if response.status() == 200 {
            // Accepted after recovery: it must be delivered like the backlog.
            acknowledged.push(response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string());
            break;
        }
        expect_error(response, 503, "store_unavailable").await;
        assert!(tokio::time::Instant::now() < deadline, "ingest still refused 30 s after the destination came back");
        // Each turn is a real callback, as a provider retrying would send.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver
        .wait_until(Duration::from_secs(30), "every acknowledged event delivered", |requests| {
            let seen: std::collections::HashSet<_> = requests.iter().filter_map(|r| r.header("webhook-id")).collect();
            acknowledged.iter().all(|id| seen.contains(id.as_str()))
        })
        .await;
    // Retention (1 s) purges the delivered backlog: that is what made room. The oldest of
    // it, delivered first, must be gone from the store.
    let oldest: Vec<uuid::Uuid> = acknowledged.iter().take(10).map(|id| id.parse().unwrap()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut kept = Vec::new();
        for &id in &oldest {
            if !gateway.store.deliveries_of(id).await.unwrap().is_empty() {
                kept.push(id);
            }
        }
        if kept.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "retention never purged the delivered backlog: {kept:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ready again once retention has made room below the ceiling.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gateway.client.get(&readyz).send().await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready 30 s after the backlog drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.stop().await;
}

/// A tmpfs of a few MB, mounted for one test, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={megabytes}m");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted
            && crate::support::skip::unavailable(
                "mount",
                "cannot mount a tmpfs (the disk-full tests need root or CAP_SYS_ADMIN)",
                "Run the tests as root",
            )
        {
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A real disk that fills up (not the configured size limit): the commit fails with
/// SQLITE_FULL, ingest answers 503, /readyz says not ready so the load balancer moves
/// providers elsewhere, and both recover by themselves once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_node_not_ready_until_space_returns() {
    let Some(disk) = SmallDisk::mount(8) else { return };
    let db = disk.0.path().join("switchboard.db");
    let gateway = Gateway::start_with("", &format!("url = \"sqlite://{}\"", db.display()), &[TENANT]).await;
    let readyz = format!("http://{}/readyz", gateway.admin);
    assert_eq!(gateway.client.get(&readyz).send().await.unwrap().status(), 200);
    // Fill the disk with something else, as another process on the volume would.
    let filler = disk.0.path().join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(60_000));
    let mut accepted = 0;
    loop {
        let response = gateway.post("acme", "s", "application/json", body.clone()).await;
        if response.status() != 200 {
            expect_error(response, 503, "store_unavailable").await;
            break;
        }
        accepted += 1;
        assert!(accepted < 1000, "the disk never filled up");
    }
    expect_error(gateway.client.get(&readyz).send().await.unwrap(), 503, "not_ready").await;

    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gateway.client.get(&readyz).send().await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready 30 s after space returned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gateway.post("acme", "s", "application/json", body).await.status(), 200);
    gateway.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    // The idle timeout is far away: whatever closes these connections is the header and
    // body timers.
    let gateway = Gateway::start(
        "header_read_timeout = \"300ms\"\nbody_read_timeout = \"300ms\"\nidle_timeout = \"60s\"",
        &[TENANT],
    )
    .await;
    // Headers that never finish: 408 (or a bare close) at the header timeout.
    let started = std::time::Instant::now();
    let answer = raw(&gateway, b"POST /v1/hooks/acme/s HTTP/1.1\r\nhost: x\r\n", true).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    // A body that never arrives: 408.
    let answer = raw(
        &gateway,
        b"POST /v1/hooks/acme/s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        true,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // A connection that sends nothing at all is closed too, at the header timeout.
    let started = std::time::Instant::now();
    let answer = raw(&gateway, b"", true).await;
    assert_eq!(answer, "");
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    gateway.stop().await;
}
