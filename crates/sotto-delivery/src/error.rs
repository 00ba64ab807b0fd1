/// Why the delivery service refused something. Peer misbehaviour and API
/// misuse are separate variants; none of them is a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The bytes are not a well-formed MLS message of the expected kind.
    #[error("malformed MLS message: {0}")]
    Malformed(String),
    /// The message is larger than the service accepts.
    #[error("message of {len} bytes is over the {max} byte limit")]
    TooLarge {
        /// length received
        len: usize,
        /// limit
        max: usize,
    },
    /// The message belongs to another group.
    #[error("message is for another group")]
    WrongGroup,
    /// The message is for an epoch that is not the current one. For a commit
    /// this means another commit for the same epoch won: rebase.
    #[error("message is for epoch {got}, the group is at epoch {current}")]
    StaleEpoch {
        /// epoch in the message
        got: u64,
        /// current epoch of the group
        current: u64,
    },
    /// Handshake messages must be MLS PublicMessages so the service can
    /// validate them.
    #[error("handshake messages must be sent as PublicMessage")]
    NotPublic,
    /// OpenMLS rejected the message (bad signature, bad membership tag, invalid
    /// proposal, invalid commit...).
    #[error("invalid handshake: {0}")]
    Invalid(String),
    /// A KeyPackage did not validate or uses the wrong ciphersuite.
    #[error("invalid key package: {0}")]
    InvalidKeyPackage(String),
    /// The GroupInfo does not match the current group state.
    #[error("group info does not match the current group state")]
    GroupInfoMismatch,
    /// A mailbox is full.
    #[error("mailbox full")]
    MailboxFull,
    /// A bug in this crate or in OpenMLS.
    #[error("internal error: {0}")]
    Internal(String),
}
