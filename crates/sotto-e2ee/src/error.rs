//! Typed errors, one enum per operation. Variants separate what a peer did
//! wrong, what the caller did wrong, and internal bugs. Nothing a peer sends
//! leads to a panic.

pub use sotto_delivery::codec::WireError;

/// Why an SFrame frame could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The SFrame header is truncated or malformed.
    #[error("malformed SFrame header")]
    MalformedHeader,
    /// No key is known for this KID (a key generation never received, e.g.
    /// after a ban, or a sender that does not exist).
    #[error("unknown key id {kid}")]
    UnknownKeyId {
        /// the KID in the header
        kid: u64,
    },
    /// The KID names a key generation whose grace period is over.
    #[error("stale key id {kid}: its grace period ended")]
    StaleKeyId {
        /// the KID in the header
        kid: u64,
    },
    /// The frame was already received, or is older than the replay window.
    #[error("replayed or too old frame (kid {kid}, ctr {ctr})")]
    Replayed {
        /// the KID
        kid: u64,
        /// the counter
        ctr: u64,
    },
    /// Authentication failed: wrong key or tampered frame.
    #[error("frame authentication failed")]
    AuthenticationFailed,
    /// The caller has no send key yet (API misuse).
    #[error("no send key installed")]
    NoSendKey,
    /// The frame counter of the current key is exhausted; rotate.
    #[error("frame counter exhausted")]
    CounterExhausted,
    /// Unexpected failure inside the SFrame library (a bug).
    #[error("internal SFrame error: {0}")]
    Internal(String),
}

