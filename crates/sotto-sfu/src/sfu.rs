//! The SFU state machine: demultiplexing, forwarding, timeouts.
//!
//! Per-datagram work is proportional to what the datagram causes (one
//! visit of its sender, one per receiver it is forwarded to), never to the
//! number of peers in the process: peers to poll are queued as they become
//! dirty, peers that died are queued as they die, and timers live in a
//! min-heap ([`Timers`]) instead of being found by scanning.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::ice::StunMessage;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output};
use tracing::{debug, info};

use crate::event::{GoneReason, SfuEvent, Transmit};
use crate::ids::PeerMap;
use crate::peer::{Peer, Slot};
use crate::slot::SlotRewriter;
use crate::speakers::ActiveSpeakers;
use crate::{PeerId, RoomKey, SfuConfig, SfuError, SfuStats};

#[derive(Debug)]
struct Room {
    members: BTreeSet<PeerId>,
    speakers: ActiveSpeakers,
    /// The earliest live entry of this room in [`Sfu::timers`].
    scheduled: Option<Instant>,
}

/// What a timer entry wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Peer(PeerId),
    Room(RoomKey),
}

/// Pending wake-ups, earliest first. Entries are never removed early: an
/// entry is live only while it equals its owner's `scheduled` instant, so
/// a stale one is skipped when it comes up. Each owner keeps at most one
/// live entry, at or before its real deadline (a deadline that moved later,
/// e.g. because a packet arrived, is found when the early entry fires).
type Timers = BinaryHeap<Reverse<(Instant, Wake)>>;

/// How many sent datagram buffers the SFU keeps for reuse.
const FREE_BUFFERS: usize = 4096;

/// The sans-IO audio SFU. See the [crate docs](crate) for how to drive it.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    candidate: Candidate,
    peers: PeerMap<Peer>,
    rooms: HashMap<RoomKey, Room>,
    by_addr: HashMap<SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<SfuEvent>,
    timers: Timers,
    /// Peers whose `Rtc` has output to poll (each at most once: `Peer::queued`).
    dirty: Vec<PeerId>,
    /// Peers marked gone and not yet dropped.
    gone: Vec<PeerId>,
    /// Scratch for RTP packets polled out of one peer.
    packets: Vec<RtpPacket>,
    /// Datagram buffers the driver gave back ([`Sfu::recycle`]): the fast
    /// path seals into one of these instead of allocating per copy.
    free: Vec<Vec<u8>>,
    /// Peer visits made while handling datagrams (see [`Sfu::peer_visits`]).
    visits: u64,
    stats: SfuStats,
    now: Instant,
    rng: u64,
    #[cfg(feature = "tap")]
    tap: crate::tap::Tap,
}

impl Sfu {
    /// A new SFU whose one UDP socket is reachable at `local_addr` (the
    /// address put in every answer as the host candidate; with `--public-ip`
    /// that is the public address, not the bound one).
    pub fn new(now: Instant, config: SfuConfig, local_addr: SocketAddr) -> Result<Self, SfuError> {
        let candidate =
            Candidate::host(local_addr, "udp").map_err(|_| SfuError::InvalidLocalAddress)?;
        let rng = config.seed;
        Ok(Self {
            config,
            candidate,
            peers: PeerMap::default(),
            rooms: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: Timers::new(),
            dirty: Vec::new(),
            gone: Vec::new(),
            packets: Vec::new(),
            free: Vec::new(),
            visits: 0,
            stats: SfuStats::default(),
            now,
            rng,
            #[cfg(feature = "tap")]
            tap: crate::tap::Tap::default(),
        })
    }

