//! Opaque identifiers chosen by the caller.
//!
//! The SFU never learns account ids, usernames or room ids: the control plane
//! hands it random 16-byte values per media session. They never appear in SDP,
//! ICE credentials or RTP; in logs only their first four bytes are printed.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_shortened() {
        let id = PeerId::from_bytes([0xab; 16]);
        assert_eq!(id.to_string(), "abababab");
        assert_eq!(format!("{id:?}"), "PeerId(abababab…)");
    }
}
