//! In-memory network and str0m test clients driving a `Sfu` in virtual time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sotto_sfu::{PeerId, RoomKey, Sfu, SfuConfig, SfuEvent};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const SFU_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 3478);

/// A datagram in flight.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Seeded lossy, delaying, reordering network.
pub struct Net {
    rng: ChaCha8Rng,
    pub loss: f64,
    pub delay: Duration,
    /// Extra random delay in `0..jitter`: reorders packets.
    pub jitter: Duration,
    queue: BTreeMap<(Instant, u64), Datagram>,
    counter: u64,
    /// Everything delivered, with time: (at, destination, len).
    pub delivered: Vec<(Instant, SocketAddr, usize)>,
    pub dropped: u64,
}

impl Net {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss: 0.0,
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            queue: BTreeMap::new(),
            counter: 0,
            delivered: Vec::new(),
            dropped: 0,
        }
    }

    pub fn send(&mut self, now: Instant, d: Datagram) {
        if self.loss > 0.0 && self.rng.gen_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        let mut at = now + self.delay;
        if !self.jitter.is_zero() {
            at += self.jitter.mul_f64(self.rng.gen_range(0.0..1.0));
        }
        self.counter += 1;
        self.queue.insert((at, self.counter), d);
    }

    pub fn next_at(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<Datagram> {
        let key = *self.queue.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }
}

/// One RTP packet as a client received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub ssrc: u32,
    pub seq: u64,
    pub ts: u32,
    pub payload: Vec<u8>,
}

/// A microphone that writes one 20 ms RTP packet per tick.
#[derive(Debug, Clone)]
pub struct Talk {
    pub next_at: Instant,
    pub seq: u64,
    pub ts: u32,
    /// RFC 6464 level (−dBov).
    pub level: i8,
}

/// A browser-like str0m peer (not ICE-lite) in RTP mode.
pub struct Client {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub mic: Mid,
    pub slots: Vec<Mid>,
    pub pt: Pt,
    pub next_timeout: Instant,
    pub connected: bool,
    /// Stop driving it: the device vanished.
    pub alive: bool,
    pub talk: Option<Talk>,
    /// Payloads written, with the time written.
    pub sent: Vec<(Instant, Vec<u8>)>,
    pub received: Vec<Received>,
    /// MediaAdded/MediaChanged seen after the initial negotiation.
    pub media_changes_after_answer: usize,
}

impl Client {
    pub fn mic_ssrc(&mut self) -> u32 {
        let mid = self.mic;
        self.rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| *s.ssrc())
            .unwrap_or(0)
    }

    pub fn ssrcs(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.received.iter().map(|r| r.ssrc).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.received.iter().map(|r| r.payload.clone()).collect()
    }

    pub fn sent_payloads(&self) -> Vec<Vec<u8>> {
        self.sent.iter().map(|(_, p)| p.clone()).collect()
    }
}

pub fn peer_id(n: u8) -> PeerId {
    let mut b = [0u8; 16];
    b[0] = 0xc0;
    b[1] = n;
    b[15] = 0x5a;
    PeerId::from_bytes(b)
}

pub const ROOM: RoomKey = RoomKey::from_bytes([0x7e; 16]);

/// The SFU, its clients and the network between them, in virtual time.
pub struct World {
    pub now: Instant,
    pub sfu: Sfu,
    pub net: Net,
    pub clients: Vec<Client>,
    pub events: Vec<(Instant, SfuEvent)>,
    rng: ChaCha8Rng,
    /// A test with a counting allocator sets this: the heap allocations
    /// made inside `Sfu::handle_datagram` for datagrams from
    /// `alloc_probe_source` are then added up in `sfu_allocations` (and the
    /// calls in `sfu_datagrams`).
    pub alloc_probe: Option<fn() -> u64>,
    pub alloc_probe_source: Option<SocketAddr>,
    pub sfu_allocations: u64,
    pub sfu_datagrams: u64,
}

