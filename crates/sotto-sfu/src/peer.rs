//! One participant's WebRTC session: a str0m `Rtc` plus what the SFU knows about it.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Rtc;
use str0m::media::{Mid, Pt};

use crate::event::GoneReason;
use crate::slot::SlotRewriter;
use crate::speakers::ActiveSpeakers;
use crate::{PeerId, RoomKey};

/// One outgoing (SFU → peer) audio m-line.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) mid: Mid,
    /// The Opus payload type the peer offered for this m-line.
    pub(crate) pt: Pt,
    pub(crate) rewriter: SlotRewriter,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) id: PeerId,
    pub(crate) room: RoomKey,
    pub(crate) rtc: Rtc,
    /// Our ICE ufrag for this peer (random, chosen by str0m).
    pub(crate) ufrag: String,
    /// On stage and not muted, as told by the control plane.
    pub(crate) may_publish: bool,
    pub(crate) connected: bool,
    pub(crate) slots: Vec<Slot>,
    /// str0m's next timeout for this `Rtc`.
    pub(crate) next_timeout: Instant,
    /// Last datagram the peer's `Rtc` took.
    pub(crate) last_rx: Instant,
    /// Addresses str0m has sent to (learned only after ICE checks passed).
    pub(crate) addrs: Vec<SocketAddr>,
    /// Set when the connection died; the peer is reaped after the current input.
    pub(crate) gone: Option<GoneReason>,
    /// Whether the peer is in the SFU's queue of peers to poll.
    pub(crate) queued: bool,
    /// The instant of its live entry in the SFU's timer heap, if any.
    pub(crate) scheduled: Option<Instant>,
}

impl Peer {
    /// Puts active speakers (except the peer itself) into its slots. Slots
    /// are sticky: a speaker keeps its slot; a new speaker takes an empty slot,
    /// or else the slot whose (inactive) source sent last the longest ago.
    pub(crate) fn assign_slots(&mut self, speakers: &ActiveSpeakers) {
        let me = self.id;
        for speaker in speakers.peers().filter(|p| *p != me) {
            if self
                .slots
                .iter()
                .any(|s| s.rewriter.source() == Some(speaker))
            {
                continue;
            }
            let free = self
                .slots
                .iter_mut()
                .filter(|s| {
                    s.rewriter
                        .source()
                        .is_none_or(|src| !speakers.is_active(src))
                })
                .min_by_key(|s| (s.rewriter.source().is_some(), s.rewriter.last_sent_at()));
            if let Some(slot) = free {
                slot.rewriter.set_source(Some(speaker));
            }
        }
    }

    /// Frees every slot fed by `source`.
    pub(crate) fn release_source(&mut self, source: PeerId) {
        for slot in &mut self.slots {
            if slot.rewriter.source() == Some(source) {
                slot.rewriter.set_source(None);
            }
        }
    }
}
