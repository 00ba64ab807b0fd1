//! Stage invitations: a host's or moderator's client signs "this identity
//! key may join the stage of this room until then". A committer commits an
//! Add only with such an invitation, so the server alone can never put a
//! member on the stage.

use crate::codec::{Reader, Writer};
use crate::error::InvitationError;
use crate::identity::{DeviceIdentity, IdentityKey, MAX_ID_LEN};

const DOMAIN: &[u8] = b"sotto stage invitation v1\0";

/// A verified invitation (only [`VerifiedInvitation::verify`] makes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedInvitation {
    invitee: IdentityKey,
    inviter: IdentityKey,
    expires_at_ms: u64,
}

/// Create a signed invitation for `invitee` to the stage of `room_id`.
pub fn create_invitation(
    inviter: &DeviceIdentity,
    room_id: &[u8],
    invitee: &IdentityKey,
    expires_at_ms: u64,
) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(b"SSI1")
        .bytes16(room_id)
        .raw(&invitee.to_bytes())
        .u64(expires_at_ms)
        .raw(&inviter.public().to_bytes());
    let sig = inviter.sign(DOMAIN, &w.buf);
    w.raw(&sig);
    w.buf
}

impl VerifiedInvitation {
    /// Parse and verify: signed by one of `trusted_inviters`, for `room_id`,
    /// not expired at `now_ms`.
    pub fn verify(
        bytes: &[u8],
        room_id: &[u8],
        trusted_inviters: &[IdentityKey],
        now_ms: u64,
    ) -> Result<Self, InvitationError> {
        let mut r = Reader::new(bytes);
        r.magic(b"SSI1")?;
        let room = r.bytes16(MAX_ID_LEN)?;
        let invitee = r.array::<32>()?;
        let expires_at_ms = r.u64()?;
        let inviter = r.array::<32>()?;
        let signed_len = bytes.len().saturating_sub(64);
        let sig = r.array::<64>()?;
        r.finish()?;
        let inviter = IdentityKey::from_bytes(&inviter).ok_or(InvitationError::BadSignature)?;
        if !trusted_inviters.contains(&inviter) {
            return Err(InvitationError::UntrustedInviter);
        }
        if !inviter.verify(DOMAIN, &bytes[..signed_len], &sig) {
            return Err(InvitationError::BadSignature);
        }
        if room != room_id {
            return Err(InvitationError::WrongRoom);
        }
        if now_ms >= expires_at_ms {
            return Err(InvitationError::Expired);
        }
        let invitee = IdentityKey::from_bytes(&invitee).ok_or(InvitationError::BadSignature)?;
        Ok(Self {
            invitee,
            inviter,
            expires_at_ms,
        })
    }

    /// Who is invited.
    pub fn invitee(&self) -> &IdentityKey {
        &self.invitee
    }

    /// Who invited.
    pub fn inviter(&self) -> &IdentityKey {
        &self.inviter
    }

    /// Until when.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }
}
