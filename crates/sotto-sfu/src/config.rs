//! Knobs of the SFU core.

use std::time::Duration;

/// Configuration of an [`Sfu`](crate::Sfu).
///
/// Build it with `SfuConfig { slots: 2, ..SfuConfig::default() }`.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Receive slots per peer, and the number of speakers a room forwards at
    /// once. An offer may carry at most this many `recvonly` audio m-lines.
    pub slots: usize,
    /// A peer that sends nothing for this long is dropped
    /// ([`SfuEvent::PeerGone`](crate::SfuEvent::PeerGone)).
    pub peer_timeout: Duration,
    /// Datagrams longer than this are dropped unread.
    pub max_datagram_size: usize,
    /// A speaker leaves the active set after this long without voiced packets.
    pub speaker_hold: Duration,
    /// RFC 6464 level (−dBov, 0 is loudest) at or above which a packet counts as voiced.
    pub voice_level_threshold: i8,
    /// If a slot's source has not been forwarded for this long, the slot's
    /// sequence numbers and timestamps are re-based as for a new speaker.
    pub rebase_gap: Duration,
    /// Seed for the initial RTP sequence numbers and timestamps of slots.
    /// The driver should take it from the OS RNG; the core has no RNG of its own.
    pub seed: u64,
    /// Seal forwarded packets with each listener's SRTP keys in the SFU
    /// (the fast path, the default; see `fastpath.rs`), about 2.5× cheaper
    /// per copy than `false`, which writes them through the listener's
    /// str0m `Rtc` (kept for comparison in the benchmarks).
    pub direct_send: bool,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            slots: 3,
            peer_timeout: Duration::from_secs(30),
            max_datagram_size: 1500,
            speaker_hold: Duration::from_secs(2),
            voice_level_threshold: -50,
            rebase_gap: Duration::from_secs(1),
            seed: 0x5077_0c0f_fee5_eed5,
            direct_send: true,
        }
    }
}
