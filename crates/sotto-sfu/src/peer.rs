//! One participant's WebRTC session: a str0m `Rtc` plus what the SFU knows about it.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Rtc;
use str0m::media::{Mid, Pt};
use str0m::rtp::Extension;

use crate::event::GoneReason;
use crate::fastpath::{KeySlot, SrtpOut};
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
    /// For the fast path (set once connected): the SSRC str0m gave this
    /// m-line and the id the peer uses for the RFC 6464 audio level.
    pub(crate) ssrc: Option<u32>,
    pub(crate) level_id: Option<u8>,
    /// The id the peer uses for the MID header extension, and the MID's
    /// bytes (kept here so a forwarded copy does not re-read them).
    pub(crate) mid_ext: Option<(u8, Box<[u8]>)>,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) id: PeerId,
    pub(crate) room: RoomKey,
    /// Boxed: a str0m `Rtc` is ~10 KB inline, and the SFU's peer map keeps
    /// up to twice as many slots as peers (its load factor and doubling).
    pub(crate) rtc: Box<Rtc>,
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
    /// Where the `Rtc`'s DTLS puts the exported SRTP keys.
    pub(crate) keys: KeySlot,
    /// The SFU's own SRTP context towards the peer, once connected (see
    /// `fastpath`); `None`: forwarded packets go through the `Rtc`.
    pub(crate) srtp: Option<SrtpOut>,
    /// Where str0m sends the peer's media: source and destination of its
    /// latest non-STUN datagram to the peer (the selected ICE pair).
    pub(crate) media_to: Option<(SocketAddr, SocketAddr)>,
    /// The source of the last nominating ICE check, until str0m answers it.
    pub(crate) nominating: Option<SocketAddr>,
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

    /// Connected: takes the SRTP keys the DTLS handshake exported and, if
    /// the profile is one the fast path does, the SSRC and audio-level id
    /// of each slot. Without them the peer stays on str0m's send path.
    pub(crate) fn start_fast_path(&mut self) {
        let exported = self.keys.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(srtp) = exported.as_ref().and_then(SrtpOut::new) else {
            return;
        };
        for slot in &mut self.slots {
            let mid = slot.mid;
            slot.ssrc = self
                .rtc
                .direct_api()
                .stream_tx_by_mid(mid, None)
                .map(|tx| *tx.ssrc());
            let exts = self.rtc.media(mid).map(|m| m.remote_extmap());
            slot.level_id = exts.and_then(|e| e.id_of(Extension::AudioLevel));
            slot.mid_ext = exts
                .and_then(|e| e.id_of(Extension::RtpMid))
                .map(|id| (id, mid.as_bytes().into()));
        }
        self.srtp = Some(srtp);
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