impl World {
    pub fn new(config: SfuConfig, seed: u64) -> Self {
        let now = Instant::now();
        let sfu = Sfu::new(now, config, SFU_ADDR).expect("sfu");
        Self {
            now,
            sfu,
            net: Net::new(seed),
            clients: Vec::new(),
            events: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0xfeed),
            alloc_probe: None,
            alloc_probe_source: None,
            sfu_allocations: 0,
            sfu_datagrams: 0,
        }
    }

    /// Adds a client with `slots` receive m-lines and negotiates with the SFU.
    pub fn add_client(&mut self, slots: usize) -> usize {
        let n = self.clients.len() as u8;
        let addr = SocketAddr::from(([127, 0, 0, 10 + n], 5000 + u16::from(n)));
        let id = peer_id(n);
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let mic = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let slot_mids: Vec<Mid> = (0..slots)
            .map(|_| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None))
            .collect();
        let (offer, pending) = api.apply().expect("offer");
        let answer = self
            .sfu
            .add_peer(self.now, id, ROOM, &offer.to_sdp_string())
            .expect("add_peer");
        assert!(answer.contains("a=ice-lite"), "SFU answers as ICE-lite");
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
        let mut c = Client {
            id,
            addr,
            rtc,
            mic,
            slots: slot_mids,
            pt,
            next_timeout: self.now,
            connected: false,
            alive: true,
            talk: None,
            sent: Vec::new(),
            received: Vec::new(),
            media_changes_after_answer: 0,
        };
        // The initial MediaAdded events are part of the first negotiation.
        poll_client(&mut c, self.now, &mut self.net, true);
        self.clients.push(c);
        self.drain_sfu();
        self.clients.len() - 1
    }

    /// Runs until every live client and the SFU report connected.
    pub fn connect_all(&mut self) {
        let deadline = self.now + Duration::from_secs(10);
        while self.now < deadline {
            let all = self
                .clients
                .iter()
                .filter(|c| c.alive)
                .all(|c| c.connected && self.sfu.is_connected(c.id));
            if all {
                return;
            }
            self.step(deadline);
        }
        panic!("peers did not connect");
    }

    pub fn start_talking(&mut self, i: usize, level: i8) {
        let now = self.now;
        let c = &mut self.clients[i];
        let prev = c.talk.take();
        c.talk = Some(Talk {
            next_at: now,
            seq: prev.as_ref().map_or(1000 + 100 * i as u64, |t| t.seq),
            ts: prev.as_ref().map_or(7_000_000 * i as u32, |t| t.ts),
            level,
        });
    }

    pub fn stop_talking(&mut self, i: usize) {
        self.clients[i].talk = None;
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
    }

    /// Processes everything due at the next event time. Returns false once `until` is reached.
    pub fn step(&mut self, until: Instant) -> bool {
        let mut next = self.sfu.poll_timeout();
        for c in self.clients.iter().filter(|c| c.alive) {
            next = next.min(c.next_timeout);
            if let Some(t) = c.talk.as_ref().filter(|_| c.connected) {
                next = next.min(t.next_at);
            }
        }
        if let Some(t) = self.net.next_at() {
            next = next.min(t);
        }
        if next > until {
            self.now = until;
            return false;
        }
        // str0m may ask for "now" again; make sure time moves.
        self.now = next.max(self.now + Duration::from_micros(100));
        let now = self.now;

        while let Some(d) = self.net.pop_due(now) {
            self.net
                .delivered
                .push((now, d.destination, d.contents.len()));
            if d.destination == SFU_ADDR {
                let before = self
                    .alloc_probe
                    .filter(|_| self.alloc_probe_source == Some(d.source))
                    .map(|p| p());
                self.sfu
                    .handle_datagram(now, d.source, d.destination, &d.contents);
                if let (Some(p), Some(b)) = (self.alloc_probe, before) {
                    self.sfu_allocations += p() - b;
                    self.sfu_datagrams += 1;
                }
                self.drain_sfu();
                continue;
            }
            let Some(c) = self
                .clients
                .iter_mut()
                .find(|c| c.alive && c.addr == d.destination)
            else {
                continue;
            };
            let Ok(contents) = d.contents.as_slice().try_into() else {
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: d.source,
                    destination: d.destination,
                    contents,
                },
            );
            if c.rtc.accepts(&input) {
                c.rtc.handle_input(input).expect("client input");
            }
            poll_client(c, now, &mut self.net, false);
            // As the server's driver does once a datagram is sent.
            self.sfu.recycle(d.contents);
        }

        if self.sfu.poll_timeout() <= now {
            self.sfu.handle_timeout(now);
            self.drain_sfu();
        }

        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if !c.alive {
                continue;
            }
            if c.next_timeout <= now {
                c.rtc
                    .handle_input(Input::Timeout(now))
                    .expect("client timeout");
                poll_client(c, now, &mut self.net, false);
            }
            let due = c.connected && c.talk.as_ref().is_some_and(|t| t.next_at <= now);
            if due {
                let mut payload = vec![0u8; 40 + self.rng.gen_range(0..40)];
                self.rng.fill(&mut payload[..]);
                let c = &mut self.clients[i];
                let Some(talk) = c.talk.as_mut() else {
                    continue;
                };
                payload[0] = i as u8;
                payload[1..9].copy_from_slice(&talk.seq.to_be_bytes());
                let (pt, mic) = (c.pt, c.mic);
                let ext = ExtensionValues {
                    audio_level: Some(talk.level),
                    voice_activity: Some(talk.level >= -50),
                    ..Default::default()
                };
                let write =
                    RtpWrite::new(pt, talk.seq.into(), talk.ts, now, payload.clone()).ext_vals(ext);
                talk.seq += 1;
                talk.ts = talk.ts.wrapping_add(960);
                talk.next_at += Duration::from_millis(20);
                if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(mic, None) {
                    tx.write_rtp(write);
                }
                c.sent.push((now, payload));
                poll_client(c, now, &mut self.net, false);
            }
        }
        true
    }

    pub fn drain_sfu(&mut self) {
        while let Some(t) = self.sfu.poll_transmit() {
            self.net.send(
                self.now,
                Datagram {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents,
                },
            );
        }
        while let Some(e) = self.sfu.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Hands a datagram straight to the SFU (an attacker on the path).
    pub fn inject(&mut self, source: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.sfu.handle_datagram(now, source, SFU_ADDR, bytes);
        self.drain_sfu();
    }
}

fn poll_client(c: &mut Client, now: Instant, net: &mut Net, initial: bool) {
    loop {
        match c.rtc.poll_output().expect("client poll") {
            Output::Timeout(t) => {
                c.next_timeout = t.max(now);
                break;
            }
            Output::Transmit(t) => net.send(
                now,
                Datagram {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                },
            ),
            Output::Event(e) => match e {
                Event::Connected => c.connected = true,
                Event::RtpPacket(p) => c.received.push(Received {
                    at: now,
                    ssrc: *p.header.ssrc,
                    seq: *p.seq_no,
                    ts: p.header.timestamp,
                    payload: p.payload.to_vec(),
                }),
                Event::MediaAdded(_) | Event::MediaChanged(_) if !initial => {
                    c.media_changes_after_answer += 1;
                }
                _ => {}
            },
        }
    }
}
