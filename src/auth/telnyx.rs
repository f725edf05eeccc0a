//! Telnyx: Ed25519 over `{telnyx-timestamp}|{raw body}`, base64 in
//! `telnyx-signature-ed25519`, checked with the account's public key.

use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};

use super::{AuthError, Inbound, Replay, fresh, header, signatures::base64_decode, until};

/// Passes with the signature as the message's identity: `verify_strict` accepts one
/// encoding of a signature only, so its bytes name this (timestamp, body).
pub fn verify(request: &Inbound, key: &VerifyingKey, tolerance: Duration) -> Result<Option<Replay>, AuthError> {
    let ts = header(request.headers, &http::HeaderName::from_static("telnyx-timestamp"))?;
    let signature = header(request.headers, &http::HeaderName::from_static("telnyx-signature-ed25519"))?;
    let at = fresh(ts, request.now, tolerance)?;
    let bytes = base64_decode(signature.trim()).ok_or_else(|| AuthError("signature is not base64".into()))?;
    let signature = Signature::from_slice(&bytes).map_err(|_| AuthError("signature is not 64 bytes".into()))?;
    let mut message = Vec::with_capacity(ts.len() + 1 + request.body.len());
    message.extend_from_slice(ts.as_bytes());
    message.push(b'|');
    message.extend_from_slice(request.body);
    key.verify_strict(&message, &signature).map_err(|_| AuthError("telnyx-signature-ed25519 does not match".into()))?;
    Ok(Some(Replay { id: format!("telnyx:{}", hex::encode(signature.to_bytes())), until: until(at, tolerance) }))
}

/// A base64 (or hex) Ed25519 public key, as Telnyx's portal shows it.
pub fn public_key(text: &str) -> Option<VerifyingKey> {
    let bytes = base64_decode(text.trim()).or_else(|| hex::decode(text.trim()).ok())?;
    VerifyingKey::from_bytes(&bytes.try_into().ok()?).ok()
}
