//! Counters for `/metrics`. They hold no identifiers and no addresses.

/// Monotonic counters (and two gauges) of an [`Sfu`](crate::Sfu).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SfuStats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams returned by `poll_transmit`.
    pub datagrams_out: u64,
    /// Dropped: longer than `max_datagram_size`.
    pub dropped_oversized: u64,
    /// Dropped: neither STUN, DTLS, RTP nor RTCP, or unparseable STUN.
    pub dropped_malformed: u64,
    /// Dropped: from an address no peer uses, and not STUN for a known ICE ufrag.
    pub dropped_unknown_source: u64,
    /// Dropped: the peer's WebRTC stack refused the datagram (bad DTLS, SRTP auth, …).
    pub dropped_rejected: u64,
    /// RTP packets received (decrypted) from peers.
    pub rtp_received: u64,
    /// RTP packets written towards receivers (one per receiver slot).
    pub rtp_forwarded: u64,
    /// Of those, sealed by the SFU itself with the receiver's SRTP keys (the
    /// fast path) rather than written through the receiver's `Rtc`.
    pub rtp_forwarded_direct: u64,
    /// RTP packets dropped because their sender may not publish.
    pub rtp_dropped_not_allowed: u64,
    /// RTP packets from allowed publishers that are not among the active speakers.
    pub rtp_dropped_inactive: u64,
    /// RTP packets older than the start of their slot mapping (reordered across a switch).
    pub rtp_dropped_late: u64,
    /// SDP renegotiations after the initial answer. By design always zero.
    pub renegotiations: u64,
    /// Peers whose ICE/DTLS came up.
    pub peers_connected: u64,
    /// Peers dropped for silence (`peer_timeout`).
    pub peers_timed_out: u64,
    /// Peers dropped because their connection failed or closed.
    pub peers_failed: u64,
    /// Gauge: peers present now.
    pub peers: u64,
    /// Gauge: rooms with at least one peer.
    pub rooms: u64,
}
