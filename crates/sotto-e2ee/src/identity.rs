//! Device identities (Ed25519), fingerprints, safety codes and room codes.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use openmls::prelude::{BasicCredential, CredentialWithKey, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256, Sha512};

use crate::codec::{Reader, Writer};
use crate::error::WireError;

/// Longest account id or device id accepted inside a credential, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// A device's public identity key (Ed25519, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IdentityKey(pub(crate) VerifyingKey);

impl IdentityKey {
    /// Parse a 32-byte Ed25519 public key. Rejects non-canonical and weak keys.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        let vk = VerifyingKey::from_bytes(&arr).ok()?;
        if vk.is_weak() {
            return None;
        }
        Some(Self(vk))
    }

    /// The 32 public bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The fingerprint of this key.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(b"sotto fingerprint v1");
        h.update(self.0.as_bytes());
        Fingerprint(h.finalize().into())
    }

    pub(crate) fn verify(&self, domain: &[u8], msg: &[u8], sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        let mut full = Vec::with_capacity(domain.len() + msg.len());
        full.extend_from_slice(domain);
        full.extend_from_slice(msg);
        self.0.verify_strict(&full, &sig).is_ok()
    }
}

pub use sotto_delivery::roster::Fingerprint;

/// A device's identity: its Ed25519 signing key plus the opaque account id
/// and device id the server assigned. The signing key is zeroized on drop
/// and never printed.
pub struct DeviceIdentity {
    key: SigningKey,
    account_id: Vec<u8>,
    device_id: String,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("public", &self.public().fingerprint())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl DeviceIdentity {
    /// A new random identity.
    pub fn generate(
        rng: &mut (impl CryptoRng + RngCore),
        account_id: &[u8],
        device_id: &str,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let id = Self::from_seed(seed, account_id, device_id);
        zeroize::Zeroize::zeroize(&mut seed);
        id
    }

    /// From a stored 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32], account_id: &[u8], device_id: &str) -> Self {
        let cut = |b: &[u8]| b[..b.len().min(MAX_ID_LEN)].to_vec();
        let mut device_id = device_id.to_owned();
        while device_id.len() > MAX_ID_LEN {
            device_id.pop();
        }
        Self {
            key: SigningKey::from_bytes(&seed),
            account_id: cut(account_id),
            device_id,
        }
    }

    /// The public identity key.
    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.key.verifying_key())
    }

    /// The opaque account id.
    pub fn account_id(&self) -> &[u8] {
        &self.account_id
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    pub(crate) fn sign(&self, domain: &[u8], msg: &[u8]) -> [u8; 64] {
        let mut full = Vec::with_capacity(domain.len() + msg.len());
        full.extend_from_slice(domain);
        full.extend_from_slice(msg);
        self.key.sign(&full).to_bytes()
    }

    /// The MLS signer for this device: the identity key itself is the MLS
    /// leaf signature key, so a stage member's leaf is bound to its identity.
    pub(crate) fn mls_signer(&self) -> SignatureKeyPair {
        SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            self.key.to_bytes().to_vec(),
            self.key.verifying_key().to_bytes().to_vec(),
        )
    }

    /// The MLS credential: a BasicCredential naming account id and device id.
    pub(crate) fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(encode_credential_identity(
                &self.account_id,
                &self.device_id,
            ))
            .into(),
            signature_key: self.key.verifying_key().to_bytes().to_vec().into(),
        }
    }
}

/// Encode (account id, device id) as the identity of a BasicCredential.
pub fn encode_credential_identity(account_id: &[u8], device_id: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(b"SID1")
        .bytes16(account_id)
        .bytes16(device_id.as_bytes());
    w.buf
}

/// Decode the identity of a BasicCredential into (account id, device id).
pub fn decode_credential_identity(bytes: &[u8]) -> Result<(Vec<u8>, String), WireError> {
    let mut r = Reader::new(bytes);
    r.magic(b"SID1")?;
    let account = r.bytes16(MAX_ID_LEN)?.to_vec();
    let device = std::str::from_utf8(r.bytes16(MAX_ID_LEN)?)
        .map_err(|_| WireError::BadMagic)?
        .to_owned();
    r.finish()?;
    Ok((account, device))
}

fn digits(bytes: &[u8], groups: usize) -> String {
    let mut out = Vec::with_capacity(groups);
    for chunk in bytes.chunks_exact(5).take(groups) {
        let mut v = [0u8; 8];
        v[3..].copy_from_slice(chunk);
        out.push(format!("{:05}", u64::from_be_bytes(v) % 100_000));
    }
    out.join(" ")
}

/// A human-comparable safety code for a pair of identities: 12 groups of 5
/// digits, the same whichever side computes it. Two people reading the same
/// code know no one substituted a key between them.
pub fn safety_code(a: &IdentityKey, b: &IdentityKey) -> String {
    let (fa, fb) = (a.fingerprint(), b.fingerprint());
    let (lo, hi) = if fa <= fb { (fa, fb) } else { (fb, fa) };
    let mut h = Sha512::new();
    h.update(b"sotto safety code v1");
    h.update(lo.0);
    h.update(hi.0);
    digits(&h.finalize(), 12)
}

/// A short code (4 groups of 5 digits) for the current stage epoch, derived
/// from the MLS epoch authenticator: stage members who read the same code
/// are in the same group state (no split view, no hidden member).
pub fn room_code(epoch_authenticator: &[u8]) -> String {
    room_code_from_digest(&room_code_digest(epoch_authenticator))
}

/// The hash a room code is read from. A distributor signs it into rosters
/// so that listeners, who are not in the stage group, show the code its
/// members read; it reveals nothing of the epoch's keys.
pub fn room_code_digest(epoch_authenticator: &[u8]) -> [u8; 32] {
    let mut h = Sha512::new();
    h.update(b"sotto room code v1");
    h.update(epoch_authenticator);
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize()[..32]);
    out
}

/// The room code of a [`room_code_digest`].
pub fn room_code_from_digest(digest: &[u8; 32]) -> String {
    digits(digest, 4)
}
