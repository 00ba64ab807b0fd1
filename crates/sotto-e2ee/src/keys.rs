//! The key schedule from the stage epoch down to SFrame keys.
//!
//! ```text
//! MLS epoch e ──exporter("sotto audience v1", rotation r, 32)──▶ audience secret (e, r)
//! audience secret ──HKDF-Expand("sotto sframe sender v1" ‖ leaf)──▶ SFrame base key of sender `leaf`
//! SFrame base key ──RFC 9605 §4.4.2 (KID)──▶ sframe_key, sframe_salt
//! ```
//!
//! KID layout (RFC 9605 §5.2 in spirit): `KID = leaf << 2 | tag`, where the
//! 2-bit generation tag is `(epoch & 1) << 1 | (rotation & 1)`. With up to 64
//! stage leaves (a 50-member stage with room for churn) the KID fits in one
//! header byte, so with a counter under 65,536 (it restarts at every key
//! change) the compact suite's overhead is at most 1 + 1 + 2 + 4 = 8 bytes.
//!
//! The tag only tells a receiver which of the generations it holds (current
//! plus those in grace) a frame uses. Consecutive generations always differ
//! in it: a rotation flips the low bit, an epoch change (which restarts the
//! rotation at 0) flips the high bit. A generation two changes back may share
//! the tag of the newest (two rotations within one grace period, or two
//! epoch changes from an even rotation): it is then dropped early (see
//! `docs/e2ee.md`).

use crate::secret::{Secret32, expand};

/// MLS exporter label of the audience secret.
pub(crate) const AUDIENCE_EXPORTER_LABEL: &str = "sotto audience v1";
const SENDER_LABEL: &[u8] = b"sotto sframe sender v1";
const COMMITMENT_LABEL: &[u8] = b"sotto audience key commitment v1";

/// Bits of the KID that carry the generation tag.
pub const GENERATION_BITS: u32 = 2;

/// Stage leaves whose KID fits in one SFrame header byte (leaf < 64).
pub const ONE_BYTE_KID_LEAVES: u32 = 1 << (8 - GENERATION_BITS);

/// Which audience secret: stage epoch and rotation counter within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGeneration {
    /// Stage (MLS) epoch the secret derives from.
    pub epoch: u64,
    /// Rotation counter within that epoch (0 at each new epoch).
    pub rotation: u32,
}

impl KeyGeneration {
    /// The 2-bit tag carried in the KID.
    pub fn tag(&self) -> u64 {
        ((self.epoch & 1) << 1) | u64::from(self.rotation & 1)
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

    /// A public commitment to this secret for `room_id`: HKDF-Expand of the
    /// secret with a label, the room and the generation. It reveals nothing
    /// of the secret, and nobody who lacks the secret can make another secret
    /// with the same commitment, so a signature over it authenticates the
    /// secret (see [`crate::audience::VerifiedKeyStatement`]).
    pub fn commitment(&self, room_id: &[u8]) -> [u8; 32] {
        let mut ctx = Vec::with_capacity(room_id.len() + 2 + 12);
        ctx.extend_from_slice(
            &u16::try_from(room_id.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        ctx.extend_from_slice(room_id);
        ctx.extend_from_slice(&self.generation.epoch.to_be_bytes());
        ctx.extend_from_slice(&self.generation.rotation.to_be_bytes());
        *expand(&self.secret, COMMITMENT_LABEL, &ctx).expose()
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

impl From<crate::audience::RosterVersion> for KeyGeneration {
    /// The key generation a roster version describes.
    fn from(v: crate::audience::RosterVersion) -> Self {
        KeyGeneration {
            epoch: v.epoch,
            rotation: v.rotation,
        }
    }
}
