//! Access statements: who may listen to a room, signed by the people who
//! decide it — never by the server.
//!
//! - **follow** (no room): "I follow this account", signed by a device of
//!   the follower when it follows. A social room is for the people its host
//!   and moderators follow: their follow statements are the evidence.
//! - **allow** (one room): a host or moderator lets an account into a
//!   closed room.
//! - **ban** (one room): a host or moderator bans an account from a room.
//!
//! The server stores the statements and hands them to the room's key
//! distributor with each join request (follows and allows) or as soon as a
//! ban is made. The distributor checks each against the signer's device
//! chain and the room's moderators, so the server cannot let anyone in,
//! or keep a banned account's key, on its own word. It can withhold a
//! statement (which only keeps someone out) and it can keep serving a
//! follow after an unfollow (a statement has no end; see `docs/e2ee.md`).
//!
//! Format (base64url on the wire), parsing never panics:
//! `"SAS1" | verb u8 | room u8-len | target u8-len | created_ms u64 |
//! signer [32] | sig [64]`, the signature covering a [`transcript`] of
//! every field.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::ids::UserId;
use crate::keys::transcript;

/// Context of an access statement signature.
pub const ACCESS_CONTEXT: &str = "sotto/v1/access-statement";
const MAGIC: &[u8; 4] = b"SAS1";
/// Longest room or user id in a statement.
const MAX_ID: usize = 64;

/// What a statement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessVerb {
    /// The signer follows the target (not bound to a room).
    Follow,
    /// The target may listen to the room.
    Allow,
    /// The target may never listen to the room.
    Ban,
}

impl AccessVerb {
    fn byte(self) -> u8 {
        match self {
            AccessVerb::Follow => 1,
            AccessVerb::Allow => 2,
            AccessVerb::Ban => 3,
        }
    }
}

/// A statement whose signature by its own signer key checked out (whether
/// that key may decide is the reader's check: its account's device chain
/// and its role in the room).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessStatement {
    pub verb: AccessVerb,
    /// The room (empty for a follow).
    pub room: String,
    pub target: UserId,
    pub created_ms: u64,
    pub signer: [u8; 32],
}

/// Why a statement was refused.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    #[error("not an access statement")]
    Malformed,
    #[error("the statement's signature does not verify")]
    BadSignature,
}

fn signed_bytes(
    verb: AccessVerb,
    room: &[u8],
    target: &[u8],
    created: u64,
    signer: &[u8],
) -> Vec<u8> {
    transcript(
        ACCESS_CONTEXT,
        &[&[verb.byte()], room, target, &created.to_be_bytes(), signer],
    )
}

/// Signs a statement with a device key. A follow takes an empty `room`.
pub fn sign_access(
    key: &SigningKey,
    verb: AccessVerb,
    room: &str,
    target: &UserId,
    created_ms: u64,
) -> Vec<u8> {
    // Ids are short ASCII; a longer one is cut (and then names nobody).
    let cut = |s: &str| -> Vec<u8> { s.as_bytes().iter().take(MAX_ID).copied().collect() };
    let room = if verb == AccessVerb::Follow {
        Vec::new()
    } else {
        cut(room)
    };
    let target = cut(target.as_str());
    let signer = key.verifying_key().to_bytes();
    let sig = key.sign(&signed_bytes(verb, &room, &target, created_ms, &signer));
    let mut out = Vec::with_capacity(4 + 3 + room.len() + target.len() + 8 + 96);
    out.extend_from_slice(MAGIC);
    out.push(verb.byte());
    out.push(room.len() as u8);
    out.extend_from_slice(&room);
    out.push(target.len() as u8);
    out.extend_from_slice(&target);
    out.extend_from_slice(&created_ms.to_be_bytes());
    out.extend_from_slice(&signer);
    out.extend_from_slice(&sig.to_bytes());
    out
}

impl AccessStatement {
    /// Parses a statement and checks its signature by the key it names.
    /// Never panics.
    pub fn parse(bytes: &[u8]) -> Result<AccessStatement, AccessError> {
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], AccessError> {
            if r.len() < n {
                return Err(AccessError::Malformed);
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Ok(head)
        };
        if take(4)? != MAGIC {
            return Err(AccessError::Malformed);
        }
        let verb = match take(1)?[0] {
            1 => AccessVerb::Follow,
            2 => AccessVerb::Allow,
            3 => AccessVerb::Ban,
            _ => return Err(AccessError::Malformed),
        };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| AccessError::Malformed);
        let room_len = usize::from(take(1)?[0]);
        if room_len > MAX_ID {
            return Err(AccessError::Malformed);
        }
        let room = text(take(room_len)?)?;
        let target_len = usize::from(take(1)?[0]);
        if target_len > MAX_ID {
            return Err(AccessError::Malformed);
        }
        let target = text(take(target_len)?)?;
        let created_ms =
            u64::from_be_bytes(take(8)?.try_into().map_err(|_| AccessError::Malformed)?);
        let signer: [u8; 32] = take(32)?.try_into().map_err(|_| AccessError::Malformed)?;
        let sig: [u8; 64] = take(64)?.try_into().map_err(|_| AccessError::Malformed)?;
        if !r.is_empty() || (verb == AccessVerb::Follow) != room.is_empty() || target.is_empty() {
            return Err(AccessError::Malformed);
        }
        let key = VerifyingKey::from_bytes(&signer)
            .ok()
            .filter(|k| !k.is_weak())
            .ok_or(AccessError::BadSignature)?;
        key.verify_strict(
            &signed_bytes(
                verb,
                room.as_bytes(),
                target.as_bytes(),
                created_ms,
                &signer,
            ),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| AccessError::BadSignature)?;
        Ok(AccessStatement {
            verb,
            room,
            target: UserId(target),
            created_ms,
            signer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    #[test]
    fn a_statement_round_trips_and_names_its_signer() {
        let k = key(1);
        let bytes = sign_access(&k, AccessVerb::Allow, "room1", &UserId("u2".into()), 7);
        let s = AccessStatement::parse(&bytes).unwrap();
        assert_eq!(s.verb, AccessVerb::Allow);
        assert_eq!(s.room, "room1");
        assert_eq!(s.target.as_str(), "u2");
        assert_eq!(s.created_ms, 7);
        assert_eq!(s.signer, k.verifying_key().to_bytes());
        let follow = sign_access(&k, AccessVerb::Follow, "ignored", &UserId("u2".into()), 7);
        assert_eq!(AccessStatement::parse(&follow).unwrap().room, "");
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let bytes = sign_access(&key(1), AccessVerb::Ban, "room1", &UserId("u2".into()), 7);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(AccessStatement::parse(&bad).is_err(), "byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(AccessStatement::parse(&bytes[..n]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(AccessStatement::parse(&long), Err(AccessError::Malformed));
    }

    #[test]
    fn a_signer_key_swapped_in_does_not_verify() {
        let mut bytes = sign_access(&key(1), AccessVerb::Allow, "r", &UserId("u".into()), 1);
        let at = bytes.len() - 96;
        bytes[at..at + 32].copy_from_slice(&key(2).verifying_key().to_bytes());
        assert_eq!(
            AccessStatement::parse(&bytes),
            Err(AccessError::BadSignature)
        );
    }
}
