//! Signature schemes over the raw request: generic HMAC, Standard Webhooks (inbound and
//! the outbound signing of deliveries), Twilio and Plivo V3. Each is a small pure function
//! so it can be checked against the providers' own libraries.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::{AuthError, Inbound, NONCE_MEMORY, Replay, fail, fresh, header, until};

/// Standard Webhooks allows five minutes either way.
pub const STANDARD_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "sha512" => Self::Sha512,
            _ => return None,
        })
    }

    /// HMAC of the concatenated `parts`.
    pub fn mac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
            Self::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
            Self::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub fn decode(self, s: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex::decode(s).ok(),
            Self::Base64 => base64_decode(s),
        }
    }
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

pub fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Constant-time equality (lengths are not secret).
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A `whsec_…` secret's key bytes.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    base64_decode(secret.strip_prefix("whsec_").unwrap_or(secret))
}

/// The `v1` signatures of a `webhook-signature` header (`v1,<b64> v1,<b64> …`); other
/// versions are ignored, undecodable entries skipped.
pub fn parse_signature_header(value: &str) -> Vec<Vec<u8>> {
    value.split(' ').filter_map(|entry| entry.trim().strip_prefix("v1,")).filter_map(base64_decode).collect()
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per key, space-separated.
pub fn sign_standard(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let signed: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
    keys.iter()
        .map(|key| format!("v1,{}", base64_encode(&Algorithm::Sha256.mac(key, &signed))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Passes with the message's `webhook-id`: the spec's identity of a message, the same on
/// the sender's retries.
pub fn verify_standard(
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    keys: &[Vec<u8>],
) -> Result<Option<Replay>, AuthError> {
    let id = header(headers, &http::HeaderName::from_static("webhook-id"))?;
    let ts = header(headers, &http::HeaderName::from_static("webhook-timestamp"))?;
    let signatures = parse_signature_header(header(headers, &http::HeaderName::from_static("webhook-signature"))?);
    let at = fresh(ts, now, STANDARD_TOLERANCE)?;
    let signed: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
    let ok = keys.iter().fold(false, |ok, key| {
        let expected = Algorithm::Sha256.mac(key, &signed);
        signatures.iter().fold(false, |hit, s| equal(&expected, s) | hit) | ok
    });
    if !ok {
        return fail("no webhook-signature matches");
    }
    Ok(Some(Replay { id: format!("webhook-id:{id}"), until: until(at, STANDARD_TOLERANCE) }))
}

/// Form parameters of the body (POST) — what Twilio and Plivo sign besides the URL.
fn form_params(request: &Inbound) -> Vec<(String, String)> {
    let is_form = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if request.method == http::Method::POST && is_form {
        form_urlencoded::parse(request.body).into_owned().collect()
    } else {
        Vec::new()
    }
}

fn full_url(public_url: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{public_url}?{q}"),
        _ => public_url.to_string(),
    }
}

/// The same URL with the scheme's default port written out, or removed: Twilio signs
/// either form.
fn port_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.port().is_none() {
            if let Some(port) = parsed.port_or_known_default() {
                // `set_port` drops a default port, so build the text by hand.
                let host = parsed.host_str().unwrap_or_default().to_string();
                variants.push(url.replacen(&host, &format!("{host}:{port}"), 1));
            }
        } else if parsed.set_port(None).is_ok() {
            variants.push(parsed.to_string());
        }
    }
    variants
}

/// The reason a URL signature failed: most often the URL, not the secret, is wrong.
fn url_mismatch(header: &str, url: &str) -> String {
    format!("{header} does not match: signature computed over {url}; is public_url set to the URL the provider calls?")
}

/// Twilio: base64 HMAC-SHA1 (or SHA-256 when `X-Twilio-Webhooks-Signature-Settings` says
/// so) over the full URL followed by each POST parameter's name and value, sorted.
pub fn verify_twilio(request: &Inbound, public_url: &str, secrets: &[Arc<str>]) -> Result<(), AuthError> {
    let presented = header(request.headers, &http::HeaderName::from_static("x-twilio-signature"))?;
    let presented = base64_decode(presented.trim()).ok_or_else(|| AuthError("signature is not base64".into()))?;
    let algorithm = request
        .headers
        .get("x-twilio-webhooks-signature-settings")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("algorithm=")).map(str::to_owned));
    let algorithm = match algorithm.as_deref() {
        None | Some("HMAC_SHA1") => Algorithm::Sha1,
        Some("HMAC_SHA256") => Algorithm::Sha256,
        Some(other) => return fail(format!("unsupported Twilio signature algorithm {other}")),
    };
    let url = full_url(public_url, request.query);
    // JSON bodies are covered by a bodySHA256 query parameter instead of the parameters.
    let body_hash = form_urlencoded::parse(request.query.unwrap_or("").as_bytes()).find(|(k, _)| k == "bodySHA256");
    let params = if let Some((_, expected)) = body_hash {
        use sha2::Digest;
        let actual = hex::encode(sha2::Sha256::digest(request.body));
        if !equal(actual.as_bytes(), expected.as_bytes()) {
            return fail("bodySHA256 does not match the body");
        }
        Vec::new()
    } else {
        let mut params = form_params(request);
        params.sort();
        params.dedup();
        params
    };
    let mut ok = false;
    for variant in port_variants(&url) {
        let mut text = variant;
        for (name, value) in &params {
            text.push_str(name);
            text.push_str(value);
        }
        for secret in secrets {
            ok |= equal(&algorithm.mac(secret.as_bytes(), &[text.as_bytes()]), &presented);
        }
    }
    if ok { Ok(()) } else { fail(url_mismatch("X-Twilio-Signature", &url)) }
}

