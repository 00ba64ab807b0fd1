//! Opaque identifiers chosen by the caller.
//!
//! The SFU never learns account ids, usernames or room ids: the control plane
//! hands it random 16-byte values per media session. They never appear in SDP,
//! ICE credentials or RTP; in logs only their first four bytes are printed.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Wraps caller-chosen random bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        /// Shortened: the first four bytes in hex, enough to follow one session in logs.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0[..4] {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({}…)"), self)
            }
        }
    };
}

opaque_id!(
    /// One media session of one participant (random per session).
    PeerId
);
opaque_id!(
    /// The media-plane key of a room (random; not the room id).
    RoomKey
);

/// Hashes an id by its bytes, each 64-bit word mixed in with MurmurHash3's
/// finalizer, not with SipHash: the ids are random and chosen by the
/// control plane, never by a peer, so nobody can aim for collisions; and
/// the forwarding loop looks a peer up for every copy it makes.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        let mut x = self.0 ^ word;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        self.0 = x;
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A map keyed by peer id, hashed with [`IdHasher`].
pub(crate) type PeerMap<V> = HashMap<PeerId, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_differ_in_any_byte_hash_apart() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut seen = std::collections::HashSet::new();
        for at in 0..16 {
            for v in 0..=255u8 {
                let mut bytes = [0u8; 16];
                bytes[at] = v;
                seen.insert(build.hash_one(PeerId::from_bytes(bytes)));
            }
        }
        // 16 × 256 ids, all-zero counted once per position.
        assert_eq!(seen.len(), 16 * 255 + 1);
    }

    #[test]
    fn display_is_shortened() {
        let id = PeerId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "abababab");
        assert_eq!(format!("{id:?}"), "PeerId(abababab…)");
    }
}
