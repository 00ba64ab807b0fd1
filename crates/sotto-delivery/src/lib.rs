//! # sotto-delivery: the MLS delivery service, public state only
//!
//! This crate is what `sotto-server` links to take part in a room's stage
//! group. It holds **no secret that decrypts anything**: no MLS epoch secrets,
//! no HPKE private keys, no audience secrets, no SFrame keys. It keeps:
//!
//! - the *public* view of each stage group ([`RoomDelivery`]): the ratchet tree
//!   and group context, updated by validating every handshake message with
//!   OpenMLS's public-group API;
//! - the order of handshake messages per room: the **first valid commit per
//!   epoch wins**, any later commit for the same epoch is refused with
//!   [`DeliveryError::StaleEpoch`] and its sender rebases;
//! - the latest GroupInfo a committer uploaded — stored only if it matches
//!   the state the accepted commits produced (signer, group context with the
//!   confirmed transcript hash, confirmation tag:
//!   [`RoomDelivery::set_group_info`]) — and the ratchet tree that new stage
//!   members need (it is *not* put inside Welcome messages);
//! - KeyPackages uploaded by devices ([`KeyPackageStore`]), validated on upload;
//! - sealed audience-key deliveries, relayed as opaque bytes ([`SealedMailbox`]).
//!
//! The server is the sole *external sender* of Add/Remove proposals for the
//! stage group ([`ServerProposer`]). Its signing key authorises proposals, never
//! commits: a stage member's client decides whether to commit them.
//!
//! ## Invariants
//! - Nothing a peer sends may panic: every parser returns a typed error.
//! - The crate never depends on `sotto-e2ee` (the crate that holds group
//!   secrets); `check-no-secrets.sh` checks that `sotto-server` cannot link it.
//! - Sans-IO: no sockets, no clock, no threads. The caller passes bytes in and
//!   takes bytes out.

pub mod codec;
mod error;
mod key_packages;
mod mailbox;
mod proposer;
mod room;
pub mod roster;

pub use error::DeliveryError;
pub use key_packages::KeyPackageStore;
pub use mailbox::{MAX_SEALED_DELIVERY_LEN, SealedMailbox};
pub use proposer::ServerProposer;
pub use room::{Accepted, AcceptedKind, RoomDelivery, StageMemberInfo};

/// The one MLS ciphersuite sotto uses for stage groups (RFC 9420 §17.1, 0x0001).
pub const STAGE_CIPHERSUITE: openmls::prelude::Ciphersuite =
    openmls::prelude::Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Largest handshake message the delivery service accepts, in bytes.
pub const MAX_HANDSHAKE_LEN: usize = 1 << 20;