    /// The advertised address (the host candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.candidate.addr()
    }

    /// Adds a peer to a room and answers its SDP offer.
    ///
    /// The offer must hold exactly one `sendonly` audio m-line (the
    /// microphone, present even for listeners) and up to
    /// [`SfuConfig::slots`] `recvonly` audio m-lines (receive slots), all
    /// offering Opus. The peer may not publish until
    /// [`set_may_publish`](Self::set_may_publish) says so.
    pub fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        room: RoomKey,
        offer_sdp: &str,
    ) -> Result<String, SfuError> {
        let now = self.clock(now);
        if self.peers.contains_key(&peer) {
            return Err(SfuError::PeerExists);
        }
        let mids = audio_mids(offer_sdp)?;
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(SfuError::OfferSyntax)?;

        let (mut rtc, keys) = crate::fastpath::build_rtc(now, |b| {
            b.set_ice_lite(true)
                .set_rtp_mode(true)
                .clear_codecs()
                .enable_opus(true, false)
        });
        rtc.add_local_candidate(self.candidate.clone());
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(SfuError::OfferRejected)?;

        let mut pending = Vec::new();
        let next_timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => pending.push(t),
                Ok(Output::Event(_)) => {}
                Err(e) => return Err(SfuError::OfferRejected(e)),
            }
        };
        // Classify the m-lines from our side: recvonly is the microphone,
        // sendonly are the slots.
        let mut mic = 0usize;
        let mut slot_mids = Vec::new();
        for mid in &mids {
            let Some(media) = rtc.media(Mid::from(mid.as_str())) else {
                return Err(SfuError::NoOpus);
            };
            if media.kind() != MediaKind::Audio {
                return Err(SfuError::NotAudioOnly);
            }
            match media.direction() {
                Direction::RecvOnly => mic += 1,
                Direction::SendOnly => slot_mids.push(media.mid()),
                _ => return Err(SfuError::UnsupportedDirection),
            }
        }
        if mic != 1 {
            return Err(SfuError::MicrophoneCount { found: mic });
        }
        if slot_mids.len() > self.config.slots {
            return Err(SfuError::TooManySlots {
                found: slot_mids.len(),
                max: self.config.slots,
            });
        }
        let mut slots = Vec::with_capacity(slot_mids.len());
        for mid in slot_mids {
            let pt = rtc.media(mid).and_then(|m| {
                rtc.codec_config()
                    .iter()
                    .find(|p| {
                        p.spec().codec == str0m::format::Codec::Opus
                            && m.remote_pts().contains(&p.pt())
                    })
                    .map(|p| p.pt())
            });
            let Some(pt) = pt else {
                return Err(SfuError::NoOpus);
            };
            let r = self.next_random();
            slots.push(Slot {
                mid,
                pt,
                rewriter: SlotRewriter::new(r as u16, (r >> 32) as u32, self.config.rebase_gap),
                ssrc: None,
                level_id: None,
                mid_ext: None,
            });
        }

        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let mut p = Peer {
            id: peer,
            room,
            rtc: Box::new(rtc),
            ufrag: ufrag.clone(),
            may_publish: false,
            connected: false,
            slots,
            next_timeout,
            last_rx: now,
            addrs: Vec::new(),
            gone: None,
            queued: false,
            scheduled: None,
            keys,
            srtp: None,
            media_to: None,
            nominating: None,
        };
        let capacity = self.config.slots;
        let hold = self.config.speaker_hold;
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            members: BTreeSet::new(),
            speakers: ActiveSpeakers::new(capacity, hold),
            scheduled: None,
        });
        r.members.insert(peer);
        p.assign_slots(&r.speakers);
        for t in pending {
            self.transmits.push_back(Transmit {
                source: t.source,
                destination: t.destination,
                contents: t.contents.into(),
            });
        }
        self.by_ufrag.insert(ufrag, peer);
        self.peers.insert(peer, p);
        self.schedule_peer(peer);
        info!(peer = %peer, room = %room, "media peer added");
        Ok(answer.to_sdp_string())
    }

    /// Whether the peer may publish (on stage and not muted). Takes effect
    /// for the very next packet; turning it off also removes the peer from
    /// the active speakers at once.
    pub fn set_may_publish(&mut self, peer: PeerId, allowed: bool) -> Result<(), SfuError> {
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        p.may_publish = allowed;
        let room = p.room;
        let was_speaking = !allowed
            && self
                .rooms
                .get_mut(&room)
                .is_some_and(|r| r.speakers.remove(peer));
        if was_speaking {
            self.speakers_changed(room);
        }
        debug!(peer = %peer, allowed, "may publish");
        Ok(())
    }

    /// Removes a peer at the control plane's request. Its slots elsewhere are
    /// freed and nothing is sent to its addresses any more. No
    /// [`SfuEvent::PeerGone`] is emitted for it.
    pub fn remove_peer(&mut self, peer: PeerId) -> Result<(), SfuError> {
        if !self.peers.contains_key(&peer) {
            return Err(SfuError::UnknownPeer);
        }
        self.drop_peer(peer);
        info!(peer = %peer, "media peer removed");
        Ok(())
    }

    /// Feeds one datagram received on the SFU's socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        let now = self.clock(now);
        self.stats.datagrams_in += 1;
        if bytes.len() > self.config.max_datagram_size {
            self.stats.dropped_oversized += 1;
            return;
        }
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let id = match self.by_addr.get(&source) {
            Some(id) => *id,
            // Only STUN for one of our ufrags may come from a new address.
            None => match self.peer_by_stun(bytes) {
                Some(id) => id,
                None => {
                    self.stats.dropped_unknown_source += 1;
                    return;
                }
            },
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.stats.dropped_unknown_source += 1;
            return;
        };
        self.visits += 1;
        // A check that nominates this path (ICE: USE-CANDIDATE): once str0m
        // answers it (so it passed integrity), media goes there.
        if bytes.first().is_some_and(|b| *b <= 3)
            && StunMessage::parse(bytes).is_ok_and(|m| m.is_binding_request() && m.use_candidate())
        {
            peer.nominating = Some(source);
        }
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if !peer.rtc.accepts(&input) {
            self.stats.dropped_rejected += 1;
            return;
        }
        match peer.rtc.handle_input(input) {
            Ok(()) => peer.last_rx = now,
            Err(e) => {
                self.stats.dropped_rejected += 1;
                debug!(peer = %id, error = %e, "datagram rejected");
                if !peer.rtc.is_alive() && peer.gone.is_none() {
                    peer.gone = Some(GoneReason::Disconnected);
                    self.gone.push(id);
                }
            }
        }
        if !peer.queued {
            peer.queued = true;
            self.dirty.push(id);
        }
        self.drive(now, true);
        self.reap();
    }

    /// Advances time: str0m timers, speaker expiry, idle peers. Visits
    /// only the peers and rooms whose timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some(Reverse((at, wake))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match wake {
                Wake::Peer(id) => self.peer_timer(id, at, now),
                Wake::Room(key) => self.room_timer(key, at, now),
            }
        }
        self.drive(now, false);
        self.reap();
    }

    fn peer_timer(&mut self, id: PeerId, at: Instant, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.scheduled != Some(at) {
            return; // stale
        }
        p.scheduled = None;
        if p.gone.is_some() {
            return;
        }
        if now.saturating_duration_since(p.last_rx) >= self.config.peer_timeout {
            p.gone = Some(GoneReason::Timeout);
            self.gone.push(id);
            return;
        }
        if p.next_timeout <= now {
            if p.rtc.handle_input(Input::Timeout(now)).is_err() || !p.rtc.is_alive() {
                p.gone = Some(GoneReason::Disconnected);
                self.gone.push(id);
            }
            if !p.queued {
                p.queued = true;
                self.dirty.push(id);
            }
        } else {
            // Woken early (its deadline moved later): sleep again.
            self.schedule_peer(id);
        }
    }

    fn room_timer(&mut self, key: RoomKey, at: Instant, now: Instant) {
        let Some(r) = self.rooms.get_mut(&key) else {
            return;
        };
        if r.scheduled != Some(at) {
            return; // stale
        }
        r.scheduled = None;
        if r.speakers.expire(now) {
            self.speakers_changed(key);
        }
        self.schedule_room(key);
    }

    /// Makes sure the peer has a live timer entry at or before its deadline.
    fn schedule_peer(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let deadline = p.next_timeout.min(p.last_rx + self.config.peer_timeout);
        if p.scheduled.is_none_or(|s| deadline < s) {
            p.scheduled = Some(deadline);
            self.timers.push(Reverse((deadline, Wake::Peer(id))));
        }
    }

    /// Makes sure the room has a live timer entry at or before its next
    /// speaker expiry.
    fn schedule_room(&mut self, key: RoomKey) {
        let Some(r) = self.rooms.get_mut(&key) else {
            return;
        };
        let Some(expiry) = r.speakers.next_expiry() else {
            return;
        };
        if r.scheduled.is_none_or(|s| expiry < s) {
            r.scheduled = Some(expiry);
            self.timers.push(Reverse((expiry, Wake::Room(key))));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next:
    /// the earliest timer entry (possibly a stale one, which costs one
    /// early wake-up). Constant time.
    pub fn poll_timeout(&self) -> Instant {
        self.timers
            .peek()
            .map_or(self.now + self.config.peer_timeout, |Reverse((at, _))| *at)
            .max(self.now)
    }

    /// How many times handling datagrams visited a peer's state so far:
    /// the sender, each receiver a packet went to, each peer polled and
    /// each peer dropped. Grows with what datagrams cause, not with how
    /// many peers exist; tests check that.
    #[doc(hidden)]
    pub fn peer_visits(&self) -> u64 {
        self.visits
    }

    /// Next datagram to send.
    /// Gives a sent datagram's buffer back, for the next forwarded copy
    /// (the driver calls it after sending; keeps at most
    /// [`FREE_BUFFERS`] of them).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.free.len() < FREE_BUFFERS && buf.capacity() <= self.config.max_datagram_size {
            self.free.push(buf);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front()?;
        self.stats.datagrams_out += 1;
        Some(t)
    }

    /// Next event for the control plane.
    pub fn poll_event(&mut self) -> Option<SfuEvent> {
        self.events.pop_front()
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.peers = self.peers.len() as u64;
        s.rooms = self.rooms.len() as u64;
        s
    }

    /// RTP packets forwarded so far ([`SfuStats::rtp_forwarded`]), without
    /// copying the other counters.
    pub fn rtp_forwarded(&self) -> u64 {
        self.stats.rtp_forwarded
    }

    /// Whether the peer's ICE and DTLS are up.
    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.connected)
    }

    /// Which speaker feeds each of the peer's receive slots (`None`: idle).
    pub fn slot_sources(&self, peer: PeerId) -> Option<Vec<Option<PeerId>>> {
        let p = self.peers.get(&peer)?;
        Some(p.slots.iter().map(|s| s.rewriter.source()).collect())
    }

    /// The active speakers of a room, in order of entry.
    pub fn active_speakers(&self, room: RoomKey) -> Vec<PeerId> {
        self.rooms
            .get(&room)
            .map(|r| r.speakers.peers().collect())
            .unwrap_or_default()
    }

    /// Test-only: takes what was forwarded in `room` so far (one record per
    /// incoming packet, not per receiver).
    #[cfg(feature = "tap")]
    pub fn take_tap(&mut self, room: RoomKey) -> Vec<crate::TapRecord> {
        self.tap.take(room)
    }

    fn clock(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// splitmix64: spreads the configured seed over the slots.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn peer_by_stun(&self, bytes: &[u8]) -> Option<PeerId> {
        // RFC 7983: STUN starts with 0..=3.
        if *bytes.first()? > 3 {
            return None;
        }
        let msg = StunMessage::parse(bytes).ok()?;
        let (local, _remote) = msg.split_username()?;
        self.by_ufrag.get(local).copied()
    }

    /// Polls the queued peers (and every peer that forwarding touches)
    /// until their `Rtc`s have nothing more to say. `counted`: whether the
    /// visits count as datagram work.
    fn drive(&mut self, now: Instant, counted: bool) {
        let mut packets = std::mem::take(&mut self.packets);
        while let Some(id) = self.dirty.pop() {
            if counted {
                self.visits += 1;
            }
            self.poll_peer(id, &mut packets);
            for pkt in packets.drain(..) {
                self.forward(id, pkt, now);
            }
            self.schedule_peer(id);
        }
        self.packets = packets;
    }

    fn poll_peer(&mut self, id: PeerId, packets: &mut Vec<RtpPacket>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.queued = false;
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    peer.next_timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    // str0m only answers checks that passed ICE integrity, so
                    // an address it sends STUN to is one the peer really
                    // holds. Only STUN (RFC 7983: first byte 0..=3) can
                    // teach a new address; media needs no map update.
                    let stun = t.contents.first().is_some_and(|b| *b <= 3);
                    if stun && self.by_addr.insert(t.destination, id) != Some(id) {
                        peer.addrs.push(t.destination);
                    }
                    if !stun || peer.nominating == Some(t.destination) {
                        // DTLS and RTCP go where str0m sends media (the
                        // selected pair); so does the answer to a check
                        // that nominated a path.
                        peer.media_to = Some((t.source, t.destination));
                        if stun {
                            peer.nominating = None;
                        }
                    }
                    self.transmits.push_back(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        peer.connected = true;
                        if self.config.direct_send {
                            peer.start_fast_path();
                        }
                        self.stats.peers_connected += 1;
                        self.events.push_back(SfuEvent::PeerConnected { peer: id });
                        info!(peer = %id, "media peer connected");
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                    | Event::Closed
                        if peer.gone.is_none() =>
                    {
                        peer.gone = Some(GoneReason::Disconnected);
                        self.gone.push(id);
                    }
                    Event::RtpPacket(p) => packets.push(p),
                    _ => {}
                },
                Err(e) => {
                    debug!(peer = %id, error = %e, "rtc failed");
                    if peer.gone.is_none() {
                        peer.gone = Some(GoneReason::Disconnected);
                        self.gone.push(id);
                    }
                    break;
                }
            }
        }
    }

    fn forward(&mut self, from: PeerId, pkt: RtpPacket, now: Instant) {
        self.stats.rtp_received += 1;
        let Some(sender) = self.peers.get(&from) else {
            return;
        };
        if !sender.may_publish {
            self.stats.rtp_dropped_not_allowed += 1;
            return;
        }
        let room_key = sender.room;
        let ext = &pkt.header.ext_vals;
        let (level, vad) = (ext.audio_level, ext.voice_activity);
        let voiced =
            vad == Some(true) || level.is_none_or(|l| l >= self.config.voice_level_threshold);
        let Some(room) = self.rooms.get_mut(&room_key) else {
            return;
        };
        if room.speakers.observe(from, voiced, now) {
            self.speakers_changed(room_key);
            self.schedule_room(room_key);
        }
        let Some(room) = self.rooms.get(&room_key) else {
            return;
        };
        if !room.speakers.is_active(from) {
            self.stats.rtp_dropped_inactive += 1;
            return;
        }
        #[cfg(feature = "tap")]
        self.tap.record(room_key, from, *pkt.seq_no, &pkt.payload);

        // The RFC 6464 extension is only written with both fields present.
        let ext_out = ExtensionValues {
            audio_level: level,
            voice_activity: level.map(|_| vad.unwrap_or(voiced)),
            ..Default::default()
        };
        for member in &room.members {
            if *member == from {
                continue;
            }
            let Some(rx) = self.peers.get_mut(member) else {
                continue;
            };
            self.visits += 1;
            if !rx.connected || rx.gone.is_some() {
                continue;
            }
            for slot in rx.slots.iter_mut() {
                if slot.rewriter.source() != Some(from) {
                    continue;
                }
                let Some((seq, ts)) = slot
                    .rewriter
                    .rewrite(*pkt.seq_no, pkt.header.timestamp, now)
                else {
                    self.stats.rtp_dropped_late += 1;
                    continue;
                };
                if let (Some(srtp), Some((source, destination)), Some(ssrc)) =
                    (rx.srtp.as_ref(), rx.media_to, slot.ssrc)
                {
                    // Sealed here with the peer's keys: the `Rtc` is not
                    // touched (see `fastpath`).
                    let level = match (slot.level_id, ext_out.audio_level) {
                        (Some(id), Some(l)) => {
                            let vad = ext_out.voice_activity.unwrap_or(false);
                            Some((id, u8::from(vad) << 7 | (l.unsigned_abs() & 0x7f)))
                        }
                        _ => None,
                    };
                    let header = crate::fastpath::rtp_header(
                        *slot.pt,
                        pkt.header.marker,
                        seq as u16,
                        ts,
                        ssrc,
                        level,
                        slot.mid_ext.as_ref().map(|(id, m)| (*id, &m[..])),
                    );
                    let mut contents = self.free.pop().unwrap_or_default();
                    if srtp
                        .seal(&header, &pkt.payload, ssrc, seq, &mut contents)
                        .is_err()
                    {
                        debug!(peer = %member, "fast path: seal failed");
                        self.free.push(contents);
                        continue;
                    }
                    self.transmits.push_back(Transmit {
                        source,
                        destination,
                        contents,
                    });
                    self.stats.rtp_forwarded += 1;
                    self.stats.rtp_forwarded_direct += 1;
                    continue;
                }
                let mut api = rx.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(slot.mid, None) else {
                    continue;
                };
                tx.write_rtp(
                    RtpWrite::new(slot.pt, SeqNo::from(seq), ts, now, pkt.payload.clone())
                        .marker(pkt.header.marker)
                        .ext_vals(ext_out.clone()),
                );
                self.stats.rtp_forwarded += 1;
                if !rx.queued {
                    rx.queued = true;
                    self.dirty.push(*member);
                }
            }
        }
    }

    /// Re-assigns slots in a room and tells the control plane.
    fn speakers_changed(&mut self, room_key: RoomKey) {
        let Some(room) = self.rooms.get(&room_key) else {
            return;
        };
        for member in &room.members {
            if let Some(p) = self.peers.get_mut(member) {
                p.assign_slots(&room.speakers);
            }
        }
        let speakers: Vec<PeerId> = room.speakers.peers().collect();
        debug!(room = %room_key, count = speakers.len(), "active speakers changed");
        self.events.push_back(SfuEvent::ActiveSpeakersChanged {
            room: room_key,
            speakers,
        });
    }

    /// Drops peers whose connection died or went silent, with an event each.
    fn reap(&mut self) {
        while let Some(id) = self.gone.pop() {
            let Some(reason) = self.peers.get(&id).and_then(|p| p.gone) else {
                continue;
            };
            match reason {
                GoneReason::Timeout => self.stats.peers_timed_out += 1,
                GoneReason::Disconnected => self.stats.peers_failed += 1,
            }
            self.drop_peer(id);
            info!(peer = %id, ?reason, "media peer gone");
            self.events
                .push_back(SfuEvent::PeerGone { peer: id, reason });
        }
    }

    fn drop_peer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        for addr in &peer.addrs {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
        if self.by_ufrag.get(&peer.ufrag) == Some(&id) {
            self.by_ufrag.remove(&peer.ufrag);
        }
        let room_key = peer.room;
        let Some(room) = self.rooms.get_mut(&room_key) else {
            return;
        };
        room.members.remove(&id);
        let was_speaking = room.speakers.remove(id);
        for member in &room.members {
            if let Some(p) = self.peers.get_mut(member) {
                p.release_source(id);
            }
        }
        if room.members.is_empty() {
            self.rooms.remove(&room_key);
            if was_speaking {
                self.events.push_back(SfuEvent::ActiveSpeakersChanged {
                    room: room_key,
                    speakers: Vec::new(),
                });
            }
        } else if was_speaking {
            self.speakers_changed(room_key);
        }
    }
}

/// The `a=mid` of every m-line, which must all be audio; any other m-line
/// (video, data channel) is refused before str0m sees the offer.
fn audio_mids(sdp: &str) -> Result<Vec<String>, SfuError> {
    let mut mids = Vec::new();
    let mut in_media = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            if !m.starts_with("audio ") {
                return Err(SfuError::NotAudioOnly);
            }
            if in_media {
                // The previous m-line had no a=mid.
                return Err(SfuError::MissingMid);
            }
            in_media = true;
        } else if let Some(mid) = line.strip_prefix("a=mid:")
            && in_media
        {
            mids.push(mid.to_string());
            in_media = false;
        }
    }
    if in_media {
        return Err(SfuError::MissingMid);
    }
    Ok(mids)
}
