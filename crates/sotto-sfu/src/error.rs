//! Errors of the control calls. Nothing a peer sends over UDP becomes an
//! error: bad datagrams are dropped and counted in [`SfuStats`](crate::SfuStats).

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// API misuse: the SFU's address cannot be a host candidate (unspecified, multicast…).
    #[error("local address cannot be advertised as an ICE candidate")]
    InvalidLocalAddress,
    /// API misuse: `add_peer` with an id that is already present.
    #[error("peer already present")]
    PeerExists,
    /// API misuse: the peer is not (or no longer) known.
    #[error("unknown peer")]
    UnknownPeer,
    /// The offer is not parseable SDP.
    #[error("offer is not valid SDP")]
    OfferSyntax(#[source] str0m::error::SdpError),
    /// str0m refused the offer (e.g. both sides ICE-lite, no usable m-line).
    #[error("offer rejected by the WebRTC stack")]
    OfferRejected(#[source] str0m::RtcError),
    /// The offer has an m-line that is not audio (video or a data channel).
    #[error("offer has a non-audio m-line")]
    NotAudioOnly,
    /// The offer must have exactly one `sendonly` audio m-line (the microphone).
    #[error("offer has {found} sendonly audio m-lines, expected exactly one")]
    MicrophoneCount {
        /// How many were found.
        found: usize,
    },
    /// More `recvonly` m-lines than [`SfuConfig::slots`](crate::SfuConfig::slots).
    #[error("offer has {found} receive slots, at most {max} allowed")]
    TooManySlots {
        /// How many were found.
        found: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An m-line is `sendrecv` or `inactive`; sotto uses one direction per m-line.
    #[error("offer has an m-line that is neither sendonly nor recvonly")]
    UnsupportedDirection,
    /// An m-line has no `a=mid` (BUNDLE needs one per m-line).
    #[error("offer has an m-line without a=mid")]
    MissingMid,
    /// The offer does not offer Opus on every m-line.
    #[error("offer does not offer Opus")]
    NoOpus,
}

impl SfuError {
    /// Stable code for the signaling layer's error messages.
    pub fn code(&self) -> &'static str {
        match self {
            SfuError::InvalidLocalAddress => "media_invalid_local_address",
            SfuError::PeerExists => "media_peer_exists",
            SfuError::UnknownPeer => "media_unknown_peer",
            SfuError::OfferSyntax(_) => "media_offer_syntax",
            SfuError::OfferRejected(_) => "media_offer_rejected",
            SfuError::NotAudioOnly => "media_not_audio_only",
            SfuError::MicrophoneCount { .. } => "media_microphone_count",
            SfuError::TooManySlots { .. } => "media_too_many_slots",
            SfuError::UnsupportedDirection => "media_unsupported_direction",
            SfuError::MissingMid => "media_missing_mid",
            SfuError::NoOpus => "media_no_opus",
        }
    }
}
