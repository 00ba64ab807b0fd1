//! The key schedule from the stage epoch down to SFrame keys.
//!
//! ```text
//! MLS epoch e ──exporter("sotto audience v1", rotation r, 32)──▶ audience secret (e, r)
//! audience secret ──HKDF-Expand("sotto sframe sender v1" ‖ leaf)──▶ SFrame base key of sender `leaf`
//! SFrame base key ──RFC 9605 §4.4.2 (KID)──▶ sframe_key, sframe_salt
//! ```
//!
//! KID layout (RFC 9605 §5.2 in spirit): `KID = leaf << 3 | tag`, where the
//! 3-bit generation tag is `(epoch & 1) << 2 | (rotation & 3)`. With up to 32
//! stage leaves the KID fits in one header byte, so with a counter under
//! 65,536 (it restarts at every key change) the compact suite's overhead is
//! at most 1 + 1 + 2 + 4 = 8 bytes.

use crate::secret::{Secret32, expand};

/// MLS exporter label of the audience secret.
pub(crate) const AUDIENCE_EXPORTER_LABEL: &str = "sotto audience v1";
const SENDER_LABEL: &[u8] = b"sotto sframe sender v1";

/// Bits of the KID that carry the generation tag.
pub const GENERATION_BITS: u32 = 3;

/// Which audience secret: stage epoch and rotation counter within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGeneration {
    /// Stage (MLS) epoch the secret derives from.
    pub epoch: u64,
    /// Rotation counter within that epoch (0 at each new epoch).
    pub rotation: u32,
}

impl KeyGeneration {
    /// The 3-bit tag carried in the KID.
    pub fn tag(&self) -> u64 {
        ((self.epoch & 1) << 2) | u64::from(self.rotation & 3)
    }

    /// The KID a sender at `leaf` uses with this generation.
    pub fn kid(&self, leaf: u32) -> u64 {
        (u64::from(leaf) << GENERATION_BITS) | self.tag()
    }
}

/// Split a KID into (leaf, generation tag).
pub fn split_kid(kid: u64) -> (u64, u64) {
    (kid >> GENERATION_BITS, kid & ((1 << GENERATION_BITS) - 1))
}

/// The receive-only audience secret of one key generation: what admitted
/// listeners receive sealed, and what every stage member derives from the
/// MLS exporter. It yields every speaker's SFrame key, nothing else.
/// Redacting `Debug`, zeroized on drop, not serializable.
#[derive(Clone, Debug)]
pub struct AudienceKey {
    pub(crate) generation: KeyGeneration,
    pub(crate) secret: Secret32,
}

impl AudienceKey {
    pub(crate) fn new(generation: KeyGeneration, secret: Secret32) -> Self {
        Self { generation, secret }
    }

    /// Which generation this is.
    pub fn generation(&self) -> KeyGeneration {
        self.generation
    }

    /// The SFrame base key of the sender at `leaf`.
    pub(crate) fn sender_base_key(&self, leaf: u64) -> Secret32 {
        expand(&self.secret, SENDER_LABEL, &leaf.to_be_bytes())
    }
}

/// An audience key from raw bytes, for known-answer tests and benchmarks
/// only. Real keys come from the stage group or a sealed delivery.
#[doc(hidden)]
pub fn test_audience_key(generation: KeyGeneration, secret: [u8; 32]) -> AudienceKey {
    AudienceKey::new(generation, Secret32(secret))
}
