//! # sotto-e2ee: the code that holds a room's group secrets
//!
//! sotto splits a room in two tiers (see `docs/e2ee.md` for the protocol,
//! threat model and exposure windows):
//!
//! 1. **Stage** ([`stage`]): hosts, moderators and speakers form one MLS group
//!    (RFC 9420, `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`, OpenMLS).
//!    The server is the sole external sender of Add/Remove proposals; a
//!    member commits them, and commits an Add only with a moderator-signed
//!    [`invitation`]. The delivery service (crate `sotto-delivery`, public
//!    state only) accepts the first valid commit per epoch; losers rebase.
//! 2. **Audience** ([`audience`]): listeners are not MLS members. Each join
//!    carries a fresh HPKE key signed by the listener's identity key; the key
//!    distributor (a stage member's client) verifies it and seals the current
//!    audience secret to it — O(1) per join, ~100 bytes per listener per
//!    rotation. Once per generation it signs a key statement (a commitment
//!    to the secret) that listeners check before installing a key, so nobody
//!    but a stage member (e.g. not the server) can hand them a key. It signs
//!    the roster of admitted listeners; roster versions are ordered by key
//!    generation, so they continue across distributors.
//!
//! Audience secrets derive from the stage epoch through the MLS exporter
//! ([`keys`]), so stage members and listeners share receive keys, and
//! per-speaker SFrame keys (RFC 9605, [`frame`]) derive from the audience
//! secret. The compact audio suite (AES-CTR + HMAC-SHA256, 4-byte tag) costs
//! at most 8 bytes per frame.
//!
//! ## Invariants
//! - **Sans-IO.** No sockets, no threads, no clock, no global RNG. Time comes
//!   in as `now_ms: u64` (any monotonic origin); randomness as
//!   `&mut (impl CryptoRng + RngCore)` or through the OpenMLS provider each
//!   state machine owns. After any input, call `poll_timeout()` and
//!   `handle_timeout(now)` when it is due.
//! - **A panic is a bug.** Nothing a peer sends (MLS messages, join requests,
//!   sealed deliveries, rosters, invitations, SFrame frames) may panic; every
//!   parser returns a typed `#[non_exhaustive]` error from [`error`], and has
//!   a fuzz target (the repository's `fuzz/`, see `docs/fuzzing.md`) and a
//!   proptest in `tests/no_panic.rs`.
//! - **Verified types.** A [`audience::JoinRequest`] must be verified into a
//!   [`audience::VerifiedJoinRequest`] before [`audience::Distributor::admit`]
//!   takes it; only `admit` makes an [`audience::AdmittedListener`], the only
//!   thing keys are sealed to. Rosters are read through
//!   [`audience::VerifiedRoster`]; sealed keys are installed only against a
//!   [`audience::VerifiedKeyStatement`]; Adds are committed only against
//!   [`invitation::VerifiedInvitation`]s.
//! - **Secrets stay secret.** Audience keys, HPKE private keys and identity
//!   keys have redacting `Debug`, are zeroized on drop where the underlying
//!   crate allows, and implement no `Serialize`.
//! - **Send keys switch late, receive keys early.** A new generation decrypts
//!   as soon as it is known; a member sends with it only after the
//!   distributor's rotation notice plus a switch delay (listeners first get
//!   their sealed key). The previous generation keeps decrypting for a grace
//!   period (default 1 s).
//! - The server crate links `sotto-delivery`, never this crate
//!   (`crates/sotto-delivery/check-no-secrets.sh`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use sotto_delivery::codec;
mod secret;

pub mod audience;
pub mod binding;
pub mod error;
pub mod frame;
pub mod identity;
pub mod invitation;
pub mod keys;
pub use sotto_delivery::roster;
pub mod stage;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let k = keys::test_audience_key(
            keys::KeyGeneration {
                epoch: 1,
                rotation: 2,
            },
            [0xab; 32],
        );
        let s = format!("{k:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("abab"),
            "{s}"
        );
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        use rand_core::SeedableRng;
        let id = identity::DeviceIdentity::generate(&mut rng, b"a", "d");
        assert!(format!("{id:?}").contains("redacted"));
    }

    #[test]
    fn safety_code_is_symmetric_and_distinct() {
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let a = identity::DeviceIdentity::generate(&mut rng, b"a", "d").public();
        let b = identity::DeviceIdentity::generate(&mut rng, b"b", "d").public();
        let c = identity::DeviceIdentity::generate(&mut rng, b"c", "d").public();
        assert_eq!(identity::safety_code(&a, &b), identity::safety_code(&b, &a));
        assert_ne!(identity::safety_code(&a, &b), identity::safety_code(&a, &c));
        assert_eq!(identity::safety_code(&a, &b).split(' ').count(), 12);
        let (acct, dev) = identity::decode_credential_identity(
            &identity::encode_credential_identity(b"acct", "dev"),
        )
        .unwrap();
        assert_eq!((acct.as_slice(), dev.as_str()), (&b"acct"[..], "dev"));
    }

    #[test]
    fn kid_layout() {
        let g = keys::KeyGeneration {
            epoch: 5,
            rotation: 6,
        };
        assert_eq!(g.tag(), 0b10);
        assert_eq!(keys::split_kid(g.kid(31)), (31, 0b10));
        assert_eq!(keys::split_kid(g.kid(63)), (63, 0b10));
        assert!(g.kid(31) < 256, "one header byte for up to 32 leaves");
        assert!(g.kid(63) < 256, "one header byte for up to 64 leaves");
        assert!(g.kid(64) >= 256);
        // consecutive generations never share a tag
        let next_rotation = keys::KeyGeneration {
            epoch: 5,
            rotation: 7,
        };
        let next_epoch = keys::KeyGeneration {
            epoch: 6,
            rotation: 0,
        };
        assert_ne!(g.tag(), next_rotation.tag());
        assert_ne!(g.tag(), next_epoch.tag());
        assert_ne!(next_rotation.tag(), next_epoch.tag());
    }
}
