//! Opaque identifiers. The server makes them from 16 random bytes, written as
//! 32 lowercase hex digits; they carry no meaning and no order.

use serde::{Deserialize, Serialize};
use ts_rs::TS;
use utoipa::ToSchema;

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema, TS)]
        #[ts(export)]
        pub struct $name(pub String);

        impl $name {
            /// An id from 16 bytes (the server passes random ones).
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(to_hex(&bytes))
            }

            /// Whether this has the shape of an id the server made. Lookups of
            /// anything else fail as "not found" without a query.
            pub fn is_well_formed(&self) -> bool {
                is_hex_id(&self.0)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The first 8 digits: enough to tell ids apart in a log, too few to
            /// look one up by.
            pub fn short(&self) -> &str {
                self.0.get(..8).unwrap_or(&self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// An account.
    UserId
);
opaque_id!(
    /// One device key of an account.
    DeviceId
);
opaque_id!(
    /// A room.
    RoomId
);

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Usernames are 3–20 characters of `a-z`, `0-9` and `_`.
pub fn is_valid_username(name: &str) -> bool {
    (3..=20).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Free text shown to people (display names, bios, titles): a length in
/// characters and no control characters.
pub fn is_valid_text(text: &str, min_chars: usize, max_chars: usize) -> bool {
    let n = text.chars().count();
    (min_chars..=max_chars).contains(&n)
        && !text.chars().any(char::is_control)
        && (min_chars == 0 || !text.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "a_1", "abcdefghij0123456789"] {
            assert!(is_valid_username(ok), "{ok}");
        }
        for bad in [
            "ab",
            "abcdefghij01234567890",
            "Abc",
            "ab-c",
            "ab c",
            "",
            "ünï",
        ] {
            assert!(!is_valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn ids() {
        let id = RoomId::from_bytes([0xab; 16]);
        assert!(id.is_well_formed());
        assert_eq!(id.short(), "abababab");
        assert!(!RoomId("xyz".into()).is_well_formed());
        assert!(!RoomId("AB".repeat(16)).is_well_formed());
    }

    #[test]
    fn text() {
        assert!(is_valid_text("Hello", 1, 50));
        assert!(!is_valid_text("   ", 1, 50));
        assert!(!is_valid_text("a\u{0}b", 1, 50));
        assert!(is_valid_text("", 0, 50));
        assert!(!is_valid_text(&"é".repeat(51), 1, 50));
    }
}
