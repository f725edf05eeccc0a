//! Deliveries over HTTPS, against the binary: the destination's certificate is verified
//! against the system's trust store (here `SSL_CERT_FILE`, which the platform verifier reads
//! on Linux), HTTP/2 is used when the destination offers it, and a destination whose
//! certificate nothing vouches for gets no request at all.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

use crate::support::gateway::{client, write_config};
use crate::support::process::Serve;

const ADMIN: &str = "admin-token-for-tls";

/// What a TLS receiver was sent.
#[derive(Debug, Clone)]
struct Got {
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver on 127.0.0.1:0 serving `cert` over TLS (ALPN h2 and http/1.1); it answers 200.
async fn tls_receiver(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> (u16, Arc<Mutex<Vec<Got>>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        seen.lock().unwrap().push(Got { version: parts.version, headers: parts.headers, body });
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_over_https_are_verified_against_the_trust_store_and_use_http2() {
    let trusted = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let unknown = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (trusted_port, trusted_got) = tls_receiver(&trusted).await;
    let (unknown_port, unknown_got) = tls_receiver(&unknown).await;

    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, trusted.cert.pem()).unwrap();
    let retry = r#"retry = { max_attempts = 2, initial_backoff = "10ms", max_backoff = "20ms" }"#;
    let tenant = format!(
        "id = \"acme\"\n[[source]]\nid = \"s\"\nprovider = \"generic\"\nauth = [{{ scheme = \"none\" }}]\n\
         [[destination]]\nid = \"trusted\"\nurl = \"https://localhost:{trusted_port}/hook\"\n{retry}\n\
         [[destination]]\nid = \"unknown\"\nurl = \"https://localhost:{unknown_port}/hook\"\n{retry}\n"
    );
    let config = write_config(dir.path(), "", "[admin]\ntoken = { env = \"SB_ADMIN\" }\n", &[&tenant]);
    let roots = roots.to_str().unwrap();
    let gateway = Serve::start_env(&config, &[("SB_ADMIN", ADMIN), ("SSL_CERT_FILE", roots)]).await;

    let http = client();
    let body = r#"{"callId":"c-tls","status":"answered"}"#;
    let response = http
        .post(gateway.hook("acme", "s"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-switchboard-event-id"].to_str().unwrap().to_string();

    let ended = |detail: &Value| detail["deliveries"].as_array().unwrap().iter().all(|d| d["state"] != "pending");
    let detail = gateway.admin_until(ADMIN, &format!("/v1/events/{id}"), "the deliveries to end", ended).await;
    let delivery = |destination: &str| {
        detail["deliveries"].as_array().unwrap().iter().find(|d| d["destination"] == destination).unwrap().clone()
    };

    assert_eq!(delivery("trusted")["state"], "delivered", "{detail:#}");
    let got = trusted_got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].version, Version::HTTP_2, "ALPN offered h2 and the delivery did not use it");
    assert_eq!(&got[0].body[..], body.as_bytes());
    assert_eq!(got[0].headers["webhook-id"], id.as_str());
    let agent = got[0].headers["user-agent"].to_str().unwrap();
    assert!(agent.starts_with("Switchboard/"), "{agent}");

    let refused = delivery("unknown");
    assert_eq!(refused["state"], "dead", "{detail:#}");
    let error = refused["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("connect: ") && error.contains("certificate"), "{detail:#}");
    assert!(unknown_got.lock().unwrap().is_empty(), "a request went to a destination nothing vouches for");
}
