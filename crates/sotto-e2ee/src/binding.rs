//! Group bindings: the host's device signs "the stage group of this room is
//! the group with this id, created at this time". A candidate joins only a
//! Welcome into the bound group, and a stage member leaves its group for a
//! new one only on a newer binding — so a server that creates its own group
//! with a speaker's KeyPackage, or sends a bare `group_reset`, gets nowhere.

use crate::codec::{Reader, Writer};
use crate::error::BindingError;
use crate::identity::{DeviceIdentity, IdentityKey, MAX_ID_LEN};

const DOMAIN: &[u8] = b"sotto stage group binding v1\0";
/// Longest MLS group id accepted in a binding.
const MAX_GROUP_ID: usize = 64;

/// A binding whose signature and room were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBinding {
    group_id: Vec<u8>,
    created_ms: u64,
    signer: IdentityKey,
}

/// Signs the binding of `group_id` to `room_id`, created at `created_ms`.
pub fn sign_binding(
    signer: &DeviceIdentity,
    room_id: &[u8],
    group_id: &[u8],
    created_ms: u64,
) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(b"SGB1")
        .bytes16(room_id)
        .bytes16(group_id)
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
        r.magic(b"SGB1")?;
        let room = r.bytes16(MAX_ID_LEN)?;
        let group_id = r.bytes16(MAX_GROUP_ID)?.to_vec();
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
            created_ms,
            signer,
        })
    }

    /// The bound MLS group id.
    pub fn group_id(&self) -> &[u8] {
        &self.group_id
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
