//! Tenant-scoped API keys: `sbk_<key id>_<secret>`. The key id finds the key; only the
//! SHA-256 of the secret is stored, and it is compared in constant time. The secret is
//! 32 random bytes, so a fast hash is enough: there is nothing to guess.

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

const PREFIX: &str = "sbk_";
const ID_LEN: usize = 16;

/// A freshly minted key: the token is shown once, the hash is what is kept.
pub struct Minted {
    pub key_id: String,
    pub token: String,
    pub hash: Vec<u8>,
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn mint() -> Option<Minted> {
    let random = SystemRandom::new();
    let mut id = [0u8; ID_LEN / 2];
    let mut secret = [0u8; 32];
    random.fill(&mut id).ok()?;
    random.fill(&mut secret).ok()?;
    let key_id = hex::encode(id);
    let secret = hex::encode(secret);
    Some(Minted { token: format!("{PREFIX}{key_id}_{secret}"), hash: hash(&secret), key_id })
}

/// The key id and secret of something shaped like a tenant key.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_at_checked(ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    (id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some((id, secret))
}

/// Whether `secret` is the one `stored` was made from.
pub fn matches(secret: &str, stored: &[u8]) -> bool {
    crate::auth::signatures::equal(&hash(secret), stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_parses_back_to_its_id_and_matches_only_its_hash() {
        let minted = mint().unwrap();
        let (id, secret) = parse(&minted.token).unwrap();
        assert_eq!(id, minted.key_id);
        assert!(matches(secret, &minted.hash));
        assert!(!matches(&secret.replace('a', "b").replace('0', "1"), &minted.hash));
        assert_ne!(mint().unwrap().token, minted.token);
        for bad in ["", "sbk_", "sbk_zzzzzzzzzzzzzzzz_x", "sbk_0123456789abcdef", "sbk_0123456789abcdef_", "Bearer x"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
