//! The SFU with real str0m clients around it, in virtual time, so fuzzed
//! datagrams meet peers whose ICE, DTLS and SRTP are up (the RTP and RTCP
//! paths), not just the stranger path.
//!
//! Datagrams are delivered at once; time only moves in [`World::run_for`].

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sotto_sfu::{PeerId, RoomKey, Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The SFU's advertised address.
pub const SFU_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 3478);

/// Where datagrams from a stranger come from.
pub const STRANGER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000);

const ROOM: RoomKey = RoomKey::from_bytes([0x7e; 16]);

/// A browser-like client: one microphone m-line and `slots` receive slots.
pub struct Client {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub mic: Mid,
    pub pt: Pt,
    pub next_timeout: Instant,
    pub connected: bool,
    seq: u64,
    ts: u32,
}

/// An SDP offer as a sotto client makes it, and what it needs to take the
/// answer.
pub fn client_offer(
    now: Instant,
    addr: SocketAddr,
    slots: usize,
) -> (Rtc, Mid, String, SdpPendingOffer) {
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    let mic = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    for _ in 0..slots {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    let (offer, pending) = api.apply().expect("offer");
    (rtc, mic, offer.to_sdp_string(), pending)
}

/// The SFU, two connected clients (0 may publish, 1 listens) and the wire.
pub struct World {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    /// Datagrams in flight: (from, to, bytes).
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// When set, every datagram a client sends to the SFU, by client index.
    pub log: Option<Vec<(usize, Vec<u8>)>>,
}

impl World {
    /// Sets up the SFU and two clients and runs until both are connected.
    /// Panics if they do not connect: that is a harness bug, not a finding.
    pub fn connected(log: bool) -> World {
        let now = Instant::now();
        let sfu = Sfu::new(now, SfuConfig::default(), SFU_ADDR).expect("sfu");
        let mut w = World {
            now,
            sfu,
            clients: Vec::new(),
            wire: VecDeque::new(),
            log: log.then(Vec::new),
        };
        for n in 0..2u8 {
            w.add_client(n);
        }
        let deadline = w.now + Duration::from_secs(10);
        while !w
            .clients
            .iter()
            .all(|c| c.connected && w.sfu.is_connected(c.id))
        {
            assert!(w.now < deadline, "harness: peers did not connect");
            w.step(Duration::from_millis(10));
        }
        let speaker = w.clients[0].id;
        w.sfu.set_may_publish(speaker, true).expect("known peer");
        w
    }

    fn add_client(&mut self, n: u8) {
        let addr = SocketAddr::from(([203, 0, 113, 10 + n], 5000 + u16::from(n)));
        let id = PeerId::from_bytes([0xc0 + n; 16]);
        let (mut rtc, mic, offer, pending) = client_offer(self.now, addr, 3);
        let answer = self
            .sfu
            .add_peer(self.now, id, ROOM, &offer)
            .expect("add_peer");
        let answer = SdpAnswer::from_sdp_string(&answer).expect("answer parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("answer accepted");
        let pt = rtc
            .codec_config()
            .iter()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
            .expect("opus");
        self.clients.push(Client {
            id,
            addr,
            rtc,
            mic,
            pt,
            next_timeout: self.now,
            connected: false,
            seq: 1000 * u64::from(n),
            ts: 0,
        });
        self.pump();
    }

    /// A datagram arrives at the SFU from `source`.
    pub fn datagram(&mut self, source: SocketAddr, bytes: &[u8]) {
        self.sfu.handle_datagram(self.now, source, SFU_ADDR, bytes);
        self.pump();
    }

    /// Client `i` sends one RTP packet on its microphone (SRTP-protected by
    /// its real session, so it reaches the SFU's forwarding).
    pub fn speak(&mut self, i: usize, payload: &[u8], level: i8) {
        let now = self.now;
        let c = &mut self.clients[i];
        let ext = ExtensionValues {
            audio_level: Some(level),
            voice_activity: Some(level >= -50),
            ..Default::default()
        };
        let write = RtpWrite::new(c.pt, c.seq.into(), c.ts, now, payload.to_vec()).ext_vals(ext);
        c.seq += 1;
        c.ts = c.ts.wrapping_add(960);
        let mic = c.mic;
        if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(mic, None) {
            tx.write_rtp(write);
        }
        self.pump();
    }

    /// Lets `d` of virtual time pass, waking everyone on their timeouts.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            let left = until - self.now;
            self.step(left);
        }
    }

    /// Moves time to the next timeout (at most `max` ahead) and handles it.
    fn step(&mut self, max: Duration) {
        let mut next = self.sfu.poll_timeout();
        for c in &self.clients {
            next = next.min(c.next_timeout);
        }
        // str0m may ask for "now" again; make sure time moves.
        let next = next
            .max(self.now + Duration::from_micros(100))
            .min(self.now + max);
        self.now = next;
        if self.sfu.poll_timeout() <= next {
            self.sfu.handle_timeout(next);
        }
        for c in &mut self.clients {
            if c.next_timeout <= next {
                // A client's own failure ends its part, not the run.
                if c.rtc.handle_input(Input::Timeout(next)).is_err() {
                    c.next_timeout = next + Duration::from_secs(3600);
                }
            }
        }
        self.pump();
    }

    /// Delivers everything in flight until the SFU and the clients are quiet.
    fn pump(&mut self) {
        loop {
            while let Some(t) = self.sfu.poll_transmit() {
                // The SFU only ever talks to addresses that passed ICE.
                assert!(
                    self.clients.iter().any(|c| c.addr == t.destination),
                    "SFU sent to an address no client holds"
                );
                self.wire.push_back((t.source, t.destination, t.contents));
            }
            while self.sfu.poll_event().is_some() {}
            for i in 0..self.clients.len() {
                self.poll_client(i);
            }
            let Some((from, to, bytes)) = self.wire.pop_front() else {
                return;
            };
            if to == SFU_ADDR {
                if let (Some(log), Some(i)) = (
                    self.log.as_mut(),
                    self.clients.iter().position(|c| c.addr == from),
                ) {
                    log.push((i, bytes.clone()));
                }
                self.sfu.handle_datagram(self.now, from, to, &bytes);
                continue;
            }
            let now = self.now;
            let Some(c) = self.clients.iter_mut().find(|c| c.addr == to) else {
                continue;
            };
            let Ok(contents) = bytes.as_slice().try_into() else {
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: from,
                    destination: to,
                    contents,
                },
            );
            if c.rtc.accepts(&input) {
                let _ = c.rtc.handle_input(input);
            }
        }
    }

    fn poll_client(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        loop {
            match c.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    c.next_timeout = t.max(now);
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    self.wire
                        .push_back((t.source, t.destination, t.contents.into()));
                }
                Ok(Output::Event(Event::Connected)) => c.connected = true,
                Ok(Output::Event(_)) => {}
                Err(_) => {
                    c.next_timeout = now + Duration::from_secs(3600);
                    break;
                }
            }
        }
    }
}