/// Plivo V3: base64 HMAC-SHA256 over `{url with sorted query}{sorted params}.{nonce}`;
/// the header may hold several comma-separated signatures.
/// Passes with the signed nonce as the message's identity.
pub fn verify_plivo_v3(request: &Inbound, public_url: &str, secrets: &[Arc<str>]) -> Result<Option<Replay>, AuthError> {
    let presented = header(request.headers, &http::HeaderName::from_static("x-plivo-signature-v3"))?;
    let nonce = header(request.headers, &http::HeaderName::from_static("x-plivo-signature-v3-nonce"))?;
    let presented: Vec<Vec<u8>> = presented.split(',').filter_map(|s| base64_decode(s.trim())).collect();
    let base = plivo_base(request.method, public_url, request.query, form_params(request));
    let signed = format!("{base}.{nonce}");
    let ok = secrets.iter().fold(false, |ok, secret| {
        let mac = Algorithm::Sha256.mac(secret.as_bytes(), &[signed.as_bytes()]);
        presented.iter().fold(false, |hit, p| equal(&mac, p) | hit) | ok
    });
    if !ok {
        return fail(url_mismatch("X-Plivo-Signature-V3", public_url));
    }
    let until = (request.now.saturating_add(NONCE_MEMORY.as_secs() as i64)).saturating_mul(1000);
    Ok(Some(Replay { id: format!("plivo-nonce:{nonce}"), until }))
}

/// `key=value&…` with keys sorted and each key's values sorted.
fn sorted_query(mut pairs: Vec<(String, String)>) -> String {
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The text Plivo signs before the nonce, as its SDK builds it.
fn plivo_base(method: &http::Method, public_url: &str, query: Option<&str>, params: Vec<(String, String)>) -> String {
    let query_pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
    if *method == http::Method::GET {
        let q = sorted_query(query_pairs);
        return if q.is_empty() { public_url.to_string() } else { format!("{public_url}?{q}") };
    }
    let q = sorted_query(query_pairs);
    let mut base = public_url.to_string();
    if !q.is_empty() || !params.is_empty() {
        base.push('?');
        base.push_str(&q);
    }
    if !q.is_empty() && !params.is_empty() {
        base.push('.');
    }
    let mut params = params;
    params.sort();
    for (k, v) in params {
        base.push_str(&k);
        base.push_str(&v);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_headers_keep_only_v1_entries() {
        let sig = base64_encode(b"abc");
        let parsed = parse_signature_header(&format!("v2,zzz v1,{sig} v1,!!notbase64 v1a,{sig}"));
        assert_eq!(parsed, vec![b"abc".to_vec()]);
        assert!(parse_signature_header("").is_empty());
    }

    #[test]
    fn sign_then_verify_standard() {
        let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign_standard(std::slice::from_ref(&key), "msg_1", 1_700_000_000, b"{}");
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", "1700000000".parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        assert!(verify_standard(&headers, b"{}", 1_700_000_100, std::slice::from_ref(&key)).is_ok());
        assert!(verify_standard(&headers, b"{ }", 1_700_000_100, std::slice::from_ref(&key)).is_err());
        assert!(verify_standard(&headers, b"{}", 1_700_000_400, &[key]).is_err());
    }

    #[test]
    fn plivo_base_follows_the_sdk() {
        let post = http::Method::POST;
        let params = vec![("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())];
        assert_eq!(plivo_base(&post, "https://x.example/cb", None, params.clone()), "https://x.example/cb?a1b2");
        assert_eq!(
            plivo_base(&post, "https://x.example/cb", Some("z=9&y=8"), params),
            "https://x.example/cb?y=8&z=9.a1b2"
        );
        assert_eq!(plivo_base(&post, "https://x.example/cb", None, vec![]), "https://x.example/cb");
        assert_eq!(
            plivo_base(&http::Method::GET, "https://x.example/cb", Some("b=2&a=1"), vec![]),
            "https://x.example/cb?a=1&b=2"
        );
    }
}
