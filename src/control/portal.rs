//! Portal tokens: a platform's backend mints one for one tenant and shows `/portal?token=…`
//! in an iframe in its own product. A token is `sbp_<tenant:expiry>.<signature>`, signed
//! with a key derived from `[admin] secrets_key`, so every node sharing the key accepts it
//! and nothing needs storing; it lives at most an hour.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::signatures::{Algorithm, equal};
use crate::config::SecretsKey;

pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
const PREFIX: &str = "sbp_";

fn signing_key(key: &SecretsKey) -> Vec<u8> {
    Algorithm::Sha256.mac(&key.0, &[b"switchboard portal tokens v1"])
}

/// A token for `tenant`, valid until `expires_at` (Unix seconds).
pub fn mint(key: &SecretsKey, tenant: &str, expires_at: i64) -> String {
    let payload = URL_SAFE_NO_PAD.encode(format!("{tenant}:{expires_at}"));
    let signature = URL_SAFE_NO_PAD.encode(Algorithm::Sha256.mac(&signing_key(key), &[payload.as_bytes()]));
    format!("{PREFIX}{payload}.{signature}")
}

pub fn is_portal_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The tenant a token was minted for, if its signature holds and it has not expired.
pub fn verify(key: &SecretsKey, token: &str, now: i64) -> Option<String> {
    let (payload, signature) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let expected = Algorithm::Sha256.mac(&signing_key(key), &[payload.as_bytes()]);
    if !equal(&signature, &expected) {
        return None;
    }
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let (tenant, expires_at) = payload.rsplit_once(':')?;
    (expires_at.parse::<i64>().ok()? > now).then(|| tenant.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_for_its_tenant_until_it_expires_and_not_once_altered() {
        let key = SecretsKey([3; 32]);
        let token = mint(&key, "acme", 1_000);
        assert_eq!(verify(&key, &token, 999), Some("acme".to_string()));
        assert_eq!(verify(&key, &token, 1_000), None, "expired");
        assert_eq!(verify(&SecretsKey([4; 32]), &token, 0), None, "another key");
        // Another tenant or a later expiry, with the old signature.
        let (_, signature) = token.split_once('.').unwrap();
        for payload in ["globex:1000", "acme:99999"] {
            let forged = format!("sbp_{}.{signature}", URL_SAFE_NO_PAD.encode(payload));
            assert_eq!(verify(&key, &forged, 0), None, "{payload}");
        }
        for bad in ["sbp_", "sbp_x.y", "sbp_.", &token[..token.len() - 2]] {
            assert_eq!(verify(&key, bad, 0), None, "{bad}");
        }
    }
}
