//! What the core returns to its driver.

use std::net::SocketAddr;

use crate::{PeerId, RoomKey};

/// A datagram to send from the SFU's one UDP socket.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The SFU's own address (the advertised candidate).
    pub source: SocketAddr,
    /// The peer's address.
    pub destination: SocketAddr,
    /// Bytes to send.
    pub contents: Vec<u8>,
}

/// Addresses are personal data: `Debug` leaves them out.
impl std::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transmit")
            .field("len", &self.contents.len())
            .finish_non_exhaustive()
    }
}

/// Why a peer went away without the control plane asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GoneReason {
    /// Nothing received for `peer_timeout`.
    Timeout,
    /// ICE consent lapsed, DTLS failed, or the peer closed the connection.
    Disconnected,
}

/// Notifications for the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuEvent {
    /// ICE and DTLS are up: media can flow.
    PeerConnected {
        /// The peer.
        peer: PeerId,
    },
    /// The peer was dropped by the SFU itself (not by `remove_peer`); its
    /// slots and its place among the speakers are freed.
    PeerGone {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: GoneReason,
    },
    /// The set of forwarded (active) speakers of a room changed.
    ///
    /// This is computed from the RFC 6464 audio-level header extension, which
    /// is not encrypted: **the operator learns who speaks when**, though never
    /// what is said. The control plane may show it to the room.
    ActiveSpeakersChanged {
        /// The room.
        room: RoomKey,
        /// Active speakers, in order of entry.
        speakers: Vec<PeerId>,
    },
}
