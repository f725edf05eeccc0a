//! Vonage signed webhooks: `Authorization: Bearer <JWT>`, HS256 under the account's
//! signature secret. The token's `payload_hash` claim is the SHA-256 (hex) of the body, so
//! a body swapped under a valid token fails; `iat` bounds how long a captured request
//! passes, and `jti` names the message for replay detection.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

use super::signatures::{Algorithm, equal};
use super::{AuthError, Inbound, Replay, fail, header, until};

pub fn verify(request: &Inbound, secrets: &[Arc<str>], tolerance: Duration) -> Result<Option<Replay>, AuthError> {
    let value = header(request.headers, &http::header::AUTHORIZATION)?;
    let token = value.strip_prefix("Bearer ").ok_or_else(|| AuthError("Authorization is not a Bearer token".into()))?;
    let mut parts = token.trim().split('.');
    let (Some(head), Some(claims), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail("the Bearer token is not a JWT");
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| AuthError(format!("JWT {what} is not base64url")))
    };
    let header_json: serde_json::Value =
        serde_json::from_slice(&decode(head, "header")?).map_err(|_| AuthError("JWT header is not JSON".into()))?;
    // The algorithm is fixed: a token naming another (or `none`) is refused, never obeyed.
    if header_json.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return fail("JWT alg is not HS256");
    }
    let signature = decode(signature, "signature")?;
    let signed = &token.trim()[..head.len() + 1 + claims.len()];
    let ok = secrets.iter().fold(false, |ok, secret| {
        equal(&Algorithm::Sha256.mac(secret.as_bytes(), &[signed.as_bytes()]), &signature) | ok
    });
    if !ok {
        return fail("the Vonage JWT signature does not match");
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(claims, "claims")?).map_err(|_| AuthError("JWT claims are not JSON".into()))?;
    let iat = claims.get("iat").and_then(|v| v.as_i64()).ok_or_else(|| AuthError("JWT has no iat".into()))?;
    if (request.now - iat).unsigned_abs() > tolerance.as_secs() {
        return fail(format!("JWT iat {iat} is outside the {}s tolerance", tolerance.as_secs()));
    }
    match claims.get("payload_hash").and_then(|v| v.as_str()) {
        Some(expected) => {
            let actual = hex::encode(sha2::Sha256::digest(request.body));
            if !equal(actual.as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
                return fail("JWT payload_hash does not match the body");
            }
        }
        // Without the hash the token vouches for the caller, not for the body.
        None if !request.body.is_empty() => return fail("JWT has no payload_hash for the body"),
        None => {}
    }
    let id = claims.get("jti").and_then(|v| v.as_str()).map(str::to_owned);
    Ok(id.map(|jti| Replay { id: format!("vonage:{jti}"), until: until(iat, tolerance) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "vonage-signature-secret";

    fn token(header: &str, claims: serde_json::Value, secret: &str) -> String {
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mac = Algorithm::Sha256.mac(secret.as_bytes(), &[signed.as_bytes()]);
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    fn check(token: &str, body: &[u8]) -> Result<Option<Replay>, AuthError> {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let request = Inbound {
            method: &http::Method::POST,
            query: None,
            headers: &headers,
            body,
            client: std::net::IpAddr::from([127, 0, 0, 1]),
            now: 1_700_000_000,
            url: None,
        };
        verify(&request, &[Arc::from(SECRET)], Duration::from_secs(300))
    }

    #[test]
    fn the_token_vouches_for_the_body_and_nothing_else() {
        let body = br#"{"status":"completed"}"#;
        let hash = hex::encode(sha2::Sha256::digest(body));
        let claims = serde_json::json!({"iat": 1_700_000_000, "jti": "j1", "payload_hash": hash});
        let good = token(r#"{"alg":"HS256","typ":"JWT"}"#, claims.clone(), SECRET);
        assert_eq!(check(&good, body).unwrap().unwrap().id, "vonage:j1");
        assert!(check(&good, br#"{"status":"answered"}"#).is_err(), "another body under the token");
        assert!(check(&token(r#"{"alg":"HS256"}"#, claims.clone(), "other"), body).is_err(), "another secret");
        // `alg` is not obeyed: `none` with no signature, or another algorithm, is refused.
        let unsigned =
            format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()));
        assert!(check(&unsigned, body).is_err());
        assert!(check(&token(r#"{"alg":"HS512"}"#, claims, SECRET), body).is_err());
        let no_hash = token(r#"{"alg":"HS256"}"#, serde_json::json!({"iat": 1_700_000_000}), SECRET);
        assert!(check(&no_hash, body).is_err(), "a body the token does not cover");
        let stale = serde_json::json!({"iat": 1_699_990_000, "payload_hash": hash});
        assert!(check(&token(r#"{"alg":"HS256"}"#, stale, SECRET), body).is_err(), "issued too long ago");
        assert!(check("not-a-jwt", body).is_err());
    }
}
