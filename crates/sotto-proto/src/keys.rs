//! Device keys and what a device signs.
//!
//! A device holds an Ed25519 key; the account is the set of its device keys.
//! Every signature covers a transcript that starts with a context string
//! naming its purpose, so a signature made for one purpose can never be
//! accepted for another, and each field is length-prefixed so that no two
//! different field lists give the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Context of the proof of possession sent with a registration.
pub const REGISTER_CONTEXT: &str = "sotto/v1/register";
/// Context of a login challenge response.
pub const LOGIN_CONTEXT: &str = "sotto/v1/login";
/// Context of adding a device: signed by the authorizing device and by the new one.
pub const ADD_DEVICE_CONTEXT: &str = "sotto/v1/add-device";
/// Context of deleting an account: a session token alone is not enough.
pub const DELETE_ACCOUNT_CONTEXT: &str = "sotto/v1/delete-account";

/// Why a key or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not base64url")]
    Encoding,
    #[error("wrong length: {0} bytes")]
    Length(usize),
    #[error("not a valid Ed25519 public key")]
    InvalidPoint,
    #[error("signature does not verify")]
    BadSignature,
}

/// An Ed25519 public key of a device, base64url (no padding) on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKey([u8; 32]);

impl DevicePublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DevicePublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the wire form. Only the encoding and length are checked here;
    /// [`DevicePublicKey::verifying_key`] checks the point.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = decode_b64(text)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(DevicePublicKey(arr))
    }

    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPoint);
        }
        Ok(key)
    }

    /// Verifies `signature` (base64url) over `message` (a [`transcript`]).
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), KeyError> {
        let key = self.verifying_key()?;
        let sig = parse_signature(signature)?;
        key.verify(message, &sig)
            .map_err(|_| KeyError::BadSignature)?;
        // verify_strict also rejects malleable encodings.
        key.verify_strict(message, &sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl std::fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevicePublicKey({})", &self.to_base64()[..8])
    }
}

impl Serialize for DevicePublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for DevicePublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DevicePublicKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses a base64url Ed25519 signature.
pub fn parse_signature(text: &str) -> Result<Signature, KeyError> {
    let bytes = decode_b64(text)?;
    let arr: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::Length(bytes.len()))?;
    Ok(Signature::from_bytes(&arr))
}

/// base64url without padding, the encoding of every binary field on the wire.
pub fn encode_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_b64(text: &str) -> Result<Vec<u8>, KeyError> {
    if text.len() > 4096 {
        return Err(KeyError::Length(text.len()));
    }
    URL_SAFE_NO_PAD.decode(text).map_err(|_| KeyError::Encoding)
}

/// The bytes a device signs: the context, then each field, every one
/// prefixed with its length as a big-endian u32.
pub fn transcript(context: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + context.len() + fields.iter().map(|f| 4 + f.len()).sum::<usize>());
    for part in std::iter::once(context.as_bytes()).chain(fields.iter().copied()) {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// What a new account's device signs: it proves it holds the key it registers.
pub fn register_transcript(invite_code: &str, username: &str, key: &DevicePublicKey) -> Vec<u8> {
    transcript(
        REGISTER_CONTEXT,
        &[invite_code.as_bytes(), username.as_bytes(), key.as_bytes()],
    )
}

/// What a device signs to answer a login challenge.
pub fn login_transcript(challenge_id: &str, nonce: &[u8], key: &DevicePublicKey) -> Vec<u8> {
    transcript(
        LOGIN_CONTEXT,
        &[challenge_id.as_bytes(), nonce, key.as_bytes()],
    )
}

/// What both the authorizing device and the new device sign when a device is added.
pub fn add_device_transcript(
    user_id: &str,
    authorizer: &DevicePublicKey,
    new_key: &DevicePublicKey,
) -> Vec<u8> {
    transcript(
        ADD_DEVICE_CONTEXT,
        &[
            user_id.as_bytes(),
            authorizer.as_bytes(),
            new_key.as_bytes(),
        ],
    )
}

/// What a device signs to delete its account.
pub fn delete_account_transcript(user_id: &str, key: &DevicePublicKey) -> Vec<u8> {
    transcript(
        DELETE_ACCOUNT_CONTEXT,
        &[user_id.as_bytes(), key.as_bytes()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> (SigningKey, DevicePublicKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let pk = DevicePublicKey::from_bytes(sk.verifying_key().to_bytes());
        (sk, pk)
    }

    #[test]
    fn sign_and_verify() {
        let (sk, pk) = key(7);
        let msg = login_transcript("c1", b"nonce", &pk);
        let sig = encode_b64(&sk.sign(&msg).to_bytes());
        assert_eq!(pk.verify(&msg, &sig), Ok(()));
        // The same signature for another purpose does not verify.
        let other = register_transcript("c1", "nonce", &pk);
        assert_eq!(pk.verify(&other, &sig), Err(KeyError::BadSignature));
        // Another key does not verify.
        let (_, pk2) = key(8);
        assert_eq!(pk2.verify(&msg, &sig), Err(KeyError::BadSignature));
    }

    #[test]
    fn transcripts_are_unambiguous() {
        assert_ne!(
            transcript("x", &[b"ab", b"c"]),
            transcript("x", &[b"a", b"bc"])
        );
    }

    #[test]
    fn parse_rejects_bad_keys() {
        assert_eq!(DevicePublicKey::parse("!!"), Err(KeyError::Encoding));
        assert_eq!(
            DevicePublicKey::parse(&encode_b64(&[1; 31])),
            Err(KeyError::Length(31))
        );
        // The identity point is a weak key.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        let pk = DevicePublicKey::parse(&encode_b64(&ident)).unwrap();
        assert_eq!(pk.verifying_key().err(), Some(KeyError::InvalidPoint));
        let (_, pk) = key(3);
        assert_eq!(DevicePublicKey::parse(&pk.to_base64()), Ok(pk));
    }
}
