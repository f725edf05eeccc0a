//! Tenants are isolated: one tenant's callbacks never reach another's destinations, a
//! template cannot read another tenant's secrets, and no secret ever appears in the logs.

use std::time::Duration;

use crate::support::gateway::{client, write_config};
use crate::support::process::Serve;
use crate::support::{Gateway, Receiver, seed};

fn tenant(id: &str, receiver: &Receiver, extra: &str) -> String {
    format!(
        "id = \"{id}\"\n{extra}\n[[source]]\nid = \"telecmi\"\nprovider = \"telecmi\"\nauth = [{{ scheme = \"none\" }}]\n[[destination]]\nid = \"crm\"\nurl = \"{}\"\n",
        receiver.url(&format!("/{id}"))
    )
}

#[tokio::test]
async fn a_tenants_callbacks_reach_only_its_own_destinations() {
    let receiver = Receiver::start().await;
    let gateway = Gateway::start("", &[&tenant("acme", &receiver, ""), &tenant("globex", &receiver, "")]).await;
    // Whatever the body says about tenants, the path decides.
    let body = String::from_utf8(seed("telecmi.json")).unwrap().replace("\"type\"", "\"tenant\": \"globex\", \"type\"");
    let mut acme = Vec::new();
    for _ in 0..3 {
        acme.push(gateway.accept("acme", "telecmi", "application/json", body.clone()).await);
    }
    assert!(acme.iter().all(|id| *id == acme[0]), "the three acme callbacks were one call, deduplicated: {acme:?}");
    // Sent raw: an HTTP client would resolve the `..` itself before sending.
    for path in ["/v1/hooks/acme/../globex/telecmi", "/v1/hooks/acme%2Fglobex/telecmi", "/v1/hooks/globex%2f/telecmi"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(gateway.ingest).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }
    // The one acme event has one delivery, to acme's own destination, and it is done.
    let deliveries = gateway.settled(acme[0], Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    assert_eq!((deliveries[0].tenant.as_str(), deliveries[0].destination.as_str()), ("acme", "crm"));
    assert_eq!(deliveries[0].state, switchboard::store::DeliveryState::Delivered, "{deliveries:#?}");
    // A globex event, likewise settled: each tenant's receiver got its own event only.
    let globex = gateway.accept("globex", "telecmi", "application/json", seed("telecmi.json")).await;
    assert_ne!(globex, acme[0]);
    let deliveries = gateway.settled(globex, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    assert_eq!((deliveries[0].tenant.as_str(), deliveries[0].destination.as_str()), ("globex", "crm"));
    let requests = receiver.requests();
    let at = |path: &str| -> Vec<Option<&str>> {
        requests.iter().filter(|c| c.path() == path).map(|c| c.header("webhook-id")).collect()
    };
    assert_eq!(at("/acme"), [Some(acme[0].to_string().as_str())], "{requests:?}");
    assert_eq!(at("/globex"), [Some(globex.to_string().as_str())], "{requests:?}");
    gateway.stop().await;
}

#[test]
fn a_template_cannot_read_another_tenants_secret() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_url = "http://127.0.0.1:9/x";
    let globex = "id = \"globex\"\n[secrets]\ngkey = { env = \"GLOBEX_KEY\" }\n";
    let acme = format!(
        "id = \"acme\"\n[[destination]]\nid = \"crm\"\nurl = \"{receiver_url}\"\nheaders = {{ Authorization = \"Bearer <<secret.gkey>>\" }}\n"
    );
    let config = write_config(dir.path(), "", "", &[&acme, globex]);
    let errors =
        switchboard::config::load_with_env(&config, &|_| Some("globex-secret".into())).unwrap_err().to_string();
    assert!(errors.contains("secret `gkey` is not declared in the tenant's [secrets]"), "{errors}");
}

#[tokio::test]
async fn no_secret_appears_in_any_log_line() {
    let receiver = Receiver::start().await;
    const SECRETS: [&str; 3] = ["tok-SECRET-4471", "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTk5MTI=", "hdr-SECRET-8812"];
    let tenant = format!(
        r#"id = "acme"
[secrets]
token = {{ env = "T_TOKEN" }}
signing = {{ env = "T_SIGNING" }}
crm = {{ env = "T_CRM" }}
[[source]]
id = "telecmi"
provider = "telecmi"
auth = [{{ scheme = "token", header = "authorization", prefix = "Bearer ", secret = "token" }}]
[[destination]]
id = "crm"
url = "{}"
signing_secret = "signing"
headers = {{ Authorization = "Bearer <<secret.crm>>" }}
retry = {{ max_attempts = 2, initial_backoff = "10ms", max_backoff = "20ms" }}
"#,
        receiver.url("/crm")
    );
    receiver.reply_with(|_, before| crate::support::Reply::status(if before == 0 { 500 } else { 200 }));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", "", &[&tenant]);
    let env = [("T_TOKEN", SECRETS[0]), ("T_SIGNING", SECRETS[1]), ("T_CRM", SECRETS[2]), ("RUST_LOG", "debug")];
    let gateway = Serve::start_env(&config, &env).await;
    let http = client();
    for token in [SECRETS[0], "wrong-token", "tok-SECRET-447"] {
        http.post(gateway.hook("acme", "telecmi"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(seed("telecmi.json"))
            .send()
            .await
            .unwrap();
    }
    receiver.wait_until(Duration::from_secs(10), "the retried delivery", |r| r.len() == 2).await;
    // The delivery carried the secrets where they belong…
    assert_eq!(receiver.requests()[0].header("authorization"), Some(format!("Bearer {}", SECRETS[2]).as_str()));
    // …and the log, at debug level, holds none of them.
    let log = gateway.log();
    assert!(log.contains("callback unauthorized"), "the refusals were logged: {log}");
    for secret in SECRETS {
        assert!(!log.contains(secret), "secret {secret} in the log");
    }
    assert!(!log.contains("tok-SECRET"), "a presented token must not be logged either");
}
