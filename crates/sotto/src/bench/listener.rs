//! A lean receive-only WebRTC peer for the load generator: real ICE,
//! DTLS and SRTP (str0m, negotiated by `sotto_client::media::negotiate`),
//! but no Opus and no channel per packet.
//!
//! Thousands of them share the generator's cores with the server, so only
//! a sample of listeners takes every packet through str0m (SRTP
//! authentication and decryption) and then SFrame-decrypts and checks it.
//! The others hand str0m everything but RTP (STUN, DTLS, RTCP: the
//! connection stays up for real) and count RTP datagrams as they arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use sotto_e2ee::frame::KeyRing;
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::speaker::check_plaintext;

/// What one listener saw; read by the generator while it runs.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub connected: AtomicBool,
    /// RTP packets received on the receive slots (SRTP-authenticated by str0m).
    pub packets: AtomicU64,
    /// Microseconds from the join request to the first audio (for a sampled
    /// listener: the first frame that decrypted and checked); 0 = none yet.
    pub first_audio_us: AtomicU64,
    /// Sampled listeners: frames that decrypted and matched what was sent.
    pub sframe_ok: AtomicU64,
    /// Sampled listeners: frames that failed to decrypt or did not match.
    pub sframe_bad: AtomicU64,
    /// Datagrams str0m refused, and sends that failed.
    pub errors: AtomicU64,
}

/// Waits until every listener has heard audio, or `timeout`.
pub async fn wait_first_audio(all: &[Arc<ListenerStats>], timeout: std::time::Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && all.iter().any(|l| l.first_audio_us.load(Relaxed) == 0) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How many listeners' ICE and DTLS are up.
pub fn connected(all: &[Arc<ListenerStats>]) -> usize {
    all.iter().filter(|l| l.connected.load(Relaxed)).count()
}

/// RTP packets received by all listeners so far.
pub fn packets(all: &[Arc<ListenerStats>]) -> u64 {
    all.iter().map(|l| l.packets.load(Relaxed)).sum()
}

/// Each listener's time to first audio in seconds (those that heard any), sorted.
pub fn first_audio_seconds(all: &[Arc<ListenerStats>]) -> Vec<f64> {
    let mut v: Vec<f64> = all
        .iter()
        .map(|l| l.first_audio_us.load(Relaxed))
        .filter(|us| *us > 0)
        .map(|us| us as f64 / 1e6)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

pub struct Listener {
    rtc: Rtc,
    socket: UdpSocket,
    local: std::net::SocketAddr,
    stats: Arc<ListenerStats>,
    /// Set on sampled listeners: the room's SFrame keys. Without it, RTP
    /// is counted and not given to str0m.
    check: Option<KeyRing>,
    joined: Instant,
    epoch: Instant,
}

impl Listener {
    /// `rtc` has its offer/answer done; `socket` is bound at `local`, the
    /// address of its one host candidate.
    pub fn new(
        (rtc, socket, local): (Rtc, UdpSocket, std::net::SocketAddr),
        stats: Arc<ListenerStats>,
        check: Option<KeyRing>,
        joined: Instant,
        epoch: Instant,
    ) -> Listener {
        Listener {
            rtc,
            socket,
            local,
            stats,
            check,
            joined,
            epoch,
        }
    }

    /// Runs until `stop` turns true or the peer dies.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let Some(timeout) = self.drain() else { return };
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
                received = self.socket.recv_from(&mut buf) => {
                    match received {
                        Ok((n, source)) => self.input(source, &buf[..n]),
                        Err(_) => {
                            self.stats.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(timeout)) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        self.stats.errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }

    fn input(&mut self, source: std::net::SocketAddr, bytes: &[u8]) {
        if self.check.is_none() && is_rtp(bytes) {
            self.count();
            return;
        }
        let Ok(contents) = bytes.try_into() else {
            self.stats.errors.fetch_add(1, Relaxed);
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if !self.rtc.accepts(&input) || self.rtc.handle_input(input).is_err() {
            self.stats.errors.fetch_add(1, Relaxed);
        }
    }

    /// Sends what str0m has to send and counts what it received; returns
    /// its next timeout, or `None` once the peer is dead.
    fn drain(&mut self) -> Option<Instant> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.stats.errors.fetch_add(1, Relaxed);
                    }
                }
                Ok(Output::Event(Event::Connected)) => self.stats.connected.store(true, Relaxed),
                Ok(Output::Event(Event::RtpPacket(p))) => self.packet(&p.payload),
                Ok(Output::Event(_)) => {}
                Err(_) => return None,
            }
        }
    }

    /// One RTP datagram that was not given to str0m.
    fn count(&mut self) {
        self.stats.packets.fetch_add(1, Relaxed);
        if self.stats.first_audio_us.load(Relaxed) == 0 {
            let us = u64::try_from(self.joined.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats.first_audio_us.store(us.max(1), Relaxed);
        }
    }

    fn packet(&mut self, payload: &[u8]) {
        self.stats.packets.fetch_add(1, Relaxed);
        let audible = match &mut self.check {
            None => true,
            Some(ring) => {
                let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                let ok = ring
                    .decrypt(now_ms, payload)
                    .is_ok_and(|plain| check_plaintext(&plain));
                let counter = if ok {
                    &self.stats.sframe_ok
                } else {
                    &self.stats.sframe_bad
                };
                counter.fetch_add(1, Relaxed);
                ok
            }
        };
        if audible && self.stats.first_audio_us.load(Relaxed) == 0 {
            let us = u64::try_from(self.joined.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.stats.first_audio_us.store(us.max(1), Relaxed);
        }
    }
}

/// RTP, not RTCP (RFC 7983 and RFC 5761: first byte 128..=191, and a
/// payload type outside RTCP's 64..=95 once the marker bit is masked).
fn is_rtp(bytes: &[u8]) -> bool {
    match bytes {
        [b0, b1, ..] => (128..=191).contains(b0) && !(64..=95).contains(&(b1 & 0x7f)),
        _ => false,
    }
}