/// Why a stage (MLS) operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The bytes are not a well-formed MLS message of the expected kind.
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    /// The message is for another group.
    #[error("message is for another group")]
    WrongGroup,
    /// The message is for another epoch.
    #[error("message is for epoch {got}, the group is at {current}")]
    WrongEpoch {
        /// epoch of the message
        got: u64,
        /// our epoch
        current: u64,
    },
    /// OpenMLS rejected the message (signature, membership tag, tree...).
    #[error("rejected MLS message: {0}")]
    Rejected(String),
    /// A proposal came from a sender that may not send it (only the server,
    /// as external sender 0, proposes Add/Remove, and nothing else; members
    /// propose only Updates).
    #[error("proposal from an unauthorised sender")]
    UnauthorisedProposal,
    /// A commit not sent by a stage member (e.g. an external commit built
    /// from the GroupInfo the delivery service holds).
    #[error("commit from a sender that is not a stage member")]
    UnauthorisedCommit,
    /// A Welcome into a group other than the one the room's host bound.
    #[error("welcome into a group that is not the room's bound stage group")]
    UnboundGroup,
    /// A pending Add proposal has no valid stage invitation from a moderator.
    #[error("add proposal for a device nobody invited to the stage")]
    UninvitedAdd,
    /// A rotation notice could not be parsed or is out of order.
    #[error("bad rotation notice: {0}")]
    BadRotationNotice(&'static str),
    /// This device was removed from the stage.
    #[error("removed from the stage")]
    Removed,
    /// There is nothing to commit / no pending commit (API misuse).
    #[error("nothing pending")]
    NothingPending,
    /// A bug in this crate or in OpenMLS.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a listener join request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinRequestError {
    /// The bytes are not a join request.
    #[error("malformed join request: {0}")]
    Malformed(#[from] WireError),
    /// The identity key in the request is not the listener's registered key.
    #[error("identity key does not match the registered identity")]
    IdentityMismatch,
    /// The request is for another room.
    #[error("join request is for another room")]
    WrongRoom,
    /// The request has expired.
    #[error("join request expired")]
    Expired,
    /// The expiry is further in the future than allowed.
    #[error("join request expiry too far in the future")]
    ExpiryTooFar,
    /// The signature does not verify (forged or altered, e.g. a substituted
    /// HPKE key).
    #[error("bad signature on join request")]
    BadSignature,
    /// The HPKE public key is not a valid X25519 key.
    #[error("invalid HPKE public key")]
    BadHpkeKey,
}

/// Why the distributor did not admit a listener.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// The listener is banned from the room.
    #[error("listener is banned")]
    Banned,
    /// The room's kind (social / closed) does not allow this listener.
    #[error("listener not allowed in this room")]
    NotAllowed,
    /// Sealing failed (a bug or an unusable key).
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// Why a sealed audience-key delivery could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The bytes are not a sealed delivery.
    #[error("malformed sealed delivery: {0}")]
    Malformed(#[from] WireError),
    /// HPKE open failed: sealed to another key, for another room or
    /// listener, or tampered.
    #[error("sealed delivery does not open with this listener's key")]
    NotForUs,
    /// The delivery is older than a key generation already held.
    #[error("sealed delivery is older than the current key")]
    Old,
    /// The key statement is for another generation or room than the
    /// delivery (e.g. a statement of an earlier rotation replayed).
    #[error("key statement does not match the sealed delivery")]
    StatementMismatch,
    /// The opened key is not the one a stage member signed for this
    /// generation: someone else (e.g. the server, which sees every
    /// listener's HPKE key) sealed it. Not installed.
    #[error("sealed key is not the one the distributor signed")]
    UnauthenticatedKey,
}

/// Why a key statement (the distributor's signature over a generation's
/// secret commitment) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStatementError {
    /// The bytes are not a key statement.
    #[error("malformed key statement: {0}")]
    Malformed(#[from] WireError),
    /// Signed by a key that is not a stage member of the room.
    #[error("key statement signed by a key that is not a stage member")]
    UntrustedSigner,
    /// The signature does not verify (forged or altered: e.g. another
    /// generation or commitment put under a genuine signature).
    #[error("bad key statement signature")]
    BadSignature,
    /// The statement is for another room.
    #[error("key statement is for another room")]
    WrongRoom,
}

/// Why a roster was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// The bytes are not a roster.
    #[error("malformed roster: {0}")]
    Malformed(#[from] WireError),
    /// Signed by a key that is not a known key distributor of the room.
    #[error("roster signed by an untrusted key")]
    UntrustedSigner,
    /// The signature does not verify (forged or altered).
    #[error("bad roster signature")]
    BadSignature,
    /// The roster is for another room.
    #[error("roster is for another room")]
    WrongRoom,
    /// The roster is not newer than one already seen (rollback).
    #[error("roster version {got:?} is not newer than {seen:?}")]
    Rollback {
        /// version received
        got: crate::audience::RosterVersion,
        /// newest version seen
        seen: crate::audience::RosterVersion,
    },
    /// A proof that does not verify against the signed roster: the server
    /// answered with something the distributor did not sign.
    #[error("roster proof does not verify")]
    BadProof,
    /// Proofs against another roster version than the one held (ask again).
    #[error("roster proofs are for another version")]
    OtherVersion,
}

/// Why a stage invitation was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvitationError {
    /// The bytes are not an invitation.
    #[error("malformed invitation: {0}")]
    Malformed(#[from] WireError),
    /// Signed by a key that may not invite to the stage.
    #[error("invitation signed by a key that may not invite")]
    UntrustedInviter,
    /// Bad signature.
    #[error("bad invitation signature")]
    BadSignature,
    /// Other room.
    #[error("invitation is for another room")]
    WrongRoom,
    /// Expired.
    #[error("invitation expired")]
    Expired,
}

/// Why a group binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The bytes are not a binding.
    #[error("malformed group binding: {0}")]
    Malformed(#[from] WireError),
    /// Signed by a key that is not a device of the room's host.
    #[error("group binding not signed by the room's host")]
    UntrustedSigner,
    /// The signature does not verify.
    #[error("group binding signature does not verify")]
    BadSignature,
    /// For another room.
    #[error("group binding for another room")]
    WrongRoom,
}
