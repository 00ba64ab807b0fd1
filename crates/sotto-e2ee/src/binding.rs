//! Group bindings: the host's device signs "the stage group of this room is
//! the group with this id, created at this time". A candidate joins only a
//! Welcome into the bound group, and a stage member leaves its group for a
//! new one only on a newer binding — so a server that creates its own group
//! with a speaker's KeyPackage, or sends a bare `group_reset`, gets nowhere.
//! The binding also carries the room's kind as the host created it: the
//! key distributor admits listeners by this kind, not by the server's view
//! of the room (which an operator could turn from closed to open).

use crate::audience::RoomKind;
use crate::codec::{Reader, Writer};
use crate::error::{BindingError, WireError};
use crate::identity::{DeviceIdentity, IdentityKey, MAX_ID_LEN};

const DOMAIN: &[u8] = b"sotto stage group binding v2\0";
const MAGIC: &[u8; 4] = b"SGB2";
/// Longest MLS group id accepted in a binding.
const MAX_GROUP_ID: usize = 64;

/// A binding whose signature and room were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBinding {
    group_id: Vec<u8>,
    kind: RoomKind,
    created_ms: u64,
    signer: IdentityKey,
}

fn kind_byte(kind: RoomKind) -> u8 {
    match kind {
        RoomKind::Open => 1,
        RoomKind::Social => 2,
        RoomKind::Closed => 3,
    }
}

/// Signs the binding of `group_id` to `room_id` (a room of `kind`),
/// created at `created_ms`.
pub fn sign_binding(
    signer: &DeviceIdentity,
    room_id: &[u8],
    group_id: &[u8],
    kind: RoomKind,
    created_ms: u64,
) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(MAGIC)
        .bytes16(room_id)
        .bytes16(group_id)
        .raw(&[kind_byte(kind)])
        .u64(created_ms)
        .raw(&signer.public().to_bytes());
    let sig = signer.sign(DOMAIN, &w.buf);
    w.raw(&sig);
    w.buf
}

impl VerifiedBinding {
    /// Parses and verifies a binding: for `room_id`, signed by one of
    /// `trusted` (the devices of the room's host). Never panics.
    pub fn verify(
        bytes: &[u8],
        room_id: &[u8],
        trusted: &[IdentityKey],
    ) -> Result<Self, BindingError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC)?;
        let room = r.bytes16(MAX_ID_LEN)?;
        let group_id = r.bytes16(MAX_GROUP_ID)?.to_vec();
        let kind = match r.array::<1>()?[0] {
            1 => RoomKind::Open,
            2 => RoomKind::Social,
            3 => RoomKind::Closed,
            _ => return Err(BindingError::Malformed(WireError::BadMagic)),
        };
        let created_ms = r.u64()?;
        let signer = r.array::<32>()?;
        let signed_len = bytes.len().saturating_sub(64);
        let sig = r.array::<64>()?;
        r.finish()?;
        let signer = IdentityKey::from_bytes(&signer).ok_or(BindingError::BadSignature)?;
        if !trusted.contains(&signer) {
            return Err(BindingError::UntrustedSigner);
        }
        if !signer.verify(DOMAIN, &bytes[..signed_len], &sig) {
            return Err(BindingError::BadSignature);
        }
        if room != room_id {
            return Err(BindingError::WrongRoom);
        }
        Ok(Self {
            group_id,
            kind,
            created_ms,
            signer,
        })
    }

    /// The bound MLS group id.
    pub fn group_id(&self) -> &[u8] {
        &self.group_id
    }

    /// The room's kind as the host's device created the group.
    pub fn kind(&self) -> RoomKind {
        self.kind
    }

    /// When the host created the group (its clock, Unix ms): a reset needs
    /// a later one.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// Who signed it.
    pub fn signer(&self) -> &IdentityKey {
        &self.signer
    }
}
