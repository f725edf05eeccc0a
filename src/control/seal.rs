//! Tenant secrets at rest: sealed with AES-256-GCM under `[admin] secrets_key`, bound to
//! their tenant and name (the associated data), so a sealed value copied to another tenant
//! or name does not open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::SecretsKey;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("no randomness available to seal a secret")]
    Random,
    /// Another key sealed it, or the stored bytes were changed.
    #[error("secret {0:?} does not open with this secrets_key")]
    Open(String),
}

pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

fn aad(tenant: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant.len() + name.len() + 1);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

impl Sealer {
    pub fn new(key: &SecretsKey) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.0).expect("a 32-byte key fits AES-256"));
        Self { key, random: SystemRandom::new() }
    }

    /// nonce ‖ ciphertext ‖ tag. Nonces are random: a tenant's secrets are few and rarely written.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(tenant, name)), &mut sealed)
            .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, tenant: &str, name: &str, sealed: &[u8]) -> Result<String, SealError> {
        let fail = || SealError::Open(name.to_string());
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buffer = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad(tenant, name)), &mut buffer).map_err(|_| fail())?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_where_it_was_sealed() {
        let sealer = Sealer::new(&SecretsKey([7; 32]));
        let sealed = sealer.seal("acme", "crm", "hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "the value is not stored in the clear");
        assert_eq!(sealer.open("acme", "crm", &sealed).unwrap(), "hunter2");
        assert!(sealer.open("other", "crm", &sealed).is_err(), "bound to its tenant");
        assert!(sealer.open("acme", "crm2", &sealed).is_err(), "bound to its name");
        assert!(Sealer::new(&SecretsKey([8; 32])).open("acme", "crm", &sealed).is_err(), "another key");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(sealer.open("acme", "crm", &flipped).is_err(), "tampered");
        assert_ne!(sealer.seal("acme", "crm", "hunter2").unwrap(), sealed, "a fresh nonce each time");
    }
}
